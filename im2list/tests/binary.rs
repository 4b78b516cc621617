//! Why this file exists: `cargo test` builds a package's binary (`target/<profile>/im2list`)
//! only when the package has integration tests, which may run it; the binary's own
//! unit-test harness is another executable. The tests that run im2list live in the
//! workspace's `tests/` (`tests/im2list.rs` and most of the others) and find it in
//! `target/<profile>/`; this one makes sure it is built. It uses nothing of the
//! library, so it links nothing more than the binary does.

use std::process::Command;

#[test]
fn the_binary_is_built_and_says_its_name_and_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_im2list"))
        .arg("--version")
        .output()
        .expect("spawn im2list");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("im2list {}\n", env!("CARGO_PKG_VERSION"))
    );
}
