//! The few `os.path` functions `im2rec.py --list` relies on, with POSIX semantics:
//! `abspath` (lexical, like `posixpath.normpath`, never resolving symlinks) and the
//! extension test built on `splitext(name)[1].lower()`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `posixpath.normpath`: drop empty and `.` components, fold `..` lexically, keep
/// exactly two leading slashes when the path starts with exactly two.
pub fn normpath(path: &OsStr) -> OsString {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return OsString::from(".");
    }
    let initial_slashes = if bytes.starts_with(b"//") && !bytes.starts_with(b"///") {
        2
    } else if bytes.starts_with(b"/") {
        1
    } else {
        0
    };
    let mut comps: Vec<&[u8]> = Vec::new();
    for comp in bytes.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp != b".."
            || (initial_slashes == 0 && comps.is_empty())
            || comps.last() == Some(&&b".."[..])
        {
            comps.push(comp);
        } else {
            comps.pop();
        }
    }
    let mut out = vec![b'/'; initial_slashes];
    out.extend_from_slice(&comps.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    OsString::from_vec(out)
}

/// `os.path.abspath(path)` relative to `cwd`: join when relative, then [`normpath`].
pub fn abspath_in(path: &Path, cwd: &Path) -> PathBuf {
    let joined = if path.as_os_str().as_bytes().starts_with(b"/") {
        path.as_os_str().to_owned()
    } else {
        let mut s = cwd.as_os_str().to_owned();
        if !s.as_bytes().ends_with(b"/") {
            s.push("/");
        }
        s.push(path.as_os_str());
        s
    };
    PathBuf::from(normpath(&joined))
}

/// `os.path.abspath(path)` relative to the current directory.
pub fn abspath(path: &Path) -> io::Result<PathBuf> {
    Ok(abspath_in(path, &std::env::current_dir()?))
}

/// The extension `os.path.splitext(name)[1]` finds in a bare file name: from the last
/// `.` on, unless everything before that dot is dots too (`.png` and `..png` have
/// none). Works on raw bytes, so non-UTF-8 names are handled.
pub fn splitext_suffix(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if name[..dot].iter().any(|&b| b != b'.') => &name[dot..],
        _ => b"",
    }
}

/// im2rec.py's filter: `splitext(name)[1].lower() in exts`. The suffix is lower-cased
/// (Unicode rules) but the `exts` values are compared as given, so `.JPG` in `exts`
/// never matches. A suffix that is not UTF-8 never matches.
pub fn has_listed_ext(name: &OsStr, exts: &[String]) -> bool {
    match std::str::from_utf8(splitext_suffix(name.as_bytes())) {
        Ok(suffix) => {
            let lower = suffix.to_lowercase();
            exts.contains(&lower)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normpath(OsStr::new(p)).into_string().unwrap()
    }

    #[test]
    fn normpath_matches_posixpath() {
        // Expected values from CPython 3.11 posixpath.normpath.
        let cases = [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "//"),
            ("///", "/"),
            ("//a//b/", "//a/b"),
            ("/a/b/../c/./d/", "/a/c/d"),
            ("a/../..", ".."),
            ("../../x/..", "../.."),
            ("/../x", "/x"),
            ("out/", "out"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input:?}");
        }
    }

    #[test]
    fn abspath_is_lexical() {
        let cwd = Path::new("/work/dir");
        assert_eq!(
            abspath_in(Path::new("out/"), cwd),
            Path::new("/work/dir/out")
        );
        assert_eq!(abspath_in(Path::new("."), cwd), Path::new("/work/dir"));
        assert_eq!(abspath_in(Path::new("../x"), cwd), Path::new("/work/x"));
        assert_eq!(abspath_in(Path::new("/a/./b/.."), cwd), Path::new("/a"));
        assert_eq!(
            abspath_in(Path::new("data"), Path::new("/")),
            Path::new("/data")
        );
    }

    #[test]
    fn splitext_like_python() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"a.jpg", b".jpg"),
            (b"a.tar.JPG", b".JPG"),
            (b".png", b""),
            (b"..png", b""),
            (b"...", b""),
            (b".a.png", b".png"),
            (b"a.", b"."),
            (b"noext", b""),
            (b"\xff.jpg", b".jpg"),
        ];
        for (name, want) in cases {
            assert_eq!(splitext_suffix(name), want, "{:?}", OsStr::from_bytes(name));
        }
    }

    #[test]
    fn extension_filter_lowercases_only_the_suffix() {
        let default: Vec<String> = [".jpeg", ".jpg", ".png"].map(String::from).to_vec();
        let yes = [
            "a.jpg",
            "B.JPG",
            "c.Png",
            "d.JPEG",
            "x y.jpg",
            ".hidden.png",
        ];
        let no = ["a.gif", ".png", "jpg", "a.jpg.txt", "a.jpe", "a.", "a.jpg "];
        for n in yes {
            assert!(has_listed_ext(OsStr::new(n), &default), "{n}");
        }
        for n in no {
            assert!(!has_listed_ext(OsStr::new(n), &default), "{n}");
        }
        let upper = vec![".JPG".to_string()];
        assert!(!has_listed_ext(OsStr::new("a.JPG"), &upper));
        assert!(!has_listed_ext(OsStr::new("a.jpg"), &upper));
        assert!(!has_listed_ext(OsStr::from_bytes(b"a.jp\xff"), &default));
    }
}
