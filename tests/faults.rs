//! Fault tests with the real binaries (issue 15): a full disk while packing,
//! checkpointing and writing predictions; SIGKILL at seeded random moments while
//! `im2rec` packs and while `rectrain` trains; read-only and vanished output folders;
//! two `im2rec` runs writing the same output; a `.rec` replaced while `recpredict`
//! reads it; resource bombs (huge declared image sizes, an `.idx` past the end of its
//! `.rec`, a million garbage `.lst` rows) with the peak memory measured.
//!
//! Every run has a timeout: a hang fails the test (the child is killed). Peak memory is
//! the child's own `ru_maxrss` from `wait4(2)`.
//!
//! A full disk is a size-limited tmpfs when the test can mount one (root, as in CI);
//! otherwise the child runs with `RLIMIT_FSIZE` (SIGXFSZ ignored, so writes past the
//! limit fail with EFBIG), which still goes through the real binary's write path. A
//! read-only folder is a read-only tmpfs, else a `chmod 555` folder (non-root), else
//! `/sys` (root without mount). Each test prints the mode it used on stderr
//! (`cargo test -- --nocapture` shows it). `FAULTS_NO_MOUNT=1` forces the fallbacks;
//! `FAULTS_SEED=N` moves the kill points.
#![allow(clippy::print_stderr)]

#[path = "faults/bombs.rs"]
mod bombs;
#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/shared.rs"]
mod shared;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use im2list::lst::LstEntry;
use pipeline_tests::tool;

use bombs::{jpeg_bomb, png_bomb, tiff_bomb, webp_bomb};
use harness::{
    im2rec_stdin, noisy_pngs, random_files, run, run_stdin_file, snapshot, spawn, tail,
    temporaries, DiskMode, ReadOnlyDir, Rng, SmallDisk,
};
use shared::{epochs, reference_training, run_stdout_to, trained};

/// The longest any im2rec/recpredict run may take before it counts as hung.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// rectrain runs (a few tiny epochs on the CPU, on a shared machine).
pub const TRAIN_TIMEOUT: Duration = Duration::from_secs(400);

// ---------------------------------------------------------------------------------
// Disk full

/// im2rec onto a 700 kB disk: exit 2 with the file named, never a hang (the issue's
/// reproduction: two threads hung in two of four tries), the earlier pair untouched,
/// no temporary file left.
#[test]
fn im2rec_on_a_full_disk_exits_2_cleanly_and_never_hangs() {
    let disk = SmallDisk::new("im2rec disk full", 700 * 1024, 700 * 1024);
    let src = tempfile::tempdir().unwrap();
    let all = random_files(&src.path().join("imgs"), 200, 20_000, 1);
    let few: String = all.lines().take(5).map(|l| format!("{l}\n")).collect();
    fs::write(src.path().join("all.lst"), &all).unwrap();
    fs::write(src.path().join("few.lst"), &few).unwrap();
    let out = disk.dir.join("big.rec");
    let imgs = src.path().join("imgs");

    // An earlier, complete output under the same name.
    run_stdin_file(
        disk.limit(&mut im2rec_stdin(&imgs, &out, 1, &["--pass-through"])),
        &src.path().join("few.lst"),
        TIMEOUT,
    )
    .expect(0, "packing 5 files");
    let before = snapshot(&disk.dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["big.idx", "big.rec"],
        "{before:?}"
    );

    for round in 0..8 {
        let threads = [1, 2, 4, 2][round % 4];
        let f = run_stdin_file(
            disk.limit(&mut im2rec_stdin(&imgs, &out, threads, &["--pass-through"])),
            &src.path().join("all.lst"),
            TIMEOUT,
        );
        f.expect(2, &format!("round {round}, {threads} threads"));
        let err = f.err();
        let want = format!("{}: {}", out.display(), disk.full_text());
        assert!(err.contains(&want), "round {round}: want {want:?} in {err}");
        assert!(err.contains("nothing was written"), "{err}");
        // The earlier pair is intact and nothing else is left on the disk.
        assert_eq!(snapshot(&disk.dir), before, "round {round}");
    }
}

/// recpredict writing `--output-dir` files onto a full disk, and stdout onto a full
/// disk and onto /dev/full: exit 2, the file named, finished files intact, no
/// temporary file left.
#[test]
fn recpredict_on_a_full_disk_exits_2_cleanly() {
    let t = trained();
    // tmpfs charges a page per small file: a 160 kB disk holds some 40 `.out` files;
    // without tmpfs, a 4-byte file size limit fails the first one.
    let disk = SmallDisk::new("recpredict --output-dir disk full", 160 * 1024, 4);
    let outdir = disk.dir.join("preds");
    let mut cmd = pipeline_tests::recpredict(&t.model);
    cmd.arg("--output-dir").arg(&outdir).arg(&t.many);
    let f = run(disk.limit(&mut cmd), TIMEOUT);
    f.expect(2, "--output-dir on a full disk");
    let err = f.err();
    assert!(err.contains(disk.full_text()), "{err}");
    assert!(
        err.contains(&format!("writing {}", outdir.display())),
        "{err}"
    );
    assert!(err.contains(".out: "), "{err}");
    let files = snapshot(&disk.dir);
    assert!(temporaries(&disk.dir).is_empty(), "{:?}", files.keys());
    if disk.mode == DiskMode::Tmpfs {
        assert!(files.len() >= 10, "only {} files written", files.len());
    }
    // Every finished file is whole: batch transform's `{"prediction": [p0, p1]}` line.
    for (name, body) in &files {
        let text = String::from_utf8(body.clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap_or_else(|e| {
            panic!("{name}: {e}: {text:?}");
        });
        assert_eq!(v["prediction"].as_array().map(Vec::len), Some(2), "{name}");
        assert!(text.ends_with('\n'), "{name}");
    }

    // stdout onto a full disk.
    let disk = SmallDisk::new("recpredict stdout disk full", 8 * 1024, 8 * 1024);
    let target = disk.dir.join("out.jsonl");
    let mut cmd = pipeline_tests::recpredict(&t.model);
    cmd.arg(&t.many);
    disk.limit(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&target).unwrap())
        .stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("writing to stdout: ") && err.contains(disk.full_text()),
        "{err}"
    );

    // stdout onto /dev/full (any machine).
    let mut cmd = pipeline_tests::recpredict(&t.model);
    cmd.arg(&t.many)
        .stdin(Stdio::null())
        .stdout(File::options().write(true).open("/dev/full").unwrap())
        .stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("writing to stdout: No space left on device"),
        "{err}"
    );
}

/// rectrain checkpointing onto a disk that holds the first epoch's files but not the
/// second's: exit 2 naming the file, epoch 1's checkpoint and resumable state intact,
/// no temporary file or folder left.
#[test]
fn rectrain_on_a_full_disk_exits_2_and_keeps_the_last_good_state() {
    let r = reference_training();
    let ckpt = r.files["checkpoints/image-classification-0001.safetensors"].len() as u64;
    let state: u64 = r
        .files
        .iter()
        .filter(|(n, _)| n.starts_with("checkpoints/last/"))
        .map(|(_, b)| b.len() as u64)
        .sum();
    // Epoch 1 needs its checkpoint and the state (C + S); epoch 2's checkpoint
    // (another C) cannot fit in C + S + C/2. Without tmpfs, a file size limit of C/2
    // fails the first checkpoint.
    let disk = SmallDisk::new("rectrain disk full", ckpt + state + ckpt / 2, ckpt / 2);
    let out = disk.dir.join("model");
    let f = run(disk.limit(&mut r.command(&out)), TRAIN_TIMEOUT);
    f.expect(2, "training onto a full disk");
    let err = f.err();
    assert!(err.contains(disk.full_text()), "{err}");
    assert!(err.contains(&out.display().to_string()), "{err}");
    let left = temporaries(&disk.dir);
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let files = snapshot(&out);
    match disk.mode {
        DiskMode::Tmpfs => {
            // Epoch 1 finished: its checkpoint and state are whole (the checkpoint is the
            // uninterrupted run's, byte for byte); epoch 2's checkpoint never appears.
            assert!(
                err.contains("image-classification-0002.safetensors: "),
                "{err}"
            );
            let name = "checkpoints/image-classification-0001.safetensors";
            assert_eq!(files.get(name), r.files.get(name), "{name}");
            assert!(!files.contains_key("checkpoints/image-classification-0002.safetensors"));
            let state: serde_json::Value =
                serde_json::from_slice(&files["checkpoints/last/state.json"]).unwrap();
            assert_eq!(state["epoch"], 1, "{state}");
            assert!(!files.contains_key("model.safetensors"));
        }
        DiskMode::FileSizeLimit => {
            // The first checkpoint is already too large: nothing but the logs.
            assert!(
                !files.keys().any(|n| n.ends_with(".safetensors")),
                "{:?}",
                files.keys()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// SIGKILL at random moments

/// im2rec killed at seeded random moments: the output names hold either the earlier
/// complete pair or the new complete pair, never a partial file; a rerun completes.
#[test]
fn im2rec_killed_at_random_moments_never_leaves_a_partial_output() {
    let src = tempfile::tempdir().unwrap();
    let images = src.path().join("images");
    noisy_pngs(&images, 200, 128);
    let list = src.path().join("all.lst");
    let old_list = src.path().join("old.lst");
    run_stdout_to(
        tool("im2list").args(["--recursive", "-"]).arg(&images),
        &list,
    );
    let first: String = fs::read_to_string(&list)
        .unwrap()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&old_list, first).unwrap();
    let args = ["--resize", "96", "--quality", "90"];
    // References: the old pair and the new one, packed without interruption.
    let reference = |lst: &Path, name: &str| {
        let dir = src.path().join(name);
        fs::create_dir(&dir).unwrap();
        let f = run_stdin_file(
            &mut im2rec_stdin(&images, &dir.join("out.rec"), 2, &args),
            lst,
            TIMEOUT,
        );
        f.expect(0, name);
        (snapshot(&dir), f.wall)
    };
    let (old, _) = reference(&old_list, "old");
    let (new, wall) = reference(&list, "new");
    eprintln!("uninterrupted pack: {wall:?}");

    let mut rng = Rng::seeded(15);
    for k in 0..6 {
        let dir = src.path().join(format!("kill{k}"));
        fs::create_dir(&dir).unwrap();
        for (name, bytes) in &old {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let delay = wall.mul_f64(1.5 * rng.unit());
        let running = spawn(
            &mut im2rec_stdin(&images, &dir.join("out.rec"), 2, &args),
            Stdio::from(File::open(&list).unwrap()),
        );
        thread::sleep(delay);
        running.kill();
        let f = running.finish(TIMEOUT);
        let finals: BTreeMap<_, _> = snapshot(&dir)
            .into_iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        let state = if finals == old {
            "old pair"
        } else if finals == new {
            "new pair"
        } else {
            panic!(
                "kill {k} after {delay:?} ({:?}): the output is neither complete pair: {:?}",
                f.status,
                finals.iter().map(|(n, b)| (n, b.len())).collect::<Vec<_>>()
            )
        };
        eprintln!(
            "kill {k} after {delay:?}: {state}, {} temporary files left",
            temporaries(&dir).len()
        );
        // A rerun finishes the job.
        run_stdin_file(
            &mut im2rec_stdin(&images, &dir.join("out.rec"), 2, &args),
            &list,
            TIMEOUT,
        )
        .expect(0, "rerun");
        let finals: BTreeMap<_, _> = snapshot(&dir)
            .into_iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        assert!(finals == new, "kill {k}: the rerun differs");
    }
}

/// rectrain killed at seeded random moments: every file under a final name is whole
/// (checkpoints equal the uninterrupted run's byte for byte), and `--resume` (or a
/// fresh start when no epoch had finished) ends with the uninterrupted run's weights,
/// checkpoints and metrics.
#[test]
fn rectrain_killed_at_random_moments_resumes_to_the_same_result() {
    let r = reference_training();
    let mut rng = Rng::seeded(15);
    let work = tempfile::tempdir().unwrap();
    for k in 0..3 {
        let out = work.path().join(format!("kill{k}"));
        let delay = r.wall.mul_f64(0.15 + 0.8 * rng.unit());
        let running = spawn(&mut r.command(&out), Stdio::null());
        thread::sleep(delay);
        running.kill();
        running.finish(TRAIN_TIMEOUT);
        let files = snapshot(&out);
        let finals: Vec<&String> = files
            .keys()
            .filter(|n| !n.split('/').any(|c| c.starts_with('.')))
            .collect();
        for name in &finals {
            let body = &files[*name];
            if name.ends_with(".safetensors") {
                assert_eq!(
                    Some(body),
                    r.files.get(*name),
                    "kill {k}: {name} is not whole"
                );
            } else if name.ends_with(".json") {
                serde_json::from_slice::<serde_json::Value>(body)
                    .unwrap_or_else(|e| panic!("kill {k}: {name}: {e}"));
            } else if name.ends_with(".mpk") {
                assert_eq!(
                    Some(body.len()),
                    r.files.get(*name).map(Vec::len),
                    "kill {k}: {name}"
                );
            } else if *name == "metrics.jsonl" {
                let want = String::from_utf8_lossy(&r.files[*name]).into_owned();
                let got = String::from_utf8_lossy(body).into_owned();
                assert!(
                    want.lines().count() >= got.lines().count(),
                    "kill {k}: {got}"
                );
                assert_eq!(epochs(&got), epochs(&want)[..got.lines().count()]);
            } else if name.ends_with(".svg") {
                assert!(String::from_utf8_lossy(body).contains("</svg>"), "kill {k}");
            }
        }
        let resumable = files.contains_key("checkpoints/last/state.json");
        eprintln!(
            "kill {k} after {delay:?}: {} final files, {}",
            finals.len(),
            if resumable {
                "resuming"
            } else {
                "no state yet: starting again"
            }
        );
        let mut cmd = r.command(&out);
        if resumable {
            cmd.arg("--resume").arg(&out);
        }
        run(&mut cmd, TRAIN_TIMEOUT).expect(0, "resume");
        let files = snapshot(&out);
        for name in r.files.keys().filter(|n| n.ends_with(".safetensors")) {
            assert_eq!(
                files.get(name),
                r.files.get(name),
                "kill {k}: {name} differs"
            );
        }
        assert_eq!(
            epochs(&String::from_utf8_lossy(&files["metrics.jsonl"])),
            epochs(&String::from_utf8_lossy(&r.files["metrics.jsonl"])),
            "kill {k}: metrics differ"
        );
        let left = temporaries(&out);
        eprintln!("kill {k}: temporaries after the resumed run: {left:?}");
    }
}

// ---------------------------------------------------------------------------------
// Read-only and vanished folders

#[test]
fn read_only_output_folders_are_exit_2_naming_the_file() {
    let ro = ReadOnlyDir::new("read-only output");
    let src = tempfile::tempdir().unwrap();
    let list = random_files(&src.path().join("imgs"), 3, 100, 2);
    fs::write(src.path().join("a.lst"), &list).unwrap();
    let out = ro.dir.join("x.rec");
    let f = run_stdin_file(
        &mut im2rec_stdin(&src.path().join("imgs"), &out, 2, &["--pass-through"]),
        &src.path().join("a.lst"),
        TIMEOUT,
    );
    f.expect(2, "im2rec into a read-only folder");
    let err = f.err();
    assert!(ro.refused(&err, &out), "{err}");

    let t = trained();
    let f = run(
        pipeline_tests::recpredict(&t.model)
            .arg("--output-dir")
            .arg(ro.dir.join("preds"))
            .arg(&t.many),
        TIMEOUT,
    );
    f.expect(2, "recpredict --output-dir into a read-only folder");
    assert!(ro.refused(&f.err(), &ro.dir.join("preds")), "{}", f.err());

    let r = reference_training();
    let f = run(&mut r.command(&ro.dir.join("model")), TRAIN_TIMEOUT);
    f.expect(2, "rectrain --out in a read-only folder");
    assert!(ro.refused(&f.err(), &ro.dir.join("model")), "{}", f.err());
}

/// The output folder removed while im2rec packs: exit 2 naming the output, nothing
/// recreated; a folder that never existed is exit 2 before any work.
#[test]
fn a_vanished_output_folder_is_exit_2() {
    let src = tempfile::tempdir().unwrap();
    let list = random_files(&src.path().join("imgs"), 40, 1000, 3);
    let out_dir = src.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("x.rec");
    let mut running = spawn(
        &mut im2rec_stdin(&src.path().join("imgs"), &out, 2, &["--pass-through"]),
        Stdio::piped(),
    );
    let mut stdin = running.child.stdin.take().unwrap();
    let rows: Vec<&str> = list.lines().collect();
    for row in &rows[..20] {
        writeln!(stdin, "{row}").unwrap();
    }
    stdin.flush().unwrap();
    // Wait until the run has created its temporary files, then remove the folder.
    let start = Instant::now();
    while fs::read_dir(&out_dir).unwrap().count() < 2 {
        assert!(start.elapsed() < TIMEOUT, "no temporary files appeared");
        thread::sleep(Duration::from_millis(5));
    }
    fs::remove_dir_all(&out_dir).unwrap();
    for row in &rows[20..] {
        writeln!(stdin, "{row}").unwrap();
    }
    drop(stdin);
    let f = running.finish(TIMEOUT);
    f.expect(2, "output folder removed while packing");
    let err = f.err();
    assert!(
        err.contains(&format!(
            "{}: No such file or directory",
            out_dir.join("x.idx").display()
        )),
        "{err}"
    );
    assert!(!out_dir.exists(), "the folder was recreated");

    let gone = src.path().join("never").join("x.rec");
    let f = run_stdin_file(
        &mut im2rec_stdin(&src.path().join("imgs"), &gone, 1, &["--pass-through"]),
        Path::new("/dev/null"),
        TIMEOUT,
    );
    f.expect(2, "output folder that does not exist");
    assert!(
        f.err()
            .contains(&format!("{}: No such file or directory", gone.display())),
        "{}",
        f.err()
    );
}

// ---------------------------------------------------------------------------------
// Two writers, and a reader during a rewrite

/// Two im2rec runs packing different lists into the same output at once, many times:
/// the result is always one run's whole `.rec` + `.idx`, never a mix, and no temporary
/// file is left.
#[test]
fn two_im2rec_runs_on_the_same_output_leave_one_whole_result() {
    let src = tempfile::tempdir().unwrap();
    let imgs = src.path().join("imgs");
    let list = random_files(&imgs, 120, 3000, 4);
    let rows: Vec<&str> = list.lines().collect();
    let a: String = rows[..60].iter().map(|l| format!("{l}\n")).collect();
    let b: String = rows[60..].iter().map(|l| format!("{l}\n")).collect();
    fs::write(src.path().join("a.lst"), &a).unwrap();
    fs::write(src.path().join("b.lst"), &b).unwrap();
    let reference = |name: &str| {
        let dir = src.path().join(format!("ref-{name}"));
        fs::create_dir(&dir).unwrap();
        run_stdin_file(
            &mut im2rec_stdin(&imgs, &dir.join("out.rec"), 1, &["--pass-through"]),
            &src.path().join(format!("{name}.lst")),
            TIMEOUT,
        )
        .expect(0, name);
        snapshot(&dir)
    };
    let (ra, rb) = (reference("a"), reference("b"));
    assert_ne!(ra, rb);
    let dir = src.path().join("shared");
    fs::create_dir(&dir).unwrap();
    let mut seen = [0; 2];
    for round in 0..20 {
        let start = |name: &str| {
            spawn(
                &mut im2rec_stdin(
                    &imgs,
                    &dir.join("out.rec"),
                    1 + round % 2,
                    &["--pass-through"],
                ),
                Stdio::from(File::open(src.path().join(format!("{name}.lst"))).unwrap()),
            )
        };
        let (x, y) = (start("a"), start("b"));
        x.finish(TIMEOUT).expect(0, "writer a");
        y.finish(TIMEOUT).expect(0, "writer b");
        let got = snapshot(&dir);
        if got == ra {
            seen[0] += 1;
        } else if got == rb {
            seen[1] += 1;
        } else {
            panic!(
                "round {round}: a mix of the two runs: {:?}",
                got.iter().map(|(n, b)| (n, b.len())).collect::<Vec<_>>()
            );
        }
    }
    eprintln!("two writers: a won {} times, b {} times", seen[0], seen[1]);
}

/// recpredict reading `--rec` while im2rec replaces that `.rec` + `.idx` (by rename)
/// again and again: each run predicts one whole version, without an error line.
#[test]
fn a_rec_replaced_while_recpredict_reads_it_stays_consistent() {
    let t = trained();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("live.rec");
    let lists = [&t.list_a, &t.list_b];
    run_stdin_file(
        &mut im2rec_stdin(&t.images, &rec, 1, &[]),
        lists[0],
        TIMEOUT,
    )
    .expect(0, "first pack");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, rec, images) = (stop.clone(), rec.clone(), t.images.clone());
        let lists: Vec<PathBuf> = lists.iter().map(|p| p.to_path_buf()).collect();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                run_stdin_file(
                    &mut im2rec_stdin(&images, &rec, 1, &[]),
                    &lists[n % 2],
                    TIMEOUT,
                )
                .expect(0, "rewrite");
                n += 1;
            }
            n
        })
    };
    let sizes = [t.count_a, t.count_b];
    let mut runs = 0;
    let start = Instant::now();
    while runs < 6 || start.elapsed() < Duration::from_secs(10) {
        let f = run(
            pipeline_tests::recpredict(&t.model).arg("--rec").arg(&rec),
            TIMEOUT,
        );
        f.expect(0, "recpredict --rec during rewrites");
        let ids: Vec<u64> = f
            .out()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(v.get("error").is_none(), "{l}");
                v["id"].as_u64().unwrap()
            })
            .collect();
        assert!(sizes.contains(&ids.len()), "{} records: {ids:?}", ids.len());
        let from_b = ids.iter().all(|&i| i >= 1000);
        let from_a = ids.iter().all(|&i| i < 1000);
        assert!(from_a ^ from_b, "a mix of two versions: {ids:?}");
        assert_eq!(ids.len(), sizes[usize::from(from_b)]);
        runs += 1;
        if runs >= 40 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rewrites = writer.join().unwrap();
    eprintln!("{runs} recpredict runs during {rewrites} rewrites");
    assert!(rewrites >= 2);
}

// ---------------------------------------------------------------------------------
// Resource bombs

/// Images whose headers declare huge sizes (beyond the limits, and just inside them)
/// fed to im2rec and recpredict: one clear error per image, exit 1, the good image
/// still done, and the peak memory bounded.
///
/// Known gap, kept visible here: a baseline JPEG whose header claims 16000×16000 but
/// whose scan holds 8×8 pixels is decoded (the missing data padded) and packed or
/// predicted, not refused as truncated; it is only held to the memory bound.
#[test]
fn images_declaring_huge_sizes_are_refused_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bombs");
    fs::create_dir(&root).unwrap();
    // (name, bytes, must be refused)
    let bombs: Vec<(&str, Vec<u8>, bool)> = vec![
        ("png-100000.png", png_bomb(100_000, 100_000), true),
        ("png-16000.png", png_bomb(16_000, 16_000), true),
        ("jpeg-65000.jpg", jpeg_bomb(65_000, 65_000), true),
        ("jpeg-16000.jpg", jpeg_bomb(16_000, 16_000), false),
        ("webp-16384.webp", webp_bomb(16_384, 16_384), true),
        ("tiff-100000.tif", tiff_bomb(100_000, 100_000), true),
        ("tiff-16000.tif", tiff_bomb(16_000, 16_000), true),
    ];
    let refused = bombs.iter().filter(|b| b.2).count();
    let good = image::RgbImage::from_pixel(20, 20, image::Rgb([10, 200, 30]));
    good.save(root.join("good.png")).unwrap();
    let mut list = String::new();
    for (i, (name, bytes, _)) in bombs.iter().enumerate() {
        assert!(bytes.len() < 2000, "{name} is {} bytes", bytes.len());
        fs::write(root.join(name), bytes).unwrap();
        list.push_str(&LstEntry::new(i as u64, 0.0, *name).to_line());
    }
    list.push_str(&LstEntry::new(99, 1.0, "good.png").to_line());
    fs::write(dir.path().join("bombs.lst"), &list).unwrap();

    for threads in [1, 4] {
        let out = dir.path().join(format!("b{threads}.rec"));
        let f = run_stdin_file(
            &mut im2rec_stdin(&root, &out, threads, &["--resize", "32"]),
            &dir.path().join("bombs.lst"),
            TIMEOUT,
        );
        f.expect(1, "im2rec on image bombs");
        let err = f.err();
        eprintln!(
            "im2rec, {threads} threads, {} bombs: peak RSS {} MiB",
            bombs.len(),
            f.peak_rss_kib / 1024
        );
        for (name, _, must) in &bombs {
            let line = err
                .lines()
                .find(|l| l.contains(&format!("{}: ", root.join(name).display())));
            match line {
                Some(line) => eprintln!("  {line}"),
                None => {
                    assert!(!must, "{name} not refused: {err}");
                    eprintln!("  {name}: packed (known gap)");
                }
            }
        }
        let packed = bombs.len() + 1 - refused;
        assert!(
            err.contains(&format!("packed {packed}, skipped {refused}")),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // An unreadable size is not reported as a huge one.
        assert!(!err.contains("too large: 0x0"), "{err}");
        assert!(
            f.peak_rss_kib < 1536 * 1024,
            "im2rec peak RSS {} MiB",
            f.peak_rss_kib / 1024
        );
    }

    let t = trained();
    let mut cmd = pipeline_tests::recpredict(&t.model);
    for (name, _, _) in &bombs {
        cmd.arg(root.join(name));
    }
    cmd.arg(root.join("good.png"));
    let f = run(&mut cmd, TIMEOUT);
    f.expect(1, "recpredict on image bombs");
    eprintln!(
        "recpredict, {} bombs: peak RSS {} MiB",
        bombs.len(),
        f.peak_rss_kib / 1024
    );
    let lines: Vec<serde_json::Value> = f
        .out()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), bombs.len() + 1);
    for (line, (name, _, must)) in lines.iter().zip(&bombs) {
        eprintln!("  {name}: {}", line.get("error").unwrap_or(&line["class"]));
        if *must {
            assert!(line["error"].is_string(), "{name}: {line}");
        }
    }
    assert!(lines[bombs.len()]["error"].is_null());
    assert!(!f.err().contains("panicked"), "{}", f.err());
    assert!(
        f.peak_rss_kib < 2048 * 1024,
        "recpredict peak RSS {} MiB",
        f.peak_rss_kib / 1024
    );
}

/// An `.idx` whose offsets point past the end of its `.rec`: recpredict gives an error
/// line for those records and predicts the rest (exit 1); rectrain refuses the dataset
/// (exit 2) naming the key and offset; nothing allocates by the offset.
#[test]
fn an_idx_pointing_past_the_end_of_its_rec() {
    let t = trained();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("x.rec");
    run_stdin_file(
        &mut im2rec_stdin(&t.images, &rec, 1, &[]),
        &t.list_a,
        TIMEOUT,
    )
    .expect(0, "pack");
    let idx = dir.path().join("x.idx");
    let mut text = fs::read_to_string(&idx).unwrap();
    text.push_str("5000\t1099511627776\n7000\t18446744073709551615\n");
    fs::write(&idx, text).unwrap();

    let f = run(
        pipeline_tests::recpredict(&t.model).arg("--rec").arg(&rec),
        TIMEOUT,
    );
    f.expect(1, "recpredict with an idx past the end");
    let lines: Vec<serde_json::Value> = f
        .out()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let errors: Vec<&serde_json::Value> = lines.iter().filter(|l| l["error"].is_string()).collect();
    assert_eq!(lines.len(), t.count_a + 2, "{}", f.out());
    assert_eq!(errors.len(), 2, "{}", f.out());
    assert!(f.peak_rss_kib < 2048 * 1024);
    eprintln!(
        "recpredict, idx past the end: peak RSS {} MiB",
        f.peak_rss_kib / 1024
    );

    let r = reference_training();
    let mut cmd = r.command(&dir.path().join("model"));
    cmd.arg("--train").arg(&rec).arg("--validation").arg(&rec);
    let f = run(&mut cmd, TRAIN_TIMEOUT);
    f.expect(2, "rectrain with an idx past the end");
    assert!(f.err().contains("1099511627776"), "{}", f.err());
}

/// A `.lst` of a million garbage rows (and one good row at the end) streamed through
/// im2rec: one line per bad row naming it, the good row packed, exit 1, and memory
/// bounded (the list is never held whole).
#[test]
fn a_million_garbage_list_rows_stream_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    random_files(&imgs, 1, 100, 5);
    let lst = dir.path().join("garbage.lst");
    let mut w = std::io::BufWriter::new(File::create(&lst).unwrap());
    let mut rng = Rng(99);
    const ROWS: usize = 1_000_000;
    for i in 0..ROWS {
        match i % 4 {
            0 => writeln!(w, "garbage row {i}").unwrap(),
            1 => writeln!(w, "{i}\tnot-a-label\tf0.bin").unwrap(),
            2 => {
                let junk: Vec<u8> = (0..40).map(|_| (rng.next() as u8) | 0x80).collect();
                w.write_all(&junk).unwrap();
                w.write_all(b"\n").unwrap();
            }
            _ => writeln!(w, "-{i}\t1.0\tf0.bin").unwrap(),
        }
    }
    writeln!(w, "{ROWS}\t1.0\tf0.bin").unwrap();
    drop(w);
    let out = dir.path().join("g.rec");
    let f = run_stdin_file(
        &mut im2rec_stdin(&imgs, &out, 2, &["--pass-through"]),
        &lst,
        Duration::from_secs(300),
    );
    f.expect(1, "a million garbage rows");
    let err = f.err();
    eprintln!(
        "im2rec, {ROWS} garbage rows: {:?}, peak RSS {} MiB",
        f.wall,
        f.peak_rss_kib / 1024
    );
    assert_eq!(
        err.lines().filter(|l| l.contains(": line ")).count(),
        ROWS,
        "{}",
        tail(&err)
    );
    assert!(
        err.contains(&format!("packed 1, skipped {ROWS}")),
        "{}",
        tail(&err)
    );
    assert!(!err.contains("panicked"));
    assert!(
        f.peak_rss_kib < 256 * 1024,
        "peak RSS {} MiB",
        f.peak_rss_kib / 1024
    );
}
