//! `make_list`: list, shuffle, split and write, like `im2rec.py --list` 1.9.1.
//!
//! Every output file is written to a temporary name in its directory and renamed
//! only after all of them were written, so an error never leaves a partial list
//! beside the old ones.

use std::ffi::OsString;
use std::fs::Permissions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::lst::LstEntry;
use crate::pyrandom::PyRandom;
use crate::split::{self, ListKind};
use crate::walk::{self, Image, Listing, Skipped, WalkError, WalkOptions};

/// Where the lists go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Files named `<prefix><chunk><kind>.lst`; `prefix` is already
    /// `os.path.abspath`-ed (see [`crate::pypath::abspath`]).
    Files {
        /// The absolute prefix.
        prefix: PathBuf,
    },
    /// A single list on the given writer (PREFIX `-`); only without splits and chunks.
    Stdout,
}

/// A validated `im2list` run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The image root as given (used in messages).
    pub root: PathBuf,
    /// `os.path.abspath(root)`: the path walked.
    pub root_abs: PathBuf,
    /// Where the lists go.
    pub output: Output,
    /// Where the class names go, if anywhere.
    pub classes: Option<PathBuf>,
    /// Label by directory, walking subdirectories.
    pub recursive: bool,
    /// Accepted extensions, compared with the lower-cased file suffix.
    pub exts: Vec<String>,
    /// Number of chunks, at least 1.
    pub chunks: usize,
    /// `--train-ratio`, finite.
    pub train_ratio: f64,
    /// `--test-ratio`, finite.
    pub test_ratio: f64,
    /// The `random.seed` for the shuffle, or `None` for `--no-shuffle`.
    pub shuffle_seed: Option<u64>,
}

/// Fatal errors of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// Listing failed.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// The root holds no file with an accepted extension.
    #[error("no images with extension {} found in {}{}", exts.join(" "), root.display(),
        if *recursive { "" } else { " (without --recursive, only files directly in it count)" })]
    NoImages {
        /// The root as given.
        root: PathBuf,
        /// The extensions looked for.
        exts: Vec<String>,
        /// Whether subdirectories were searched.
        recursive: bool,
    },
    /// Writing an output failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file (or `-` for stdout).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Number of images listed.
    pub images: usize,
    /// The class names in label order.
    pub classes: Vec<String>,
    /// The files written, in the order im2rec.py writes them (classes file last).
    pub written: Vec<PathBuf>,
    /// Number of items skipped with a warning.
    pub skipped: usize,
}

/// Run `im2list`: list the images, print `dir label` lines on `log` (recursive mode,
/// as im2rec.py prints them on its stdout), shuffle, split and write the lists.
/// Skipped items go to `on_skip`; the returned summary counts them.
pub fn make_lists(
    config: &Config,
    stdout: &mut dyn Write,
    log: &mut dyn Write,
    on_skip: &mut dyn FnMut(&Skipped),
) -> Result<Summary, ListError> {
    let mut skipped = 0;
    let opts = WalkOptions {
        root: &config.root_abs,
        display_root: &config.root,
        recursive: config.recursive,
        exts: &config.exts,
    };
    let Listing {
        mut images,
        classes,
    } = walk::list_images(&opts, &mut |s| {
        skipped += 1;
        on_skip(&s);
    })?;
    if images.is_empty() {
        return Err(ListError::NoImages {
            root: config.root.clone(),
            exts: config.exts.clone(),
            recursive: config.recursive,
        });
    }
    if config.recursive {
        let mut text = String::new();
        for (label, dir) in classes.iter().enumerate() {
            text.push_str(&format!("{dir} {label}\n"));
        }
        write_log(log, &text);
    }
    if let Some(seed) = config.shuffle_seed {
        PyRandom::new(seed).shuffle(&mut images);
    }

    let mut pending = Vec::new();
    match &config.output {
        Output::Stdout => {
            let err = |source| ListError::Write {
                path: PathBuf::from("-"),
                source,
            };
            write_rows(stdout, &images).map_err(err)?;
            stdout.flush().map_err(err)?;
        }
        Output::Files { prefix } => {
            let parts = split::plan(
                images.len(),
                config.chunks,
                config.train_ratio,
                config.test_ratio,
            );
            for part in parts {
                debug_assert!(config.chunks > 1 || part.chunk.is_none());
                debug_assert!(part.kind != ListKind::All || config.train_ratio == 1.0);
                let mut name = OsString::from(prefix.as_os_str());
                name.push(part.file_suffix());
                let path = PathBuf::from(name);
                let rows = &images[part.range.clone()];
                pending.push(write_temp(&path, |w| write_rows(w, rows))?);
            }
        }
    }
    if let Some(path) = &config.classes {
        let text: String = classes.iter().map(|c| format!("{c}\n")).collect();
        pending.push(write_temp(path, |w| w.write_all(text.as_bytes()))?);
    }
    let mut written = Vec::with_capacity(pending.len());
    for (tmp, path) in pending {
        tmp.persist(&path).map_err(|e| ListError::Write {
            path: path.clone(),
            source: e.error,
        })?;
        written.push(path);
    }
    Ok(Summary {
        images: images.len(),
        classes,
        written,
        skipped,
    })
}

/// Best effort: a closed stderr must not stop the lists from being written.
fn write_log(log: &mut dyn Write, text: &str) {
    let _ = log.write_all(text.as_bytes());
    let _ = log.flush();
}

fn write_rows(w: &mut dyn Write, images: &[Image]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 16, w);
    for image in images {
        let entry = LstEntry::new(image.index, f64::from(image.label), image.path.as_str());
        w.write_all(entry.to_line().as_bytes())?;
    }
    w.flush()
}

/// Write `path`'s contents to a fresh temporary file beside it (mode 0666 minus the
/// umask, like Python's `open(path, 'w')`), returning it unpersisted.
fn write_temp(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(tempfile::NamedTempFile, PathBuf), ListError> {
    let err = |source| ListError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(err)?;
    fill(tmp.as_file_mut()).map_err(err)?;
    tmp.as_file().sync_data().ok();
    Ok((tmp, path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn tree(root: &Path, files: &[&str]) {
        for f in files {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"").unwrap();
        }
    }

    fn config(root: &Path, prefix: &Path) -> Config {
        Config {
            root: root.to_path_buf(),
            root_abs: root.to_path_buf(),
            output: Output::Files {
                prefix: prefix.to_path_buf(),
            },
            classes: None,
            recursive: true,
            exts: [".jpeg", ".jpg", ".png"].map(String::from).to_vec(),
            chunks: 1,
            train_ratio: 1.0,
            test_ratio: 0.0,
            shuffle_seed: Some(100),
        }
    }

    #[test]
    fn writes_the_seed_100_shuffle_and_class_lines() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("img");
        tree(
            &root,
            &["a/0.jpg", "a/1.jpg", "b/2.jpg", "b/3.jpg", "c/4.jpg"],
        );
        let mut cfg = config(&root, &t.path().join("out"));
        cfg.classes = Some(t.path().join("out.classes"));
        let mut log = Vec::new();
        let summary = make_lists(&cfg, &mut io::sink(), &mut log, &mut |_| {}).unwrap();
        assert_eq!(String::from_utf8(log).unwrap(), "a 0\nb 1\nc 2\n");
        // shuffle(range(5)) with seed 100 is [2, 0, 4, 3, 1].
        assert_eq!(
            fs::read_to_string(t.path().join("out.lst")).unwrap(),
            "2\t1.000000\tb/2.jpg\n0\t0.000000\ta/0.jpg\n4\t2.000000\tc/4.jpg\n\
             3\t1.000000\tb/3.jpg\n1\t0.000000\ta/1.jpg\n"
        );
        assert_eq!(
            fs::read_to_string(t.path().join("out.classes")).unwrap(),
            "a\nb\nc\n"
        );
        assert_eq!(summary.images, 5);
        assert_eq!(summary.written.len(), 2);
        assert_eq!(names_in(t.path()), ["img", "out.classes", "out.lst"]);
    }

    #[test]
    fn splits_and_stdout() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("img");
        let names: Vec<String> = (0..10).map(|i| format!("{i}.png")).collect();
        tree(&root, &names.iter().map(String::as_str).collect::<Vec<_>>());
        let mut cfg = config(&root, &t.path().join("p"));
        cfg.recursive = false;
        cfg.shuffle_seed = None;
        cfg.train_ratio = 0.7;
        cfg.test_ratio = 0.2;
        let mut log = Vec::new();
        make_lists(&cfg, &mut io::sink(), &mut log, &mut |_| {}).unwrap();
        assert!(log.is_empty(), "flat mode prints no class lines");
        let read = |n: &str| fs::read_to_string(t.path().join(n)).unwrap();
        assert_eq!(
            read("p_test.lst"),
            "0\t0.000000\t0.png\n1\t0.000000\t1.png\n"
        );
        assert_eq!(read("p_val.lst"), "9\t0.000000\t9.png\n");
        assert_eq!(read("p_train.lst").lines().count(), 7);

        cfg.output = Output::Stdout;
        cfg.train_ratio = 1.0;
        let mut out = Vec::new();
        make_lists(&cfg, &mut out, &mut io::sink(), &mut |_| {}).unwrap();
        assert_eq!(out.len(), 10 * "0\t0.000000\t0.png\n".len());
    }

    #[test]
    fn an_empty_root_is_an_error_and_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("img");
        tree(&root, &["a/readme.txt"]);
        let cfg = config(&root, &t.path().join("out"));
        let err = make_lists(&cfg, &mut io::sink(), &mut io::sink(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, ListError::NoImages { .. }), "{err}");
        assert_eq!(names_in(t.path()), ["img"]);
    }

    #[test]
    fn a_missing_output_directory_is_a_write_error() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("img");
        tree(&root, &["a.jpg"]);
        let cfg = config(&root, &t.path().join("no/such/dir/out"));
        let err = make_lists(&cfg, &mut io::sink(), &mut io::sink(), &mut |_| {}).unwrap_err();
        assert!(err.to_string().starts_with("cannot write "), "{err}");
        assert!(err.to_string().contains("no/such/dir/out.lst"), "{err}");
    }
}
