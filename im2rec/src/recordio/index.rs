//! The `.idx` file: one `key<TAB>offset\n` line per record, in write order.

use std::io::{self, BufRead, Write};

use super::RecordIoError;

/// One `.idx` line: a record's key (im2rec: the `.lst` index) and its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    /// The key (for im2rec, the `.lst` index column).
    pub key: u64,
    /// Byte offset of the record's first part header in the `.rec`.
    pub offset: u64,
}

/// Opens and reads the `.idx` file at `path` ([`read_index`]).
pub fn read_index_file(path: &std::path::Path) -> Result<Vec<IndexEntry>, RecordIoError> {
    let file = std::fs::File::open(path).map_err(|source| RecordIoError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_index(io::BufReader::new(file))
}

/// Reads a `.idx` file. Each line holds a key and an offset, both non-negative
/// integers; like MXNet's C++ reader, any whitespace separates them, and like Python's
/// `int()`, surrounding whitespace is ignored. Blank lines are skipped; any other line
/// is an [`RecordIoError::IdxParse`] naming the 1-based line. Entries come back in file
/// order, duplicates included.
pub fn read_index<R: BufRead>(mut r: R) -> Result<Vec<IndexEntry>, RecordIoError> {
    let mut entries = Vec::new();
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(entries);
        }
        line_no += 1;
        let bad = |line: &[u8]| RecordIoError::IdxParse {
            line: line_no,
            text: String::from_utf8_lossy(line)
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        };
        let Ok(text) = std::str::from_utf8(&line) else {
            return Err(bad(&line));
        };
        let mut fields = text.split_ascii_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (None, _, _) => continue,
            (Some(key), Some(offset), None) => match (parse_int(key), parse_int(offset)) {
                (Some(key), Some(offset)) => entries.push(IndexEntry { key, offset }),
                _ => return Err(bad(&line)),
            },
            _ => return Err(bad(&line)),
        }
    }
}

/// A non-negative integer as Python's `int()` reads it (`+` sign and leading zeros
/// allowed, `_` separators not).
fn parse_int(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `.idx` lines exactly as `MXIndexedRecordIO.write_idx`: `key\toffset\n`.
#[derive(Debug)]
pub struct IndexWriter<W: Write> {
    inner: W,
}

impl<W: Write> IndexWriter<W> {
    /// A writer over `w` (wrap a `File` in a `BufWriter`).
    pub fn new(w: W) -> Self {
        IndexWriter { inner: w }
    }

    /// Writes one line.
    pub fn write(&mut self, key: u64, offset: u64) -> io::Result<()> {
        writeln!(self.inner, "{key}\t{offset}")
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_python_lines_and_reads_them_back() {
        let mut w = IndexWriter::new(Vec::new());
        w.write(0, 0).unwrap();
        w.write(17, 12).unwrap();
        w.write(u64::MAX, 24).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(bytes, b"0\t0\n17\t12\n18446744073709551615\t24\n");
        let entries = read_index(&bytes[..]).unwrap();
        assert_eq!(
            entries,
            [
                IndexEntry { key: 0, offset: 0 },
                IndexEntry {
                    key: 17,
                    offset: 12
                },
                IndexEntry {
                    key: u64::MAX,
                    offset: 24
                },
            ]
        );
    }

    #[test]
    fn accepts_any_whitespace_crlf_blank_lines_and_no_final_newline() {
        let text = "1 0\r\n\n  2\t\t16  \n+3\t032";
        let entries = read_index(text.as_bytes()).unwrap();
        let pairs: Vec<(u64, u64)> = entries.iter().map(|e| (e.key, e.offset)).collect();
        assert_eq!(pairs, [(1, 0), (2, 16), (3, 32)]);
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        for (text, line, shown) in [
            ("0\t0\nabc\t12\n", 2, "abc\t12"),
            ("0\t0\n1\n", 2, "1"),
            ("0\t-4\n", 1, "0\t-4"),
            ("0 1 2\n", 1, "0 1 2"),
            ("0\t99999999999999999999\n", 1, "0\t99999999999999999999"),
            ("1\t1_0\n", 1, "1\t1_0"),
            ("\n\n\u{ff}\t0\n", 3, "\u{ff}\t0"),
        ] {
            match read_index(text.as_bytes()) {
                Err(RecordIoError::IdxParse { line: l, text: t }) => {
                    assert_eq!((l, t.as_str()), (line, shown), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        match read_index(&b"0\t0\n\xff\xfe 1\n"[..]) {
            Err(RecordIoError::IdxParse { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
