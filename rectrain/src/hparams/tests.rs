//! Tests of [`super`]: parsing, ranges, combinations, the flag table.

use super::*;

fn raw(pairs: &[(&str, &str)]) -> RawHyperparameters {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resolve(pairs: &[(&str, &str)]) -> Result<Hyperparameters, HparamsError> {
    Hyperparameters::from_raw(&raw(pairs), |_| {})
}

#[test]
fn defaults_are_sagemakers() {
    let h = resolve(&[]).unwrap();
    assert_eq!(h.num_layers, 152);
    assert_eq!(h.image_shape, [3, 224, 224]);
    assert_eq!(h.mini_batch_size, 32);
    assert_eq!(h.epochs, 30);
    assert_eq!(h.learning_rate, 0.1);
    assert_eq!(h.momentum, 0.9);
    assert_eq!(h.weight_decay, 0.0001);
    assert_eq!(h.optimizer, OptimizerKind::Sgd);
    assert_eq!(h.early_stopping_min_epochs, 10);
    assert_eq!(h.early_stopping_patience, 5);
    assert_eq!(h.precision_dtype, Precision::F32);
    assert!(h.lr_scheduler_step.is_empty());
}

#[test]
fn json_file_strings_parse() {
    let text = r#"{"num_layers": "18", "epochs": "2", "image_shape": "3,32,32",
        "lr_scheduler_step": "10, 20", "optimizer": "nag", "early_stopping": "True",
        "mini_batch_size": 8, "multi_label": "0"}"#;
    let r = parse_hyperparameters_json(text).unwrap();
    assert_eq!(r["mini_batch_size"], "8");
    let h = Hyperparameters::from_raw(&r, |_| {}).unwrap();
    assert_eq!(h.num_layers, 18);
    assert_eq!(h.epochs, 2);
    assert_eq!(h.image_shape, [3, 32, 32]);
    assert_eq!(h.lr_scheduler_step, vec![10, 20]);
    assert_eq!(h.optimizer, OptimizerKind::Nag);
    assert!(h.early_stopping);
    assert_eq!(h.mini_batch_size, 8);
}

#[test]
fn file_must_be_an_object_of_scalars() {
    assert!(parse_hyperparameters_json("[1]").is_err());
    assert!(parse_hyperparameters_json(r#"{"a": [1]}"#).is_err());
    assert!(parse_hyperparameters_json("{").is_err());
}

#[test]
fn unknown_names_warn() {
    let mut warnings = Vec::new();
    let h = Hyperparameters::from_raw(&raw(&[("nmu_layers", "18")]), |w| warnings.push(w));
    assert!(h.is_ok());
    assert_eq!(
        warnings,
        vec!["unknown hyperparameter \"nmu_layers\" ignored"]
    );
}

#[test]
fn ranges_are_checked() {
    let cases: &[(&str, &str, &str)] = &[
        ("num_layers", "17", "must be one of"),
        ("num_layers", "20", "CIFAR"),
        ("learning_rate", "1.5", "between 0 and 1"),
        ("learning_rate", "fast", "expected a number"),
        ("epochs", "0", "positive"),
        ("mini_batch_size", "-3", "non-negative integer"),
        ("top_k", "1", "greater than 1"),
        ("optimizer", "lamb", "sgd, adam, rmsprop, nag"),
        ("image_shape", "3,224", "expected \"C,H,W\""),
        ("image_shape", "1,28,28", "only 3 channels"),
        ("image_shape", "3,a,224", "C,H,W"),
        ("multi_label", "2", "0/1"),
        ("precision_dtype", "float64", "float32, float16, bfloat16"),
        ("augmentation_type", "flip", "crop, crop_color"),
        ("lr_scheduler_step", "10,x", "comma-separated"),
    ];
    for (name, value, needle) in cases {
        let err = resolve(&[(name, value)]).unwrap_err().to_string();
        assert!(err.contains(needle), "{name}={value}: {err}");
        assert!(
            err.starts_with(&format!("hyperparameter {name}: invalid value")),
            "{err}"
        );
    }
}

#[test]
fn combinations_are_checked() {
    let e = resolve(&[("epochs", "3"), ("checkpoint_frequency", "4")]).unwrap_err();
    assert!(e.to_string().contains("must not exceed epochs"), "{e}");
    let e = resolve(&[("image_shape", "3,224,224"), ("resize", "200")]).unwrap_err();
    assert!(e.to_string().contains("resize (200)"), "{e}");
    let e = resolve(&[("use_weighted_loss", "1")]).unwrap_err();
    assert!(e.to_string().contains("requires multi_label=1"), "{e}");
    assert!(resolve(&[("use_weighted_loss", "1"), ("multi_label", "1")]).is_ok());
}

#[test]
fn learning_rate_steps_after_listed_epochs() {
    let h = resolve(&[
        ("learning_rate", "0.1"),
        ("lr_scheduler_factor", "0.5"),
        ("lr_scheduler_step", "2,4"),
    ])
    .unwrap();
    let lrs: Vec<f64> = (0..6).map(|e| h.learning_rate_at(e)).collect();
    assert_eq!(lrs, vec![0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
}

#[test]
fn to_raw_round_trips() {
    let h = resolve(&[
        ("num_layers", "18"),
        ("num_classes", "10"),
        ("top_k", "3"),
        ("augmentation_type", "crop_color"),
        ("lr_scheduler_step", "20, 10"),
        ("checkpoint_frequency", "5"),
        ("resize", "256"),
        ("early_stopping", "1"),
    ])
    .unwrap();
    let again = Hyperparameters::from_raw(&h.to_raw(), |w| panic!("{w}")).unwrap();
    assert_eq!(again, h);
    assert_eq!(h.to_json()["lr_scheduler_step"], "10,20");
}

#[test]
fn table_defaults_are_the_real_defaults() {
    let defaults = Hyperparameters::default();
    for spec in TABLE {
        if let HelpDefault::Value(v) = spec.default {
            let raw: RawHyperparameters = [(spec.name.to_string(), v.to_string())].into();
            let h = Hyperparameters::from_raw(&raw, |w| panic!("{w}"))
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            assert_eq!(h, defaults, "{} = {v:?} is not the default", spec.name);
        }
    }
}

#[test]
fn known_names_are_the_tables_sorted() {
    let mut names: Vec<&str> = TABLE.iter().map(|s| s.name).collect();
    names.sort_unstable();
    assert_eq!(KNOWN_NAMES, names.as_slice());
    assert_eq!(
        spec("num_layers").map(|s| s.long()),
        Some("num-layers".to_string())
    );
}
