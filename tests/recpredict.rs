//! recpredict's command-line behaviour with the real binaries and a model trained by
//! the real `rectrain` (once, shared through a `OnceLock`) at Fashion-MNIST's native
//! 3×28×28: paths on stdin, a broken image in the middle of a `.lst`, `| head -1`,
//! and the fatal errors; and a multi-label model (`im2rec --pack-label`, `rectrain
//! --multi-label 1`) evaluated from its `.rec` and its `.lst`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pipeline_tests::{
    check_code, dark_light_model, list_and_pack, run_expect, run_with_stdin, spawn_piped,
    stderr_text, stderr_without_kernel_notice, stdout_text, tool, train_tiny,
};
use serde::Deserialize;

/// A prediction or error line, parsed strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    path: Option<String>,
    prediction: Option<Vec<f32>>,
    class: Option<usize>,
    label: Option<String>,
    probability: Option<f32>,
    /// An array of classes on a prediction line, the k on the summary line.
    top_k: Option<serde_json::Value>,
    true_class: Option<u64>,
    error: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    images: Option<u64>,
    errors: Option<u64>,
    accuracy: Option<f64>,
    top_k_accuracy: Option<f64>,
    per_class: Option<serde_json::Value>,
    confusion_matrix: Option<Vec<Vec<u64>>>,
}

struct Trained {
    _dir: tempfile::TempDir,
    images: PathBuf,
    model: PathBuf,
}

/// Two classes (dark, light), six images each; one short epoch is enough here.
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (images, model) = dark_light_model(dir.path());
        Trained {
            _dir: dir,
            images,
            model,
        }
    })
}

fn recpredict() -> std::process::Command {
    pipeline_tests::recpredict(&trained().model)
}

fn lines(text: &str) -> Vec<Line> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn paths_on_stdin_are_predicted_in_order() {
    let t = trained();
    let paths = [
        t.images.join("light/3.png"),
        t.images.join("dark/0.png"),
        t.images.join("light/3.png"),
    ];
    let input: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    let mut cmd = recpredict();
    cmd.args(["--batch-size", "2", "-"]);
    let out = run_with_stdin(&mut cmd, input.as_bytes());
    check_code(&cmd, &out, 0);
    let got = lines(&stdout_text(&out));
    assert_eq!(got.len(), 3);
    for (l, p) in got.iter().zip(&paths) {
        assert_eq!(l.path.as_deref(), p.to_str());
        let probs = l.prediction.as_ref().unwrap();
        assert_eq!(probs.len(), 2);
        assert_eq!(l.probability, Some(probs[l.class.unwrap()]));
        assert_eq!(l.top_k.as_ref().unwrap().as_array().unwrap().len(), 2);
        assert!(l.label.is_some() || l.label.is_none());
        assert!(l.kind.is_none() && l.true_class.is_none());
    }
    assert_eq!(got[0].prediction, got[2].prediction);
}

#[test]
fn a_broken_image_in_a_list_is_one_error_line_and_exit_1() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("x")).unwrap();
    for (i, src) in ["dark/1.png", "light/1.png", "dark/2.png"]
        .iter()
        .enumerate()
    {
        fs::copy(t.images.join(src), root.join(format!("x/{i}.png"))).unwrap();
    }
    let bytes = fs::read(root.join("x/1.png")).unwrap();
    fs::write(root.join("x/broken.png"), &bytes[..bytes.len() / 3]).unwrap();
    let lst = root.join("x.lst");
    fs::write(
        &lst,
        "0\t0.000000\tx/0.png\n1\t1.000000\tx/broken.png\n2\t1.000000\tx/1.png\n3\t0.000000\tx/2.png\n",
    )
    .unwrap();
    let out = run_expect(
        recpredict()
            .arg("--lst")
            .arg(&lst)
            .arg("--root")
            .arg(root)
            .arg("--evaluate"),
        1,
    );
    let got = lines(&stdout_text(&out));
    assert_eq!(got.len(), 5);
    assert_eq!(got[1].path.as_deref(), Some("x/broken.png"));
    assert!(got[1].error.is_some() && got[1].prediction.is_none());
    for i in [0, 2, 3] {
        assert!(got[i].error.is_none());
        assert_eq!(got[i].prediction.as_ref().unwrap().len(), 2);
    }
    assert_eq!(got[4].kind.as_deref(), Some("summary"));
    assert_eq!((got[4].images, got[4].errors), (Some(3), Some(1)));
    assert_eq!(got[4].top_k, Some(serde_json::json!(2)));
    let cm = got[4].confusion_matrix.as_ref().unwrap();
    assert_eq!(cm.iter().flatten().sum::<u64>(), 3);
    assert!(got[4].accuracy.is_some() && got[4].top_k_accuracy.is_some());
    assert!(got[4].per_class.is_some());
    let err = stderr_text(&out);
    assert!(err.contains("x/broken.png"), "{err}");
}

#[test]
fn recpredict_into_head_exits_quietly() {
    let t = trained();
    let mut child = spawn_piped(
        recpredict()
            .args(["--batch-size", "1"])
            .arg(&t.images)
            .arg(&t.images),
    );
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(first.contains("\"prediction\""), "{first}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(stderr_without_kernel_notice(&out), "");
}

#[test]
fn a_missing_or_incompatible_model_is_exit_2() {
    let t = trained();
    let img = t.images.join("dark/0.png");
    let tmp = tempfile::tempdir().unwrap();
    let out = run_expect(tool("recpredict").arg("-m").arg(tmp.path()).arg(&img), 2);
    assert!(
        stderr_text(&out).contains("config.json"),
        "{}",
        stderr_text(&out)
    );

    // A copy of the trained model whose config claims more classes than its weights.
    let copy = tmp.path().join("model");
    fs::create_dir_all(&copy).unwrap();
    fs::copy(
        t.model.join("model.safetensors"),
        copy.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.model.join("config.json")).unwrap()).unwrap();
    config["num_classes"] = 5.into();
    config["class_names"] = serde_json::Value::Null;
    fs::write(copy.join("config.json"), config.to_string()).unwrap();
    let out = run_expect(pipeline_tests::recpredict(&copy).arg(&img), 2);
    assert_eq!(stdout_text(&out), "");
    assert!(
        stderr_text(&out).contains("cannot load the model weights"),
        "{}",
        stderr_text(&out)
    );
}

/// A prediction line of a multi-label model, parsed strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiLabelLine {
    id: Option<u64>,
    path: Option<String>,
    prediction: Vec<f32>,
    class: usize,
    label: Option<String>,
    probability: f32,
    top_k: Vec<serde_json::Value>,
    true_class: Vec<f32>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Prf {
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiLabelClass {
    class: usize,
    label: Option<String>,
    precision: Option<f64>,
    recall: Option<f64>,
    f1: Option<f64>,
    support: u64,
    predicted: u64,
}

/// The multi-label `--evaluate` summary, parsed strictly.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiLabelSummary {
    #[serde(rename = "type")]
    kind: String,
    multi_label: bool,
    images: u64,
    errors: u64,
    threshold: f64,
    accuracy: Option<f64>,
    exact_match_accuracy: Option<f64>,
    hamming_loss: Option<f64>,
    micro: Prf,
    #[serde(rename = "macro")]
    macro_avg: Prf,
    per_class: Vec<MultiLabelClass>,
}

const ML_CLASSES: [&str; 3] = ["red", "green", "blue"];

/// A 28×28 image whose channel c is bright exactly when class c is present.
fn write_multi_label_image(path: &Path, labels: [u8; 3], seed: u32) {
    let img = image::RgbImage::from_fn(28, 28, |x, y| {
        let t = ((x * 5 + y * 3 + seed * 13) % 24) as u8;
        image::Rgb(labels.map(|on| if on == 1 { 215 + t } else { 10 + t }))
    });
    img.save(path).unwrap();
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-12,
        (a, b) => a == b,
    }
}

/// The multi-label summary recomputed from the prediction lines (p > 0.5 predicted,
/// label > 0.5 true), with scikit-learn's definitions.
fn expected_multi_label(lines: &[MultiLabelLine]) -> MultiLabelSummary {
    let n = ML_CLASSES.len();
    let (mut tp, mut fp, mut fn_) = (vec![0u64; n], vec![0u64; n], vec![0u64; n]);
    let (mut exact, mut wrong) = (0, 0);
    for l in lines {
        let mut all = true;
        for c in 0..n {
            let (t, p) = (l.true_class[c] > 0.5, l.prediction[c] > 0.5);
            tp[c] += u64::from(t && p);
            fp[c] += u64::from(!t && p);
            fn_[c] += u64::from(t && !p);
            if t != p {
                all = false;
                wrong += 1;
            }
        }
        exact += u64::from(all);
    }
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let prf = |tp: u64, fp: u64, fn_: u64| Prf {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
    };
    let per: Vec<Prf> = (0..n).map(|c| prf(tp[c], fp[c], fn_[c])).collect();
    let mean = |f: fn(&Prf) -> Option<f64>| {
        Some(per.iter().map(|p| f(p).unwrap_or(0.0)).sum::<f64>() / n as f64)
    };
    let images = lines.len() as u64;
    let decisions = images * n as u64;
    MultiLabelSummary {
        kind: "summary".into(),
        multi_label: true,
        images,
        errors: 0,
        threshold: 0.5,
        accuracy: ratio(decisions - wrong, decisions),
        exact_match_accuracy: ratio(exact, images),
        hamming_loss: ratio(wrong, decisions),
        micro: prf(tp.iter().sum(), fp.iter().sum(), fn_.iter().sum()),
        macro_avg: Prf {
            precision: mean(|p| p.precision),
            recall: mean(|p| p.recall),
            f1: mean(|p| p.f1),
        },
        per_class: (0..n)
            .map(|c| MultiLabelClass {
                class: c,
                label: Some(ML_CLASSES[c].to_string()),
                precision: per[c].precision,
                recall: per[c].recall,
                f1: per[c].f1,
                support: tp[c] + fn_[c],
                predicted: tp[c] + fp[c],
            })
            .collect(),
    }
}

fn assert_summaries_match(got: &MultiLabelSummary, want: &MultiLabelSummary) {
    let same = |a: &Prf, b: &Prf| {
        close(a.precision, b.precision) && close(a.recall, b.recall) && close(a.f1, b.f1)
    };
    assert!(
        got.kind == want.kind
            && got.multi_label
            && (got.images, got.errors, got.threshold) == (want.images, want.errors, 0.5)
            && close(got.accuracy, want.accuracy)
            && close(got.exact_match_accuracy, want.exact_match_accuracy)
            && close(got.hamming_loss, want.hamming_loss)
            && same(&got.micro, &want.micro)
            && same(&got.macro_avg, &want.macro_avg)
            && got.per_class.len() == want.per_class.len()
            && got.per_class.iter().zip(&want.per_class).all(|(a, b)| {
                (a.class, &a.label, a.support, a.predicted)
                    == (b.class, &b.label, b.support, b.predicted)
                    && close(a.precision, b.precision)
                    && close(a.recall, b.recall)
                    && close(a.f1, b.f1)
            }),
        "got {got:#?}\nwant {want:#?}"
    );
}

/// Split the output into prediction lines and the summary (the last line).
fn multi_label_output(text: &str) -> (Vec<MultiLabelLine>, MultiLabelSummary) {
    let all: Vec<&str> = text.lines().collect();
    let (last, preds) = all.split_last().expect("output lines");
    let preds = preds
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    (preds, summary)
}

/// im2rec --pack-label → rectrain --multi-label 1 → recpredict --evaluate, from the
/// `.rec` and from the `.lst`: the summary is exactly what the printed probabilities
/// and true label vectors give, and its accuracy is rectrain's validation accuracy.
#[test]
fn multi_label_model_evaluates_from_records_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fs::create_dir_all(&images).unwrap();
    // Every combination of the three colours, twice (16 images).
    let mut lst = String::new();
    for i in 0..16u32 {
        let bits = i % 8;
        let labels = [
            (bits & 1) as u8,
            (bits >> 1 & 1) as u8,
            (bits >> 2 & 1) as u8,
        ];
        let name = format!("{i:02}.png");
        write_multi_label_image(&images.join(&name), labels, i);
        // NB-ML writes the multi-hot columns as integers.
        lst.push_str(&format!(
            "{i}\t{}\t{}\t{}\t{name}\n",
            labels[0], labels[1], labels[2]
        ));
    }
    let prefix = dir.path().join("ml");
    fs::write(dir.path().join("ml.lst"), &lst).unwrap();
    fs::write(dir.path().join("ml.classes"), "red\ngreen\nblue\n").unwrap();
    // --pass-through: the records hold the PNG files, so records and list give the
    // same pixels.
    run_expect(
        tool("im2rec")
            .args(["--pack-label", "--pass-through"])
            .arg(&prefix)
            .arg(&images),
        0,
    );
    let rec = dir.path().join("ml.rec");
    let model = dir.path().join("model");
    train_tiny(
        &rec,
        &rec,
        &model,
        &[
            "--multi-label",
            "1",
            "--image-shape",
            "3,28,28",
            "--epochs",
            "1",
            "--mini-batch-size",
            "8",
        ],
    );
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["multi_label"], true);
    assert_eq!(config["num_classes"], 3);

    let predict = || {
        let mut cmd = pipeline_tests::recpredict(&model);
        cmd.arg("--evaluate");
        cmd
    };
    let by_rec = run_expect(predict().arg("--rec").arg(&rec), 0);
    let (preds, summary) = multi_label_output(&stdout_text(&by_rec));
    assert_eq!(preds.len(), 16);
    for (i, p) in preds.iter().enumerate() {
        let bits = i as u32 % 8;
        let want: Vec<f32> = (0..3).map(|c| (bits >> c & 1) as f32).collect();
        assert_eq!((p.id, p.path.as_deref()), (Some(i as u64), None));
        assert_eq!(p.true_class, want);
        assert_eq!(p.prediction.len(), 3);
        // Independent sigmoids, not a softmax.
        assert!(p.prediction.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert_eq!(p.probability, p.prediction[p.class]);
        assert_eq!(p.label.as_deref(), Some(ML_CLASSES[p.class]));
        assert_eq!(p.top_k.len(), 3);
    }
    assert_summaries_match(&summary, &expected_multi_label(&preds));
    // 1 − Hamming loss is rectrain's multi-label validation accuracy on the same
    // records (within one decision, for a logit of exactly 0).
    let best = config["training"]["best_validation_accuracy"]
        .as_f64()
        .unwrap();
    let accuracy = summary.accuracy.unwrap();
    assert!(
        (accuracy - best).abs() <= 1.0 / 48.0 + 1e-9,
        "recpredict {accuracy} vs rectrain {best}"
    );
    assert!(close(Some(accuracy), summary.hamming_loss.map(|h| 1.0 - h)));

    let by_lst = run_expect(
        predict()
            .arg("--lst")
            .arg(dir.path().join("ml.lst"))
            .arg("--root")
            .arg(&images),
        0,
    );
    let (lst_preds, lst_summary) = multi_label_output(&stdout_text(&by_lst));
    assert_eq!(lst_summary, summary);
    for (a, b) in lst_preds.iter().zip(&preds) {
        assert_eq!(
            (&a.prediction, &a.true_class),
            (&b.prediction, &b.true_class)
        );
    }

    // A row whose label vector does not fit the model is predicted, reported and
    // left out of the summary (exit 1).
    let bad = dir.path().join("bad.lst");
    fs::write(
        &bad,
        "0\t1\t0\t1\t00.png\n1\t1\t0\t00.png\n2\t0\t1\t2\t01.png\n",
    )
    .unwrap();
    let out = run_expect(
        predict().arg("--lst").arg(&bad).arg("--root").arg(&images),
        1,
    );
    let (bad_preds, bad_summary) = multi_label_output(&stdout_text(&out));
    assert_eq!(bad_preds.len(), 3);
    assert_eq!((bad_summary.images, bad_summary.errors), (1, 2));
    let err = stderr_text(&out);
    assert!(err.contains("but the model has 3 classes"), "{err}");
    assert!(err.contains("multi-hot labels must be in [0, 1]"), "{err}");
}

/// A file name that is not UTF-8, given on stdin between two ordinary ones: all three
/// are predicted, in order (stdin is read as bytes).
#[cfg(unix)]
#[test]
fn paths_on_stdin_need_not_be_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join(std::ffi::OsStr::from_bytes(b"a\xff.png"));
    fs::copy(t.images.join("light/2.png"), &odd).unwrap();
    let mut input = Vec::new();
    for p in [
        t.images.join("dark/0.png"),
        odd,
        t.images.join("dark/1.png"),
    ] {
        input.extend_from_slice(p.as_os_str().as_bytes());
        input.push(b'\n');
    }
    let mut cmd = recpredict();
    cmd.arg("-");
    let out = run_with_stdin(&mut cmd, &input);
    check_code(&cmd, &out, 0);
    let got: Vec<serde_json::Value> = stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got
        .iter()
        .all(|l| l["prediction"].as_array().unwrap().len() == 2));
    assert!(got[1]["path_bytes"].is_array(), "{}", got[1]);
    assert_eq!(stderr_without_kernel_notice(&out), "");
}

/// Records of a `.rec` and what recpredict prints for them, as JSON values.
fn predict_rec(rec: &Path, code: i32) -> (Vec<serde_json::Value>, String) {
    let out = run_expect(recpredict().arg("--rec").arg(rec), code);
    let lines = stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr_text(&out))
}

/// A damaged record costs only itself: with the `.idx`, a record whose magic is
/// overwritten is one error line and the others are predicted; without it, a `.rec`
/// cut short gives every whole record before the cut and one error line naming where
/// the reading stopped. Both exit 1.
#[test]
fn damaged_records_are_error_lines_and_the_rest_is_predicted() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let rec = list_and_pack(&tmp.path().join("d"), &t.images, &[], &[]);
    let (all, err) = predict_rec(&rec, 0);
    assert_eq!((all.len(), err.as_str()), (12, ""));
    let offsets: Vec<u64> = fs::read_to_string(rec.with_extension("idx"))
        .unwrap()
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    let mut bytes = fs::read(&rec).unwrap();

    // Record 5's magic overwritten; the .idx beside it still lists it.
    let bad = tmp.path().join("bad.rec");
    let mut damaged = bytes.clone();
    let at = offsets[5] as usize;
    damaged[at..at + 4].copy_from_slice(b"XXXX");
    fs::write(&bad, &damaged).unwrap();
    fs::copy(rec.with_extension("idx"), bad.with_extension("idx")).unwrap();
    let (got, err) = predict_rec(&bad, 1);
    assert_eq!(got.len(), 12);
    for (i, (l, a)) in got.iter().zip(&all).enumerate() {
        if i == 5 {
            assert!(
                l["error"].is_string() && l.get("prediction").is_none(),
                "{l}"
            );
            assert_eq!(l["offset"], offsets[5]);
        } else {
            assert_eq!(l, a);
        }
    }
    assert!(
        err.contains(&format!("byte offset {}", offsets[5])),
        "{err}"
    );
    assert!(err.contains("1 of 12 inputs failed"), "{err}");

    // Cut in the middle of record 8, no .idx: records 0..8 and one error line.
    bytes.truncate(offsets[8] as usize + 20);
    let cut = tmp.path().join("cut.rec");
    fs::write(&cut, &bytes).unwrap();
    let (got, err) = predict_rec(&cut, 1);
    assert_eq!(got.len(), 9, "{got:?}");
    assert_eq!(&got[..8], &all[..8]);
    assert_eq!(got[8]["offset"], offsets[8]);
    let msg = got[8]["error"].as_str().unwrap();
    assert!(
        msg.contains("the rest of the file (20 bytes from here)"),
        "{msg}"
    );
    assert!(err.contains("1 of 9 inputs failed"), "{err}");
}

/// Paths that arrive slowly on stdin are predicted as they come: the first line is
/// out while recpredict is still waiting for the second path.
#[test]
fn paths_on_stdin_stream() {
    use std::io::Write as _;
    use std::sync::mpsc;
    use std::time::Duration;
    let t = trained();
    let mut child = spawn_piped(recpredict().args(["--line-buffered", "-"]));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", t.images.join("dark/3.png").display()).unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Generous: the model loads first. Without streaming this never comes while
    // stdin stays open.
    let first = rx.recv_timeout(Duration::from_secs(120));
    writeln!(stdin, "{}", t.images.join("light/3.png").display()).unwrap();
    drop(stdin);
    let first = first.expect("the first prediction came before stdin was closed");
    assert!(
        first.contains("dark/3.png") && first.contains("\"prediction\""),
        "{first}"
    );
    let second = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(second.contains("light/3.png"), "{second}");
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
}

/// With --evaluate, an image whose label does not fit the model is predicted but
/// counts as failed, once: the count on stderr is of inputs.
#[test]
fn evaluate_counts_each_failed_input_once() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let lst = tmp.path().join("l.lst");
    fs::write(
        &lst,
        "0\t0.000000\tdark/0.png\n1\t7.000000\tlight/0.png\n2\t1.000000\tlight/1.png\n3\t0.000000\tmissing.png\n",
    )
    .unwrap();
    let out = run_expect(
        recpredict()
            .arg("--lst")
            .arg(&lst)
            .arg("--root")
            .arg(&t.images)
            .arg("--evaluate"),
        1,
    );
    let err = stderr_text(&out);
    assert!(err.contains("2 of 4 inputs failed"), "{err}");
    assert_eq!(err.matches("light/0.png").count(), 1, "{err}");
}

/// A model directory whose preprocessing cannot work, and a batch too large for one
/// tensor, are usage errors before anything is predicted.
#[test]
fn unusable_preprocessing_or_batch_is_exit_2() {
    let t = trained();
    let img = t.images.join("dark/0.png");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("model");
    fs::create_dir_all(&copy).unwrap();
    fs::copy(
        t.model.join("model.safetensors"),
        copy.join("model.safetensors"),
    )
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.model.join("config.json")).unwrap()).unwrap();
    for (field, value, says) in [
        (
            "normalization",
            serde_json::json!({"mean": [0.5, 0.5, 0.5], "std": [0.0, 1.0, 1.0]}),
            "std must be positive",
        ),
        ("image_shape", serde_json::json!([1, 28, 28]), "3 channels"),
        ("resize", serde_json::json!(0), "resize must be positive"),
    ] {
        let mut c = config.clone();
        c[field] = value;
        fs::write(copy.join("config.json"), c.to_string()).unwrap();
        let out = run_expect(pipeline_tests::recpredict(&copy).arg(&img), 2);
        assert_eq!(stdout_text(&out), "");
        assert!(
            stderr_text(&out).contains(says),
            "{field}: {}",
            stderr_text(&out)
        );
    }
    let out = run_expect(
        recpredict()
            .args(["--batch-size", "18446744073709551615"])
            .arg(&img),
        2,
    );
    assert!(
        stderr_text(&out).contains("more than one tensor can"),
        "{}",
        stderr_text(&out)
    );
}

/// A `.lst` is read as im2rec.py's read_list reads it: lone CR line ends included.
#[test]
fn lists_with_cr_line_ends_are_read() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let lst = tmp.path().join("cr.lst");
    fs::write(&lst, "0\t0\tdark/0.png\r1\t1\tlight/0.png\r").unwrap();
    let out = run_expect(
        recpredict()
            .arg("--lst")
            .arg(&lst)
            .arg("--root")
            .arg(&t.images),
        0,
    );
    let got = lines(&stdout_text(&out));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path.as_deref(), Some("dark/0.png"));
    assert_eq!(got[1].path.as_deref(), Some("light/0.png"));
    assert_eq!((got[0].true_class, got[1].true_class), (Some(0), Some(1)));
}
