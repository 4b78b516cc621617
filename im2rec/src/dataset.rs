//! Labelled image collections: the one reader of `.rec` (+ `.idx`) and `.lst` + image
//! root that rectrain (training) and recpredict (prediction) share.
//!
//! A [`Dataset`] is opened in one of two [`ReadMode`]s, which differ only in what they
//! do with damage:
//!
//! - [`ReadMode::Strict`] (training): a `.rec` is taken in `.idx` order (every offset
//!   checked when opened) or, without an `.idx`, by scanning the whole file; every
//!   record's IRHeader is read when the dataset is opened, so ids and labels are known
//!   up front; a damaged record or a bad scan is an error naming the file, the record
//!   and its byte offset. Every file a `.lst` names must exist.
//! - [`ReadMode::Lenient`] (prediction): a `.rec` is taken in file order — the `.idx`
//!   offsets sorted and de-duplicated, its keys ignored, as MXNet's C++ reader does —
//!   and nothing but the framing is read when opened (an `.idx` offset that is not a
//!   whole record fails when it is read). Without an `.idx`, a scan that meets a
//!   damaged record keeps the records before it and ends with one failed entry that
//!   says where reading stopped (a `.rec` cannot be resynchronised reliably). Ids and
//!   labels of a `.rec` are learnt when each record is read ([`read_record`]); a
//!   `.lst`'s files are not checked until they are read.
//!
//! The pieces both tools use directly: [`read_record`] (the one place a record's image
//! is cut out of its payload, borrowed from the map when possible), [`default_idx`]
//! (the `<stem>.idx` beside a `.rec`), [`Labels`] (the label representation),
//! [`Location`] and [`not_a_directory`].

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use im2list::lst::{read_entries, LstError};

use crate::recordio::{read_index_file, unpack_image_record, MmapReader, PairLock, RecordIoError};

/// A record's labels: one value (a class index) for single-label data (IRHeader
/// `flag` 0, or 1 with a one-element vector, which ImageRecordIter reads as one label
/// too), the stored vector for multi-label data. `.lst` labels (text, read as `f64`)
/// are narrowed to `f32`, as im2rec stores them.
pub type Labels = Vec<f32>;

/// Labels of a `.lst` row as a [`Labels`] (each value narrowed to `f32`).
pub fn labels_from_lst(labels: &[f64]) -> Labels {
    labels.iter().map(|&l| l as f32).collect()
}

/// The `.idx` im2rec writes next to `x.rec`: `x.idx`.
pub fn default_idx(rec: &Path) -> PathBuf {
    rec.with_extension("idx")
}

/// `Ok` when `path` exists and is not a directory (an image or weights file to read
/// later); the I/O error, or "is a directory", otherwise.
pub fn not_a_directory(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path)?.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    Ok(())
}

/// How a [`Dataset`] treats damage (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Training: `.idx` order, every header read and checked when opened, any damage
    /// is an error.
    Strict,
    /// Prediction: file order, headers read with each record, damage confined to the
    /// records it touches.
    Lenient,
}

/// Where a record lives, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A record of a `.rec`, at this byte offset.
    Rec {
        /// The `.rec` file.
        path: PathBuf,
        /// Byte offset of the record's first part.
        offset: u64,
    },
    /// An image file named by a `.lst`.
    File {
        /// The image file.
        path: PathBuf,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Rec { path, offset } => {
                write!(f, "{} at byte offset {offset}", path.display())
            }
            Location::File { path } => write!(f, "{}", path.display()),
        }
    }
}

/// A record's image with what its IRHeader says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordImage<'a> {
    /// The IRHeader `id` (im2rec: the `.lst` index).
    pub id: u64,
    /// The record's labels.
    pub labels: Labels,
    /// The encoded image: borrowed from the map unless the record was split at a
    /// magic word (then reassembled into an owned buffer, which is reused).
    pub image: Cow<'a, [u8]>,
}

/// Read the record at `offset` and unpack its IRHeader: the one implementation of
/// "the image of a record". Fails if no whole record starts there or its payload is
/// not an image record.
pub fn read_record(reader: &MmapReader, offset: u64) -> Result<RecordImage<'_>, RecordIoError> {
    let (payload, _) = reader.read_at(offset)?;
    let (id, labels, range) = {
        let record = unpack_image_record(&payload)?;
        let start = record.image.as_ptr() as usize - payload.as_ptr() as usize;
        (
            record.header.id,
            record.labels,
            start..start + record.image.len(),
        )
    };
    let image = match payload {
        Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
        Cow::Owned(mut v) => {
            v.truncate(range.end);
            v.drain(..range.start);
            Cow::Owned(v)
        }
    };
    Ok(RecordImage { id, labels, image })
}

/// `path: error`, or just the error when its text names `path` already (the message
/// of [`DatasetError::Rec`], and of rectrain's error for a dataset it cannot open).
pub fn prefixed(path: &Path, error: &dyn std::fmt::Display) -> String {
    let (path, text) = (path.display().to_string(), error.to_string());
    if text.contains(&path) {
        text
    } else {
        format!("{path}: {text}")
    }
}

/// What can go wrong opening a dataset or reading one of its images. The messages are
/// rectrain's; recpredict words its own from the same fields. Exhaustive on purpose:
/// each tool maps every variant to its own error type.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The `.rec` or `.idx` could not be opened, or its framing is corrupt. `path` is
    /// the `.rec`, except in lenient mode when the `.idx` itself cannot be read: then
    /// it is the `.idx` (strict mode names the `.rec` for every index problem).
    #[error("{}", prefixed(path, source))]
    Rec {
        /// The `.rec` (or `.idx`, see above).
        path: PathBuf,
        /// What the RecordIO reader found.
        source: RecordIoError,
    },
    /// A record whose payload is not a valid image record (IRHeader), or that cannot
    /// be read where the dataset says it is.
    #[error("{}: record #{position} at byte offset {offset}: {source}", path.display())]
    Record {
        /// The `.rec` file.
        path: PathBuf,
        /// 0-based position of the record in the dataset (index or file order).
        position: usize,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong with it.
        source: RecordIoError,
    },
    /// An image file named by the `.lst` that cannot be read.
    #[error("record id {id}: cannot read {}: {source}", path.display())]
    ImageFile {
        /// The `.lst` index.
        id: u64,
        /// The image file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The `.lst` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    LstIo {
        /// The `.lst` file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A malformed `.lst` row.
    #[error("{}: {source}", path.display())]
    LstRow {
        /// The `.lst` file.
        path: PathBuf,
        /// The row error (names the line).
        source: LstError,
    },
}

/// Where a lenient scan stopped: the offset of the damaged record and why.
#[derive(Debug)]
struct ScanStop {
    offset: u64,
    message: String,
}

enum Source {
    Rec {
        path: PathBuf,
        reader: Arc<MmapReader>,
        /// The whole records, in dataset order.
        offsets: Vec<u64>,
        /// Lenient scans only: the failed last entry.
        stop: Option<ScanStop>,
    },
    Files {
        root: PathBuf,
        /// Each image's path as the `.lst` names it (relative to `root`).
        listed: Vec<PathBuf>,
    },
}

/// A labelled image collection: a `.rec` (+ optional `.idx`) or a `.lst` + image root,
/// opened in a [`ReadMode`].
pub struct Dataset {
    mode: ReadMode,
    source: Source,
    ids: Vec<u64>,
    labels: Vec<Labels>,
    multi_label: bool,
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Rec { path, .. } => format!("rec {}", path.display()),
            Source::Files { .. } => "image files".to_string(),
        };
        f.debug_struct("Dataset")
            .field("mode", &self.mode)
            .field("source", &source)
            .field("len", &self.len())
            .field("multi_label", &self.multi_label)
            .finish()
    }
}

impl Dataset {
    /// Map `rec` and list its records. Strict: in the order of `idx` (each offset
    /// checked) or of a whole-file scan, every header read now. Lenient: the sorted,
    /// de-duplicated offsets of `idx`, or a scan that keeps the records before a
    /// damaged one and ends with one failed entry ([`failure`](Self::failure)).
    pub fn open_rec(rec: &Path, idx: Option<&Path>, mode: ReadMode) -> Result<Self, DatasetError> {
        match mode {
            ReadMode::Strict => Self::open_rec_strict(rec, idx),
            ReadMode::Lenient => Self::open_rec_lenient(rec, idx),
        }
    }

    /// [`open_rec`](Self::open_rec) with the `.idx` next to `rec` ([`default_idx`])
    /// when that file exists, else without one.
    pub fn open_rec_auto(rec: &Path, mode: ReadMode) -> Result<Self, DatasetError> {
        let idx = default_idx(rec);
        let idx = idx.is_file().then_some(idx);
        Self::open_rec(rec, idx.as_deref(), mode)
    }

    fn open_rec_strict(rec: &Path, idx: Option<&Path>) -> Result<Self, DatasetError> {
        let rec_err = |source| DatasetError::Rec {
            path: rec.to_path_buf(),
            source,
        };
        let (reader, offsets) = match idx {
            Some(idx) => {
                // The pair is opened under the folder's shared lock: never the .idx of
                // one im2rec run with the .rec of another (see `PairLock`).
                let lock = PairLock::shared(rec);
                let reader = MmapReader::open_indexed(rec, idx).map_err(rec_err)?;
                drop(lock);
                let offsets = reader.index().iter().map(|e| e.offset).collect();
                (reader, offsets)
            }
            None => {
                let reader = MmapReader::open(rec).map_err(rec_err)?;
                let offsets = reader.scan_offsets().map_err(rec_err)?;
                (reader, offsets)
            }
        };
        let mut ids = Vec::with_capacity(offsets.len());
        let mut labels = Vec::with_capacity(offsets.len());
        let mut multi_label = false;
        for (position, &offset) in offsets.iter().enumerate() {
            let record_err = |source| DatasetError::Record {
                path: rec.to_path_buf(),
                position,
                offset,
                source,
            };
            let (payload, _) = reader.read_at(offset).map_err(rec_err)?;
            let record = unpack_image_record(&payload).map_err(record_err)?;
            // A label vector of width 1 (`flag == 1`, what Python's `recordio.pack`
            // writes for a one-element list) is a single label, as ImageRecordIter
            // reads it with label_width 1.
            multi_label |= record.labels.len() > 1;
            ids.push(record.header.id);
            labels.push(record.labels);
        }
        Ok(Dataset {
            mode: ReadMode::Strict,
            source: Source::Rec {
                path: rec.to_path_buf(),
                reader: Arc::new(reader),
                offsets,
                stop: None,
            },
            ids,
            labels,
            multi_label,
        })
    }

    fn open_rec_lenient(rec: &Path, idx: Option<&Path>) -> Result<Self, DatasetError> {
        // With an .idx, the pair is opened under the folder's shared lock (see
        // `open_rec_strict`); the map keeps this .rec's bytes after a rename over it.
        let lock = idx.map(|_| PairLock::shared(rec));
        let reader = MmapReader::open(rec).map_err(|source| DatasetError::Rec {
            path: rec.to_path_buf(),
            source,
        })?;
        let (offsets, stop) = match idx {
            Some(idx) => {
                let entries = read_index_file(idx).map_err(|source| DatasetError::Rec {
                    path: idx.to_path_buf(),
                    source,
                })?;
                drop(lock);
                let mut offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
                // The C++ reader ignores the keys and reads the records in file order;
                // so do we (an index listing a record twice still yields it once).
                offsets.sort_unstable();
                offsets.dedup();
                (offsets, None)
            }
            None => {
                let (offsets, stop) = reader.scan_offsets_until_error();
                let stop = stop.map(|(offset, e)| {
                    let rest = reader.file_len() - offset;
                    ScanStop {
                        offset,
                        message: format!(
                            "{e}; the rest of the file ({rest} bytes from here) cannot be read"
                        ),
                    }
                });
                (offsets, stop)
            }
        };
        Ok(Dataset {
            mode: ReadMode::Lenient,
            source: Source::Rec {
                path: rec.to_path_buf(),
                reader: Arc::new(reader),
                offsets,
                stop,
            },
            ids: Vec::new(),
            labels: Vec::new(),
            multi_label: false,
        })
    }

    /// Images under `root` listed by the `.lst` at `lst` (`index<TAB>label…<TAB>path`),
    /// in list order; a malformed row is an error naming its line. Strict: every listed
    /// file must exist (and not be a directory). A row with several labels makes the
    /// dataset multi-label.
    pub fn open_lst(lst: &Path, root: &Path, mode: ReadMode) -> Result<Self, DatasetError> {
        let file = File::open(lst).map_err(|source| DatasetError::LstIo {
            path: lst.to_path_buf(),
            source,
        })?;
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        let mut listed = Vec::new();
        let mut multi_label = false;
        // Rows split and parsed as im2rec reads them (im2rec.py's read_list).
        for row in read_entries(BufReader::new(file)) {
            let row = row.map_err(|source| DatasetError::LstIo {
                path: lst.to_path_buf(),
                source,
            })?;
            let entry = row.map_err(|source| DatasetError::LstRow {
                path: lst.to_path_buf(),
                source,
            })?;
            let rel = PathBuf::from(&entry.path);
            if mode == ReadMode::Strict {
                let path = root.join(&rel);
                if let Err(source) = not_a_directory(&path) {
                    return Err(DatasetError::ImageFile {
                        id: entry.index,
                        path,
                        source,
                    });
                }
            }
            multi_label |= entry.labels.len() > 1;
            ids.push(entry.index);
            labels.push(labels_from_lst(&entry.labels));
            listed.push(rel);
        }
        Ok(Dataset {
            mode,
            source: Source::Files {
                root: root.to_path_buf(),
                listed,
            },
            ids,
            labels,
            multi_label,
        })
    }

    /// The mode the dataset was opened in.
    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    /// Number of entries (for a lenient scan, the failed entry included).
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Rec { offsets, stop, .. } => offsets.len() + usize::from(stop.is_some()),
            Source::Files { listed, .. } => listed.len(),
        }
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record ids (IRHeader `id`, or the `.lst` index) known when the dataset was
    /// opened, in dataset order: every entry's, except for a lenient `.rec`, whose
    /// headers are read with each record ([`read_record`]): empty then.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// Each entry's labels, known as [`ids`](Self::ids) are (empty for a lenient
    /// `.rec`).
    pub fn labels(&self) -> &[Labels] {
        &self.labels
    }

    /// True when any entry read so far carries several labels (a `.rec` label vector,
    /// or a `.lst` row with several label columns).
    pub fn is_multi_label(&self) -> bool {
        self.multi_label
    }

    /// The opened `.rec` (`None` for a `.lst`).
    pub fn reader(&self) -> Option<&Arc<MmapReader>> {
        match &self.source {
            Source::Rec { reader, .. } => Some(reader),
            Source::Files { .. } => None,
        }
    }

    /// The `.rec` file (`None` for a `.lst`).
    pub fn rec_path(&self) -> Option<&Path> {
        match &self.source {
            Source::Rec { path, .. } => Some(path),
            Source::Files { .. } => None,
        }
    }

    /// Byte offset of entry `i` of a `.rec` (`None` for a `.lst`).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn offset(&self, i: usize) -> Option<u64> {
        match &self.source {
            Source::Rec { offsets, stop, .. } => Some(match (offsets.get(i), stop) {
                (Some(&offset), _) => offset,
                (None, Some(stop)) if i == offsets.len() => stop.offset,
                _ => panic!("entry {i} of a dataset of {} entries", self.len()),
            }),
            Source::Files { .. } => None,
        }
    }

    /// The path `.lst` entry `i` names, relative to the image root (`None` for a
    /// `.rec`).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn listed_path(&self, i: usize) -> Option<&Path> {
        match &self.source {
            Source::Rec { .. } => None,
            Source::Files { listed, .. } => Some(&listed[i]),
        }
    }

    /// Why entry `i` cannot be read, when the dataset knows already: the failed last
    /// entry of a lenient scan (the error, and how much of the file is lost).
    pub fn failure(&self, i: usize) -> Option<&str> {
        match &self.source {
            Source::Rec {
                offsets,
                stop: Some(stop),
                ..
            } if i == offsets.len() => Some(&stop.message),
            _ => None,
        }
    }

    /// Where entry `i` lives (for messages).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn location(&self, i: usize) -> Location {
        match &self.source {
            Source::Rec { path, .. } => Location::Rec {
                path: path.clone(),
                offset: self.offset(i).unwrap_or_default(),
            },
            Source::Files { root, listed } => Location::File {
                path: root.join(&listed[i]),
            },
        }
    }

    /// The encoded image of entry `i` (borrowed from the map unless the record was
    /// split at a magic word or comes from a file). A `.rec` record is read with
    /// [`read_record`].
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image_bytes(&self, i: usize) -> Result<Cow<'_, [u8]>, DatasetError> {
        match &self.source {
            Source::Rec { path, reader, .. } => {
                let offset = self.offset(i).unwrap_or_default();
                read_record(reader, offset)
                    .map(|record| record.image)
                    .map_err(|source| DatasetError::Record {
                        path: path.clone(),
                        position: i,
                        offset,
                        source,
                    })
            }
            Source::Files { root, listed } => {
                let path = root.join(&listed[i]);
                std::fs::read(&path)
                    .map(Cow::Owned)
                    .map_err(|source| DatasetError::ImageFile {
                        id: self.ids[i],
                        path,
                        source,
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests;
