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

/// Run `cmd` with `stdin` as its standard input and return its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
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
