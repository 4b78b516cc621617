//! Writing records: dmlc-core's `RecordIOWriter::WriteRecord`, byte for byte.

use std::io::Write;

use super::frame::{encode_lrecord, padded, MAGIC_BYTES};
use super::{RecordIoError, MAX_RECORD_LEN};

/// Writes RecordIO records to `W`, splitting each payload at every copy of the magic
/// found at a 4-byte aligned offset (cflag 1/2/3) and padding each record to 4 bytes.
///
/// Each record is encoded into an internal buffer and handed to `W` with one
/// `write_all`, so an unbuffered `File` is fine. After an I/O error the output is in
/// an unknown state and should be discarded.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    inner: W,
    position: u64,
    splits: u64,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// A writer whose first record goes at offset 0 of `inner`. RecordIO readers rely
    /// on every part starting 4-byte aligned relative to the file start, so `inner`
    /// must be at the start of the file.
    pub fn new(inner: W) -> Self {
        RecordWriter {
            inner,
            position: 0,
            splits: 0,
            buf: Vec::new(),
        }
    }

    /// Writes one record and returns the offset where it starts (what `.idx` stores).
    /// Payloads of 2^29 bytes or more are rejected with [`RecordIoError::TooLarge`].
    pub fn write_record(&mut self, payload: &[u8]) -> Result<u64, RecordIoError> {
        if payload.len() > MAX_RECORD_LEN {
            return Err(RecordIoError::TooLarge {
                length: payload.len(),
            });
        }
        self.buf.clear();
        self.splits += encode_record(&mut self.buf, payload);
        self.inner.write_all(&self.buf)?;
        let start = self.position;
        self.position += self.buf.len() as u64;
        Ok(start)
    }

    /// The offset the next record will start at (`MXRecordIO.tell()`).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// How many times a payload was split at an aligned magic so far (dmlc-core's
    /// `except_counter`); nothing in the file records this.
    pub fn splits(&self) -> u64 {
        self.splits
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, RecordIoError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Appends the encoded record to `out` and returns the number of splits made. The
/// caller has checked `payload.len() <= MAX_RECORD_LEN`.
pub(crate) fn encode_record(out: &mut Vec<u8>, payload: &[u8]) -> u64 {
    out.reserve(payload.len() + 16);
    let mut splits = 0;
    let mut part_start = 0;
    // Only aligned offsets below floor(n/4)*4 are scanned; unaligned copies stay.
    for (word, chunk) in payload.chunks_exact(4).enumerate() {
        if chunk == MAGIC_BYTES {
            let at = word * 4;
            let cflag = if splits == 0 { 1 } else { 2 };
            push_part(out, cflag, &payload[part_start..at]);
            part_start = at + 4;
            splits += 1;
        }
    }
    push_part(out, if splits == 0 { 0 } else { 3 }, &payload[part_start..]);
    splits
}

fn push_part(out: &mut Vec<u8>, cflag: u32, data: &[u8]) {
    // data.len() <= MAX_RECORD_LEN < 2^29, checked by the caller.
    let length = data.len() as u32;
    out.extend_from_slice(&MAGIC_BYTES);
    out.extend_from_slice(&encode_lrecord(cflag, length).to_le_bytes());
    out.extend_from_slice(data);
    let pad = padded(data.len() as u64) as usize - data.len();
    out.extend_from_slice(&[0u8; 3][..pad]);
}
