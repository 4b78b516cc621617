//! Part framing on a byte slice: decoding one part header, walking one record (all its
//! parts) and finding the next record head from an arbitrary offset. Shared by the
//! memory-mapped and the partitioned readers.

use std::borrow::Cow;

use super::{RecordIoError, MAGIC};

/// Bytes in a part header (magic + lrecord).
pub(crate) const HEADER_LEN: u64 = 8;
/// The magic as it appears on disk.
pub(crate) const MAGIC_BYTES: [u8; 4] = MAGIC.to_le_bytes();
/// The low 29 bits of lrecord hold the length.
const LENGTH_MASK: u32 = (1 << 29) - 1;

/// Length rounded up to a multiple of 4 (the part's data plus its padding).
pub(crate) fn padded(length: u64) -> u64 {
    (length + 3) & !3
}

/// The lrecord word for a part.
pub(crate) fn encode_lrecord(cflag: u32, length: u32) -> u32 {
    debug_assert!(cflag <= 3 && length <= LENGTH_MASK);
    (cflag << 29) | length
}

/// `(cflag, length)` of an lrecord word.
pub(crate) fn decode_lrecord(lrecord: u32) -> (u32, u32) {
    (lrecord >> 29, lrecord & LENGTH_MASK)
}

/// The little-endian `u32` at `at`, if four bytes are there.
pub(crate) fn word_at(data: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// One decoded part header whose data (and padding) is known to be inside the slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part {
    pub cflag: u32,
    /// Start of the part's data.
    pub data_start: usize,
    /// End of the part's data (exclusive).
    pub data_end: usize,
    /// Offset of the next part header (after padding).
    pub next: u64,
}

/// Decodes the part at `offset` and checks that its data and padding are present.
pub(crate) fn part_at(data: &[u8], offset: u64) -> Result<Part, RecordIoError> {
    let file_len = data.len() as u64;
    if offset.saturating_add(HEADER_LEN) > file_len {
        return Err(RecordIoError::TruncatedHeader {
            offset,
            available: file_len.saturating_sub(offset),
        });
    }
    // Both words exist: checked just above.
    let magic = word_at(data, offset).unwrap_or_default();
    if magic != MAGIC {
        return Err(RecordIoError::BadMagic {
            offset,
            found: magic,
        });
    }
    let (cflag, length) = decode_lrecord(word_at(data, offset + 4).unwrap_or_default());
    let length = u64::from(length);
    let data_start = offset + HEADER_LEN;
    let next = data_start + padded(length);
    if next > file_len {
        return Err(RecordIoError::LengthPastEnd {
            offset,
            length,
            file_len,
        });
    }
    // Everything is <= data.len(), so these conversions cannot truncate.
    Ok(Part {
        cflag,
        data_start: data_start as usize,
        data_end: (data_start + length) as usize,
        next,
    })
}

/// Walks the record whose first part is at `offset`, calling `on_part` with the data of
/// each part in order, and returns the offset just past the record.
fn walk_record(
    data: &[u8],
    offset: u64,
    mut on_part: impl FnMut(&[u8]),
) -> Result<u64, RecordIoError> {
    if !offset.is_multiple_of(4) {
        return Err(RecordIoError::Misaligned { offset });
    }
    let first = part_at(data, offset)?;
    if first.cflag > 1 {
        return Err(RecordIoError::BadContinuation {
            offset,
            cflag: first.cflag,
        });
    }
    on_part(&data[first.data_start..first.data_end]);
    let mut next = first.next;
    if first.cflag == 1 {
        loop {
            if next >= data.len() as u64 {
                return Err(RecordIoError::UnterminatedRecord {
                    record: offset,
                    file_len: data.len() as u64,
                });
            }
            let part = part_at(data, next)?;
            if part.cflag != 2 && part.cflag != 3 {
                return Err(RecordIoError::BadPartFlag {
                    offset: next,
                    record: offset,
                    cflag: part.cflag,
                });
            }
            on_part(&data[part.data_start..part.data_end]);
            next = part.next;
            if part.cflag == 3 {
                break;
            }
        }
    }
    Ok(next)
}

/// Checks that a well-formed record starts at `offset` (without copying anything) and
/// returns the offset just past it.
pub(crate) fn check_record_at(data: &[u8], offset: u64) -> Result<u64, RecordIoError> {
    walk_record(data, offset, |_| {})
}

/// The payload of the record at `offset` (borrowed unless it was split) and the offset
/// just past it. Split records are reassembled with the magic between the parts.
pub(crate) fn record_at(data: &[u8], offset: u64) -> Result<(Cow<'_, [u8]>, u64), RecordIoError> {
    if offset.is_multiple_of(4) {
        if let Ok(part) = part_at(data, offset) {
            if part.cflag == 0 {
                return Ok((
                    Cow::Borrowed(&data[part.data_start..part.data_end]),
                    part.next,
                ));
            }
        }
    }
    let mut payload = Vec::new();
    let mut first = true;
    let next = walk_record(data, offset, |bytes| {
        if !first {
            // The writer dropped an aligned magic here: put it back.
            payload.extend_from_slice(&MAGIC_BYTES);
        }
        first = false;
        payload.extend_from_slice(bytes);
    })?;
    Ok((Cow::Owned(payload), next))
}

/// The first record head (an aligned magic followed by a word with cflag 0 or 1) at or
/// after `from`, or the file length when there is none. This is dmlc-core's
/// `RecordIOSplitter::SeekRecordBegin`: a magic followed by cflag 2 or 3 is skipped
/// together with that word.
pub(crate) fn next_head(data: &[u8], from: u64) -> Result<u64, RecordIoError> {
    let file_len = data.len() as u64;
    let mut at = from.saturating_add(3) & !3;
    while at.saturating_add(4) <= file_len {
        if word_at(data, at) == Some(MAGIC) {
            let Some(lrecord) = word_at(data, at + 4) else {
                return Err(RecordIoError::TruncatedHeader {
                    offset: at,
                    available: file_len - at,
                });
            };
            if decode_lrecord(lrecord).0 <= 1 {
                return Ok(at);
            }
            at += 8;
        } else {
            at += 4;
        }
    }
    Ok(file_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordio::RecordWriter;

    #[test]
    fn next_head_skips_continuation_parts_and_unaligned_magic() {
        let mut w = RecordWriter::new(Vec::new());
        w.write_record(&[&b"QQQQ"[..], &MAGIC_BYTES, b"RR"].concat())
            .unwrap(); // parts at 0 (cflag 1) and 12 (cflag 3), 24 bytes
        w.write_record(&[&b"ab"[..], &MAGIC_BYTES, b"cd"].concat())
            .unwrap(); // at 24, unaligned magic inside
        let data = w.into_inner().unwrap();
        assert_eq!(data.len(), 40);
        assert_eq!(next_head(&data, 0).unwrap(), 0);
        assert_eq!(next_head(&data, 1).unwrap(), 24);
        assert_eq!(next_head(&data, 12).unwrap(), 24);
        assert_eq!(next_head(&data, 25).unwrap(), 40);
        assert_eq!(next_head(&data, 1000).unwrap(), 40);
    }

    #[test]
    fn record_at_borrows_plain_records_and_rebuilds_split_ones() {
        let mut w = RecordWriter::new(Vec::new());
        let split = [&b"QQQQ"[..], &MAGIC_BYTES, b"RR"].concat();
        w.write_record(b"plain").unwrap();
        w.write_record(&split).unwrap();
        let data = w.into_inner().unwrap();
        let (first, next) = record_at(&data, 0).unwrap();
        assert!(matches!(first, Cow::Borrowed(b"plain")));
        assert_eq!(next, 16);
        let (second, end) = record_at(&data, 16).unwrap();
        assert!(matches!(second, Cow::Owned(_)));
        assert_eq!(&second[..], &split[..]);
        assert_eq!(end, data.len() as u64);
        assert!(matches!(
            record_at(&data, 2),
            Err(RecordIoError::Misaligned { offset: 2 })
        ));
        assert!(matches!(
            record_at(&data, 28),
            Err(RecordIoError::BadContinuation {
                offset: 28,
                cflag: 3
            })
        ));
        assert!(matches!(
            record_at(&data, 4),
            Err(RecordIoError::BadMagic { offset: 4, .. })
        ));
    }
}
