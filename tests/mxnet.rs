//! recpredict on MXNet Module checkpoints written by the real MXNet 1.9.1
//! (`scripts/fixtures/make_mxnet_fixtures.py`: SageMaker's ResNet symbol, narrow, at 3×48×48, with
//! random weights and calibrated-then-perturbed BatchNorm statistics): the probabilities
//! equal MXNet's forward pass within 1e-4 for every form `--model` takes (the SageMaker
//! `model.tar.gz`, a directory, a prefix, one `.params` file) and every input (files,
//! `--rec` with `--evaluate`, `--sagemaker`); broken checkpoints exit 2 naming the file.
//! rectrain exports its models as such checkpoints, and trains SageMaker's own network
//! further from one (`--model`, incremental training).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline_tests::wire::{self, Prediction};
use pipeline_tests::{list_and_pack, recpredict, run_expect, stderr_text, stdout_text};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mxnet")
}

#[derive(Deserialize)]
struct Expected {
    images: Vec<String>,
    probabilities: Vec<Vec<f32>>,
}

fn expected(model: &str) -> Expected {
    let text = fs::read(fixtures().join(model).join("expected.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn images() -> Vec<PathBuf> {
    expected("resnet18")
        .images
        .iter()
        .map(|n| fixtures().join("images").join(n))
        .collect()
}

/// The largest |ours − MXNet's| over every image and class (images matched by file name).
fn max_diff(preds: &[Prediction], exp: &Expected) -> f32 {
    assert_eq!(preds.len(), exp.images.len());
    let mut max = 0f32;
    for p in preds {
        let path = p.path.as_deref().expect("a path");
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let i = exp.images.iter().position(|n| n == name).expect(name);
        assert_eq!(p.prediction.len(), exp.probabilities[i].len());
        for (a, b) in p.prediction.iter().zip(&exp.probabilities[i]) {
            max = max.max((a - b).abs());
        }
    }
    max
}

fn predict(model: &Path) -> Vec<Prediction> {
    let out = run_expect(recpredict(model).args(images()), 0);
    let (preds, summary) = wire::parse(&stdout_text(&out));
    assert!(summary.is_none());
    preds
}

#[test]
fn sagemaker_tarball_gives_mxnets_probabilities() {
    for (model, classes) in [("resnet18", 5), ("resnet50", 4)] {
        let exp = expected(model);
        let preds = predict(&fixtures().join(model).join("model.tar.gz"));
        let diff = max_diff(&preds, &exp);
        eprintln!("{model}: max abs difference from MXNet 1.9.1: {diff:e}");
        assert!(diff <= 1e-4, "{model}: {diff}");
        for p in &preds {
            // No class names in a SageMaker model: indices only.
            assert_eq!(p.label, None);
            assert_eq!(p.prediction.len(), classes);
            let best = (0..classes)
                .max_by(|&a, &b| p.prediction[a].total_cmp(&p.prediction[b]))
                .unwrap();
            assert_eq!(p.class, best);
            assert_eq!(p.top_k.len(), 5.min(classes));
            assert_eq!(p.top_k[0].class, best);
        }
    }
}

#[test]
fn directory_prefix_and_params_file_load_the_same_model() {
    let reference = predict(&fixtures().join("resnet18/model.tar.gz"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    checkpoint_copy(&dir);
    for model in [
        dir.clone(),
        dir.join("image-classification"),
        dir.join("image-classification-0003.params"),
        dir.join("image-classification-symbol.json"),
    ] {
        let preds = predict(&model);
        assert_eq!(preds, reference, "{}", model.display());
    }
}

#[test]
fn records_evaluate_and_sagemaker_output() {
    let tmp = tempfile::tempdir().unwrap();
    // Two class folders; packed byte for byte (--pass-through) so the pixels are the PNGs'.
    let root = tmp.path().join("imgs");
    for (i, img) in images().iter().enumerate() {
        let class = if i < 2 { "a" } else { "b" };
        fs::create_dir_all(root.join(class)).unwrap();
        fs::copy(img, root.join(class).join(img.file_name().unwrap())).unwrap();
    }
    let rec = list_and_pack(
        &tmp.path().join("set"),
        &root,
        &["--no-shuffle"],
        &["--pass-through"],
    );
    let model = fixtures().join("resnet18/model.tar.gz");
    let out = run_expect(
        recpredict(&model)
            .arg("--rec")
            .arg(&rec)
            .args(["--evaluate", "--top-k", "2"]),
        0,
    );
    let (preds, summary) = wire::parse(&stdout_text(&out));
    let summary = summary.expect("a summary line");
    assert_eq!(summary.images, 5);
    assert_eq!(summary.top_k, 2);
    assert_eq!(summary.confusion_matrix.len(), 5);
    // Records are in list order: a/gray4, a/photo0, b/photo1..3 (sorted walk).
    let exp = expected("resnet18");
    let mut max = 0f32;
    for (p, e) in preds.iter().zip(&exp.probabilities) {
        assert_eq!(p.top_k.len(), 2);
        for (a, b) in p.prediction.iter().zip(e) {
            max = max.max((a - b).abs());
        }
    }
    assert!(max <= 1e-4, "--rec: {max}");

    let out = run_expect(recpredict(&model).arg("--sagemaker").args(images()), 0);
    let lines: Vec<serde_json::Value> = stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for (line, e) in lines.iter().zip(&exp.probabilities) {
        let got: Vec<f32> = serde_json::from_value(line["prediction"].clone()).unwrap();
        for (a, b) in got.iter().zip(e) {
            assert!((a - b).abs() <= 1e-4, "{line}");
        }
    }
}

/// The resnet18 checkpoint's files (its model.tar.gz extracted) in `dir`.
fn checkpoint_copy(dir: &Path) {
    let status = Command::new("tar")
        .arg("xzf")
        .arg(fixtures().join("resnet18/model.tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

fn fails_with(model: &Path, needles: &[&str]) {
    let out = run_expect(recpredict(model).args(images()), 2);
    let err = stderr_text(&out);
    assert!(stdout_text(&out).is_empty(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

#[test]
fn broken_checkpoints_exit_2_naming_the_file_and_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // Truncated parameters.
    let t = d.join("truncated");
    fs::create_dir(&t).unwrap();
    checkpoint_copy(&t);
    let params = t.join("image-classification-0003.params");
    let bytes = fs::read(&params).unwrap();
    fs::write(&params, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&t, &["image-classification-0003.params", "truncated"]);

    // An operator we do not run.
    let u = d.join("unknown");
    fs::create_dir(&u).unwrap();
    checkpoint_copy(&u);
    let sym = u.join("image-classification-symbol.json");
    let text = fs::read_to_string(&sym).unwrap();
    fs::write(
        &sym,
        text.replacen("\"Flatten\"", "\"SpatialTransformer\"", 1),
    )
    .unwrap();
    fails_with(
        &u,
        &[
            "image-classification-symbol.json",
            "flatten1",
            "SpatialTransformer is not supported",
        ],
    );

    // A parameter whose shape does not match the graph.
    let s = d.join("shape");
    fs::create_dir(&s).unwrap();
    checkpoint_copy(&s);
    let sym = s.join("image-classification-symbol.json");
    let text = fs::read_to_string(&sym).unwrap();
    fs::write(
        &sym,
        text.replace("\"num_hidden\": \"5\"", "\"num_hidden\": \"7\""),
    )
    .unwrap();
    fails_with(&s, &["fc1_weight", "[5, 32]", "[7, 32]", "-0003.params"]);

    // A tarball without a symbol.
    let nosym = d.join("nosym.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&nosym)
        .arg("-C")
        .arg(&t)
        .args(["image-classification-0003.params", "model-shapes.json"])
        .status()
        .unwrap();
    assert!(status.success());
    fails_with(&nosym, &["nosym.tar.gz", "no *-symbol.json"]);

    // Not a tarball at all.
    let junk = d.join("junk.tar.gz");
    fs::write(&junk, b"\x1f\x8bnot really gzip").unwrap();
    fails_with(&junk, &["junk.tar.gz", "not a readable tar.gz archive"]);

    // A symbol without its parameter file.
    let m = d.join("missing");
    fs::create_dir(&m).unwrap();
    checkpoint_copy(&m);
    fs::remove_file(m.join("image-classification-0003.params")).unwrap();
    fails_with(
        &m,
        &["image-classification-NNNN.params", "no parameter file"],
    );
}

/// `rectrain --export-mxnet` writes OUT/model.tar.gz; recpredict reads it back as an MXNet
/// model (squash, raw pixels, `bn_data` doing the normalisation) with the probabilities
/// of the artifact itself under `--squash`; exporting an existing OUT without training
/// gives the same archive.
#[test]
fn rectrain_export_round_trips_through_recpredict() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    for (i, img) in images().iter().enumerate() {
        let class = if i < 2 { "a" } else { "b" };
        fs::create_dir_all(root.join(class)).unwrap();
        fs::copy(img, root.join(class).join(img.file_name().unwrap())).unwrap();
    }
    let rec = list_and_pack(&tmp.path().join("set"), &root, &[], &["--pass-through"]);
    let model = tmp.path().join("model");
    pipeline_tests::train_tiny(
        &rec,
        &rec,
        &model,
        &[
            "--image-shape",
            "3,48,48",
            "--epochs",
            "1",
            "--mini-batch-size",
            "4",
            "--export-mxnet",
        ],
    );
    let tarball = model.join("model.tar.gz");
    assert!(tarball.is_file());

    // A one-epoch model's probabilities are 0 and 1 (nothing to compare): shrink its fc
    // layer in model.safetensors until they are not, exporting again each time.
    let weights = model.join("model.safetensors");
    let original = fs::read(&weights).unwrap();
    let mut ours = Vec::new();
    for k in 0..8 {
        let mut bytes = original.clone();
        scale_fc(&mut bytes, 0.1f32.powi(k));
        fs::write(&weights, &bytes).unwrap();
        run_expect(
            pipeline_tests::tool("rectrain")
                .args(["--export-mxnet", "--out"])
                .arg(&model),
            0,
        );
        let out = run_expect(recpredict(&model).arg("--squash").args(images()), 0);
        ours = wire::parse(&stdout_text(&out)).0;
        if ours.iter().all(|p| p.probability < 0.99) {
            break;
        }
    }
    assert!(ours.iter().all(|p| p.probability < 0.99), "{ours:?}");
    let first = fs::read(&tarball).unwrap();
    let exported = predict(&tarball);
    assert_eq!(ours.len(), exported.len());
    let mut max = 0f32;
    for (a, b) in ours.iter().zip(&exported) {
        assert_eq!(a.path, b.path);
        for (x, y) in a.prediction.iter().zip(&b.prediction) {
            max = max.max((x - y).abs());
        }
    }
    eprintln!("exported model vs the artifact: max abs difference {max:e}");
    assert!(max <= 1e-5, "{max}");

    // Export only: the same bytes again.
    fs::remove_file(&tarball).unwrap();
    run_expect(
        pipeline_tests::tool("rectrain")
            .args(["--export-mxnet", "--out"])
            .arg(&model),
        0,
    );
    assert_eq!(fs::read(&tarball).unwrap(), first);
}

/// Multiply `fc.weight` and `fc.bias` of a rectrain `model.safetensors` (F32) by `factor`.
fn scale_fc(bytes: &mut [u8], factor: f32) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for key in ["fc.weight", "fc.bias"] {
        let info = &header[key];
        assert_eq!(info["dtype"], "F32", "{key}");
        let a = info["data_offsets"][0].as_u64().unwrap() as usize;
        let b = info["data_offsets"][1].as_u64().unwrap() as usize;
        for v in bytes[8 + n + a..8 + n + b].chunks_exact_mut(4) {
            let x = f32::from_le_bytes(v.try_into().unwrap()) * factor;
            v.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// Deterministic values in [-1, 1) (a 64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A rectrain artifact of SageMaker's network, written here from the parameter list of
/// MXNet's `resnet.py` (not from rectrain's code): the pre-activation ResNet-18 at
/// full width (filters 64, 64, 128, 256, 512), `classes` outputs, 3×48×48 input, random
/// weights (He-scaled) and BatchNorm statistics, `architecture: "mxnet-resnet"` and raw
/// 0–255 input (`bn_data` normalises). `rectrain --export-mxnet` turns it into the
/// `model.tar.gz` SageMaker would have saved.
fn sagemaker_resnet18_artifact(dir: &Path, classes: usize) {
    let mut params: Vec<(String, Vec<usize>)> = Vec::new();
    let bn = |p: &mut Vec<(String, Vec<usize>)>, name: &str, c: usize| {
        for k in ["gamma", "beta", "moving_mean", "moving_var"] {
            p.push((format!("{name}_{k}"), vec![c]));
        }
    };
    bn(&mut params, "bn_data", 3);
    params.push(("conv0_weight".into(), vec![64, 3, 7, 7]));
    bn(&mut params, "bn0", 64);
    let mut inp = 64;
    for (s, w) in [64, 128, 256, 512].into_iter().enumerate() {
        for u in 1..=2 {
            let n = format!("stage{}_unit{u}", s + 1);
            bn(&mut params, &format!("{n}_bn1"), inp);
            params.push((format!("{n}_conv1_weight"), vec![w, inp, 3, 3]));
            bn(&mut params, &format!("{n}_bn2"), w);
            params.push((format!("{n}_conv2_weight"), vec![w, w, 3, 3]));
            if u == 1 {
                params.push((format!("{n}_sc_weight"), vec![w, inp, 1, 1]));
            }
            inp = w;
        }
    }
    bn(&mut params, "bn1", 512);
    params.push(("fc1_weight".into(), vec![classes, 512]));
    params.push(("fc1_bias".into(), vec![classes]));

    let mut rng = Lcg(7);
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape) in &params {
        let n: usize = shape.iter().product();
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let r = rng.next();
                if let Some(field) = name.strip_prefix("bn_data_") {
                    match field {
                        "gamma" => 1.0,
                        "beta" => 0.0,
                        "moving_mean" => 120.0 + 10.0 * r,
                        _ => 4000.0 + 500.0 * r,
                    }
                } else if name.ends_with("_gamma") {
                    1.0 + 0.2 * r
                } else if name.ends_with("_beta") || name.ends_with("_moving_mean") {
                    0.1 * r
                } else if name.ends_with("_moving_var") {
                    1.0 + 0.5 * r
                } else if name == "fc1_bias" {
                    0.1 * r
                } else if name == "fc1_weight" {
                    // Small, so that the probabilities are not all 0 and 1.
                    0.002 * r
                } else {
                    r * (6.0 / fan_in as f32).sqrt()
                }
            })
            .collect();
        let start = data.len();
        for v in &values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("model.safetensors"), file).unwrap();
    let config = serde_json::json!({
        "format": "rectrain-model",
        "format_version": 1,
        "architecture": "mxnet-resnet",
        "num_layers": 18,
        "num_classes": classes,
        "image_shape": [3, 48, 48],
        "resize": null,
        "multi_label": false,
        "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0]},
        "class_names": null,
        "hyperparameters": {},
        "training": {"best_epoch": 2},
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// [`sagemaker_resnet18_artifact`] in `dir`, exported by `rectrain --export-mxnet` as the
/// `model.tar.gz` SageMaker would have saved; returns the tarball.
fn sagemaker_model(dir: &Path, classes: usize) -> PathBuf {
    sagemaker_resnet18_artifact(dir, classes);
    run_expect(
        pipeline_tests::tool("rectrain")
            .args(["--export-mxnet", "--out"])
            .arg(dir),
        0,
    );
    dir.join("model.tar.gz")
}

/// The largest |a − b| over two prediction runs of the same files.
fn max_pair_diff(a: &[Prediction], b: &[Prediction]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut max = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.path, y.path);
        for (p, q) in x.prediction.iter().zip(&y.prediction) {
            max = max.max((p - q).abs());
        }
    }
    max
}

/// The fixture images in two class folders, packed into one `.rec` (training and
/// validation set of the incremental-training tests).
fn two_class_rec(dir: &Path) -> PathBuf {
    let root = dir.join("imgs");
    for (i, img) in images().iter().enumerate() {
        let class = if i < 2 { "a" } else { "b" };
        fs::create_dir_all(root.join(class)).unwrap();
        fs::copy(img, root.join(class).join(img.file_name().unwrap())).unwrap();
    }
    list_and_pack(&dir.join("set"), &root, &[], &["--pass-through"])
}

/// SageMaker's incremental training: `rectrain --model model.tar.gz` trains SageMaker's
/// own network (MXNet's pre-activation ResNet) further. Before training, rectrain's
/// network and the checkpoint's graph give the same probabilities; after one epoch the
/// artifact (`architecture: "mxnet-resnet"`) and its `--export-mxnet` archive agree, the
/// weights have moved, and the exported archive trains further again.
#[test]
fn sagemaker_model_trains_further() {
    let tmp = tempfile::tempdir().unwrap();
    let sm = tmp.path().join("sagemaker");
    let tarball = sagemaker_model(&sm, 2);
    let before = predict(&tarball);
    let artifact = wire::parse(&stdout_text(&run_expect(
        recpredict(&sm).arg("--squash").args(images()),
        0,
    )))
    .0;
    let d = max_pair_diff(&before, &artifact);
    eprintln!("SageMaker's graph vs rectrain's network: max abs difference {d:e}");
    assert!(d <= 1e-5, "graph vs rectrain's network: {d}");
    assert!(before.iter().any(|p| p.probability < 0.99), "{before:?}");

    let rec = two_class_rec(tmp.path());
    let run = tmp.path().join("run");
    let common = [
        "--image-shape",
        "3,48,48",
        "--num-classes",
        "2",
        "--epochs",
        "1",
        "--mini-batch-size",
        "2",
        "--learning-rate",
        "0.01",
    ];
    let out = pipeline_tests::train_tiny(
        &rec,
        &rec,
        &run,
        &[
            &common[..],
            &["--export-mxnet", "--model", tarball.to_str().unwrap()],
        ]
        .concat(),
    );
    let log = stderr_text(&out);
    assert!(
        log.contains("Continuing the training of") && log.contains("model.tar.gz"),
        "{log}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architecture"], "mxnet-resnet");
    assert_eq!(
        config["normalization"]["mean"],
        serde_json::json!([0.0, 0.0, 0.0])
    );
    assert!(config["training"]["initial_model"]
        .as_str()
        .unwrap()
        .contains("image-classification-0003.params"));

    let trained = run.join("model.tar.gz");
    let exported = predict(&trained);
    let ours = wire::parse(&stdout_text(&run_expect(
        recpredict(&run).arg("--squash").args(images()),
        0,
    )))
    .0;
    let d = max_pair_diff(&exported, &ours);
    assert!(d <= 1e-5, "exported vs artifact after training: {d}");
    let moved = max_pair_diff(&before, &exported);
    eprintln!("after one epoch: export vs artifact {d:e}; probabilities moved by up to {moved:e}");
    assert!(moved > 1e-4, "training changed nothing: {moved}");

    // The exported archive is SageMaker's network again: it trains further too.
    pipeline_tests::train_tiny(
        &rec,
        &rec,
        &tmp.path().join("again"),
        &[&common[..], &["--model", trained.to_str().unwrap()]].concat(),
    );

    // An interrupted incremental run resumes as one (the state records the layout).
    let part = tmp.path().join("part");
    let interrupted = run_expect(
        pipeline_tests::tool("rectrain")
            .arg("--train")
            .arg(&rec)
            .arg("--validation")
            .arg(&rec)
            .arg("--out")
            .arg(&part)
            .args(["--num-layers", "18", "--device", "cpu"])
            .args(common)
            .args(["--epochs", "2", "--stop-after-steps", "1", "--model"])
            .arg(&trained),
        130,
    );
    assert!(
        !part.join("config.json").exists(),
        "{}",
        stderr_text(&interrupted)
    );
    pipeline_tests::train_tiny(
        &rec,
        &rec,
        &part,
        &[
            &common[..],
            &["--epochs", "2", "--resume", part.to_str().unwrap()],
        ]
        .concat(),
    );
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(part.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architecture"], "mxnet-resnet");
    assert_eq!(config["training"]["epochs_run"], 2);
    let resumed = wire::parse(&stdout_text(&run_expect(
        recpredict(&part).arg("--squash").args(images()),
        0,
    )))
    .0;
    assert_eq!(resumed.len(), images().len());
}

/// SageMaker's rule for incremental training (same num_layers, image_shape,
/// num_classes) and checkpoints of another network are exit-2 errors naming the file.
#[test]
fn incremental_training_refuses_what_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let sm = tmp.path().join("sagemaker");
    let tarball = sagemaker_model(&sm, 2);
    let rec = two_class_rec(tmp.path());
    let refuse = |model: &Path, args: &[&str], needles: &[&str]| {
        let out = run_expect(
            pipeline_tests::tool("rectrain")
                .arg("--train")
                .arg(&rec)
                .arg("--validation")
                .arg(&rec)
                .arg("--out")
                .arg(tmp.path().join("out"))
                .args(["--device", "cpu", "--epochs", "1", "--mini-batch-size", "2"])
                .arg("--model")
                .arg(model)
                .args(args),
            2,
        );
        let err = stderr_text(&out);
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "missing {n:?} in: {err}");
        }
        assert!(!tmp.path().join("out/config.json").exists());
    };
    refuse(
        &tarball,
        &[
            "--num-layers",
            "34",
            "--image-shape",
            "3,64,64",
            "--num-classes",
            "3",
        ],
        &[
            "model.tar.gz",
            "num_layers is 34 but the model has 18",
            "image_shape is 3,64,64 but the model has 3,48,48",
            "num_classes is 3 but the model has 2",
        ],
    );
    refuse(
        &tarball,
        &[
            "--num-layers",
            "18",
            "--image-shape",
            "3,48,48",
            "--num-classes",
            "3",
        ],
        &["num_classes is 3 but the model has 2"],
    );
    // MXNet's own narrow fixture: the names fit, the shapes do not.
    refuse(
        &fixtures().join("resnet18/model.tar.gz"),
        &[
            "--num-layers",
            "18",
            "--image-shape",
            "3,48,48",
            "--num-classes",
            "5",
        ],
        &[
            "image-classification-0003.params",
            "conv0_weight",
            "not SageMaker's ResNet",
        ],
    );
    // Not a checkpoint at all.
    refuse(
        &tmp.path().join("set.rec"),
        &[
            "--num-layers",
            "18",
            "--image-shape",
            "3,48,48",
            "--num-classes",
            "2",
        ],
        &["set.rec", "not an MXNet checkpoint"],
    );
}

/// `--pretrained` with a model SageMaker trained: transfer learning on SageMaker's network
/// (its weights, a new classifier for this data's classes); another depth is refused.
#[test]
fn sagemaker_model_as_pretrained_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let sm = tmp.path().join("sagemaker");
    let tarball = sagemaker_model(&sm, 5);
    let rec = two_class_rec(tmp.path());
    let run = tmp.path().join("run");
    let out = pipeline_tests::train_tiny(
        &rec,
        &rec,
        &run,
        &[
            "--image-shape",
            "3,48,48",
            "--epochs",
            "1",
            "--mini-batch-size",
            "2",
            "--pretrained",
            tarball.to_str().unwrap(),
        ],
    );
    let log = stderr_text(&out);
    assert!(
        log.contains("Loaded pretrained weights from")
            && log.contains("fc re-initialised")
            && log.contains("transfer learning of SageMaker's network"),
        "{log}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architecture"], "mxnet-resnet");
    assert_eq!(config["num_classes"], 2);
    let preds = wire::parse(&stdout_text(&run_expect(
        recpredict(&run).args(images()),
        0,
    )))
    .0;
    assert!(preds.iter().all(|p| p.prediction.len() == 2));

    let out = run_expect(
        pipeline_tests::tool("rectrain")
            .arg("--train")
            .arg(&rec)
            .arg("--validation")
            .arg(&rec)
            .arg("--out")
            .arg(tmp.path().join("deeper"))
            .args([
                "--device",
                "cpu",
                "--num-layers",
                "34",
                "--image-shape",
                "3,48,48",
                "--mini-batch-size",
                "2",
            ])
            .arg("--pretrained")
            .arg(&tarball),
        2,
    );
    let err = stderr_text(&out);
    assert!(
        err.contains("model.tar.gz") && err.contains("num_layers is 34 but the model has 18"),
        "{err}"
    );
}
