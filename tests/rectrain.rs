//! The real pipeline on a separable toy task: PNG class folders → `im2list` →
//! `im2rec` → `rectrain` (ResNet-18, 32×32, CPU). Dark images against bright images
//! must reach ≥ 0.9 validation accuracy within three epochs, stdout must be nothing
//! but epoch JSON lines, and the class names must come from im2list's sidecar.

use std::path::Path;

use pipeline_tests::{run_expect, stderr_text, stdout_text, tool};

/// `n` PNGs per class in `root/dark` and `root/bright`, 40×40 (larger than the
/// network input, so the centre crop has something to cut).
fn make_images(root: &Path, n: usize) {
    for (class, base) in [("bright", 200u8), ("dark", 25u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let t = ((x * 3 + y * 5 + i as u32 * 11) % 30) as u8;
                image::Rgb([base.saturating_add(t), base.saturating_sub(t / 2), base])
            });
            img.save(dir.join(format!("{class}_{i:02}.png"))).unwrap();
        }
    }
}

#[test]
fn dark_vs_bright_reaches_90_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    make_images(&root, 16);
    let prefix = tmp.path().join("toy");

    run_expect(
        tool("im2list")
            .arg("--recursive")
            .args(["--train-ratio", "0.75"])
            .arg(&prefix)
            .arg(&root),
        0,
    );
    let classes = std::fs::read_to_string(tmp.path().join("toy.classes")).unwrap();
    assert_eq!(classes, "bright\ndark\n");
    run_expect(tool("im2rec").arg(&prefix).arg(&root), 0);
    for f in [
        "toy_train.rec",
        "toy_train.idx",
        "toy_val.rec",
        "toy_val.idx",
    ] {
        assert!(tmp.path().join(f).is_file(), "{f} missing");
    }

    let out_dir = tmp.path().join("model");
    let out = run_expect(
        tool("rectrain")
            .arg("--train")
            .arg(tmp.path().join("toy_train.rec"))
            .arg("--validation")
            .arg(tmp.path().join("toy_val.rec"))
            .arg("--out")
            .arg(&out_dir)
            .args(["--num-layers", "18", "--image-shape", "3,32,32"])
            .args(["--mini-batch-size", "8", "--epochs", "3"])
            .args(["--optimizer", "adam", "--learning-rate", "0.001"])
            .args(["--device", "cpu", "--seed", "1"]),
        0,
    );
    let err = stderr_text(&out);
    // stdout: exactly one strict JSON object per epoch, nothing else.
    let stdout = stdout_text(&out);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{err}")))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}\n{err}");
    let keys = [
        "epoch",
        "train_loss",
        "train_accuracy",
        "train_top_k_accuracy",
        "validation_loss",
        "validation_accuracy",
        "validation_top_k_accuracy",
        "learning_rate",
        "images_per_second",
        "seconds",
    ];
    for (e, line) in lines.iter().enumerate() {
        let obj = line.as_object().unwrap();
        assert_eq!(obj.len(), keys.len(), "{line}");
        for k in keys {
            assert!(obj.contains_key(k), "{k} missing in {line}");
        }
        assert_eq!(obj["epoch"], e);
    }
    let best = lines
        .iter()
        .map(|l| l["validation_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        best >= 0.9,
        "best validation accuracy {best}\n{stdout}\n{err}"
    );
    assert!(err.contains("Epoch[2] Validation-accuracy="), "{err}");
    assert!(err.contains("class names from"), "{err}");

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["class_names"], serde_json::json!(["bright", "dark"]));
    assert_eq!(config["num_classes"], 2);
    assert_eq!(config["format"], "rectrain-model");
    assert!(out_dir.join("model.safetensors").is_file());
    assert!(out_dir.join("accuracy.svg").is_file());
}
