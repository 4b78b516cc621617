//! `im2list` end to end: the real binary on generated folders, checking exact output
//! bytes, stderr lines and exit codes.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use pipeline_tests::{run_expect, stderr_text, stdout_text, tool};

/// Byte identity with im2rec.py's lists (golden files).
#[path = "im2list/golden.rs"]
mod golden;

/// Empty files (names ending in `/` are empty folders).
fn tree(root: &Path, entries: &[&str]) {
    for e in entries {
        if let Some(dir) = e.strip_suffix('/') {
            fs::create_dir_all(root.join(dir)).unwrap();
        } else {
            let p = root.join(e);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"").unwrap();
        }
    }
}

/// Root images, nested class folders, empty folders, mixed-case extensions and files
/// that are not images.
const TREE: &[&str] = &[
    "top.jpg",
    "Top.PNG",
    "readme.txt",
    ".png",
    "animals/x.jpg",
    "animals/cat/1.jpg",
    "animals/cat/2.JPEG",
    "animals/cat/3.gif",
    "animals/dog/a.png",
    "animals/dog/notes.md",
    "empty/",
    "empty2/sub/",
    "zoo/z.jpg",
];

/// TREE without shuffling: root files first (byte order puts `Top.PNG` before
/// `top.jpg`), then each folder's own files before its subfolders.
const TREE_ROWS: &[&str] = &[
    "0\t0.000000\tTop.PNG\n",
    "1\t0.000000\ttop.jpg\n",
    "2\t1.000000\tanimals/x.jpg\n",
    "3\t2.000000\tanimals/cat/1.jpg\n",
    "4\t2.000000\tanimals/cat/2.JPEG\n",
    "5\t3.000000\tanimals/dog/a.png\n",
    "6\t4.000000\tzoo/z.jpg\n",
];

const TREE_CLASS_LINES: &str = ". 0\nanimals 1\nanimals/cat 2\nanimals/dog 3\nzoo 4\n";
const TREE_CLASSES: &str = ".\nanimals\nanimals/cat\nanimals/dog\nzoo\n";

fn rows(order: &[usize]) -> String {
    order.iter().map(|&i| TREE_ROWS[i]).collect()
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn recursive_lists_match_im2rec_py_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    let out = run_expect(
        tool("im2list")
            .current_dir(t.path())
            .args(["--recursive", "--no-shuffle", "plain", "img"]),
        0,
    );
    assert_eq!(out.stdout, b"", "stdout carries no text for file outputs");
    assert_eq!(stderr_text(&out), TREE_CLASS_LINES);
    assert_eq!(
        read(t.path().join("plain.lst")),
        rows(&[0, 1, 2, 3, 4, 5, 6])
    );
    assert_eq!(read(t.path().join("plain.classes")), TREE_CLASSES);

    // The default seed-100 shuffle: CPython's shuffle(range(7)) is [0,4,2,6,5,3,1].
    let out = run_expect(
        tool("im2list")
            .current_dir(t.path())
            .args(["--list", "--recursive", "shuf", "img/"]),
        0,
    );
    assert_eq!(stderr_text(&out), TREE_CLASS_LINES);
    assert_eq!(
        read(t.path().join("shuf.lst")),
        rows(&[0, 4, 2, 6, 5, 3, 1])
    );
    assert_eq!(
        names(t.path()),
        [
            "img",
            "plain.classes",
            "plain.lst",
            "shuf.classes",
            "shuf.lst"
        ]
    );
}

#[test]
fn flat_mode_lists_root_files_only_and_prints_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    let prefix = t.path().join("flat");
    let out = run_expect(
        tool("im2list").arg("--no-shuffle").arg(&prefix).arg(&root),
        0,
    );
    assert_eq!(out.stderr, b"");
    assert_eq!(
        read(t.path().join("flat.lst")),
        "0\t0.000000\tTop.PNG\n1\t0.000000\ttop.jpg\n"
    );
    assert_eq!(read(t.path().join("flat.classes")), ".\n");
}

#[test]
fn dash_prefix_writes_one_list_to_stdout() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    let out = run_expect(
        tool("im2list")
            .current_dir(t.path())
            .args(["--recursive", "--no-shuffle", "-", "img"]),
        0,
    );
    assert_eq!(stdout_text(&out), rows(&[0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(stderr_text(&out), TREE_CLASS_LINES);
    assert_eq!(names(t.path()), ["img"], "no sidecar without --classes");

    let out = run_expect(
        tool("im2list").current_dir(t.path()).args([
            "--recursive",
            "--classes",
            "names.txt",
            "-",
            "img",
        ]),
        0,
    );
    assert_eq!(stdout_text(&out), rows(&[0, 4, 2, 6, 5, 3, 1]));
    assert_eq!(read(t.path().join("names.txt")), TREE_CLASSES);

    for bad in [&["--chunks", "2"][..], &["--train-ratio", "0.5"][..]] {
        let out = run_expect(
            tool("im2list")
                .current_dir(t.path())
                .args(bad)
                .args(["-", "img"]),
            2,
        );
        assert!(stderr_text(&out).starts_with("im2list: error: PREFIX `-`"));
        assert_eq!(out.stdout, b"");
    }
}

#[test]
fn splits_and_chunks_are_named_like_im2rec_py() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    // 7 images, 2 chunks: chunk_size 4, sep = int(4*0.5) = 2, sep_test = int(4*0.25) = 1.
    run_expect(
        tool("im2list").current_dir(t.path()).args([
            "--recursive",
            "--no-shuffle",
            "--train-ratio",
            "0.5",
            "--test-ratio",
            "0.25",
            "--chunks",
            "2",
            "out/",
            "img",
        ]),
        0,
    );
    // `out/` is os.path.abspath'd to `out`, so the files sit beside the folder.
    assert_eq!(
        names(t.path()),
        [
            "img",
            "out.classes",
            "out_0_test.lst",
            "out_0_train.lst",
            "out_0_val.lst",
            "out_1_test.lst",
            "out_1_train.lst",
            "out_1_val.lst",
        ]
    );
    let lst = |n: &str| read(t.path().join(n));
    assert_eq!(lst("out_0_test.lst"), rows(&[0]));
    assert_eq!(lst("out_0_train.lst"), rows(&[1, 2]));
    assert_eq!(lst("out_0_val.lst"), rows(&[3]));
    assert_eq!(lst("out_1_test.lst"), rows(&[4]));
    assert_eq!(lst("out_1_train.lst"), rows(&[5, 6]));
    assert_eq!(
        lst("out_1_val.lst"),
        "",
        "the short last chunk leaves val empty"
    );

    // 0.8 + 0.2 is not below 1.0 in floating point: no _val list.
    run_expect(
        tool("im2list").current_dir(t.path()).args([
            "--recursive",
            "--train-ratio",
            "0.8",
            "--test-ratio",
            "0.2",
            "p82",
            "img",
        ]),
        0,
    );
    assert!(t.path().join("p82_train.lst").is_file());
    assert!(t.path().join("p82_test.lst").is_file());
    assert!(!t.path().join("p82_val.lst").exists());
}

#[test]
fn extensions_are_matched_case_sensitively_against_the_lowercased_suffix() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    let out = run_expect(
        tool("im2list").current_dir(t.path()).args([
            "--recursive",
            "--no-shuffle",
            "p",
            "img",
            "--exts",
            ".jpeg",
            ".gif",
        ]),
        0,
    );
    assert_eq!(stderr_text(&out), "animals/cat 0\n");
    assert_eq!(
        read(t.path().join("p.lst")),
        "0\t0.000000\tanimals/cat/2.JPEG\n1\t0.000000\tanimals/cat/3.gif\n"
    );
    let out = run_expect(
        tool("im2list").current_dir(t.path()).args([
            "--recursive",
            "--exts",
            ".JPG",
            "--",
            "q",
            "img",
        ]),
        2,
    );
    assert!(
        stderr_text(&out).contains("no images with extension .JPG found in img"),
        "{}",
        stderr_text(&out)
    );
    assert!(!t.path().join("q.lst").exists());
}

#[test]
fn bad_names_and_loops_are_skipped_with_exit_code_1() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    fs::write(root.join(OsStr::from_bytes(b"zoo/bad\xff.jpg")), b"").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"zoo/ignored\xff.txt")), b"").unwrap();
    symlink("..", root.join("zoo/loop")).unwrap();
    symlink("../animals/cat", root.join("zoo/cats")).unwrap();
    let out = run_expect(
        tool("im2list")
            .current_dir(t.path())
            .args(["--recursive", "--no-shuffle", "p", "img"]),
        1,
    );
    let err = stderr_text(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            r#"im2list: warning: skipped "img/zoo/bad\xFF.jpg": the name is not valid UTF-8"#,
            "im2list: warning: skipped symlink loop img/zoo/loop: it points to its ancestor img",
            ". 0",
            "animals 1",
            "animals/cat 2",
            "animals/dog 3",
            "zoo 4",
            "zoo/cats 5",
            "im2list: 2 item(s) skipped; the lists hold the other 9 image(s)",
        ]
    );
    // The rest is listed; the symlinked folder is a class of its own, as in Python.
    let mut want = rows(&[0, 1, 2, 3, 4, 5, 6]);
    want.push_str("7\t5.000000\tzoo/cats/1.jpg\n8\t5.000000\tzoo/cats/2.JPEG\n");
    assert_eq!(read(t.path().join("p.lst")), want);
}

#[test]
fn unreadable_folders_are_skipped_with_exit_code_1() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("img");
    tree(&root, TREE);
    let locked = root.join("animals/dog");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read_dir(&locked).is_ok() {
        // Running as root: permissions do not stop us; nothing to test.
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!("skipped: permissions are not enforced for this user");
        return;
    }
    let out = tool("im2list")
        .current_dir(t.path())
        .args(["--recursive", "--no-shuffle", "p", "img"])
        .output()
        .unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert!(stderr_text(&out)
        .starts_with("im2list: warning: skipped unreadable directory img/animals/dog: "));
    assert_eq!(
        read(t.path().join("p.lst")),
        format!("{}5\t3.000000\tzoo/z.jpg\n", rows(&[0, 1, 2, 3, 4]))
    );
}

#[test]
fn fatal_errors_exit_2_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    tree(&t.path().join("txt_only"), &["a/readme.txt", "b/"]);
    tree(&t.path().join("tab"), &["a/ok.jpg", "a/b\tc.jpg"]);
    tree(&t.path().join("nl"), &["a\nb/ok.jpg"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--recursive", "p", "missing"],
            "im2list: error: cannot open image root missing: No such file or directory",
        ),
        (
            &["--recursive", "p", "txt_only"],
            "im2list: error: no images with extension .jpeg .jpg .png found in txt_only\n",
        ),
        (
            &["p", "txt_only"],
            "im2list: error: no images with extension .jpeg .jpg .png found in txt_only \
             (without --recursive, only files directly in it count)\n",
        ),
        (
            &["--recursive", "p", "tab"],
            "im2list: error: tab/a/b\tc.jpg: the path contains a TAB, which would corrupt",
        ),
        (
            &["--recursive", "p", "nl"],
            "im2list: error: nl/a\nb/ok.jpg: the path contains a newline, which would corrupt",
        ),
        (
            &["--chunks", "0", "p", "tab"],
            "invalid value '0' for '--chunks <N>'",
        ),
        (
            &["--train-ratio", "nan", "p", "tab"],
            "must be a finite number",
        ),
        (&["--classes", "-", "p", "tab"], "--classes cannot be `-`"),
    ];
    for (args, want) in cases {
        let out = run_expect(tool("im2list").current_dir(t.path()).args(*args), 2);
        let err = stderr_text(&out);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(out.stdout, b"");
    }
    assert_eq!(
        names(t.path()),
        ["nl", "tab", "txt_only"],
        "nothing written"
    );
}
