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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordio::RecordWriter;

    /// Hands out one byte per `read` call, with an `Interrupted` error in between,
    /// like a slow pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            match (self.data.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(slot)) => {
                    *slot = b;
                    self.data = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn file(payloads: &[&[u8]]) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new());
        for p in payloads {
            w.write_record(p).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn read_all(data: &[u8]) -> Result<Vec<Record>, RecordIoError> {
        RecordReader::new(data).collect()
    }

    #[test]
    fn reads_split_and_plain_records_from_a_trickling_pipe() {
        let m = MAGIC_BYTES;
        let payloads: Vec<Vec<u8>> = vec![
            b"abc".to_vec(),
            [&b"QQQQ"[..], &m, b"RRRR", &m, b"S"].concat(),
            Vec::new(),
            m.to_vec(),
            [&b"ab"[..], &m, b"cd"].concat(),
        ];
        let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        let data = file(&refs);
        let mut reader = RecordReader::new(Trickle {
            data: &data,
            interrupt: false,
        });
        let mut got = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            got.push(record);
        }
        assert_eq!(reader.position(), data.len() as u64);
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 12, 48, 56, 72]);
        let back: Vec<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
        assert_eq!(back, payloads);
    }

    #[test]
    fn typed_errors_name_the_offset() {
        let good = file(&[b"abcd", b"efgh"]);
        // Bad magic in the second record.
        let mut bad = good.clone();
        bad[12] ^= 0xff;
        match read_all(&bad) {
            Err(RecordIoError::BadMagic { offset: 12, found }) => assert_eq!(found, 0xCED7_23F5),
            other => panic!("{other:?}"),
        }
        // Truncated header.
        assert!(matches!(
            read_all(&good[..15]),
            Err(RecordIoError::TruncatedHeader {
                offset: 12,
                available: 3
            })
        ));
        // Data cut short.
        assert!(matches!(
            read_all(&good[..22]),
            Err(RecordIoError::LengthPastEnd {
                offset: 12,
                length: 4,
                file_len: 22
            })
        ));
        // A record that starts with a continuation part.
        let mut cont = good.clone();
        cont[7] = 0x40;
        assert!(matches!(
            read_all(&cont),
            Err(RecordIoError::BadContinuation {
                offset: 0,
                cflag: 2
            })
        ));
        // cflag 1 followed by a cflag 0 record.
        let mut interrupted = good.clone();
        interrupted[7] = 0x20;
        assert!(matches!(
            read_all(&interrupted),
            Err(RecordIoError::BadPartFlag {
                offset: 12,
                record: 0,
                cflag: 0
            })
        ));
        // cflag 1 at the end of the file.
        let mut unterminated = good;
        unterminated[19] = 0x20;
        assert!(matches!(
            read_all(&unterminated),
            Err(RecordIoError::UnterminatedRecord {
                record: 12,
                file_len: 24
            })
        ));
    }

    #[test]
    fn iterator_stops_after_an_error() {
        let mut data = file(&[b"a", b"b"]);
        data[0] = 0;
        let mut reader = RecordReader::new(&data[..]);
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
        assert!(reader.next_record().unwrap().is_none());
    }

    #[test]
    fn huge_length_field_does_not_allocate_it() {
        // length = 2^29 - 1 but only 4 bytes follow: an error, quickly.
        let data = [0x0a, 0x23, 0xd7, 0xce, 0xff, 0xff, 0xff, 0x1f, 1, 2, 3, 4];
        assert!(matches!(
            read_all(&data),
            Err(RecordIoError::LengthPastEnd {
                offset: 0,
                length: 536_870_911,
                file_len: 12
            })
        ));
    }
}
