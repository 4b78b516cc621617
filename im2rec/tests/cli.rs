//! Command-line behaviour of the `im2rec` binary that needs no images: usage errors,
//! exit codes and the empty-list case. The image tests are in `tests/im2rec.rs` at
//! the workspace root.

use std::process::{Command, Output};

fn im2rec(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_im2rec"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("spawn im2rec")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [
        &["only-prefix"][..],
        &["--color", "3", "p", "."],
        &["--inter-method", "7", "p", "."],
        &["--encoding", "jpg", "p", "."],
    ] {
        let out = im2rec(args, d);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    let out = im2rec(&["--list", "p", "."], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("im2list"), "{}", stderr(&out));
}

#[test]
fn no_matching_list_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = im2rec(&["nothing", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("im2rec: error: no .lst file found with prefix "),
        "{}",
        stderr(&out)
    );
    // stdin list without -o
    let out = im2rec(&["-", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("-o OUT.rec"), "{}", stderr(&out));
}

#[test]
fn empty_list_gives_empty_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("e.lst"), "").unwrap();
    let out = im2rec(&["e", "."], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("e.rec")).unwrap(), b"");
    assert_eq!(std::fs::read(d.join("e.idx")).unwrap(), b"");
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "im2rec: packed 0, skipped 0 -> {}",
            d.join("e.rec").display()
        )
    );
}

#[test]
fn help_mentions_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_im2rec"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--resize",
        "--center-crop",
        "--quality",
        "--encoding",
        "--color",
        "--pass-through",
        "--pack-label",
        "--num-thread",
        "--inter-method",
        "--strict",
        "--inspect",
        "--no-progress",
        "--output",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
