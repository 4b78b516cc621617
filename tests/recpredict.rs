//! recpredict's command-line behaviour with the real binaries and a model trained by
//! the real `rectrain` (once, shared through a `OnceLock`): paths on stdin, a broken
//! image in the middle of a `.lst`, `| head -1`, and the fatal errors.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use pipeline_tests::{check_code, run_expect, run_with_stdin, stderr_text, stdout_text, tool};
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

fn write_image(path: &Path, dark: bool, seed: u32) {
    let img = image::RgbImage::from_fn(36, 36, |x, y| {
        let t = ((x + y * 3 + seed * 7) % 20) as u8;
        image::Rgb(if dark { [t, t, t] } else { [235 + t / 2; 3] })
    });
    img.save(path).unwrap();
}

/// Two classes (dark, light), six images each; one short epoch is enough here.
fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        for (c, name) in ["dark", "light"].iter().enumerate() {
            fs::create_dir_all(images.join(name)).unwrap();
            for i in 0..6 {
                write_image(&images.join(name).join(format!("{i}.png")), c == 0, i);
            }
        }
        let prefix = dir.path().join("d");
        run_expect(
            tool("im2list").arg("--recursive").arg(&prefix).arg(&images),
            0,
        );
        run_expect(tool("im2rec").arg(&prefix).arg(&images), 0);
        let rec = dir.path().join("d.rec");
        let model = dir.path().join("model");
        run_expect(
            tool("rectrain")
                .arg("--train")
                .arg(&rec)
                .arg("--validation")
                .arg(&rec)
                .arg("--out")
                .arg(&model)
                .args([
                    "--num-layers",
                    "18",
                    "--image-shape",
                    "3,32,32",
                    "--epochs",
                    "1",
                ])
                .args(["--mini-batch-size", "4", "--device", "cpu"]),
            0,
        );
        Trained {
            _dir: dir,
            images,
            model,
        }
    })
}

fn recpredict() -> std::process::Command {
    let mut cmd = tool("recpredict");
    cmd.arg("-m")
        .arg(&trained().model)
        .args(["--device", "cpu"]);
    cmd
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
    let mut child = recpredict()
        .args(["--batch-size", "1"])
        .arg(&t.images)
        .arg(&t.images)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(first.contains("\"prediction\""), "{first}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert_eq!(stderr_text(&out), "");
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
    let out = run_expect(
        tool("recpredict")
            .arg("-m")
            .arg(&copy)
            .args(["--device", "cpu"])
            .arg(&img),
        2,
    );
    assert_eq!(stdout_text(&out), "");
    assert!(
        stderr_text(&out).contains("cannot load the model weights"),
        "{}",
        stderr_text(&out)
    );
}
