//! `rectrain` end to end on tiny generated RecordIO data (ResNet-18 at 16×16 or 32×32
//! on the CPU): exit codes, stdout JSON lines, SageMaker's stderr lines, the
//! artifact, hyperparameters.json, input errors, interruption and resumption.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pipeline_tests::{run_expect, stderr_text, tool};

use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter};
use resnet::artifact::{self, ArtifactConfig};
use resnet::metrics::EpochMetrics;

/// A PNG of `size`×`size` pixels: dark (class 0) or bright (class 1) with a little
/// texture that depends on `i`.
fn png(class: usize, i: usize, size: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        let noise = ((x * 7 + y * 13 + i as u32 * 31) % 40) as u8;
        let base = if class == 0 { 20 } else { 190 };
        image::Rgb([base + noise, base + noise / 2, base + (40 - noise) / 2])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// Write `<path>.rec` and `.idx` with one record per `(labels, image)`; several
/// labels make a multi-label record.
fn write_rec(path: &Path, records: &[(Vec<f32>, Vec<u8>)]) {
    let mut w = RecordWriter::new(std::fs::File::create(path).unwrap());
    let mut idx = IndexWriter::new(std::fs::File::create(path.with_extension("idx")).unwrap());
    for (i, (labels, image)) in records.iter().enumerate() {
        let pos = w.position();
        let payload = pack_image_record(i as u64, labels, labels.len() > 1, image);
        w.write_record(&payload).unwrap();
        idx.write(i as u64, pos).unwrap();
    }
    w.into_inner().unwrap();
    idx.into_inner().unwrap();
}

/// `n` images alternating dark/bright, labels 0/1.
fn toy(dir: &Path, name: &str, n: usize, size: u32) -> PathBuf {
    let records: Vec<_> = (0..n)
        .map(|i| (vec![(i % 2) as f32], png(i % 2, i, size)))
        .collect();
    let path = dir.join(format!("{name}.rec"));
    write_rec(&path, &records);
    path
}

struct Data {
    dir: tempfile::TempDir,
    train: PathBuf,
    val: PathBuf,
}

fn data(n_train: usize, n_val: usize, size: u32) -> Data {
    let dir = tempfile::tempdir().unwrap();
    let train = toy(dir.path(), "train", n_train, size);
    let val = toy(dir.path(), "val", n_val, size);
    Data { dir, train, val }
}

/// A command for a small, fast run: ResNet-18, 16×16, batch 4.
fn small_run(d: &Data, out: &Path) -> Command {
    run_on(&d.train, &d.val, out)
}

/// [`small_run`] with explicit training and validation files.
fn run_on(train: &Path, val: &Path, out: &Path) -> Command {
    let mut cmd = pipeline_tests::rectrain_cpu(train, val, out);
    cmd.args(["--image-shape", "3,16,16", "--mini-batch-size", "4"])
        .args(["--workers", "1", "--seed", "3"]);
    cmd
}

/// Parse each stdout line strictly as an epoch record.
fn json_lines(out: &Output) -> Vec<EpochMetrics> {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<EpochMetrics>(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn help_lists_sagemaker_flags() {
    let out = run_expect(tool("rectrain").arg("--help"), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--num-layers",
        "--lr-scheduler-step",
        "--early-stopping-patience",
        "--resume",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn bad_hyperparameters_exit_2_with_the_name() {
    let d = data(4, 2, 16);
    let out_dir = d.dir.path().join("out");
    let out = run_expect(small_run(&d, &out_dir).args(["--learning-rate", "2"]), 2);
    let err = stderr_text(&out);
    assert!(
        err.contains("rectrain: error: hyperparameter learning_rate: invalid value \"2\": must be between 0 and 1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = run_expect(small_run(&d, &out_dir).args(["--num-layers", "19"]), 2);
    assert!(
        stderr_text(&out).contains("hyperparameter num_layers"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn pretrained_without_a_path_is_a_clear_error() {
    let d = data(4, 2, 16);
    let out = run_expect(
        small_run(&d, &d.dir.path().join("o")).args(["--use-pretrained-model", "1"]),
        2,
    );
    let err = stderr_text(&out);
    assert!(
        err.contains("use_pretrained_model=1 needs the weights: pass --pretrained PATH"),
        "{err}"
    );
}

#[test]
fn too_few_images_gives_sagemakers_message() {
    let d = data(3, 2, 16);
    let out = run_expect(&mut small_run(&d, &d.dir.path().join("o")), 2);
    let err = stderr_text(&out);
    assert!(
        err.contains("The number of input images must be bigger or equal to the mini_batch_size (3 training images, mini_batch_size 4)"),
        "{err}"
    );
}

#[test]
fn label_out_of_range_and_width_mismatch_fail_before_training() {
    let d = data(4, 2, 16);
    // A validation label (2) outside num_classes = 2.
    let val3 = d.dir.path().join("val3.rec");
    write_rec(
        &val3,
        &[(vec![2.0], png(0, 0, 16)), (vec![0.0], png(0, 1, 16))],
    );
    let out = run_expect(
        run_on(&d.train, &val3, &d.dir.path().join("o")).args(["--num-classes", "2"]),
        2,
    );
    let err = stderr_text(&out);
    assert!(err.contains("validation set"), "{err}");
    assert!(
        err.contains("label 2 is not a class index in 0..2"),
        "{err}"
    );
    assert!(!err.contains("Epoch["), "{err}");

    let multi = d.dir.path().join("multi.rec");
    write_rec(
        &multi,
        &[
            (vec![1.0, 0.0], png(0, 0, 16)),
            (vec![0.0, 1.0], png(1, 1, 16)),
        ],
    );
    let out = run_expect(&mut run_on(&d.train, &multi, &d.dir.path().join("o")), 2);
    let err = stderr_text(&out);
    assert!(
        err.contains("the training labels have width 1 but the validation labels have width 2"),
        "{err}"
    );
}

#[test]
fn missing_input_is_a_fatal_error() {
    let d = data(4, 2, 16);
    let mut cmd = run_on(
        &d.dir.path().join("nope.rec"),
        &d.val,
        &d.dir.path().join("o"),
    );
    let out = run_expect(&mut cmd, 2);
    assert!(
        stderr_text(&out).contains("nope.rec"),
        "{}",
        stderr_text(&out)
    );
}

/// The safetensors header's tensor names.
fn safetensors_keys(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

#[test]
fn trains_writes_the_artifact_and_logs_like_sagemaker() {
    let d = data(8, 4, 16);
    let out_dir = d.dir.path().join("model");
    let hp = d.dir.path().join("hyperparameters.json");
    std::fs::write(
        &hp,
        r#"{"num_layers": "18", "epochs": "5", "learning_rate": "0.05", "top_k": "2", "nmu_layers": "1"}"#,
    )
    .unwrap();
    let out = run_expect(
        small_run(&d, &out_dir)
            .arg("--hyperparameters")
            .arg(&hp)
            .args(["--epochs", "2"]),
        0,
    );
    let err = stderr_text(&out);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(lines[0].epoch, 0);
    assert_eq!(lines[1].epoch, 1);
    assert_eq!(lines[0].learning_rate, 0.05);
    assert!(lines[0].train_top_k_accuracy == Some(1.0), "{:?}", lines[0]);

    // SageMaker's lines, in order, with MXNet's number formats.
    assert!(
        err.contains("warning: unknown hyperparameter \"nmu_layers\" ignored"),
        "{err}"
    );
    assert!(err.contains("] ---- Parameters ----"), "{err}");
    assert!(err.contains("] epochs: 2\n"), "{err}");
    assert!(err.contains("] learning_rate: 0.05\n"), "{err}");
    assert!(err.contains("] num_training_samples: 8\n"), "{err}");
    assert!(
        err.contains("checkpoint_frequency not set, will store the best model"),
        "{err}"
    );
    let acc0 = format!("Epoch[0] Train-accuracy={:.6}\n", lines[0].train_accuracy);
    assert!(err.contains(&acc0), "{err}");
    assert!(
        err.contains("Epoch[0] Train-top_k_accuracy_2=1.000000"),
        "{err}"
    );
    assert!(err.contains("Epoch[0] Time cost="), "{err}");
    let v0 = format!(
        "Epoch[0] Validation-accuracy={:.6}\n",
        lines[0].validation_accuracy
    );
    assert!(err.contains(&v0), "{err}");
    assert!(
        err.contains("Storing the best model with validation accuracy: "),
        "{err}"
    );
    let first_ckpt = out_dir.join("checkpoints/image-classification-0001.safetensors");
    assert!(
        err.contains(&format!("Saved checkpoint to \"{}\"", first_ckpt.display())),
        "{err}"
    );
    let log_line = err
        .lines()
        .find(|l| l.contains("Epoch[0] Time cost="))
        .unwrap();
    assert!(
        log_line.starts_with('[') && log_line.contains(" INFO "),
        "{log_line}"
    );

    // The artifact.
    let cfg = ArtifactConfig::load(&out_dir).unwrap();
    assert_eq!(cfg.num_layers, 18);
    assert_eq!(cfg.num_classes, 2);
    assert_eq!(cfg.image_shape, [3, 16, 16]);
    assert_eq!(cfg.hyperparameters["epochs"], "2");
    assert_eq!(cfg.hyperparameters["num_layers"], "18");
    assert_eq!(cfg.hyperparameters["learning_rate"], "0.05");
    assert_eq!(cfg.training["epochs_run"], 2);
    let keys = safetensors_keys(&artifact::weights_path(&out_dir));
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer4.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
    let model = resnet::model::ResNetConfig::new(18, 2)
        .init::<resnet::backend::CpuBackend>(&Default::default());
    resnet::weights::load_safetensors(
        model,
        &artifact::weights_path(&out_dir),
        &Default::default(),
    )
    .expect("the artifact's weights load back strictly");
    let metrics = std::fs::read_to_string(artifact::metrics_path(&out_dir)).unwrap();
    assert_eq!(metrics, String::from_utf8(out.stdout.clone()).unwrap());
    let svg = std::fs::read_to_string(artifact::plot_path(&out_dir)).unwrap();
    assert!(svg.contains("<svg") && svg.contains("validation"));
    assert!(artifact::resume_dir(&out_dir).join("state.json").is_file());
    // Only the best checkpoint is kept (plus last/).
    let ckpts: Vec<String> = std::fs::read_dir(artifact::checkpoints_dir(&out_dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(ckpts.len(), 1, "{ckpts:?}");
    let best = cfg.training["best_epoch"].as_u64().unwrap() as usize;
    assert_eq!(
        ckpts[0],
        format!("image-classification-{:04}.safetensors", best + 1)
    );
    assert_eq!(
        std::fs::read(artifact::weights_path(&out_dir)).unwrap(),
        std::fs::read(artifact::checkpoint_path(&out_dir, best)).unwrap()
    );
}

#[test]
fn interrupted_then_resumed_ends_like_an_uninterrupted_run() {
    let d = data(8, 4, 16);
    let args = [
        "--epochs",
        "2",
        "--learning-rate",
        "0.05",
        "--checkpoint-frequency",
        "1",
    ];
    let a = d.dir.path().join("a");
    run_expect(small_run(&d, &a).args(args), 0);

    let b = d.dir.path().join("b");
    // 2 steps per epoch: stop after step 3 = in the middle of epoch 1.
    let out = run_expect(
        small_run(&d, &b)
            .args(args)
            .args(["--stop-after-steps", "3"]),
        130,
    );
    let err = stderr_text(&out);
    assert!(err.contains("Interrupted at epoch 1, step 1"), "{err}");
    assert_eq!(json_lines(&out).len(), 1);
    let out = run_expect(small_run(&d, &b).args(args).arg("--resume").arg(&b), 0);
    assert!(
        stderr_text(&out).contains("Resuming from"),
        "{}",
        stderr_text(&out)
    );
    assert_eq!(json_lines(&out).len(), 1);

    for epoch in 0..2 {
        assert_eq!(
            std::fs::read(artifact::checkpoint_path(&a, epoch)).unwrap(),
            std::fs::read(artifact::checkpoint_path(&b, epoch)).unwrap(),
            "checkpoint of epoch {epoch} differs"
        );
    }
    let ma = std::fs::read_to_string(artifact::metrics_path(&a)).unwrap();
    let mb = std::fs::read_to_string(artifact::metrics_path(&b)).unwrap();
    let strip = |s: &str| -> Vec<(f64, f64, f64)> {
        s.lines()
            .map(|l| serde_json::from_str::<EpochMetrics>(l).unwrap())
            .map(|m| (m.train_loss, m.train_accuracy, m.validation_accuracy))
            .collect()
    };
    assert_eq!(strip(&ma), strip(&mb));
}

#[test]
fn resume_refuses_different_hyperparameters() {
    let d = data(4, 2, 16);
    let a = d.dir.path().join("a");
    run_expect(small_run(&d, &a).args(["--epochs", "1"]), 0);
    let out = run_expect(
        small_run(&d, &a)
            .args(["--epochs", "2", "--optimizer", "adam", "--resume"])
            .arg(&a),
        2,
    );
    let err = stderr_text(&out);
    assert!(
        err.contains("different hyperparameters: optimizer"),
        "{err}"
    );
    // The same --out again without --resume would mix two runs: refused.
    let out = run_expect(small_run(&d, &a).args(["--epochs", "1"]), 2);
    assert!(
        stderr_text(&out).contains("already holds a training run"),
        "{}",
        stderr_text(&out)
    );
}

/// `--workers 0` is one decoding thread per CPU (the default), in rectrain as in
/// recpredict.
#[test]
fn workers_0_is_one_per_cpu() {
    let d = data(4, 2, 16);
    let out = run_expect(
        small_run(&d, &d.dir.path().join("o")).args(["--epochs", "1", "--workers", "0"]),
        0,
    );
    assert_eq!(json_lines(&out).len(), 1, "{}", stderr_text(&out));
}
