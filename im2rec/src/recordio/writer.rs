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

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(payload: &[u8]) -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new());
        assert_eq!(w.write_record(payload).unwrap(), 0);
        w.into_inner().unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reference_vectors_1_4() {
        let m = MAGIC_BYTES;
        assert_eq!(encode(b""), hex("0a23d7ce 00000000"));
        assert_eq!(encode(b"abc"), hex("0a23d7ce 03000000 616263 00"));
        assert_eq!(
            encode(b"record_0"),
            hex("0a23d7ce 08000000 7265636f72645f30")
        );
        assert_eq!(
            encode(&[&m[..], b"xyz!"].concat()),
            hex("0a23d7ce 00000020 0a23d7ce 04000060 78797a21")
        );
        assert_eq!(encode(&m), hex("0a23d7ce 00000020 0a23d7ce 00000060"));
        assert_eq!(
            encode(&[&b"ab"[..], &m, b"cd"].concat()),
            hex("0a23d7ce 08000000 61620a23d7ce6364")
        );
        assert_eq!(
            encode(&[&b"QQQQ"[..], &m, b"RRRR", &m, b"S"].concat()),
            hex("0a23d7ce 04000020 51515151 0a23d7ce 04000040 52525252 0a23d7ce 01000060 53000000")
        );
    }

    #[test]
    fn magic_in_the_unaligned_tail_is_not_split() {
        // Aligned words are scanned only below floor(n/4)*4: a magic at offset 1 of a
        // 5-byte payload is unaligned and stays.
        let payload = [&b"a"[..], &MAGIC_BYTES].concat();
        assert_eq!(encode(&payload), hex("0a23d7ce 05000000 610a23d7 ce000000"));
    }

    #[test]
    fn position_is_tell_and_splits_are_counted() {
        let mut w = RecordWriter::new(Vec::new());
        let starts: Vec<u64> = (0..5)
            .map(|i| w.write_record(format!("record_{i}").as_bytes()).unwrap())
            .collect();
        assert_eq!(starts, [0, 16, 32, 48, 64]);
        assert_eq!(w.position(), 80);
        assert_eq!(w.splits(), 0);
        w.write_record(&[MAGIC_BYTES, MAGIC_BYTES].concat())
            .unwrap();
        assert_eq!(w.splits(), 2);
        assert_eq!(w.position(), 80 + 24);
        assert_eq!(w.into_inner().unwrap().len(), 104);
    }

    #[test]
    fn oversized_payload_is_rejected_not_split() {
        // vec![0; n] is allocated lazily as zero pages, so this stays cheap.
        let big = vec![0u8; MAX_RECORD_LEN + 1];
        let mut w = RecordWriter::new(Vec::new());
        match w.write_record(&big) {
            Err(RecordIoError::TooLarge { length }) => assert_eq!(length, 1 << 29),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(w.position(), 0);
        assert!(w.into_inner().unwrap().is_empty());
    }

    #[test]
    fn write_errors_are_reported() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "disk full",
                ))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = RecordWriter::new(Full);
        assert!(matches!(w.write_record(b"x"), Err(RecordIoError::Io(_))));
    }
}
