//! Why this file exists: `cargo test` builds a package's binary (`target/<profile>/recpredict`)
//! only when the package has integration tests, which may run it; the binary's own
//! unit-test harness is another executable. The tests that run recpredict live in the
//! workspace's `tests/` (`tests/cli`, `tests/recpredict.rs`, `tests/serve.rs`, …) and find it in
//! `target/<profile>/`; this one makes sure it is built. It uses nothing of the
//! library, so it links nothing more than the binary does.

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
