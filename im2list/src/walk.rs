//! Finding the images and their labels, in im2rec.py 1.9.1's `list_image` order.
//!
//! Flat mode lists the regular files directly in the root (symlinks followed), sorted
//! by name, all with label 0. Recursive mode reproduces
//! `os.walk(root, followlinks=True)` with `dirs` and `files` sorted in place: a
//! top-down, pre-order walk where each directory's files come before its
//! subdirectories, both in Python `str` order (code points, which is UTF-8 byte
//! order). A directory takes the next label when its first listed file is met, so
//! directories without images leave no gap, the root itself can be label 0 (named
//! `.`), and a directory reached through two paths (a symlink) is two classes, as in
//! Python, which keys labels on the walked path.
//!
//! Where im2rec.py crashes, loops or stays silent, this module warns and skips
//! instead (see [`Skipped`]): names that are not UTF-8, symlink loops, unreadable
//! directories and dangling symlinks with an image extension.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use walkdir::{DirEntry, WalkDir};

use crate::pypath::has_listed_ext;

/// One listed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Position in traversal order: the `.lst` index column (assigned before shuffling).
    pub index: u64,
    /// Path relative to the root, `/`-separated.
    pub path: String,
    /// The class label: the directory's number in order of first appearance.
    pub label: u32,
}

/// Every image found and the class names (`.` for the root), in label order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The images in traversal order.
    pub images: Vec<Image>,
    /// `classes[label]` is the directory of that label, relative to the root.
    pub classes: Vec<String>,
}

/// Something left out of the listing; the caller warns about each one, and the run
/// ends with "some items failed".
#[derive(Debug)]
#[non_exhaustive]
pub enum Skipped {
    /// An image whose path is not valid UTF-8 (im2rec.py crashes writing it).
    NonUtf8 {
        /// The file, under the root as given.
        path: PathBuf,
    },
    /// A symlink to one of its own ancestor directories (im2rec.py walks it until
    /// the OS gives up, listing the same images dozens of times).
    SymlinkLoop {
        /// The symlink.
        path: PathBuf,
        /// The directory it points back to.
        ancestor: PathBuf,
    },
    /// A directory that could not be read (im2rec.py skips it silently).
    Unreadable {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A symlink with an image extension whose target is missing or unreachable
    /// (im2rec.py skips it silently).
    BrokenLink {
        /// The symlink.
        path: PathBuf,
        /// Why its target could not be read.
        error: io::Error,
    },
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::NonUtf8 { path } => {
                write!(f, "skipped {path:?}: the name is not valid UTF-8")
            }
            Skipped::SymlinkLoop { path, ancestor } => write!(
                f,
                "skipped symlink loop {}: it points to its ancestor {}",
                path.display(),
                ancestor.display()
            ),
            Skipped::Unreadable { path, error } => {
                write!(
                    f,
                    "skipped unreadable directory {}: {error}",
                    path.display()
                )
            }
            Skipped::BrokenLink { path, error } => {
                write!(f, "skipped broken symlink {}: {error}", path.display())
            }
        }
    }
}

/// Fatal problems: no list can be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// The root cannot be opened (missing, permissions).
    #[error("cannot open image root {}: {source}", root.display())]
    Root {
        /// The root as given.
        root: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The root exists but is not a directory.
    #[error("image root {} is not a directory", root.display())]
    RootNotDir {
        /// The root as given.
        root: PathBuf,
    },
    /// An image path holds a character that would corrupt the `.lst` row.
    #[error("{}: the path contains a {what}, which would corrupt the .lst; rename it", path.display())]
    BadCharacter {
        /// The file, under the root as given.
        path: PathBuf,
        /// Which character (`TAB`, `newline`, `carriage return`).
        what: &'static str,
    },
}

/// What to list.
#[derive(Debug, Clone)]
pub struct WalkOptions<'a> {
    /// The root to walk: im2rec.py's `abspath(root)`.
    pub root: &'a Path,
    /// The root as the user wrote it, used to name files in messages.
    pub display_root: &'a Path,
    /// Walk subdirectories and label by directory (`--recursive`).
    pub recursive: bool,
    /// Accepted extensions, compared with the lower-cased suffix (`--exts`).
    pub exts: &'a [String],
}

/// List the images under `opts.root` in im2rec.py's order. Each skipped item is
/// passed to `on_skip` and left out.
pub fn list_images(
    opts: &WalkOptions<'_>,
    on_skip: &mut dyn FnMut(Skipped),
) -> Result<Listing, WalkError> {
    let meta = fs::metadata(opts.root).map_err(|source| WalkError::Root {
        root: opts.display_root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(WalkError::RootNotDir {
            root: opts.display_root.to_path_buf(),
        });
    }
    let mut lister = Lister {
        opts,
        listing: Listing::default(),
        labels: HashMap::new(),
    };
    if opts.recursive {
        lister.walk(on_skip)?;
    } else {
        lister.flat(on_skip)?;
    }
    Ok(lister.listing)
}

struct Lister<'o, 'a> {
    opts: &'o WalkOptions<'a>,
    listing: Listing,
    labels: HashMap<String, u32>,
}

impl Lister<'_, '_> {
    fn display(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(self.opts.root) {
            Ok(rel) if rel.as_os_str().is_empty() => self.opts.display_root.to_path_buf(),
            Ok(rel) => self.opts.display_root.join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    fn root_error(&self, source: io::Error) -> WalkError {
        WalkError::Root {
            root: self.opts.display_root.to_path_buf(),
            source,
        }
    }

    /// `sorted(os.listdir(root))`, keeping regular files (after following links).
    fn flat(&mut self, on_skip: &mut dyn FnMut(Skipped)) -> Result<(), WalkError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.opts.root).map_err(|e| self.root_error(e))? {
            names.push(entry.map_err(|e| self.root_error(e))?.file_name());
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            if !has_listed_ext(&name, self.opts.exts) {
                continue;
            }
            let path = self.opts.root.join(&name);
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => self.add(&path, on_skip)?,
                Ok(_) => {}
                Err(error) => {
                    if is_symlink(&path) {
                        on_skip(Skipped::BrokenLink {
                            path: self.display(&path),
                            error,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// `os.walk(root, followlinks=True)` with sorted `dirs` and `files`.
    fn walk(&mut self, on_skip: &mut dyn FnMut(Skipped)) -> Result<(), WalkError> {
        let walker = WalkDir::new(self.opts.root)
            .follow_links(true)
            .sort_by(|a, b| walk_order(a).cmp(&walk_order(b)));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    self.walk_error(err, on_skip)?;
                    continue;
                }
            };
            if entry.file_type().is_file() && has_listed_ext(entry.file_name(), self.opts.exts) {
                self.add(entry.path(), on_skip)?;
            }
        }
        Ok(())
    }

    fn walk_error(
        &self,
        err: walkdir::Error,
        on_skip: &mut dyn FnMut(Skipped),
    ) -> Result<(), WalkError> {
        let path = err.path().unwrap_or(self.opts.root).to_path_buf();
        if let Some(ancestor) = err.loop_ancestor() {
            on_skip(Skipped::SymlinkLoop {
                path: self.display(&path),
                ancestor: self.display(ancestor),
            });
            return Ok(());
        }
        let error = err
            .into_io_error()
            .unwrap_or_else(|| io::Error::other("walk error"));
        if path == self.opts.root {
            return Err(self.root_error(error));
        }
        if is_symlink(&path) && fs::metadata(&path).is_err() {
            // A dangling link: im2rec.py's isfile() is false and it moves on. Only
            // one that looks like an image is worth a warning.
            let name = path.file_name().unwrap_or_default();
            if has_listed_ext(name, self.opts.exts) {
                on_skip(Skipped::BrokenLink {
                    path: self.display(&path),
                    error,
                });
            }
            return Ok(());
        }
        on_skip(Skipped::Unreadable {
            path: self.display(&path),
            error,
        });
        Ok(())
    }

    /// Add one regular file with a listed extension.
    fn add(&mut self, path: &Path, on_skip: &mut dyn FnMut(Skipped)) -> Result<(), WalkError> {
        let rel = path
            .strip_prefix(self.opts.root)
            .expect("walked paths start with the root");
        let Some(rel_text) = rel.to_str() else {
            on_skip(Skipped::NonUtf8 {
                path: self.display(path),
            });
            return Ok(());
        };
        for (c, what) in [('\t', "TAB"), ('\n', "newline"), ('\r', "carriage return")] {
            if rel_text.contains(c) {
                return Err(WalkError::BadCharacter {
                    path: self.display(path),
                    what,
                });
            }
        }
        let dir = match rel_text.rfind('/') {
            Some(slash) => &rel_text[..slash],
            None => ".",
        };
        let label = match self.labels.get(dir) {
            Some(&label) => label,
            None => {
                let label = self.listing.classes.len() as u32;
                self.labels.insert(dir.to_string(), label);
                self.listing.classes.push(dir.to_string());
                label
            }
        };
        let index = self.listing.images.len() as u64;
        self.listing.images.push(Image {
            index,
            path: rel_text.to_string(),
            label,
        });
        Ok(())
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// os.walk's order inside one directory: every non-directory (sorted) before every
/// directory (sorted), where a symlink counts as what it points to, and one that
/// cannot be followed counts as a file.
fn walk_order(entry: &DirEntry) -> (bool, &[u8]) {
    let ft = entry.file_type();
    let is_dir = if ft.is_symlink() {
        fs::metadata(entry.path()).is_ok_and(|m| m.is_dir())
    } else {
        ft.is_dir()
    };
    (is_dir, name_bytes(entry.path()))
}

/// The last component of a walked path, found with one backwards byte scan: sorting
/// calls this O(n log n) times, and `Path::file_name` parses every component.
fn name_bytes(path: &Path) -> &[u8] {
    let bytes = path.as_os_str().as_bytes();
    match bytes.iter().rposition(|&b| b == b'/') {
        Some(slash) => &bytes[slash + 1..],
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::symlink;

    fn exts() -> Vec<String> {
        [".jpeg", ".jpg", ".png"].map(String::from).to_vec()
    }

    fn make(root: &Path, files: &[&str]) {
        for f in files {
            let p = root.join(f);
            if let Some(stripped) = f.strip_suffix('/') {
                fs::create_dir_all(root.join(stripped)).unwrap();
            } else {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, b"x").unwrap();
            }
        }
    }

    fn list(root: &Path, recursive: bool) -> (Listing, Vec<String>) {
        let exts = exts();
        let opts = WalkOptions {
            root,
            display_root: Path::new("ROOT"),
            recursive,
            exts: &exts,
        };
        let mut skipped = Vec::new();
        let listing = list_images(&opts, &mut |s| skipped.push(s.to_string())).unwrap();
        (listing, skipped)
    }

    fn rows(l: &Listing) -> Vec<(u64, &str, u32)> {
        l.images
            .iter()
            .map(|i| (i.index, i.path.as_str(), i.label))
            .collect()
    }

    #[test]
    fn recursive_order_is_files_first_then_sorted_subdirs() {
        let t = tempfile::tempdir().unwrap();
        make(
            t.path(),
            &[
                "z.jpg",
                "b.PNG",
                "B/x.jpg",
                "a/sub/deep.png",
                "a/y.jpeg",
                "a/notes.txt",
                "empty/",
                "only_txt/readme.txt",
                "c/.png",
                "c/k.jpg",
                "_/u.jpg",
                "é/v.jpg",
            ],
        );
        let (l, skipped) = list(t.path(), true);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            rows(&l),
            [
                (0, "b.PNG", 0),
                (1, "z.jpg", 0),
                (2, "B/x.jpg", 1),
                (3, "_/u.jpg", 2),
                (4, "a/y.jpeg", 3),
                (5, "a/sub/deep.png", 4),
                (6, "c/k.jpg", 5),
                (7, "é/v.jpg", 6),
            ]
        );
        assert_eq!(l.classes, [".", "B", "_", "a", "a/sub", "c", "é"]);
    }

    #[test]
    fn flat_mode_ignores_subdirectories_and_labels_zero() {
        let t = tempfile::tempdir().unwrap();
        make(t.path(), &["b.jpg", "a.JPG", "d/x.jpg", "c.gif", ".png"]);
        fs::create_dir(t.path().join("dir.jpg")).unwrap();
        let (l, _) = list(t.path(), false);
        assert_eq!(rows(&l), [(0, "a.JPG", 0), (1, "b.jpg", 0)]);
        assert_eq!(l.classes, ["."]);
    }

    #[test]
    fn root_without_images_gets_no_label() {
        let t = tempfile::tempdir().unwrap();
        make(t.path(), &["cat/1.jpg", "dog/2.jpg", "dog/1.jpg"]);
        let (l, _) = list(t.path(), true);
        assert_eq!(
            rows(&l),
            [
                (0, "cat/1.jpg", 0),
                (1, "dog/1.jpg", 1),
                (2, "dog/2.jpg", 1)
            ]
        );
        assert_eq!(l.classes, ["cat", "dog"]);
    }

    #[test]
    fn symlinks_are_followed_and_loops_skipped() {
        let t = tempfile::tempdir().unwrap();
        make(t.path(), &["real/a.jpg", "pics/b.jpg"]);
        symlink(t.path().join("real"), t.path().join("link")).unwrap();
        symlink(t.path().join("real/a.jpg"), t.path().join("pics/c.jpg")).unwrap();
        symlink("..", t.path().join("pics/up")).unwrap();
        symlink("missing", t.path().join("pics/gone.jpg")).unwrap();
        symlink("missing", t.path().join("pics/gone.txt")).unwrap();
        let (l, skipped) = list(t.path(), true);
        assert_eq!(
            rows(&l),
            [
                (0, "link/a.jpg", 0),
                (1, "pics/b.jpg", 1),
                (2, "pics/c.jpg", 1),
                (3, "real/a.jpg", 2)
            ]
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].starts_with("skipped broken symlink ROOT/pics/gone.jpg"));
        assert!(skipped[1].starts_with("skipped symlink loop ROOT/pics/up"));
    }

    #[test]
    fn non_utf8_names_are_skipped_and_reported() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        make(t.path(), &["a/ok.jpg"]);
        fs::write(t.path().join(OsStr::from_bytes(b"a/bad\xff.jpg")), b"x").unwrap();
        fs::write(t.path().join(OsStr::from_bytes(b"a/bad\xff.txt")), b"x").unwrap();
        let (l, skipped) = list(t.path(), true);
        assert_eq!(rows(&l), [(0, "a/ok.jpg", 0)]);
        assert_eq!(
            skipped,
            [r#"skipped "ROOT/a/bad\xFF.jpg": the name is not valid UTF-8"#]
        );
    }

    #[test]
    fn tabs_and_newlines_are_fatal() {
        let t = tempfile::tempdir().unwrap();
        make(t.path(), &["a/b\tc.jpg"]);
        let exts = exts();
        let opts = WalkOptions {
            root: t.path(),
            display_root: Path::new("R"),
            recursive: true,
            exts: &exts,
        };
        let err = list_images(&opts, &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "R/a/b\tc.jpg: the path contains a TAB, which would corrupt the .lst; rename it"
        );
    }

    #[test]
    fn missing_root_and_file_root_are_errors() {
        let t = tempfile::tempdir().unwrap();
        make(t.path(), &["f.jpg"]);
        let exts = exts();
        for (root, want) in [
            (t.path().join("nope"), "cannot open image root"),
            (t.path().join("f.jpg"), "is not a directory"),
        ] {
            let opts = WalkOptions {
                root: &root,
                display_root: &root,
                recursive: true,
                exts: &exts,
            };
            let err = list_images(&opts, &mut |_| {}).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
