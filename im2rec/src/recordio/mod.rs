//! MXNet RecordIO: the `.rec` container, its `.idx` index and the image-record header.
//!
//! A `.rec` file is a bare sequence of *parts*, each `magic · lrecord · data · pad`
//! (little-endian `u32`s; `lrecord = cflag << 29 | length`; zero padding up to a
//! multiple of 4). A payload that contains the magic at a 4-byte aligned offset is split
//! there into parts with `cflag` 1 (first), 2 (middle) and 3 (last); the magic bytes are
//! dropped by the writer and put back by every reader. This is byte-compatible with
//! dmlc-core's `RecordIOWriter`/`RecordIOReader` as used by MXNet 1.9.1 (`mx.recordio`,
//! `im2rec.py`, `im2rec.cc`, `ImageRecordIter`).
//!
//! What is here:
//! - [`RecordWriter`]: writes records, splitting at aligned magic and padding to 4.
//! - [`RecordReader`]: sequential reader over any [`std::io::Read`] (works on a pipe).
//! - [`MmapReader`]: random access over a memory-mapped file, by `.idx` key or offset,
//!   plus [`MmapReader::scan_offsets`] to rebuild an index for a `.rec` that has none.
//! - [`PartReader`]: dmlc-style partitioning (`num_parts`/`part_index`), by bytes
//!   without an index and by record count with one.
//! - [`read_index`] / [`IndexWriter`]: the `.idx` text file (`key<TAB>offset\n`).
//! - [`PairLock`]: the folder lock under which a `.rec` + `.idx` pair is replaced
//!   (writers) or opened (readers), so that neither ever sees a mixed pair.
//! - [`IrHeader`], [`pack_image_record`], [`unpack_image_record`]: the 24-byte image
//!   record header that im2rec puts in front of every image.
//!
//! Readers never panic on corrupt input and never size an allocation from a length
//! field before checking it against the bytes actually present: every problem is a
//! [`RecordIoError`] naming the byte offset (and the `.idx` key or line). They are
//! stricter than dmlc-core in a few places, always in the direction of reporting
//! corruption rather than guessing: a record must start with cflag 0 or 1, the parts
//! of a split record must carry cflag 2 or 3, and the padding of the last part must be
//! present.
//!
//! Deviations from the API sketched for the team, all additive:
//! [`MmapReader::from_vec`] (records held in memory, e.g. read from stdin),
//! [`MmapReader::index`], [`MmapReader::is_empty`], [`MmapReader::file_len`],
//! [`RecordWriter::splits`], [`RecordReader::position`], [`PartReader::byte_range`] and
//! [`PartReader::iter`]. A reader opened without an index ([`MmapReader::open`]) has an
//! empty key index: `len() == 0` and [`MmapReader::get`] fails with
//! [`RecordIoError::KeyNotFound`]; use [`MmapReader::iter`] or `read_at` instead.

mod error;
mod frame;
mod image;
mod index;
mod mmap;
mod pair_lock;
mod part;
mod reader;
mod writer;

pub use error::RecordIoError;
pub use image::{pack_image_record, unpack_image_record, ImageRecord, IrHeader, IR_HEADER_LEN};
pub use index::{read_index, read_index_file, IndexEntry, IndexWriter};
pub use mmap::{MmapReader, Records};
pub use pair_lock::PairLock;
pub use part::{PartReader, PartRecords};
pub use reader::{Record, RecordReader};
pub use writer::RecordWriter;

/// The magic word that starts every part (bytes `0A 23 D7 CE` on disk).
pub const MAGIC: u32 = 0xCED7_230A;

/// The largest payload a record may have: `2^29 - 1` bytes. Larger payloads are
/// rejected with [`RecordIoError::TooLarge`], never split (as in dmlc-core).
pub const MAX_RECORD_LEN: usize = (1 << 29) - 1;
