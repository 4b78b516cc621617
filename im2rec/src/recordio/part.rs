//! dmlc-core style partitioning of a `.rec` among `num_parts` workers.

use std::borrow::Cow;
use std::path::Path;

use super::frame::{next_head, record_at};
use super::mmap::Records;
use super::{IndexEntry, MmapReader, RecordIoError};

/// One worker's share of a `.rec` (`num_parts`/`part_index`, as ImageRecordIter).
///
/// Without an index ([`open`](Self::open), dmlc-core `InputSplitBase::ResetPartition`
/// and `RecordIOSplitter::SeekRecordBegin`): the file is cut into slices of
/// `ceil(len / num_parts)` bytes rounded up to 4; a part runs from the first record
/// head at or after `part_index * step` to the first record head at or after
/// `(part_index + 1) * step` (both clamped to the file length; part 0 starts at 0). A
/// record head is an aligned magic followed by a word with cflag 0 or 1.
///
/// With an index ([`open_indexed`](Self::open_indexed), dmlc-core
/// `IndexedRecordIOSplitter::ResetPartition`): the entries are sorted by offset (keys
/// are ignored, as in the C++ reader) and each part gets `ceil(N / num_parts)` of them.
/// Unlike the C++ reader, records missing from the index are not read.
///
/// Either way the parts are disjoint and together hold every record once, in order.
#[derive(Debug)]
pub struct PartReader {
    reader: MmapReader,
    part: Part,
}

#[derive(Debug)]
enum Part {
    Bytes {
        begin: u64,
        end: u64,
    },
    Indexed {
        entries: Vec<IndexEntry>,
        begin: u64,
        end: u64,
    },
}

fn check_partition(num_parts: usize, part_index: usize) -> Result<(), RecordIoError> {
    if num_parts == 0 || part_index >= num_parts {
        return Err(RecordIoError::BadPartition {
            num_parts,
            part_index,
        });
    }
    Ok(())
}

impl PartReader {
    /// Part `part_index` of `num_parts` of `rec`, partitioned by bytes.
    pub fn open(rec: &Path, num_parts: usize, part_index: usize) -> Result<Self, RecordIoError> {
        check_partition(num_parts, part_index)?;
        Self::by_bytes(MmapReader::open(rec)?, num_parts, part_index)
    }

    /// Part `part_index` of `num_parts` of `rec`, partitioned by record count using
    /// `idx` (every entry is checked as in [`MmapReader::open_indexed`]).
    pub fn open_indexed(
        rec: &Path,
        idx: &Path,
        num_parts: usize,
        part_index: usize,
    ) -> Result<Self, RecordIoError> {
        check_partition(num_parts, part_index)?;
        Self::by_index(MmapReader::open_indexed(rec, idx)?, num_parts, part_index)
    }

    /// Partitions an already open reader by bytes (its key index is not used).
    pub fn by_bytes(
        reader: MmapReader,
        num_parts: usize,
        part_index: usize,
    ) -> Result<Self, RecordIoError> {
        check_partition(num_parts, part_index)?;
        let data = reader.as_bytes();
        let total = data.len() as u64;
        let n = num_parts as u64;
        let rank = part_index as u64;
        let step = total.div_ceil(n).next_multiple_of(4);
        let mut begin = (step * rank).min(total);
        let mut end = (step * (rank + 1)).min(total);
        if begin < end {
            if end != total {
                end = next_head(data, end)?;
            }
            if begin != 0 {
                begin = next_head(data, begin)?;
            }
        }
        let end = end.max(begin);
        Ok(PartReader {
            reader,
            part: Part::Bytes { begin, end },
        })
    }

    /// Partitions an already open reader by the record count of its key index.
    pub fn by_index(
        reader: MmapReader,
        num_parts: usize,
        part_index: usize,
    ) -> Result<Self, RecordIoError> {
        check_partition(num_parts, part_index)?;
        let mut sorted = reader.index().to_vec();
        sorted.sort_by_key(|e| e.offset);
        let step = sorted.len().div_ceil(num_parts);
        let first = step.saturating_mul(part_index).min(sorted.len());
        let last = step.saturating_mul(part_index + 1).min(sorted.len());
        let begin = sorted.get(first).map_or(reader.file_len(), |e| e.offset);
        let end = sorted.get(last).map_or(reader.file_len(), |e| e.offset);
        let entries = sorted[first..last].to_vec();
        Ok(PartReader {
            reader,
            part: Part::Indexed {
                entries,
                begin,
                end,
            },
        })
    }

    /// The byte range `[begin, end)` this part covers.
    pub fn byte_range(&self) -> (u64, u64) {
        match &self.part {
            Part::Bytes { begin, end } | Part::Indexed { begin, end, .. } => (*begin, *end),
        }
    }

    /// The index entries of this part in offset order (empty when partitioned by
    /// bytes).
    pub fn entries(&self) -> &[IndexEntry] {
        match &self.part {
            Part::Bytes { .. } => &[],
            Part::Indexed { entries, .. } => entries,
        }
    }

    /// This part's records in file order, as `(offset, payload)`. Stops after the
    /// first error.
    pub fn iter(&self) -> PartRecords<'_> {
        let data = self.reader.as_bytes();
        let inner = match &self.part {
            Part::Bytes { begin, end } => Inner::Bytes(Records::new(data, *begin, *end)),
            Part::Indexed { entries, .. } => Inner::Indexed {
                data,
                entries: entries.iter(),
            },
        };
        PartRecords { inner }
    }
}

impl<'a> IntoIterator for &'a PartReader {
    type Item = Result<(u64, Cow<'a, [u8]>), RecordIoError>;
    type IntoIter = PartRecords<'a>;

    fn into_iter(self) -> PartRecords<'a> {
        self.iter()
    }
}

/// Iterator over one part's records: `(offset, payload)`.
#[derive(Debug, Clone)]
pub struct PartRecords<'a> {
    inner: Inner<'a>,
}

#[derive(Debug, Clone)]
enum Inner<'a> {
    Bytes(Records<'a>),
    Indexed {
        data: &'a [u8],
        entries: std::slice::Iter<'a, IndexEntry>,
    },
}

impl<'a> Iterator for PartRecords<'a> {
    type Item = Result<(u64, Cow<'a, [u8]>), RecordIoError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Bytes(records) => records.next(),
            Inner::Indexed { data, entries } => {
                let entry = entries.next()?;
                // Every indexed record was checked when the index was loaded, so this
                // cannot fail for a file that did not change since; report and stop.
                Some(match record_at(data, entry.offset) {
                    Ok((payload, _)) => Ok((entry.offset, payload)),
                    Err(e) => {
                        *entries = [].iter();
                        Err(e)
                    }
                })
            }
        }
    }
}
