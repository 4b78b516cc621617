//! Helpers for the end-to-end tests: locate the real tool binaries that
//! `cargo test --workspace` built, run them in temporary directories, and check
//! their exit codes and output.
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The path of a workspace binary (`im2list`, `im2rec`, `rectrain`, `recpredict`) in
/// the same target directory as this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A command for a workspace binary, with the environment variables the tools read
/// removed, so the user's settings cannot change a test's outcome.
pub fn tool(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    for var in ["RUST_LOG", "CUBECL_DEBUG_LOG", "NO_COLOR", "COLUMNS"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Start `cmd` with piped stdin, stdout and stderr.
pub fn spawn_piped(cmd: &mut Command) -> std::process::Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Run `cmd` with `stdin` as its standard input and return its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = spawn_piped(cmd);
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("stdin writer");
    out
}

/// Run `cmd`, check that it exits with `code`, and return its output. On a mismatch
/// the panic message shows stdout and stderr.
pub fn run_expect(cmd: &mut Command, code: i32) -> Output {
    let out = cmd.output().expect("spawn");
    check_code(cmd, &out, code);
    out
}

/// Panic with the command's output if its exit code is not `code`.
pub fn check_code(cmd: &Command, out: &Output, code: i32) {
    if out.status.code() != Some(code) {
        panic!(
            "{:?}: expected exit code {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
            cmd,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// stdout as UTF-8 text.
pub fn stdout_text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// stderr as (lossy) text.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stderr without the machine's one notice about the CPU's kernels (`CPU kernels: ...`,
/// said where oneDNN does not load): what a tool itself said about its work.
pub fn stderr_without_kernel_notice(out: &Output) -> String {
    stderr_text(out)
        .lines()
        .filter(|l| !l.starts_with("CPU kernels: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `im2list --recursive [im2list_args] PREFIX IMAGES`, then `im2rec [im2rec_args] PREFIX
/// IMAGES` (every `PREFIX*.lst` becomes a `.rec` + `.idx`). Returns `PREFIX.rec`, the
/// record file of the whole folder when the list was not split (`--train-ratio` gives
/// `PREFIX_train.rec` and `PREFIX_val.rec` instead).
pub fn list_and_pack(
    prefix: &Path,
    images: &Path,
    im2list_args: &[&str],
    im2rec_args: &[&str],
) -> PathBuf {
    run_expect(
        tool("im2list")
            .arg("--recursive")
            .args(im2list_args)
            .arg(prefix)
            .arg(images),
        0,
    );
    run_expect(tool("im2rec").args(im2rec_args).arg(prefix).arg(images), 0);
    prefix.with_extension("rec")
}

/// Train a tiny model with the real `rectrain` on the CPU: ResNet-18 from `train` and
/// `validation` (`.rec` files) into the artifact directory `out`, plus `args` (the image
/// shape, epochs, batch size...; a flag given again overrides the defaults, rectrain's
/// last flag wins). Panics with rectrain's output unless it succeeds.
pub fn train_tiny(train: &Path, validation: &Path, out: &Path, args: &[&str]) -> Output {
    run_expect(rectrain_cpu(train, validation, out).args(args), 0)
}

/// `rectrain --train TRAIN --validation VALIDATION --out OUT --num-layers 18 --device
/// cpu`, ready for more arguments.
pub fn rectrain_cpu(train: &Path, validation: &Path, out: &Path) -> Command {
    let mut cmd = tool("rectrain");
    cmd.arg("--train")
        .arg(train)
        .arg("--validation")
        .arg(validation)
        .arg("--out")
        .arg(out)
        .args(["--num-layers", "18", "--device", "cpu"]);
    cmd
}

/// A 28×28 PNG of the "dark" or "light" class (a faint pattern varied by `seed`), the
/// size of [`dark_light_model`]'s network input.
pub fn dark_light_png(path: &Path, dark: bool, seed: u32) {
    let img = image::RgbImage::from_fn(28, 28, |x, y| {
        let t = ((x + y * 3 + seed * 7) % 20) as u8;
        image::Rgb(if dark { [t, t, t] } else { [235 + t / 2; 3] })
    });
    img.save(path).expect("writing a test image");
}

/// Two classes, `dark` and `light`, six [`dark_light_png`]s each, under `dir/images`, and
/// a ResNet-18 at 3×28×28 trained on them for one short epoch by the real im2list,
/// im2rec and rectrain into `dir/model`. Returns (images, model).
pub fn dark_light_model(dir: &Path) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    for (c, name) in ["dark", "light"].iter().enumerate() {
        std::fs::create_dir_all(images.join(name)).expect("creating a class folder");
        for i in 0..6 {
            dark_light_png(&images.join(name).join(format!("{i}.png")), c == 0, i);
        }
    }
    let rec = list_and_pack(&dir.join("d"), &images, &[], &[]);
    let model = dir.join("model");
    train_tiny(
        &rec,
        &rec,
        &model,
        &[
            "--image-shape",
            "3,28,28",
            "--epochs",
            "1",
            "--mini-batch-size",
            "4",
        ],
    );
    (images, model)
}

/// `recpredict -m MODEL --device cpu`, ready for more arguments.
pub fn recpredict(model: &Path) -> Command {
    let mut cmd = tool("recpredict");
    cmd.arg("-m").arg(model).args(["--device", "cpu"]);
    cmd
}

/// recpredict's output lines as strict types (`deny_unknown_fields`: a renamed or
/// unexpected field fails the test that parses it).
pub mod wire {
    use serde::Deserialize;

    /// A prediction line of a single-label model.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Prediction {
        /// The input file.
        pub path: Option<String>,
        /// The record id (`--rec`).
        pub id: Option<u64>,
        /// Every class's probability.
        pub prediction: Vec<f32>,
        /// The top class.
        pub class: usize,
        /// Its name.
        pub label: Option<String>,
        /// Its probability.
        pub probability: f32,
        /// The most probable classes.
        pub top_k: Vec<Ranked>,
        /// The true class (`.lst`/`.rec` input).
        pub true_class: Option<u64>,
    }

    /// One entry of `top_k`.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Ranked {
        /// The class index.
        pub class: usize,
        /// Its name.
        pub label: Option<String>,
        /// Its probability.
        pub probability: f32,
    }

    /// The single-label `--evaluate` summary.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Summary {
        /// `"summary"`.
        #[serde(rename = "type")]
        pub kind: String,
        /// Images evaluated.
        pub images: u64,
        /// Failed inputs.
        pub errors: u64,
        /// Top-1 accuracy.
        pub accuracy: Option<f64>,
        /// The k of `top_k_accuracy`.
        pub top_k: usize,
        /// Top-k accuracy.
        pub top_k_accuracy: Option<f64>,
        /// Per-class rows.
        pub per_class: Vec<ClassStats>,
        /// `[true][predicted]` counts.
        pub confusion_matrix: Vec<Vec<u64>>,
    }

    /// One class of the single-label summary.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClassStats {
        /// The class index.
        pub class: usize,
        /// Its name.
        pub label: Option<String>,
        /// Precision.
        pub precision: Option<f64>,
        /// Recall.
        pub recall: Option<f64>,
        /// Images of this class.
        pub support: u64,
    }

    /// Parse the output of a run without error lines: predictions, then the summary
    /// line if there is one (it must be the last line).
    pub fn parse(text: &str) -> (Vec<Prediction>, Option<Summary>) {
        let mut preds = Vec::new();
        let mut summary = None;
        for line in text.lines() {
            assert!(summary.is_none(), "a line after the summary: {line}");
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if value.get("type").is_some() {
                summary =
                    Some(serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}: {line}")));
            } else {
                preds.push(serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}: {line}")));
            }
        }
        (preds, summary)
    }
}
