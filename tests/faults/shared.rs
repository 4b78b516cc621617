//! What several fault tests share: an uninterrupted reference training run and a tiny
//! trained model with its inputs (each made once, through a `OnceLock`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use im2list::lst::LstEntry;
use pipeline_tests::{list_and_pack, tool, train_tiny};

use super::harness::{noisy_pngs, run, snapshot};
use super::TRAIN_TIMEOUT;
/// (train loss, train accuracy, validation accuracy) of each metrics line.
pub fn epochs(jsonl: &str) -> Vec<(f64, f64, f64)> {
    jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {l}"));
            (
                f("train_loss"),
                f("train_accuracy"),
                f("validation_accuracy"),
            )
        })
        .collect()
}

/// An uninterrupted tiny training run (3 epochs, a checkpoint each), shared.
pub struct Reference {
    pub _dir: tempfile::TempDir,
    pub rec: PathBuf,
    pub files: BTreeMap<String, Vec<u8>>,
    pub wall: Duration,
}

impl Reference {
    pub fn command(&self, out: &Path) -> Command {
        let mut cmd = tool("rectrain");
        cmd.arg("--train")
            .arg(&self.rec)
            .arg("--validation")
            .arg(&self.rec)
            .arg("--out")
            .arg(out)
            .args(["--num-layers", "18", "--image-shape", "3,16,16"])
            .args(["--mini-batch-size", "4", "--epochs", "3"])
            .args(["--checkpoint-frequency", "1", "--learning-rate", "0.05"])
            .args(["--device", "cpu", "--workers", "1", "--seed", "3"]);
        cmd
    }
}

pub fn reference_training() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        noisy_pngs(&images, 6, 20);
        let rec = list_and_pack(&dir.path().join("d"), &images, &[], &[]);
        let mut r = Reference {
            _dir: dir,
            rec,
            files: BTreeMap::new(),
            wall: Duration::ZERO,
        };
        let out = r._dir.path().join("model");
        let f = run(&mut r.command(&out), TRAIN_TIMEOUT);
        f.expect(0, "reference training");
        r.wall = f.wall;
        r.files = snapshot(&out);
        eprintln!("uninterrupted training: {:?}", r.wall);
        r
    })
}

/// The shared tiny model, and inputs for the tests above.
pub struct Trained {
    pub _dir: tempfile::TempDir,
    pub model: PathBuf,
    /// 300 small PNGs (a folder).
    pub many: PathBuf,
    /// Images of `list_a` and `list_b`.
    pub images: PathBuf,
    /// A `.lst` of ids 0.., and one of ids 1000.. (different lengths).
    pub list_a: PathBuf,
    pub list_b: PathBuf,
    pub count_a: usize,
    pub count_b: usize,
}

pub fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        noisy_pngs(&images, 6, 16);
        let rec = list_and_pack(&dir.path().join("d"), &images, &[], &[]);
        let model = dir.path().join("model");
        train_tiny(
            &rec,
            &rec,
            &model,
            &[
                "--image-shape",
                "3,16,16",
                "--epochs",
                "1",
                "--mini-batch-size",
                "4",
                "--workers",
                "1",
            ],
        );
        let many = dir.path().join("many");
        fs::create_dir(&many).unwrap();
        let one = fs::read(images.join("dark/000.png")).unwrap();
        for i in 0..300 {
            fs::write(many.join(format!("{i:03}.png")), &one).unwrap();
        }
        let rows = |first: u64, n: usize| -> String {
            (0..n)
                .map(|i| {
                    let class = ["dark", "bright"][i % 2];
                    LstEntry::new(
                        first + i as u64,
                        (i % 2) as f64,
                        format!("{class}/{:03}.png", i / 2),
                    )
                    .to_line()
                })
                .collect()
        };
        let (count_a, count_b) = (12, 9);
        let list_a = dir.path().join("a.lst");
        let list_b = dir.path().join("b.lst");
        fs::write(&list_a, rows(0, count_a)).unwrap();
        fs::write(&list_b, rows(1000, count_b)).unwrap();
        Trained {
            _dir: dir,
            model,
            many,
            images,
            list_a,
            list_b,
            count_a,
            count_b,
        }
    })
}

pub fn run_stdout_to(cmd: &mut Command, path: &Path) {
    let f = cmd
        .stdin(Stdio::null())
        .stdout(File::create(path).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        f.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&f.stderr)
    );
}
