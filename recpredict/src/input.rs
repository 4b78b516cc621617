//! Where the images come from: files and directories named on the command line,
//! paths read from stdin, a `.lst` with its image root, or the records of a `.rec`.
//!
//! Every source becomes one ordered stream of [`Item`]s; the output has one line per
//! item, in this order. Only an explicit `.lst` or `.rec` is read up front (a `.lst`
//! row that does not parse is a fatal error naming its line, before anything is
//! predicted); paths from stdin and directory walks are produced lazily, so
//! `find … | recpredict -m model -` starts predicting before the list ends.
//!
//! Directories are walked recursively in sorted order (entries of each directory
//! sorted by file name, depth first) and only `.jpg`, `.jpeg` and `.png` files are
//! taken (case-insensitive); a file named explicitly is always taken, whatever its
//! name.

use std::borrow::Cow;
use std::fs;
use std::io::{self, BufRead};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use im2rec::dataset::{self, Dataset, DatasetError, Labels, ReadMode};
use im2rec::recordio::{self, MmapReader};

pub use im2rec::dataset::default_idx;

/// The file extensions (lower case, without the dot) taken from directories.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// What the user asked to predict.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSpec {
    /// Image files and directories; `-` reads one path per line from stdin.
    Paths(Vec<PathBuf>),
    /// A `.lst` (index, label(s), path relative to `root`).
    Lst {
        /// The list file.
        lst: PathBuf,
        /// The directory the list's paths are relative to.
        root: PathBuf,
    },
    /// The image records of a RecordIO file.
    Rec {
        /// The `.rec` file.
        rec: PathBuf,
        /// Its `.idx`, when given or found next to it (`<stem>.idx`).
        idx: Option<PathBuf>,
    },
}

impl InputSpec {
    /// True when every item carries its true label (a `.lst` or a `.rec`).
    pub fn has_labels(&self) -> bool {
        !matches!(self, InputSpec::Paths(_))
    }
}

/// What is wrong with an input source as a whole (a single bad image is not an
/// error of this kind: it becomes an error line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The `.lst` cannot be opened or read.
    #[error("{path}: {source}")]
    LstIo {
        /// The list file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A `.lst` row does not parse.
    #[error("{path}: {source}")]
    LstRow {
        /// The list file.
        path: PathBuf,
        /// The row error (it names the line).
        #[source]
        source: im2list::lst::LstError,
    },
    /// The `.rec` (or its `.idx`) cannot be opened, or is corrupt where its records
    /// are located.
    #[error("{path}: {source}")]
    Rec {
        /// The record file.
        path: PathBuf,
        /// The RecordIO error (it names the byte offset).
        #[source]
        source: recordio::RecordIoError,
    },
    /// Reading paths from stdin failed.
    #[error("reading paths from stdin: {0}")]
    Stdin(#[source] io::Error),
}

impl From<DatasetError> for InputError {
    /// The variant of the same name (same fields, recpredict's wording).
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::Rec { path, source } => InputError::Rec { path, source },
            DatasetError::LstIo { path, source } => InputError::LstIo { path, source },
            DatasetError::LstRow { path, source } => InputError::LstRow { path, source },
            // Not produced when a dataset is opened leniently (records and image files
            // are read later, and their failures become error lines).
            DatasetError::Record { path, source, .. } => InputError::Rec { path, source },
            DatasetError::ImageFile { path, source, .. } => InputError::LstIo { path, source },
        }
    }
}

/// Which input an output line belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKey {
    /// An image file.
    Path(PathBuf),
    /// A record of the `.rec`: its IRHeader id, once the record has been read (`None`
    /// when its header cannot be read), and its byte offset.
    Record {
        /// The IRHeader `id` (the `.lst` index im2rec packed it from).
        id: Option<u64>,
        /// Where the record starts in the `.rec`.
        offset: u64,
    },
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemKey::Path(p) => write!(f, "{}", p.display()),
            ItemKey::Record {
                id: Some(id),
                offset,
            } => {
                write!(f, "record id {id} at byte offset {offset}")
            }
            ItemKey::Record { id: None, offset } => write!(f, "record at byte offset {offset}"),
        }
    }
}

/// One image to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Which input this is (for records the id is filled in once the record is read).
    pub key: ItemKey,
    /// The name of its `--output-dir` file without the `.out`, relative to that
    /// directory; `None` for records until their id is known.
    pub out_name: Option<PathBuf>,
    /// The true label(s), from the `.lst` or the record header.
    pub labels: Option<Labels>,
    /// Where its bytes are.
    pub source: ItemSource,
    /// An error found while listing it (e.g. an unreadable directory entry); such an
    /// item is reported as failed without being read.
    pub listing_error: Option<String>,
}

/// Where an item's encoded image is.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemSource {
    /// A file on disk.
    File(PathBuf),
    /// The record at this byte offset of the opened `.rec`.
    Record(u64),
}

/// A stream of items plus what is needed to read them.
pub struct Inputs {
    /// The items, in output order.
    pub items: Box<dyn Iterator<Item = Item> + Send>,
    /// The opened `.rec` for [`ItemSource::Record`] items.
    pub rec: Option<Arc<MmapReader>>,
}

/// The bytes of an item, plus what reading them revealed (record id and labels).
pub struct ItemBytes<'a> {
    /// The encoded image.
    pub image: Cow<'a, [u8]>,
    /// The record header's id (records only).
    pub id: Option<u64>,
    /// The record header's label(s) (records only).
    pub labels: Option<Labels>,
}

/// Read an item's encoded image. For a record this unpacks the IRHeader (the id and
/// labels are returned with the image); a failure is a message for the error line.
pub fn read_item<'a>(item: &Item, rec: Option<&'a MmapReader>) -> Result<ItemBytes<'a>, String> {
    if let Some(err) = &item.listing_error {
        return Err(err.clone());
    }
    match &item.source {
        ItemSource::File(path) => match fs::read(path) {
            Ok(bytes) => Ok(ItemBytes {
                image: Cow::Owned(bytes),
                id: None,
                labels: None,
            }),
            Err(e) => Err(format!("cannot read: {e}")),
        },
        ItemSource::Record(offset) => {
            let rec = rec.ok_or_else(|| "no .rec is open".to_string())?;
            let record = dataset::read_record(rec, *offset).map_err(|e| e.to_string())?;
            Ok(ItemBytes {
                image: record.image,
                id: Some(record.id),
                labels: Some(record.labels),
            })
        }
    }
}

/// Open the inputs. `stdin` is used when a path is `-` (it is read lazily, on the
/// thread that consumes the items).
pub fn open(spec: &InputSpec, stdin: Box<dyn BufRead + Send>) -> Result<Inputs, InputError> {
    match spec {
        InputSpec::Paths(paths) => Ok(Inputs {
            items: Box::new(PathItems::new(paths.clone(), stdin)),
            rec: None,
        }),
        InputSpec::Lst { lst, root } => {
            let items = lst_items(lst, root)?;
            Ok(Inputs {
                items: Box::new(items.into_iter()),
                rec: None,
            })
        }
        InputSpec::Rec { rec, idx } => {
            let (reader, items) = open_rec(rec, idx.as_deref())?;
            Ok(Inputs {
                items: Box::new(items.into_iter()),
                rec: reader,
            })
        }
    }
}

/// A path from the bytes of a line (any bytes on Unix; elsewhere, lossy UTF-8).
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Open a `.rec` and list its records in file order ([`ReadMode::Lenient`]): from the
/// `.idx` or, without one, by scanning. A damaged record does not stop the others: an
/// `.idx` offset that is not a whole record fails when it is read (an error line for
/// that record), and a scan that meets a damaged record keeps the records before it
/// and ends with one failed item naming where it stopped (a `.rec` cannot be
/// resynchronised reliably).
fn open_rec(
    rec: &Path,
    idx: Option<&Path>,
) -> Result<(Option<Arc<MmapReader>>, Vec<Item>), InputError> {
    let ds = Dataset::open_rec(rec, idx, ReadMode::Lenient)?;
    let items = (0..ds.len())
        .map(|i| {
            let offset = ds.offset(i).unwrap_or_default();
            Item {
                key: ItemKey::Record { id: None, offset },
                out_name: None,
                labels: None,
                source: ItemSource::Record(offset),
                listing_error: ds.failure(i).map(str::to_owned),
            }
        })
        .collect();
    Ok((ds.reader().cloned(), items))
}

/// Read a whole `.lst` ([`ReadMode::Lenient`]: a malformed row is an error naming its
/// line; the files are read, or found missing, when predicted).
fn lst_items(lst: &Path, root: &Path) -> Result<Vec<Item>, InputError> {
    let ds = Dataset::open_lst(lst, root, ReadMode::Lenient)?;
    let items = (0..ds.len())
        .map(|i| {
            let rel = ds.listed_path(i).map(Path::to_path_buf).unwrap_or_default();
            Item {
                key: ItemKey::Path(rel.clone()),
                out_name: Some(safe_relative(&rel)),
                labels: Some(ds.labels()[i].clone()),
                source: ItemSource::File(root.join(&rel)),
                listing_error: None,
            }
        })
        .collect();
    Ok(items)
}

/// `rel` when it is a plain relative path (only normal components), else its file
/// name: an output name must never escape the output directory.
fn safe_relative(rel: &Path) -> PathBuf {
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if plain && rel.components().next().is_some() {
        rel.to_path_buf()
    } else {
        rel.file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("_"))
    }
}

/// True for the file names a directory walk takes.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The lazy item stream of [`InputSpec::Paths`].
struct PathItems {
    args: std::vec::IntoIter<PathBuf>,
    stdin: Option<Box<dyn BufRead + Send>>,
    current: Current,
}

enum Current {
    None,
    Walk {
        root: PathBuf,
        walk: walkdir::IntoIter,
    },
    Stdin,
}

impl PathItems {
    fn new(args: Vec<PathBuf>, stdin: Box<dyn BufRead + Send>) -> Self {
        PathItems {
            args: args.into_iter(),
            stdin: Some(stdin),
            current: Current::None,
        }
    }

    fn file_item(path: PathBuf, out_name: PathBuf) -> Item {
        Item {
            key: ItemKey::Path(path.clone()),
            out_name: Some(out_name),
            labels: None,
            source: ItemSource::File(path),
            listing_error: None,
        }
    }

    fn failed_item(path: PathBuf, error: String) -> Item {
        let mut item = Self::file_item(path.clone(), safe_relative(&path));
        item.listing_error = Some(error);
        item
    }

    /// An item for a file named explicitly (argument or stdin line).
    fn named(path: PathBuf) -> Item {
        let name = path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("_"));
        Self::file_item(path, name)
    }
}

impl Iterator for PathItems {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            match &mut self.current {
                Current::Walk { root, walk } => match walk.next() {
                    Some(Ok(entry)) => {
                        if entry.file_type().is_dir() || !is_image_name(entry.path()) {
                            continue;
                        }
                        let rel = entry
                            .path()
                            .strip_prefix(&*root)
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|_| entry.path().to_path_buf());
                        return Some(Self::file_item(entry.into_path(), safe_relative(&rel)));
                    }
                    Some(Err(e)) => {
                        // An unreadable directory (or a symlink loop) under the walk:
                        // report it as a failed input instead of dropping it silently.
                        let path = e.path().map(Path::to_path_buf).unwrap_or(root.clone());
                        let msg = match e.io_error() {
                            Some(io) => format!("cannot list: {io}"),
                            None => format!("cannot list: {e}"),
                        };
                        return Some(Self::failed_item(path, msg));
                    }
                    None => self.current = Current::None,
                },
                Current::Stdin => {
                    let Some(stdin) = self.stdin.as_mut() else {
                        self.current = Current::None;
                        continue;
                    };
                    // Bytes, not text: a file name need not be UTF-8.
                    let mut line = Vec::new();
                    match stdin.read_until(b'\n', &mut line) {
                        Ok(0) => {
                            self.stdin = None;
                            self.current = Current::None;
                        }
                        Ok(_) => {
                            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                line.pop();
                            }
                            if line.is_empty() {
                                continue;
                            }
                            return Some(Self::named(path_from_bytes(line)));
                        }
                        Err(e) => {
                            self.stdin = None;
                            self.current = Current::None;
                            return Some(Self::failed_item(
                                PathBuf::from("-"),
                                InputError::Stdin(e).to_string(),
                            ));
                        }
                    }
                }
                Current::None => {
                    let arg = self.args.next()?;
                    if arg.as_os_str() == "-" {
                        self.current = Current::Stdin;
                    } else if arg.is_dir() {
                        let walk = walkdir::WalkDir::new(&arg)
                            .follow_links(true)
                            .sort_by_file_name()
                            .into_iter();
                        self.current = Current::Walk { root: arg, walk };
                    } else {
                        return Some(Self::named(arg));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(inputs: Inputs) -> Vec<String> {
        inputs.items.map(|i| i.key.to_string()).collect()
    }

    #[test]
    fn directories_are_walked_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("b/inner")).unwrap();
        fs::create_dir_all(d.join("a")).unwrap();
        for f in [
            "b/2.PNG",
            "b/1.jpg",
            "b/inner/x.jpeg",
            "a/z.png",
            "a/notes.txt",
            "top.jpg",
        ] {
            fs::write(d.join(f), b"x").unwrap();
        }
        let spec = InputSpec::Paths(vec![d.to_path_buf()]);
        let inputs = open(&spec, Box::new(io::empty())).unwrap();
        let items: Vec<Item> = inputs.items.collect();
        let rel: Vec<PathBuf> = items.iter().map(|i| i.out_name.clone().unwrap()).collect();
        assert_eq!(
            rel,
            ["a/z.png", "b/1.jpg", "b/2.PNG", "b/inner/x.jpeg", "top.jpg"]
                .map(PathBuf::from)
                .to_vec()
        );
        assert_eq!(items[0].key, ItemKey::Path(d.join("a/z.png")));
    }

    #[test]
    fn stdin_paths_and_arguments_keep_their_order() {
        let spec = InputSpec::Paths(vec!["first.jpg".into(), "-".into(), "last.bin".into()]);
        let stdin = io::Cursor::new(b"one.png\r\n\ndir/two.jpg\n".to_vec());
        let inputs = open(&spec, Box::new(stdin)).unwrap();
        assert_eq!(
            keys(inputs),
            ["first.jpg", "one.png", "dir/two.jpg", "last.bin"]
        );
    }

    #[test]
    fn lst_rows_become_items_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let lst = dir.path().join("x.lst");
        fs::write(&lst, "3\t1.000000\tcat/a.jpg\n7\t0.000000\t../up.png\n").unwrap();
        let spec = InputSpec::Lst {
            lst: lst.clone(),
            root: "/data".into(),
        };
        let items: Vec<Item> = open(&spec, Box::new(io::empty())).unwrap().items.collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, ItemKey::Path("cat/a.jpg".into()));
        assert_eq!(items[0].labels, Some(vec![1.0]));
        assert_eq!(items[0].source, ItemSource::File("/data/cat/a.jpg".into()));
        assert_eq!(items[1].out_name, Some(PathBuf::from("up.png")));
    }

    #[test]
    fn a_malformed_lst_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let lst = dir.path().join("x.lst");
        fs::write(&lst, "0\t1\ta.jpg\nbroken\n").unwrap();
        let spec = InputSpec::Lst {
            lst,
            root: dir.path().into(),
        };
        let err = open(&spec, Box::new(io::empty()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn records_are_read_with_their_header() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("x.rec");
        let mut w = recordio::RecordWriter::new(Vec::new());
        w.write_record(&recordio::pack_image_record(5, &[2.0], false, b"IMG5"))
            .unwrap();
        w.write_record(&recordio::pack_image_record(9, &[1.0, 0.0], true, b"IMG9"))
            .unwrap();
        fs::write(&rec, w.into_inner().unwrap()).unwrap();
        let spec = InputSpec::Rec { rec, idx: None };
        let inputs = open(&spec, Box::new(io::empty())).unwrap();
        let reader = inputs.rec.clone().unwrap();
        let items: Vec<Item> = inputs.items.collect();
        assert_eq!(items.len(), 2);
        let first = read_item(&items[0], Some(&reader)).unwrap();
        assert_eq!(&*first.image, b"IMG5");
        assert_eq!((first.id, first.labels), (Some(5), Some(vec![2.0])));
        let second = read_item(&items[1], Some(&reader)).unwrap();
        assert_eq!(&*second.image, b"IMG9");
        assert_eq!((second.id, second.labels), (Some(9), Some(vec![1.0, 0.0])));
    }

    #[test]
    fn image_names() {
        assert!(is_image_name(Path::new("a/b.JPG")));
        assert!(is_image_name(Path::new("b.jpeg")));
        assert!(!is_image_name(Path::new("b.gif")));
        assert!(!is_image_name(Path::new(".png")));
    }
}
