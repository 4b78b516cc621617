//! Random access to a whole `.rec` held in memory (normally a memory map).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::frame::{check_record_at, record_at};
use super::{read_index_file, IndexEntry, RecordIoError};

/// The bytes of a `.rec`.
#[derive(Debug)]
enum Storage {
    Map(Mmap),
    Owned(Vec<u8>),
}

/// A `.rec` memory-mapped for random access, optionally with its `.idx`.
///
/// Records are returned borrowed from the map unless they were split at a magic, in
/// which case they are reassembled into an owned buffer. The file must not be
/// modified while it is open (as with any memory map).
#[derive(Debug)]
pub struct MmapReader {
    data: Storage,
    index: Vec<IndexEntry>,
    by_key: HashMap<u64, u64>,
}

impl MmapReader {
    /// Maps `rec` without an index: [`iter`](Self::iter), [`read_at`](Self::read_at)
    /// and [`scan_offsets`](Self::scan_offsets) work, the key index is empty.
    pub fn open(rec: &Path) -> Result<Self, RecordIoError> {
        let open_err = |source| RecordIoError::Open {
            path: rec.to_path_buf(),
            source,
        };
        let file = File::open(rec).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            // Mapping a directory fails with an unhelpful "No such device".
            return Err(open_err(std::io::Error::other("is a directory")));
        }
        let len = meta.len();
        let data = if len == 0 {
            // Mapping zero bytes fails on some platforms.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only; as documented, the file must not change
            // while it is mapped (the usual contract of memory-mapped readers).
            Storage::Map(unsafe { Mmap::map(&file) }.map_err(open_err)?)
        };
        Ok(Self::with_storage(data))
    }

    /// Maps `rec` and reads `idx`, checking every entry: the offset must lie inside the
    /// file and a whole, well-formed record (cflag 0, or 1 … 3) must start there.
    pub fn open_indexed(rec: &Path, idx: &Path) -> Result<Self, RecordIoError> {
        let mut reader = Self::open(rec)?;
        reader.set_index(read_index_file(idx)?)?;
        Ok(reader)
    }

    /// Records already in memory (for example a `.rec` read from stdin), without an
    /// index.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self::with_storage(Storage::Owned(bytes))
    }

    fn with_storage(data: Storage) -> Self {
        MmapReader {
            data,
            index: Vec::new(),
            by_key: HashMap::new(),
        }
    }

    /// Replaces the key index after checking every entry as
    /// [`open_indexed`](Self::open_indexed) does. For a duplicated key, the last
    /// entry wins in [`get`](Self::get) (as in Python's `MXIndexedRecordIO`).
    pub fn set_index(&mut self, entries: Vec<IndexEntry>) -> Result<(), RecordIoError> {
        let data = self.as_bytes();
        let file_len = data.len() as u64;
        for entry in &entries {
            if entry.offset >= file_len {
                return Err(RecordIoError::IdxOffsetPastEnd {
                    key: entry.key,
                    offset: entry.offset,
                    file_len,
                });
            }
            check_record_at(data, entry.offset).map_err(|reason| {
                RecordIoError::IdxNotRecordHead {
                    key: entry.key,
                    offset: entry.offset,
                    reason: Box::new(reason),
                }
            })?;
        }
        self.by_key = entries.iter().map(|e| (e.key, e.offset)).collect();
        self.index = entries;
        Ok(())
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.data {
            Storage::Map(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }

    /// The file length in bytes.
    pub fn file_len(&self) -> u64 {
        self.as_bytes().len() as u64
    }

    /// Number of `.idx` entries (0 when opened without an index).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the key index is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The keys in index order (duplicates included, like `MXIndexedRecordIO.keys`).
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.index.iter().map(|e| e.key)
    }

    /// The `.idx` entries in file order.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// The payload of the record with this key.
    pub fn get(&self, key: u64) -> Result<Cow<'_, [u8]>, RecordIoError> {
        let offset = *self
            .by_key
            .get(&key)
            .ok_or(RecordIoError::KeyNotFound { key })?;
        Ok(self.read_at(offset)?.0)
    }

    /// The payload of the record starting at `offset` and the offset just past it.
    pub fn read_at(&self, offset: u64) -> Result<(Cow<'_, [u8]>, u64), RecordIoError> {
        let file_len = self.file_len();
        if offset >= file_len {
            return Err(RecordIoError::OffsetPastEnd { offset, file_len });
        }
        record_at(self.as_bytes(), offset)
    }

    /// The offset of every record, found by reading the file from the start (an index
    /// for a `.rec` without `.idx`, e.g. one written by im2rec.cc).
    pub fn scan_offsets(&self) -> Result<Vec<u64>, RecordIoError> {
        match self.scan_offsets_until_error() {
            (offsets, None) => Ok(offsets),
            (_, Some((_, e))) => Err(e),
        }
    }

    /// [`scan_offsets`](Self::scan_offsets) that keeps what it found before a damaged
    /// record: the offsets of the whole records before it, and where the scan stopped
    /// and why (`None` when the whole file was read).
    pub fn scan_offsets_until_error(&self) -> (Vec<u64>, Option<(u64, RecordIoError)>) {
        let data = self.as_bytes();
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < data.len() as u64 {
            match check_record_at(data, at) {
                Ok(next) => {
                    offsets.push(at);
                    at = next;
                }
                Err(e) => return (offsets, Some((at, e))),
            }
        }
        (offsets, None)
    }

    /// Every record from the start of the file, in order, as `(offset, payload)`. Stops
    /// after the first error.
    pub fn iter(&self) -> Records<'_> {
        Records::new(self.as_bytes(), 0, self.file_len())
    }
}

impl<'a> IntoIterator for &'a MmapReader {
    type Item = Result<(u64, Cow<'a, [u8]>), RecordIoError>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// Iterator over the records of a byte range: `(offset, payload)`.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    data: &'a [u8],
    at: u64,
    end: u64,
    failed: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(data: &'a [u8], at: u64, end: u64) -> Self {
        Records {
            data,
            at,
            end,
            failed: false,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u64, Cow<'a, [u8]>), RecordIoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.end {
            return None;
        }
        let offset = self.at;
        match record_at(self.data, offset) {
            Ok((payload, next)) => {
                self.at = next;
                Some(Ok((offset, payload)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Records<'_> {}
