//! Sequential reading from any `Read` (a file or a pipe): dmlc-core's
//! `RecordIOReader::NextRecord`, with stricter checks.

use std::io::{self, Read};

use super::frame::{decode_lrecord, padded, HEADER_LEN, MAGIC_BYTES};
use super::{RecordIoError, MAGIC};

/// One record read sequentially.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record's first part header.
    pub offset: u64,
    /// The payload, reassembled if the writer split it.
    pub payload: Vec<u8>,
}

/// Reads records one after the other from `R`, without seeking, reassembling split
/// records. Also an [`Iterator`] of `Result<Record, RecordIoError>` that stops after
/// the first error.
///
/// `R` is read in small pieces (an 8-byte header, then the data); wrap an unbuffered
/// source in a [`std::io::BufReader`].
#[derive(Debug)]
pub struct RecordReader<R: Read> {
    inner: R,
    position: u64,
    done: bool,
}

/// Data is read in pieces of at most this size, so a corrupt length field never
/// causes a large allocation before the bytes are actually there.
const READ_PIECE: usize = 1 << 16;

impl<R: Read> RecordReader<R> {
    /// A reader whose input starts at offset 0 of a `.rec`.
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            position: 0,
            done: false,
        }
    }

    /// Bytes consumed so far: the offset of the next record after a successful read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next record, `Ok(None)` at a clean end of input (the input ends exactly
    /// between two records). After an error or the end, always `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordIoError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_record();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_record(&mut self) -> Result<Option<Record>, RecordIoError> {
        let offset = self.position;
        let Some((cflag, length)) = self.read_header()? else {
            return Ok(None);
        };
        if cflag > 1 {
            return Err(RecordIoError::BadContinuation { offset, cflag });
        }
        let mut payload = Vec::new();
        self.read_data(&mut payload, offset, length)?;
        if cflag == 1 {
            loop {
                let part_offset = self.position;
                let Some((cflag, length)) = self.read_header()? else {
                    return Err(RecordIoError::UnterminatedRecord {
                        record: offset,
                        file_len: part_offset,
                    });
                };
                if cflag != 2 && cflag != 3 {
                    return Err(RecordIoError::BadPartFlag {
                        offset: part_offset,
                        record: offset,
                        cflag,
                    });
                }
                payload.extend_from_slice(&MAGIC_BYTES);
                self.read_data(&mut payload, part_offset, length)?;
                if cflag == 3 {
                    break;
                }
            }
        }
        Ok(Some(Record { offset, payload }))
    }

    /// Reads a part header: `(cflag, length)`, or `Ok(None)` when the input ends
    /// before its first byte.
    fn read_header(&mut self) -> Result<Option<(u32, u64)>, RecordIoError> {
        let offset = self.position;
        let mut header = [0u8; HEADER_LEN as usize];
        let got = read_full(&mut self.inner, &mut header)?;
        self.position += got as u64;
        match got {
            0 => return Ok(None),
            8 => {}
            available => {
                return Err(RecordIoError::TruncatedHeader {
                    offset,
                    available: available as u64,
                })
            }
        }
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if magic != MAGIC {
            return Err(RecordIoError::BadMagic {
                offset,
                found: magic,
            });
        }
        let (cflag, length) = decode_lrecord(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        Ok(Some((cflag, u64::from(length))))
    }

    /// Appends `length` data bytes to `out` and consumes the padding.
    fn read_data(
        &mut self,
        out: &mut Vec<u8>,
        part_offset: u64,
        length: u64,
    ) -> Result<(), RecordIoError> {
        let mut remaining = padded(length);
        let mut keep = length;
        let mut pad = [0u8; 4];
        while remaining > 0 {
            let piece = remaining.min(READ_PIECE as u64) as usize;
            let got = if keep > 0 {
                let piece = piece.min(keep as usize);
                let start = out.len();
                out.resize(start + piece, 0);
                let got = read_full(&mut self.inner, &mut out[start..])?;
                out.truncate(start + got);
                keep -= got as u64;
                got
            } else {
                read_full(&mut self.inner, &mut pad[..piece])?
            };
            self.position += got as u64;
            remaining -= got as u64;
            if got == 0 {
                return Err(RecordIoError::LengthPastEnd {
                    offset: part_offset,
                    length,
                    file_len: self.position,
                });
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Record, RecordIoError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match inner.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
