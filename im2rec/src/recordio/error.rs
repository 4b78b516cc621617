//! The error type shared by every RecordIO reader and writer.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading or writing RecordIO. Each variant about file
/// contents names the byte offset (and the `.idx` key or line where there is one).
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum RecordIoError {
    /// The 4 bytes where a part header should start are not the RecordIO magic.
    #[error(
        "byte {offset}: expected the RecordIO magic 0xced7230a, found {found:#010x} \
         (not a RecordIO file, or a corrupt record)"
    )]
    BadMagic {
        /// Byte offset of the part header.
        offset: u64,
        /// The word found there (little-endian).
        found: u32,
    },
    /// The file ends inside an 8-byte part header.
    #[error(
        "byte {offset}: truncated part header, only {available} of 8 bytes before end of file"
    )]
    TruncatedHeader {
        /// Byte offset of the part header.
        offset: u64,
        /// How many header bytes were present.
        available: u64,
    },
    /// A part's length (plus padding) runs past the end of the file.
    #[error(
        "byte {offset}: part of {length} bytes (plus padding to 4) runs past the end of \
         the data at byte {file_len}"
    )]
    LengthPastEnd {
        /// Byte offset of the part header.
        offset: u64,
        /// The length field of the part.
        length: u64,
        /// Where the file (or stream) ended.
        file_len: u64,
    },
    /// A record starts with a continuation part (cflag 2 or 3), or a cflag above 3.
    #[error("byte {offset}: a record must start with cflag 0 or 1, found cflag {cflag}")]
    BadContinuation {
        /// Byte offset of the part header.
        offset: u64,
        /// The cflag found.
        cflag: u32,
    },
    /// Inside a split record, a part has a cflag other than 2 (middle) or 3 (last).
    #[error(
        "byte {offset}: part of the split record at byte {record} has cflag {cflag}, \
         expected 2 or 3"
    )]
    BadPartFlag {
        /// Byte offset of the offending part header.
        offset: u64,
        /// Byte offset of the record the part should continue.
        record: u64,
        /// The cflag found.
        cflag: u32,
    },
    /// A split record (cflag 1) whose final part (cflag 3) never comes.
    #[error("byte {record}: split record never ends, the data ends at byte {file_len} before its last part")]
    UnterminatedRecord {
        /// Byte offset of the record's first part.
        record: u64,
        /// Where the file (or stream) ended.
        file_len: u64,
    },
    /// An offset that is not a multiple of 4, where a record should start.
    #[error("byte {offset}: not 4-byte aligned, so no record can start there")]
    Misaligned {
        /// The offset asked for.
        offset: u64,
    },
    /// An offset at or past the end of the file.
    #[error("byte {offset}: past the end of the file ({file_len} bytes)")]
    OffsetPastEnd {
        /// The offset asked for.
        offset: u64,
        /// The file length.
        file_len: u64,
    },
    /// A payload of 2^29 bytes or more: RecordIO cannot store it.
    #[error("record of {length} bytes is too large: RecordIO records must be smaller than 2^29 = 536870912 bytes")]
    TooLarge {
        /// The payload length.
        length: usize,
    },
    /// A `.idx` line that is not `key<whitespace>offset`.
    #[error(
        "index line {line}: expected `key<TAB>offset` (two non-negative integers), found {text:?}"
    )]
    IdxParse {
        /// 1-based line number.
        line: u64,
        /// The line (lossily decoded, without its newline).
        text: String,
    },
    /// A `.idx` offset at or past the end of the `.rec`.
    #[error(
        "index key {key}: offset {offset} is past the end of the .rec file ({file_len} bytes)"
    )]
    IdxOffsetPastEnd {
        /// The key of the entry.
        key: u64,
        /// The offset of the entry.
        offset: u64,
        /// The `.rec` length.
        file_len: u64,
    },
    /// A `.idx` offset that does not point at the start of a well-formed record.
    #[error("index key {key}: offset {offset} is not the start of a record: {reason}")]
    IdxNotRecordHead {
        /// The key of the entry.
        key: u64,
        /// The offset of the entry.
        offset: u64,
        /// What was found there instead.
        reason: Box<RecordIoError>,
    },
    /// [`MmapReader::get`](super::MmapReader::get) with a key the index does not have.
    #[error("key {key} is not in the index")]
    KeyNotFound {
        /// The key asked for.
        key: u64,
    },
    /// `num_parts == 0` or `part_index >= num_parts`.
    #[error(
        "invalid partition: part {part_index} of {num_parts} (need 0 <= part_index < num_parts)"
    )]
    BadPartition {
        /// Number of parts asked for.
        num_parts: usize,
        /// Part asked for.
        part_index: usize,
    },
    /// An image record shorter than the 24-byte IRHeader.
    #[error("image record of {length} bytes is shorter than the 24-byte IRHeader")]
    ImageRecordTooShort {
        /// The payload length.
        length: usize,
    },
    /// An IRHeader whose `flag` announces more float32 labels than the record holds.
    #[error(
        "IRHeader flag {flag} announces {flag} float32 labels, but the image record has \
         only {length} bytes"
    )]
    LabelsPastEnd {
        /// The header's flag (label count).
        flag: u32,
        /// The payload length.
        length: usize,
    },
    /// A file could not be opened or mapped.
    #[error("cannot read {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Any other I/O error from the underlying reader or writer.
    #[error(transparent)]
    Io(#[from] io::Error),
}
