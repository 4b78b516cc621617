//! rectrain on several processes: the real binary started by Open MPI's `mpirun` on
//! loopback (2 and 3 ranks on the demo's Fashion-MNIST subset), against one process
//! with the same global batch; a killed rank; ranks started for different runs; and
//! the launch checks that need no MPI.
//!
//! The tests that start `mpirun` skip when it is not installed, unless
//! `RECTRAIN_REQUIRE_MPI` is set (as `.ci/run` sets it, after installing Open MPI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pipeline_tests::{bin, check_code, list_and_pack, run_expect, stderr_text, stdout_text, tool};

/// Whether the launcher `program` is installed; when not, the test skips (says so),
/// unless `require` is set in the environment, which makes that a failure.
fn launcher_available(program: &str, require: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os(require).is_none(),
            "{require} is set but {program} is not installed"
        );
        eprintln!("SKIPPED: {program} is not installed (Debian: {package})");
    }
    found
}

/// Open MPI's `mpirun` (`RECTRAIN_REQUIRE_MPI` makes its absence a failure).
fn mpirun_available() -> bool {
    launcher_available("mpirun", "RECTRAIN_REQUIRE_MPI", "openmpi-bin")
}

/// A job refused before any epoch: non-zero exit, `needle` on stderr, nothing on stdout.
fn assert_refused(out: &Output, needle: &str) {
    let err = stderr_text(out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(stdout_text(out).is_empty(), "no epoch ran");
}

/// `mpirun` on loopback only, allowed as root and on more ranks than cores, one
/// thread per rank, then `np` copies of `rectrain ARGS` (or, with `parts`, one MPMD
/// part per argument list).
fn mpirun(parts: &[Vec<String>]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
        "--mca",
        "btl",
        "self,tcp",
        "--mca",
        "btl_tcp_if_include",
        "lo",
        "--mca",
        "oob_tcp_if_include",
        "lo",
        "-x",
        "OMP_NUM_THREADS=1",
    ]);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(part);
    }
    for var in ["RUST_LOG", "RANK", "WORLD_SIZE", "LOCAL_RANK"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `-np N rectrain` + the common training flags + `extra`.
fn ranks(n: usize, data: &Demo, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "-np".to_string(),
        n.to_string(),
        bin("rectrain").display().to_string(),
    ];
    v.extend(train_args(data, out, extra));
    v
}

fn train_args(data: &Demo, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--train",
        data.train.to_str().unwrap(),
        "--validation",
        data.val.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--num-layers",
        "18",
        "--image-shape",
        "3,28,28",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.001",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--seed",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The demo's Fashion-MNIST subset (1,200 images, 10 classes) packed once at 28×28:
/// 960 training and 240 validation records.
struct Demo {
    _dir: tempfile::TempDir,
    train: PathBuf,
    val: PathBuf,
}

fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fashion-mnist");
        let prefix = dir.path().join("fm");
        list_and_pack(
            &prefix,
            &images,
            &["--train-ratio", "0.8"],
            &["--num-thread", "2"],
        );
        Demo {
            train: dir.path().join("fm_train.rec"),
            val: dir.path().join("fm_val.rec"),
            _dir: dir,
        }
    })
}

/// The per-epoch JSON lines on stdout: (epoch, validation accuracy).
fn epochs(out: &Output) -> Vec<(u64, f64)> {
    stdout_text(out)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["epoch"].as_u64().unwrap(),
                v["validation_accuracy"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every rank's "Rank R final weights digest: X" line: (R, X), in rank order.
fn digests(out: &Output) -> Vec<(usize, String)> {
    let mut d: Vec<(usize, String)> = stderr_text(out)
        .lines()
        .filter_map(|l| {
            let rest = l.split("Rank ").nth(1)?;
            let (rank, digest) = rest.split_once(" final weights digest: ")?;
            Some((rank.parse().ok()?, digest.trim().to_string()))
        })
        .collect();
    d.sort();
    d
}

/// 2 and 3 ranks of 12 and 8 images against one process of 24, two epochs each:
/// every rank ends with the same weights, only rank 0 prints the epochs, its accuracy
/// is within 0.10 of the one process's, the other ranks' log lines say their rank, and
/// two runs of 2 ranks write the same model bytes.
#[test]
fn two_and_three_ranks_train_like_one_process_of_their_global_batch() {
    if !mpirun_available() {
        return;
    }
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let reference = run_expect(
        tool("rectrain").args(train_args(
            d,
            &one,
            &["--epochs", "2", "--mini-batch-size", "24"],
        )),
        0,
    );
    let reference_accuracy = epochs(&reference)[1].1;

    let mut models = Vec::new();
    for (n, batch, name) in [(2, "12", "two"), (3, "8", "three"), (2, "12", "two-again")] {
        let out_dir = tmp.path().join(name);
        let out = run_expect(
            &mut mpirun(&[ranks(
                n,
                d,
                &out_dir,
                &["--epochs", "2", "--mini-batch-size", batch],
            )]),
            0,
        );
        let lines = epochs(&out);
        assert_eq!(
            lines.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            vec![0, 1],
            "{name}: only rank 0 prints the epochs\n{}",
            stderr_text(&out)
        );
        let accuracy = lines[1].1;
        assert!(
            (accuracy - reference_accuracy).abs() <= 0.10,
            "{name}: validation accuracy {accuracy} vs {reference_accuracy} for one process"
        );
        let d = digests(&out);
        assert_eq!(
            d.len(),
            n,
            "{name}: one digest per rank\n{}",
            stderr_text(&out)
        );
        assert!(
            d.iter().all(|(_, x)| *x == d[0].1),
            "{name}: the ranks' weights differ: {d:?}"
        );
        let err = stderr_text(&out);
        assert!(
            err.contains("[rank 1] ")
                && err.contains(&format!("Distributed training: rank 1 of {n}")),
            "{name}: {err}"
        );
        assert!(
            err.lines()
                .filter(|l| l.contains("Validation-accuracy="))
                .all(|l| !l.starts_with("[rank ")),
            "{name}: only rank 0 validates: {err}"
        );
        models.push(std::fs::read(out_dir.join("model.safetensors")).unwrap());
    }
    assert!(
        models[0] == models[2],
        "two runs of 2 ranks wrote different models"
    );
}

/// Ranks started with different hyperparameters (an MPMD launch) are refused on every
/// rank before training, naming the odd one; the job ends non-zero.
#[test]
fn ranks_started_for_different_runs_are_refused() {
    if !mpirun_available() {
        return;
    }
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("m");
    let a = ranks(1, d, &out_dir, &["--epochs", "1", "--mini-batch-size", "8"]);
    let b = ranks(1, d, &out_dir, &["--epochs", "2", "--mini-batch-size", "8"]);
    let out = mpirun(&[a, b]).output().unwrap();
    assert_refused(
        &out,
        "rank(s) 1 of 2 were started with other hyperparameters, seed or data than rank 0",
    );
}

/// A rank killed after the first epoch ends the whole job within a minute (mpirun
/// names the rank), rank 0's resumable state of that epoch stays, and `--resume`
/// on 2 ranks finishes the run, with rank 1 pointed at a folder without the state
/// (rank 0 sends it, as on machines that do not share `--out`).
#[test]
fn a_killed_rank_ends_the_job_and_resume_finishes_it() {
    if !mpirun_available() {
        return;
    }
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("k");
    let mut child = mpirun(&[ranks(
        2,
        d,
        &out_dir,
        &["--epochs", "3", "--mini-batch-size", "12"],
    )])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let mut victim = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    // Rank 1's pid from its first line, then rank 0's first validation line.
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("[rank 1] ") && line.contains("Distributed training: rank 1 of 2") {
            let pid = line.split("pid ").nth(1).and_then(|s| s.split(')').next());
            victim = pid.and_then(|p| p.parse::<i32>().ok());
        }
        if !line.starts_with("[rank") && line.contains("Epoch[0] Validation-accuracy=") {
            break;
        }
    }
    let victim = victim.unwrap_or_else(|| panic!("no pid for rank 1 in:\n{log}"));
    // Rank 0 saves the epoch's resumable state right after its validation lines.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on a pid this test's mpirun started.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the job still runs 60 s after rank 1 was killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    for line in rx.try_iter() {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(!status.success(), "{log}");
    assert!(log.contains("rank 1"), "the lost rank is named:\n{log}");
    let state = out_dir.join("checkpoints/last/state.json");
    assert!(state.is_file(), "rank 0's state of epoch 0 stays:\n{log}");

    let elsewhere = tmp.path().join("not-shared");
    let resume = |from: &Path| {
        let mut part = ranks(
            1,
            d,
            &out_dir,
            &["--epochs", "3", "--mini-batch-size", "12"],
        );
        part.extend(["--resume".to_string(), from.display().to_string()]);
        part
    };
    let out = run_expect(&mut mpirun(&[resume(&out_dir), resume(&elsewhere)]), 0);
    let err = stderr_text(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("[rank 1] ") && l.contains("Resuming from")),
        "{err}"
    );
    let done: Vec<u64> = epochs(&out).iter().map(|(e, _)| *e).collect();
    assert_eq!(done.last(), Some(&2), "{}", stderr_text(&out));
    assert!(out_dir.join("model.safetensors").is_file());
}

/// A state saved inside an epoch by one process (Ctrl-C, here `--stop-after-steps`)
/// resumes on one process only: on 2 ranks the epoch's batches would be cut
/// differently, and both ranks refuse it before training.
#[test]
fn a_state_from_inside_an_epoch_resumes_on_the_same_number_of_processes() {
    if !mpirun_available() {
        return;
    }
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("s");
    let args = ["--epochs", "1", "--mini-batch-size", "12"];
    let mut first = tool("rectrain");
    first
        .args(train_args(d, &out_dir, &args))
        .args(["--stop-after-steps", "3"]);
    let out = first.output().unwrap();
    check_code(&first, &out, 130);
    let mut again = ranks(2, d, &out_dir, &args);
    again.extend(["--resume".to_string(), out_dir.display().to_string()]);
    let out = mpirun(&[again]).output().unwrap();
    assert_refused(
        &out,
        "it stopped inside epoch 0 (after 3 steps) of a run on 1 process(es): resume it on 1",
    );
}

/// The MPICH ABI: 2 ranks started by MPICH's own launcher (Hydra, `PMI_RANK`) with its
/// library (`libmpich.so.12`, Debian's name) train one epoch to identical weights.
/// Skips without MPICH unless `RECTRAIN_REQUIRE_MPICH` is set (`.ci/run` installs it).
#[test]
fn mpich_ranks_train_to_identical_weights() {
    if !launcher_available("mpiexec.mpich", "RECTRAIN_REQUIRE_MPICH", "mpich") {
        return;
    }
    let d = demo();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("mpich");
    let mut cmd = Command::new("mpiexec.mpich");
    cmd.args(["-n", "2", "-iface", "lo", "-env", "OMP_NUM_THREADS", "1"])
        .arg(bin("rectrain"))
        .args(train_args(
            d,
            &out_dir,
            &["--epochs", "1", "--mini-batch-size", "16"],
        ))
        .env("RECTRAIN_MPI_LIB", "libmpich.so.12")
        .stdin(Stdio::null());
    let out = run_expect(&mut cmd, 0);
    let err = stderr_text(&out);
    assert!(
        err.contains("(MPI: libmpich.so.12 (MPICH ABI), pid"),
        "{err}"
    );
    let d = digests(&out);
    assert_eq!(d.len(), 2, "{err}");
    assert_eq!(d[0].1, d[1].1, "{err}");
    assert_eq!(epochs(&out).len(), 1);
    assert!(out_dir.join("model.safetensors").is_file());
}

/// Tiny two-class records for the launch checks that run no MPI.
fn tiny(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    for (c, name) in ["dark", "light"].iter().enumerate() {
        std::fs::create_dir_all(images.join(name)).unwrap();
        for i in 0..4 {
            pipeline_tests::dark_light_png(&images.join(name).join(format!("{i}.png")), c == 0, i);
        }
    }
    list_and_pack(&dir.join("t"), &images, &[], &[])
}

fn tiny_run(rec: &Path, out: &Path) -> Command {
    let mut cmd = pipeline_tests::rectrain_cpu(rec, rec, out);
    cmd.args(["--image-shape", "3,28,28", "--epochs", "1"])
        .args(["--mini-batch-size", "4", "--seed", "2"]);
    cmd
}

/// A world of one, through torchrun's variables or an MPI launcher's, trains exactly
/// as no world at all: the same model bytes.
#[test]
fn a_world_of_one_through_the_environment_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tiny(tmp.path());
    let plain = tmp.path().join("plain");
    run_expect(&mut tiny_run(&rec, &plain), 0);
    let expected = std::fs::read(plain.join("model.safetensors")).unwrap();
    for (name, vars) in [
        (
            "torchrun",
            vec![("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")],
        ),
        (
            "mpi",
            vec![("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")],
        ),
    ] {
        let out_dir = tmp.path().join(name);
        let mut cmd = tiny_run(&rec, &out_dir);
        cmd.envs(vars);
        let out = run_expect(&mut cmd, 0);
        assert!(
            !stderr_text(&out).contains("Distributed training"),
            "{name}"
        );
        assert!(
            std::fs::read(out_dir.join("model.safetensors")).unwrap() == expected,
            "{name}: a world of one wrote another model"
        );
    }
}

/// Launches that cannot work are refused before anything is read or written, exit 2:
/// several processes asked for without an MPI launcher, torchrun's variables that
/// contradict the launcher's, and SageMaker's asynchronous `kv_store`.
#[test]
fn launches_that_cannot_work_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tiny(tmp.path());
    let out_dir = tmp.path().join("o");
    type Case = (
        Vec<(&'static str, &'static str)>,
        Vec<&'static str>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")],
            vec![],
            "rectrain: error: WORLD_SIZE=2, but this process was not started by an MPI launcher. \
             rectrain joins its processes with MPI: start all 2 with one launcher, e.g. `mpirun -np 2 \
             rectrain …` (Open MPI; `srun` under Slurm), every one with the same command line\n",
        ),
        (
            vec![("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("WORLD_SIZE", "3")],
            vec![],
            "rectrain: error: WORLD_SIZE=3, but the MPI launcher started 2 processes: give the \
             launcher 3 processes (mpirun -np 3) or drop WORLD_SIZE\n",
        ),
        (
            vec![],
            vec!["--kv-store", "dist_async"],
            "rectrain: error: kv_store dist_async is not supported: rectrain trains synchronously \
             (kv_store dist_sync or dist_device_sync)\n",
        ),
    ];
    for (vars, args, want) in cases {
        let mut cmd = tiny_run(&rec, &out_dir);
        cmd.envs(vars.iter().copied()).args(&args);
        let out = cmd.output().unwrap();
        check_code(&cmd, &out, 2);
        assert_eq!(pipeline_tests::stderr_without_kernel_notice(&out), want);
        assert!(!out_dir.exists(), "nothing written");
    }
}
