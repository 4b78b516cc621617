//! Byte identity with im2rec.py 1.9.1 without MXNet installed: the lists under
//! `im2list/tests/golden/tree23/<case>/` were written by `im2rec.py --list` on the tree
//! described in `im2list/tests/golden/tree23.txt` (`scripts/compat/compat_im2list.sh
//! --update-golden`); this test rebuilds the tree, runs the real `im2list` binary on
//! every case and compares each file, plus im2rec.py's stdout against our stderr.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../im2list/tests/golden")
}

/// Build a tree from its description: `path`, `path/` or `path -> target`.
fn build_tree(root: &Path, spec: &str) {
    fs::create_dir_all(root).unwrap();
    for line in spec
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some((path, target)) = line.split_once(" -> ") {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
        } else if let Some(dir) = line.strip_suffix('/') {
            fs::create_dir_all(root.join(dir)).unwrap();
        } else {
            let p = root.join(line);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"").unwrap();
        }
    }
}

/// The `.lst` files of a folder, by name.
fn lists(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lst"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn tree23_matches_im2rec_py_golden_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree23");
    build_tree(
        &root,
        &fs::read_to_string(golden().join("tree23.txt")).unwrap(),
    );
    let cases = fs::read_to_string(golden().join("tree23/cases.txt")).unwrap();
    let mut checked = 0;
    for line in cases
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (case, args) = line.split_once('\t').expect("case<TAB>args");
        let want_dir = golden().join("tree23").join(case);
        let out_dir = tmp.path().join("out").join(case);
        fs::create_dir_all(&out_dir).unwrap();
        let out = pipeline_tests::tool("im2list")
            .current_dir(&out_dir)
            .args(args.split_whitespace())
            .arg("data")
            .arg(&root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{case}: {stderr}");

        let want = lists(&want_dir);
        let got = lists(&out_dir);
        assert!(!want.is_empty(), "{case}: no golden lists");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{case}: file names"
        );
        for (name, bytes) in &want {
            assert!(
                got[name] == *bytes,
                "{case}/{name} differs:\n--- im2rec.py\n{}--- im2list\n{}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&got[name])
            );
        }
        let py_stdout = fs::read_to_string(want_dir.join("stdout.txt")).unwrap();
        assert_eq!(stderr, py_stdout, "{case}: class lines");
        let classes = fs::read_to_string(out_dir.join("data.classes")).unwrap();
        if !py_stdout.is_empty() {
            let from_py: String = py_stdout
                .lines()
                .map(|l| format!("{}\n", l.rsplit_once(' ').unwrap().0))
                .collect();
            assert_eq!(classes, from_py, "{case}: data.classes");
        }
        checked += 1;
    }
    assert_eq!(checked, 8, "every case in cases.txt ran");
}

#[test]
fn help_documents_the_sidecar_and_the_stdout_prefix() {
    let out = pipeline_tests::tool("im2list")
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "PREFIX.classes",
        "--classes",
        "one list to stdout",
        "stderr",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
}
