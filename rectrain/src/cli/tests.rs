//! Tests of [`super`]: the shared groups parse alike wherever they are flattened, and
//! the hyperparameter flags follow [`hparams::TABLE`].

use clap::{CommandFactory, Parser};

use super::*;
use resnet::backend::{DeviceSpec, Precision};

/// The groups as `rectrain` holds them: with the hyperparameter flags, a flag given
/// twice taking its last value, negative numbers allowed.
#[derive(Parser, Debug)]
#[command(
    name = "rectrain",
    args_override_self = true,
    allow_negative_numbers = true
)]
struct TrainLike {
    #[command(flatten)]
    hyperparameters: HyperparameterArgs,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    workers: WorkersArgs,
}

/// The groups as `recpredict` holds them.
#[derive(Parser, Debug)]
#[command(name = "recpredict")]
struct PredictLike {
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    workers: WorkersArgs,
}

/// The shared groups as parsed, or clap's error text.
type Parsed = Result<(DeviceArgs, WorkersArgs), String>;

/// What each tool makes of `args`.
fn both(args: &[&str]) -> (Parsed, Parsed) {
    let t = TrainLike::try_parse_from(std::iter::once("rectrain").chain(args.iter().copied()))
        .map(|o| (o.device, o.workers))
        .map_err(|e| e.to_string());
    let p = PredictLike::try_parse_from(std::iter::once("recpredict").chain(args.iter().copied()))
        .map(|o| (o.device, o.workers))
        .map_err(|e| e.to_string());
    (t, p)
}

#[test]
fn definitions_are_valid() {
    TrainLike::command().debug_assert();
    PredictLike::command().debug_assert();
}

#[test]
fn the_shared_groups_parse_alike_in_both_tools() {
    let cases: &[&[&str]] = &[
        &[],
        &["--device", "cpu"],
        &["--device", "CUDA:1,0"],
        &["--device", "cuda", "--precision-dtype", "bf16"],
        &["--precision-dtype", "float16"],
        &["--workers", "0"],
        &["--workers", "1024"],
        &["--device", "bogus"],
        &["--device", "cuda:x"],
        &["--precision-dtype", "bogus"],
        &["--workers", "2000"],
        &["--workers", "-1"],
        &["--workers", "many"],
    ];
    for args in cases {
        let (t, p) = both(args);
        assert_eq!(t, p, "{args:?}");
    }
}

#[test]
fn defaults_and_values() {
    let (Ok((device, workers)), _) = both(&[]) else {
        panic!()
    };
    assert_eq!(device.device, DeviceSpec::Auto);
    assert_eq!(device.precision_dtype, None);
    assert_eq!(device.precision(), Precision::F32);
    assert_eq!(workers.workers, 0);
    assert!(workers.threads() >= 1);
    let (Ok((device, workers)), _) = both(&[
        "--device",
        "cuda:0,0",
        "--precision-dtype",
        "bfloat16",
        "--workers",
        "3",
    ]) else {
        panic!()
    };
    assert_eq!(device.device, DeviceSpec::Cuda(vec![0, 0]));
    assert_eq!(device.precision(), Precision::Bf16);
    assert_eq!(workers.threads(), 3);
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let err = |args: &[&str]| both(args).1.unwrap_err();
    assert_eq!(
        err(&["--device", "bogus"]),
        "error: --device bogus: invalid device \"bogus\": expected auto, cpu, cuda, cuda:N or cuda:N,M,...\n"
    );
    assert_eq!(
        err(&["--precision-dtype", "bogus"]),
        "error: --precision-dtype bogus: invalid precision \"bogus\": expected float32, float16 or bfloat16\n"
    );
    assert_eq!(
        err(&["--workers", "2000"]),
        "error: --workers 2000: at most 1024 decoding threads\n"
    );
    assert!(
        err(&["--workers", "x"]).starts_with("error: --workers x: expected a number of threads"),
        "{}",
        err(&["--workers", "x"])
    );
}

#[test]
fn precision_help_is_the_hyperparameter_tables() {
    let row = hparams::spec("precision_dtype").unwrap();
    assert_eq!(row.flag, FlagKind::Shared);
    assert_eq!(PRECISION_HELP, row.help_text());
    assert_eq!(PRECISION_VALUE_NAME, row.value_name);
    let cmd = PredictLike::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("precision-dtype"))
        .unwrap();
    assert_eq!(arg.get_help().unwrap().to_string(), row.help_text());
}

#[test]
fn every_table_row_has_its_flag() {
    let cmd = TrainLike::command();
    for spec in hparams::TABLE {
        let long = spec.long();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .unwrap_or_else(|| panic!("--{long} missing"));
        assert_eq!(arg.get_help().unwrap().to_string(), spec.help_text());
        if spec.flag == FlagKind::Shared {
            continue;
        }
        assert_eq!(arg.get_id().as_str(), spec.name);
        assert_eq!(arg.get_help_heading(), Some(HYPERPARAMETERS_HEADING));
        assert_eq!(arg.is_hide_set(), spec.flag == FlagKind::Hidden);
        let names: Vec<&str> = arg
            .get_value_names()
            .unwrap()
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, [spec.value_name]);
    }
}

#[test]
fn help_lists_the_hyperparameters_with_their_defaults() {
    let help = TrainLike::command().render_long_help().to_string();
    assert!(help.contains("Hyperparameters:"), "{help}");
    assert!(help.contains("--num-layers <N>"), "{help}");
    assert!(help.contains("[default: 152]"), "{help}");
    assert!(help.contains("--image-shape <C,H,W>"), "{help}");
    assert!(
        help.contains("[default: inferred from the labels]"),
        "{help}"
    );
    assert!(!help.contains("--kv-store"), "{help}");
}

#[test]
fn hyperparameter_flags_become_sagemaker_names() {
    let o = TrainLike::try_parse_from([
        "rectrain",
        "--num-layers",
        "34",
        "--num-layers",
        "18",
        "--learning-rate",
        "-0.5",
        "--kv-store",
        "dist_sync",
        "--lr-scheduler-step",
        "10, 20",
        "--precision-dtype",
        "fp16",
    ])
    .unwrap();
    let raw = &o.hyperparameters.0;
    assert_eq!(raw.len(), 4, "{raw:?}");
    assert_eq!(raw["num_layers"], "18", "the last value wins");
    assert_eq!(raw["learning_rate"], "-0.5", "negative numbers are values");
    assert_eq!(raw["kv_store"], "dist_sync");
    assert_eq!(raw["lr_scheduler_step"], "10, 20");
    assert!(!raw.contains_key("precision_dtype"));
    assert_eq!(o.device.precision_dtype, Some(Precision::F16));
}

#[test]
fn the_hyperparameter_group_overrides_itself_on_its_own() {
    #[derive(Parser, Debug)]
    struct Plain {
        #[command(flatten)]
        hyperparameters: HyperparameterArgs,
    }
    let o =
        Plain::try_parse_from(["x", "--epochs", "2", "--epochs", "3", "--momentum", "-1"]).unwrap();
    assert_eq!(o.hyperparameters.0["epochs"], "3");
    assert_eq!(o.hyperparameters.0["momentum"], "-1");
}
