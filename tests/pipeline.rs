//! The whole pipeline with the real binaries: im2list → im2rec → rectrain → recpredict
//! on generated images of three visually distinct classes. The model is trained once
//! (a `OnceLock`) and shared by the tests of this file.
//!
//! Every recpredict output line is parsed strictly (`deny_unknown_fields`), so a
//! renamed or unexpected field fails here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pipeline_tests::wire::{parse, ClassStats, Prediction, Summary};
use pipeline_tests::{list_and_pack, run_expect, stderr_text, stdout_text, tool, train_tiny};
use serde::Deserialize;

const CLASSES: [&str; 3] = ["blue", "green", "red"];
const PER_CLASS: usize = 8;

/// The trained model and the data it was made from.
struct Trained {
    _dir: tempfile::TempDir,
    images: PathBuf,
    lst: PathBuf,
    rec: PathBuf,
    model: PathBuf,
}

/// Solid, bright class colours with a faint texture: trivially separable.
fn write_image(path: &Path, class: usize, seed: u32) {
    let rgb = [[30u8, 40, 230], [30, 220, 40], [230, 30, 40]][class];
    let img = image::RgbImage::from_fn(40, 40, |x, y| {
        let t = ((x * 3 + y * 5 + seed * 11) % 16) as u8;
        image::Rgb(rgb.map(|c| c.saturating_add(t)))
    });
    img.save(path).unwrap();
}

fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        for (c, name) in CLASSES.iter().enumerate() {
            fs::create_dir_all(images.join(name)).unwrap();
            for i in 0..PER_CLASS {
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                write_image(&images.join(name).join(format!("{i}.{ext}")), c, i as u32);
            }
        }
        // --pass-through: the records hold the original files, so predicting the
        // records and the image files must give identical numbers.
        let rec = list_and_pack(&dir.path().join("all"), &images, &[], &["--pass-through"]);
        assert!(rec.is_file() && dir.path().join("all.idx").is_file());
        let model = dir.path().join("model");
        let classes = dir.path().join("all.classes");
        let out = train_tiny(
            &rec,
            &rec,
            &model,
            &[
                "--classes",
                classes.to_str().unwrap(),
                "--image-shape",
                "3,32,32",
                "--epochs",
                "2",
                "--mini-batch-size",
                "8",
                "--seed",
                "7",
            ],
        );
        assert!(!stdout_text(&out).is_empty());
        Trained {
            images,
            lst: dir.path().join("all.lst"),
            rec,
            model,
            _dir: dir,
        }
    })
}

fn recpredict(args: &[&str]) -> std::process::Command {
    let mut cmd = pipeline_tests::recpredict(&trained().model);
    cmd.args(args);
    cmd
}

/// The summary recomputed from the prediction lines. Top-k is MXNet's rule (as rectrain
/// logs it): the true class counts when fewer than k classes are strictly more probable,
/// so a class tied with the k-th counts too.
fn expected_summary(preds: &[Prediction], k: usize) -> Summary {
    let n = CLASSES.len();
    let mut confusion = vec![vec![0u64; n]; n];
    let mut hits = 0;
    for p in preds {
        let t = p.true_class.unwrap() as usize;
        confusion[t][p.class] += 1;
        let more_probable = p
            .prediction
            .iter()
            .filter(|&&q| q > p.prediction[t])
            .count();
        hits += (more_probable < k) as u64;
    }
    let images = preds.len() as u64;
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let correct = (0..n).map(|c| confusion[c][c]).sum();
    Summary {
        kind: "summary".into(),
        images,
        errors: 0,
        accuracy: ratio(correct, images),
        top_k: k,
        top_k_accuracy: ratio(hits, images),
        per_class: (0..n)
            .map(|c| {
                let support = confusion[c].iter().sum();
                let predicted = confusion.iter().map(|r| r[c]).sum();
                ClassStats {
                    class: c,
                    label: Some(CLASSES[c].to_string()),
                    precision: ratio(confusion[c][c], predicted),
                    recall: ratio(confusion[c][c], support),
                    support,
                }
            })
            .collect(),
        confusion_matrix: confusion,
    }
}

#[test]
fn records_lists_and_files_give_the_same_predictions() {
    let t = trained();
    let by_rec = run_expect(recpredict(&["--rec"]).arg(&t.rec), 0);
    let by_lst = run_expect(
        recpredict(&["--lst"])
            .arg(&t.lst)
            .arg("--root")
            .arg(&t.images),
        0,
    );
    let by_dir = run_expect(recpredict(&[]).arg(&t.images), 0);
    let (rec, _) = parse(&stdout_text(&by_rec));
    let (lst, _) = parse(&stdout_text(&by_lst));
    let (dir, _) = parse(&stdout_text(&by_dir));
    assert_eq!(rec.len(), CLASSES.len() * PER_CLASS);
    assert_eq!(lst.len(), rec.len());
    assert_eq!(dir.len(), rec.len());

    // The .lst rows, by index.
    let rows: BTreeMap<u64, im2list::lst::LstEntry> =
        im2list::lst::read_entries(std::io::BufReader::new(fs::File::open(&t.lst).unwrap()))
            .map(|e| {
                let e = e.unwrap().unwrap();
                (e.index, e)
            })
            .collect();
    let by_path: BTreeMap<String, &Prediction> = dir
        .iter()
        .map(|p| {
            let rel = Path::new(p.path.as_ref().unwrap())
                .strip_prefix(&t.images)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (rel, p)
        })
        .collect();
    for (r, l) in rec.iter().zip(&lst) {
        let row = &rows[&r.id.unwrap()];
        assert_eq!(l.path.as_deref(), Some(row.path.as_str()));
        assert_eq!(r.true_class, Some(row.labels[0] as u64));
        assert_eq!(l.true_class, r.true_class);
        // Same bytes, same preprocessing, same model: the same numbers.
        assert_eq!(r.prediction, l.prediction);
        let d = by_path[&row.path];
        assert_eq!(d.prediction, r.prediction);
        assert_eq!(d.true_class, None);
        // The class names come from im2list's .classes through rectrain.
        assert_eq!(r.label.as_deref(), Some(CLASSES[r.class]));
        assert_eq!(r.probability, r.prediction[r.class]);
        assert_eq!(r.top_k.len(), 3);
        let sum: f32 = r.prediction.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4);
        // The class folder of the file is its true class.
        let folder = row.path.split('/').next().unwrap();
        assert_eq!(CLASSES[r.true_class.unwrap() as usize], folder);
    }
}

#[test]
fn evaluate_summary_agrees_with_the_lines_and_with_training() {
    let t = trained();
    let out = run_expect(
        recpredict(&["--rec"])
            .arg(&t.rec)
            .args(["--evaluate", "--top-k", "2"]),
        0,
    );
    let (preds, summary) = parse(&stdout_text(&out));
    let summary = summary.expect("a summary line");
    assert_eq!(summary, expected_summary(&preds, 2));
    // The summary is printed as a table only on a terminal.
    assert!(!stderr_text(&out).contains("confusion matrix"));

    let by_lst = run_expect(
        recpredict(&["--lst"])
            .arg(&t.lst)
            .arg("--root")
            .arg(&t.images)
            .args(["--evaluate", "--top-k", "2"]),
        0,
    );
    let (_, lst_summary) = parse(&stdout_text(&by_lst));
    assert_eq!(lst_summary, Some(summary.clone()));

    // Same data, same preprocessing and the best model: recpredict's accuracy is
    // rectrain's best validation accuracy (within one image, for float ties).
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.model.join("config.json")).unwrap()).unwrap();
    let best = config["training"]["best_validation_accuracy"]
        .as_f64()
        .unwrap();
    let accuracy = summary.accuracy.unwrap();
    assert!(
        (accuracy - best).abs() <= 1.0 / summary.images as f64 + 1e-9,
        "recpredict {accuracy} vs rectrain {best}"
    );
}

#[test]
fn sagemaker_and_batch_transform_outputs_from_records() {
    let t = trained();
    let json = run_expect(recpredict(&["--rec"]).arg(&t.rec), 0);
    let (preds, _) = parse(&stdout_text(&json));
    let sm = run_expect(recpredict(&["--sagemaker", "--rec"]).arg(&t.rec), 0);
    let text = stdout_text(&sm);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), preds.len());
    let out_dir = tempfile::tempdir().unwrap();
    let files = run_expect(
        recpredict(&["--output-dir"])
            .arg(out_dir.path())
            .arg("--rec")
            .arg(&t.rec),
        0,
    );
    assert_eq!(stdout_text(&files), "");
    for (line, p) in lines.iter().zip(&preds) {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Only {
            prediction: Vec<f32>,
        }
        let only: Only = serde_json::from_str(line).unwrap();
        assert_eq!(only.prediction, p.prediction);
        let body =
            fs::read_to_string(out_dir.path().join(format!("{}.out", p.id.unwrap()))).unwrap();
        assert_eq!(body, format!("{line}\n"));
    }
}

/// `--device`, `--precision-dtype` and `--workers` are `resnet::cli`'s shared groups: in
/// both rectrain and recpredict a bad value is a usage error (exit 2) whose text is the
/// very same line, and nothing is written on stdout.
#[test]
fn shared_flags_reject_bad_values_with_the_same_line_in_both_tools() {
    let cases = [
        (
            ["--device", "bogus"],
            "error: --device bogus: invalid device \"bogus\": expected auto, cpu, cuda, cuda:N or cuda:N,M,...\n",
        ),
        (
            ["--precision-dtype", "bogus"],
            "error: --precision-dtype bogus: invalid precision \"bogus\": expected float32, float16 or bfloat16\n",
        ),
        (
            ["--workers", "2000"],
            "error: --workers 2000: at most 1024 decoding threads\n",
        ),
    ];
    for (args, expected) in cases {
        let mut rectrain = tool("rectrain");
        rectrain
            .args(["--train", "t.rec", "--validation", "v.rec", "--out", "o"])
            .args(args);
        let mut recpredict = tool("recpredict");
        recpredict.args(["-m", "m"]).args(args).arg("x.png");
        for cmd in [&mut rectrain, &mut recpredict] {
            let out = run_expect(cmd, 2);
            assert_eq!(stderr_text(&out), expected, "{cmd:?}");
            assert_eq!(stdout_text(&out), "", "{cmd:?}");
        }
    }
}
