//! Why this file exists: cargo builds a package's binary for `cargo test` only when the
//! package has integration tests (or the binary has a test harness, which for
//! recpredict would be one more test binary linking burn). The tests that run
//! recpredict live in the workspace's `tests/` (`tests/cli`, `tests/recpredict.rs`,
//! `tests/serve.rs`, …) and find it in `target/<profile>/`; this one makes sure it is
//! there. It uses nothing of the library, so it links no burn.

use std::process::Command;

#[test]
fn the_binary_is_built_and_says_its_name_and_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_recpredict"))
        .arg("--version")
        .output()
        .expect("spawn recpredict");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("recpredict {}\n", env!("CARGO_PKG_VERSION"))
    );
}
