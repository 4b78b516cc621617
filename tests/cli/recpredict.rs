//! The `recpredict` binary on a small randomly initialised ResNet-18 artifact (made
//! here through the rectrain library, so these tests need neither training nor the
//! other tools): every input kind, every output format, per-image errors, a closed
//! pipe, and the fatal errors of a missing or incompatible model.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use pipeline_tests::{run_expect, stderr_text, stderr_without_kernel_notice, stdout_text, tool};

use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter};
use resnet::artifact::{ArtifactConfig, FORMAT, FORMAT_VERSION};
use resnet::backend::CpuBackend;
use resnet::model::ResNetConfig;
use resnet::preprocess::Normalization;
use serde::Deserialize;

const CLASSES: usize = 3;

/// A prediction or error line, parsed strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    path: Option<String>,
    id: Option<u64>,
    offset: Option<u64>,
    prediction: Option<Vec<f32>>,
    class: Option<usize>,
    label: Option<String>,
    probability: Option<f32>,
    top_k: Option<Vec<Ranked>>,
    true_class: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ranked {
    class: usize,
    label: Option<String>,
    probability: f32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Summary {
    #[serde(rename = "type")]
    kind: String,
    images: u64,
    errors: u64,
    accuracy: Option<f64>,
    top_k: usize,
    top_k_accuracy: Option<f64>,
    per_class: Vec<ClassStats>,
    confusion_matrix: Vec<Vec<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassStats {
    class: usize,
    label: Option<String>,
    precision: Option<f64>,
    recall: Option<f64>,
    support: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SageMakerLine {
    prediction: Vec<f32>,
}

fn lines(out: &Output) -> Vec<Line> {
    stdout_text(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Check one prediction line against itself: a probability vector summing to 1,
/// class = argmax, top_k sorted.
fn check_prediction(l: &Line, k: usize) {
    assert!(l.error.is_none(), "{l:?}");
    let p = l.prediction.as_ref().unwrap();
    assert_eq!(p.len(), CLASSES);
    let sum: f32 = p.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4, "{p:?}");
    let class = l.class.unwrap();
    assert!(p.iter().all(|&v| v <= p[class]));
    assert_eq!(l.probability, Some(p[class]));
    assert_eq!(l.label.as_deref(), Some(["red", "green", "blue"][class]));
    let top = l.top_k.as_ref().unwrap();
    assert_eq!(top.len(), k);
    assert_eq!(top[0].class, class);
    assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
    for r in top {
        assert_eq!(r.probability, p[r.class]);
        assert_eq!(r.label.as_deref(), Some(["red", "green", "blue"][r.class]));
    }
}

/// A randomly initialised 3-class ResNet-18 for 3×32×32 inputs, saved as an artifact.
fn model_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_artifact(dir.path(), CLASSES, CLASSES);
        dir
    })
    .path()
}

fn artifact_config(classes: usize) -> ArtifactConfig {
    ArtifactConfig {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        architecture: "resnet".into(),
        num_layers: 18,
        num_classes: classes,
        image_shape: [3, 32, 32],
        resize: Some(36),
        head: resnet::Head::Softmax,
        normalization: Normalization::imagenet(),
        class_names: (classes == CLASSES)
            .then(|| vec!["red".into(), "green".into(), "blue".into()]),
        hyperparameters: serde_json::json!({}),
        training: serde_json::json!({}),
    }
}

/// An artifact whose config says `classes` while its weights have `weight_classes`.
fn write_artifact(dir: &Path, classes: usize, weight_classes: usize) {
    let device = Default::default();
    let model = ResNetConfig::new(18, weight_classes).init::<CpuBackend>(&device);
    resnet::weights::save_safetensors(&model, &resnet::artifact::weights_path(dir)).unwrap();
    artifact_config(classes).save(dir).unwrap();
}

/// A colour image: class 0 red, 1 green, 2 blue, with a little texture.
fn image_bytes(class: usize, seed: u32, w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 13 + seed * 31) % 40) as u8;
        let mut px = [t, t, t];
        px[class] = 200 + t / 2;
        image::Rgb(px)
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

/// `n` PNG/JPEG files named `<class>_<i>.<ext>` in `dir`, cycling through the classes.
fn write_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let class = i % CLASSES;
            let (ext, fmt) = if i % 2 == 0 {
                ("png", image::ImageFormat::Png)
            } else {
                ("jpg", image::ImageFormat::Jpeg)
            };
            let p = dir.join(format!("{class}_{i:02}.{ext}"));
            fs::write(&p, image_bytes(class, i as u32, 40, 36, fmt)).unwrap();
            p
        })
        .collect()
}

fn predict(args: &[&str]) -> Command {
    let mut cmd = tool("recpredict");
    cmd.arg("-m")
        .arg(model_dir())
        .args(["--device", "cpu"])
        .args(args);
    cmd
}

#[test]
fn files_directories_and_stdin_keep_the_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_images(&tmp.path().join("imgs"), 6);
    let extra = tmp.path().join("extra.png");
    fs::write(&extra, image_bytes(2, 99, 32, 32, image::ImageFormat::Png)).unwrap();
    let listed = format!("{}\n{}\n", files[4].display(), files[1].display());
    let mut cmd = predict(&["--batch-size", "4", "--top-k", "2"]);
    cmd.arg(&extra).arg(tmp.path().join("imgs")).arg("-");
    let out = pipeline_tests_like_stdin(&mut cmd, listed.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let got = lines(&out);
    // Directory entries come sorted by file name, not in creation order.
    let mut sorted = files.clone();
    sorted.sort();
    let mut expected = vec![extra.display().to_string()];
    expected.extend(sorted.iter().map(|p| p.display().to_string()));
    expected.push(files[4].display().to_string());
    expected.push(files[1].display().to_string());
    let paths: Vec<String> = got.iter().map(|l| l.path.clone().unwrap()).collect();
    assert_eq!(paths, expected);
    for l in &got {
        check_prediction(l, 2);
        assert!(l.true_class.is_none() && l.id.is_none());
    }
    // The same image gives the same probabilities wherever it sits in a batch.
    for stdin_line in &got[7..] {
        let same = got[1..7]
            .iter()
            .find(|l| l.path == stdin_line.path)
            .unwrap();
        let (p, q) = (
            same.prediction.as_ref().unwrap(),
            stdin_line.prediction.as_ref().unwrap(),
        );
        assert!(
            p.iter().zip(q).all(|(a, b)| (a - b).abs() < 1e-5),
            "{p:?} vs {q:?}"
        );
    }
}

fn pipeline_tests_like_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn batch_size_and_thread_count_do_not_change_the_results() {
    let tmp = tempfile::tempdir().unwrap();
    write_images(tmp.path(), 7);
    let a = lines(&run_expect(
        predict(&["--batch-size", "1", "--workers", "1"]).arg(tmp.path()),
        0,
    ));
    let b = lines(&run_expect(
        predict(&["--batch-size", "5", "--workers", "3"]).arg(tmp.path()),
        0,
    ));
    assert_eq!(a.len(), 7);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.path, y.path);
        for (p, q) in x
            .prediction
            .as_ref()
            .unwrap()
            .iter()
            .zip(y.prediction.as_ref().unwrap())
        {
            assert!((p - q).abs() < 1e-4, "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn a_broken_image_in_the_middle_gets_an_error_line_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_images(tmp.path(), 5);
    // Truncate the middle one (a PNG) and make another a text file.
    let bytes = fs::read(&files[2]).unwrap();
    fs::write(&files[2], &bytes[..bytes.len() / 2]).unwrap();
    let text = tmp.path().join("notes.jpg");
    fs::write(&text, "not an image").unwrap();
    let out = run_expect(
        predict(&["--batch-size", "2"])
            .arg(&files[0])
            .arg(&files[1])
            .arg(&files[2])
            .arg(&text)
            .arg(&files[3])
            .arg(tmp.path().join("missing.png"))
            .arg(&files[4]),
        1,
    );
    let got = lines(&out);
    assert_eq!(got.len(), 7);
    let failed: Vec<usize> = (0..7).filter(|&i| got[i].error.is_some()).collect();
    assert_eq!(failed, vec![2, 3, 5]);
    for &i in &failed {
        assert!(got[i].prediction.is_none() && got[i].class.is_none());
        assert!(
            stderr_text(&out).contains(got[i].path.as_deref().unwrap()),
            "{}",
            stderr_text(&out)
        );
    }
    for i in [0, 1, 4, 6] {
        check_prediction(&got[i], CLASSES);
    }
    assert!(
        stderr_text(&out).contains("3 of 7 inputs failed"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn head_closing_the_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    write_images(tmp.path(), 30);
    let mut child = predict(&["--batch-size", "2"])
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the pipe is closed after one line.
    let out = child.wait_with_output().unwrap();
    let line: Line = serde_json::from_str(&first).unwrap();
    check_prediction(&line, CLASSES);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(stderr_without_kernel_notice(&out), "");
}

#[test]
fn sagemaker_lines_and_output_dir_files() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_images(&tmp.path().join("in/sub"), 3);
    let json = lines(&run_expect(predict(&[]).arg(tmp.path().join("in")), 0));
    let sm = run_expect(predict(&["--sagemaker"]).arg(tmp.path().join("in")), 0);
    let sm_lines: Vec<&str> = std::str::from_utf8(&sm.stdout).unwrap().lines().collect();
    assert_eq!(sm_lines.len(), 3);
    for (line, j) in sm_lines.iter().zip(&json) {
        assert!(
            line.starts_with("{\"prediction\": [") && line.ends_with("]}"),
            "{line}"
        );
        let parsed: SageMakerLine = serde_json::from_str(line).unwrap();
        assert_eq!(Some(parsed.prediction), j.prediction);
    }

    let outdir = tmp.path().join("out");
    let out = run_expect(
        predict(&["--output-dir"])
            .arg(&outdir)
            .arg(tmp.path().join("in"))
            .arg(&files[0]),
        0,
    );
    assert_eq!(stdout_text(&out), "");
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_str().unwrap();
        let body = fs::read_to_string(outdir.join("sub").join(format!("{name}.out"))).unwrap();
        assert_eq!(body, format!("{}\n", sm_lines[i]));
    }
    // The file named on its own gets its bare name.
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(outdir.join(format!("{name}.out")).is_file());
}

/// `<dir>/data.rec` + `.idx` with 6 records, id = 10 + i, label i % 3, and a
/// corrupt image in record 3.
fn write_rec(dir: &Path) -> PathBuf {
    let rec = dir.join("data.rec");
    let mut w = RecordWriter::new(Vec::new());
    let mut idx = IndexWriter::new(Vec::new());
    for i in 0..6usize {
        let image = if i == 3 {
            b"\x89PNG\r\n\x1a\ngarbage".to_vec()
        } else {
            image_bytes(i % CLASSES, i as u32, 32, 40, image::ImageFormat::Png)
        };
        let payload = pack_image_record(10 + i as u64, &[(i % CLASSES) as f32], false, &image);
        let offset = w.write_record(&payload).unwrap();
        idx.write(10 + i as u64, offset).unwrap();
    }
    fs::write(&rec, w.into_inner().unwrap()).unwrap();
    fs::write(dir.join("data.idx"), idx.into_inner().unwrap()).unwrap();
    rec
}

#[test]
fn records_with_and_without_an_index_and_the_evaluation_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = write_rec(tmp.path());
    let with_idx = run_expect(
        predict(&["--evaluate", "--top-k", "2", "--rec"]).arg(&rec),
        1,
    );
    fs::remove_file(tmp.path().join("data.idx")).unwrap();
    let scanned = run_expect(
        predict(&["--evaluate", "--top-k", "2", "--rec"]).arg(&rec),
        1,
    );
    assert_eq!(stdout_text(&with_idx), stdout_text(&scanned));

    let text = stdout_text(&with_idx);
    let all: Vec<&str> = text.lines().collect();
    assert_eq!(all.len(), 7);
    let preds: Vec<Line> = all[..6]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = preds.iter().map(|l| l.id.unwrap()).collect();
    assert_eq!(ids, vec![10, 11, 12, 13, 14, 15]);
    assert!(preds[3].error.is_some() && preds[3].offset.is_some());
    assert!(
        stderr_text(&with_idx).contains("record id 13"),
        "{}",
        stderr_text(&with_idx)
    );

    // The summary agrees exactly with the printed predictions.
    let summary: Summary = serde_json::from_str(all[6]).unwrap();
    assert_eq!(summary.kind, "summary");
    let mut confusion = vec![vec![0u64; CLASSES]; CLASSES];
    let mut top2 = 0;
    for l in preds.iter().filter(|l| l.error.is_none()) {
        check_prediction(l, 2);
        let t = l.true_class.unwrap() as usize;
        assert_eq!(t as u64, (l.id.unwrap() - 10) % 3);
        confusion[t][l.class.unwrap()] += 1;
        top2 += l.top_k.as_ref().unwrap().iter().any(|r| r.class == t) as u64;
    }
    assert_eq!(summary.confusion_matrix, confusion);
    assert_eq!((summary.images, summary.errors, summary.top_k), (5, 1, 2));
    let correct: u64 = (0..CLASSES).map(|c| confusion[c][c]).sum();
    assert_eq!(summary.accuracy, Some(correct as f64 / 5.0));
    assert_eq!(summary.top_k_accuracy, Some(top2 as f64 / 5.0));
    for (c, s) in summary.per_class.iter().enumerate() {
        assert_eq!(s.class, c);
        assert_eq!(s.label.as_deref(), Some(["red", "green", "blue"][c]));
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        assert_eq!(s.support, support);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        assert_eq!(s.recall, ratio(confusion[c][c], support));
        assert_eq!(s.precision, ratio(confusion[c][c], predicted));
    }
}

#[test]
fn lst_input_carries_true_classes_and_records_out_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write_images(&root.join("a"), 4);
    let lst = tmp.path().join("x.lst");
    fs::write(
        &lst,
        "0\t0.000000\ta/0_00.png\n1\t1.000000\ta/1_01.jpg\n5\t2.000000\ta/2_02.png\n",
    )
    .unwrap();
    let out = run_expect(predict(&["--lst"]).arg(&lst).arg("--root").arg(&root), 0);
    let got = lines(&out);
    let summary: Vec<(String, u64)> = got
        .iter()
        .map(|l| (l.path.clone().unwrap(), l.true_class.unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a/0_00.png".to_string(), 0),
            ("a/1_01.jpg".to_string(), 1),
            ("a/2_02.png".to_string(), 2)
        ]
    );
    let outdir = tmp.path().join("o");
    run_expect(
        predict(&["--lst"])
            .arg(&lst)
            .arg("--root")
            .arg(&root)
            .arg("--output-dir")
            .arg(&outdir),
        0,
    );
    assert!(outdir.join("a/1_01.jpg.out").is_file());

    // A malformed row is a fatal error naming its line, before any output.
    fs::write(&lst, "0\t0\ta/0_00.png\nnot a row\n").unwrap();
    let out = run_expect(predict(&["--lst"]).arg(&lst).arg("--root").arg(&root), 2);
    assert_eq!(stdout_text(&out), "");
    assert!(
        stderr_text(&out).contains("line 2"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn squash_and_crop_differ_on_a_non_square_image() {
    let tmp = tempfile::tempdir().unwrap();
    // Left half red, right half blue, 96×32: the centre crop sees a different mix.
    let img = image::RgbImage::from_fn(96, 32, |x, _| {
        if x < 24 {
            image::Rgb([250, 0, 0])
        } else {
            image::Rgb([0, 0, 250])
        }
    });
    let p = tmp.path().join("wide.png");
    img.save(&p).unwrap();
    let crop = lines(&run_expect(predict(&[]).arg(&p), 0));
    let squash = lines(&run_expect(predict(&["--squash"]).arg(&p), 0));
    assert_ne!(crop[0].prediction, squash[0].prediction);
}

/// Fashion-MNIST's native size: a model with image_shape 3×28×28 predicts 28×28
/// greyscale PNGs (expanded to RGB) without resizing, and upscales smaller ones.
#[test]
fn a_28x28_model_predicts_28x28_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m28");
    fs::create_dir_all(&dir).unwrap();
    let device = Default::default();
    let model = ResNetConfig::new(18, CLASSES).init::<CpuBackend>(&device);
    resnet::weights::save_safetensors(&model, &resnet::artifact::weights_path(&dir)).unwrap();
    let mut cfg = artifact_config(CLASSES);
    cfg.image_shape = [3, 28, 28];
    cfg.resize = None;
    cfg.save(&dir).unwrap();
    let img =
        image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 5) % 256) as u8]));
    let grey = tmp.path().join("grey28.png");
    img.save(&grey).unwrap();
    let small = tmp.path().join("small.png");
    fs::write(&small, image_bytes(1, 3, 20, 14, image::ImageFormat::Png)).unwrap();
    let out = run_expect(
        tool("recpredict")
            .arg("-m")
            .arg(&dir)
            .args(["--device", "cpu", "--top-k", "3"])
            .arg(&grey)
            .arg(&small),
        0,
    );
    let got = lines(&out);
    assert_eq!(got.len(), 2);
    for l in &got {
        check_prediction(l, 3);
    }
    assert!(
        stderr_text(&out).contains("1 image(s) smaller than 28x28 were upscaled"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn model_problems_are_fatal_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    fs::write(&img, image_bytes(0, 0, 32, 32, image::ImageFormat::Png)).unwrap();
    let try_model = |dir: &Path| {
        let out = run_expect(
            tool("recpredict")
                .arg("-m")
                .arg(dir)
                .args(["--device", "cpu"])
                .arg(&img),
            2,
        );
        assert_eq!(stdout_text(&out), "");
        stderr_text(&out)
    };

    let err = try_model(&tmp.path().join("nope"));
    assert!(err.contains("config.json"), "{err}");

    let dir = tmp.path().join("future");
    fs::create_dir_all(&dir).unwrap();
    let mut cfg = serde_json::to_value(artifact_config(CLASSES)).unwrap();
    cfg["format_version"] = 99.into();
    fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = try_model(&dir);
    assert!(err.contains("format_version 99"), "{err}");

    let dir = tmp.path().join("noweights");
    fs::create_dir_all(&dir).unwrap();
    artifact_config(CLASSES).save(&dir).unwrap();
    let err = try_model(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not found"),
        "{err}"
    );

    fs::write(resnet::artifact::weights_path(&dir), b"garbage").unwrap();
    let err = try_model(&dir);
    assert!(err.contains("cannot load the model weights"), "{err}");

    let dir = tmp.path().join("mismatch");
    fs::create_dir_all(&dir).unwrap();
    write_artifact(&dir, CLASSES, 2);
    let err = try_model(&dir);
    assert!(err.contains("cannot load the model weights"), "{err}");
}

#[test]
fn usage_errors_are_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    fs::write(&img, image_bytes(0, 0, 32, 32, image::ImageFormat::Png)).unwrap();
    let cases: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("--evaluate needs true labels", vec!["--evaluate"]),
        ("more than the model's 3 classes", vec!["--top-k", "4"]),
    ]);
    for (msg, args) in cases {
        let out = run_expect(predict(&args).arg(&img), 2);
        assert!(
            stderr_text(&out).contains(msg),
            "{msg}: {}",
            stderr_text(&out)
        );
    }
    let out = run_expect(
        tool("recpredict")
            .arg("-m")
            .arg(model_dir())
            .args(["--device", "tpu"])
            .arg(&img),
        2,
    );
    assert!(
        stderr_text(&out).contains("--device tpu"),
        "{}",
        stderr_text(&out)
    );
}

/// `--workers 0` is one decoding thread per CPU (the default), as in rectrain.
#[test]
fn workers_0_is_one_per_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    write_images(tmp.path(), 3);
    let zero = lines(&run_expect(predict(&["--workers", "0"]).arg(tmp.path()), 0));
    let default = lines(&run_expect(predict(&[]).arg(tmp.path()), 0));
    assert_eq!(zero.len(), 3);
    for (a, b) in zero.iter().zip(&default) {
        assert_eq!(a.path, b.path);
        assert_eq!(a.prediction, b.prediction);
    }
}

/// Without `--root`, a .lst's paths are relative to the .lst's folder, as rectrain's
/// `--train-lst` without `--train-root`.
#[test]
fn lst_without_root_reads_images_beside_the_lst() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    write_images(&dir.join("a"), 3);
    let lst = dir.join("x.lst");
    fs::write(
        &lst,
        "0\t0.000000\ta/0_00.png\n1\t1.000000\ta/1_01.jpg\n2\t2.000000\ta/2_02.png\n",
    )
    .unwrap();
    let with_root = run_expect(predict(&["--lst"]).arg(&lst).arg("--root").arg(&dir), 0);
    let without = run_expect(predict(&["--lst"]).arg(&lst), 0);
    assert_eq!(stdout_text(&without), stdout_text(&with_root));
    let got = lines(&without);
    assert_eq!(got.len(), 3);
    for (i, l) in got.iter().enumerate() {
        check_prediction(l, CLASSES);
        assert_eq!(l.true_class, Some(i as u64));
    }
    // A bare file name: the images are relative to the working directory.
    let here = run_expect(predict(&["--lst", "x.lst"]).current_dir(&dir), 0);
    assert_eq!(stdout_text(&here), stdout_text(&with_root));
    // Not beside the .lst: every image fails (exit 1), named on stderr.
    fs::rename(dir.join("a"), tmp.path().join("a")).unwrap();
    let out = run_expect(predict(&["--lst"]).arg(&lst), 1);
    assert!(lines(&out).iter().all(|l| l.error.is_some()));
}
