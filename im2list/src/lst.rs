//! The `.lst` row format shared by every tool: `index<TAB>label…<TAB>path\n`.
//!
//! Writing follows im2rec.py 1.9.1 byte for byte (`%d` index, `%f` labels, path last).
//! Reading follows im2rec.py's `read_list`: lines end at `\n`, `\r\n` or a lone `\r`
//! (Python's universal newlines), strip the line, split on TAB only, strip each field
//! (Python's `str.strip`, which also removes the ASCII separators `\x1c`-`\x1f`), the
//! first field is an integer index, the last the path, everything in between a float
//! label. Integer labels (`1`), Python-3 style (`1.0`), `%f` style (`1.000000`) and
//! Python's digit separators (`1_0`) all parse. Unlike im2rec.py, a malformed row
//! (including one that is not UTF-8, where Python stops with `UnicodeDecodeError`) is
//! not skipped silently or fatal: the reader returns an error naming the line, and the
//! caller decides.

use std::fmt::Write as _;
use std::io::{self, BufRead};

/// One row of a `.lst` file.
#[derive(Debug, Clone, PartialEq)]
pub struct LstEntry {
    /// The index column: the record id and the `.idx` key.
    pub index: u64,
    /// One or more labels (class indices are written as floats).
    pub labels: Vec<f64>,
    /// The image path, relative to the image root.
    pub path: String,
}

/// What is wrong with a `.lst` row.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum LstError {
    /// Fewer than three TAB-separated fields.
    #[error(
        "line {line}: expected at least 3 TAB-separated fields (index, label, path), found {found}"
    )]
    TooFewFields {
        /// 1-based line number.
        line: usize,
        /// Number of fields found.
        found: usize,
    },
    /// The index column is not a non-negative integer.
    #[error("line {line}: index {text:?} is not a non-negative integer")]
    BadIndex {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// A label column is not a number.
    #[error("line {line}: label {text:?} is not a number")]
    BadLabel {
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// The line is not valid UTF-8.
    #[error("line {line}: not valid UTF-8 (first bad byte at offset {offset} in the line)")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
        /// Offset of the first invalid byte within the line.
        offset: usize,
    },
}

impl LstEntry {
    /// A single-label entry.
    pub fn new(index: u64, label: f64, path: impl Into<String>) -> Self {
        LstEntry {
            index,
            labels: vec![label],
            path: path.into(),
        }
    }

    /// Parse one row (`line_no` is 1-based and only used in errors). The line may
    /// still carry its `\n` / `\r\n`.
    pub fn parse(line: &str, line_no: usize) -> Result<Self, LstError> {
        let fields: Vec<&str> = py_strip(line).split('\t').map(py_strip).collect();
        if fields.len() < 3 {
            return Err(LstError::TooFewFields {
                line: line_no,
                found: fields.len(),
            });
        }
        let index = parse_index(fields[0]).ok_or_else(|| LstError::BadIndex {
            line: line_no,
            text: fields[0].to_string(),
        })?;
        let labels = fields[1..fields.len() - 1]
            .iter()
            .map(|t| {
                parse_float(t).ok_or_else(|| LstError::BadLabel {
                    line: line_no,
                    text: t.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The line was trimmed, so the last field is never empty.
        Ok(LstEntry {
            index,
            labels,
            path: fields[fields.len() - 1].to_string(),
        })
    }

    /// The row as im2rec.py 1.9.1 writes it, `\n` included:
    /// `"%d\t" % index`, then `"%f\t" % label` for each label, then `"%s\n" % path`.
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(self.path.len() + 12 * (self.labels.len() + 1));
        let _ = write!(s, "{}\t", self.index);
        for label in &self.labels {
            s.push_str(&format_label(*label));
            s.push('\t');
        }
        s.push_str(&self.path);
        s.push('\n');
        s
    }
}

/// Python's `"%f" % x`: six decimals, never an exponent.
pub fn format_label(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{x:.6}")
    }
}

/// Python's `int()` for the index column (sign, digits, `_` separators), limited to
/// values a `.rec` header can hold (u64).
fn parse_index(text: &str) -> Option<u64> {
    let t = text.strip_prefix('+').unwrap_or(text);
    if t.is_empty() || t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    let digits: String = t.chars().filter(|&c| c != '_').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Python's `float()` for a label column (`1`, `1.0`, `1.000000`, `1e-3`, `inf`, `nan`,
/// `1_0`: an underscore is allowed between two digits, as in Python 3.6+).
fn parse_float(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    if !text.contains('_') {
        return text.parse::<f64>().ok();
    }
    let bytes = text.as_bytes();
    let digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
    let separators_ok = bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'_')
        .all(|(i, _)| digit_at(i.checked_sub(1)) && digit_at(Some(i + 1)));
    if !separators_ok {
        return None;
    }
    text.replace('_', "").parse::<f64>().ok()
}

/// Python's `str.strip()` without arguments: Unicode white space plus the ASCII
/// information separators `\x1c`-`\x1f`, which Python counts as white space.
fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// Iterate the rows of a `.lst` read from any `BufRead` (a file or stdin), splitting
/// lines like Python's text-mode `readline` (`\n`, `\r\n` or a lone `\r`). Blank
/// lines are skipped; every other row yields an entry or an error naming its line
/// (a line that is not UTF-8 is such an error). I/O errors end the iteration with an
/// `io::Error`.
pub fn read_entries<R: BufRead>(
    reader: R,
) -> impl Iterator<Item = io::Result<Result<LstEntry, LstError>>> {
    let mut lines = PyLines {
        reader,
        skip_lf: false,
        failed: false,
    };
    let mut line_no = 0usize;
    std::iter::from_fn(move || loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        line_no += 1;
        match String::from_utf8(line) {
            Ok(l) if py_strip(&l).is_empty() => continue,
            Ok(l) => return Some(Ok(LstEntry::parse(&l, line_no))),
            Err(e) => {
                return Some(Ok(Err(LstError::NotUtf8 {
                    line: line_no,
                    offset: e.utf8_error().valid_up_to(),
                })))
            }
        }
    })
}

/// Lines of a byte stream split like Python's universal newlines, terminators removed.
struct PyLines<R> {
    reader: R,
    /// The previous line ended with `\r`: a `\n` right after it belongs to it.
    skip_lf: bool,
    /// An I/O error was returned: the iteration is over.
    failed: bool,
}

impl<R: BufRead> PyLines<R> {
    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.failed {
            return Ok(None);
        }
        let mut line = Vec::new();
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            };
            if buf.is_empty() {
                return Ok((!line.is_empty()).then_some(line));
            }
            if std::mem::take(&mut self.skip_lf) && buf[0] == b'\n' {
                self.reader.consume(1);
                continue;
            }
            match buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    self.skip_lf = buf[i] == b'\r';
                    self.reader.consume(i + 1);
                    return Ok(Some(line));
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    self.reader.consume(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_like_im2rec_py_1_9_1() {
        let e = LstEntry::new(4, 1.0, "dog/x.jpg");
        assert_eq!(e.to_line(), "4\t1.000000\tdog/x.jpg\n");
        let m = LstEntry {
            index: 0,
            labels: vec![0.0, 2.5, 1e-7, 1234567.0],
            path: "a b/c.png".into(),
        };
        assert_eq!(
            m.to_line(),
            "0\t0.000000\t2.500000\t0.000000\t1234567.000000\ta b/c.png\n"
        );
        assert_eq!(format_label(0.0000005), "0.000000"); // 5e-7 is just below the tie in binary
        assert_eq!(format_label(-0.0), "-0.000000");
        assert_eq!(format_label(0.1234565), "0.123456"); // as Python prints it
    }

    #[test]
    fn reads_every_label_style() {
        for text in [
            "4\t1\tdog/x.jpg",
            "4\t1.0\tdog/x.jpg\n",
            "4\t1.000000\tdog/x.jpg\r\n",
            " 4 \t 1e0 \t dog/x.jpg ",
        ] {
            assert_eq!(
                LstEntry::parse(text, 1).unwrap(),
                LstEntry::new(4, 1.0, "dog/x.jpg"),
                "{text:?}"
            );
        }
        let multi = LstEntry::parse("7\t1\t0\t2\tm/p q.jpg", 1).unwrap();
        assert_eq!(multi.labels, vec![1.0, 0.0, 2.0]);
        assert_eq!(multi.path, "m/p q.jpg");
        assert_eq!(LstEntry::parse("1_0\t0\ta", 1).unwrap().index, 10);
    }

    #[test]
    fn rejects_malformed_rows_with_line_numbers() {
        assert_eq!(
            LstEntry::parse("4 1.0 dog.jpg", 9),
            Err(LstError::TooFewFields { line: 9, found: 1 })
        );
        assert_eq!(
            LstEntry::parse("x\t1\ta.jpg", 2),
            Err(LstError::BadIndex {
                line: 2,
                text: "x".into()
            })
        );
        assert_eq!(
            LstEntry::parse("-1\t1\ta.jpg", 2),
            Err(LstError::BadIndex {
                line: 2,
                text: "-1".into()
            })
        );
        assert_eq!(
            LstEntry::parse("1\t1 2\ta.jpg", 3),
            Err(LstError::BadLabel {
                line: 3,
                text: "1 2".into()
            })
        );
        assert_eq!(
            LstEntry::parse("1\t2\t ", 5),
            Err(LstError::TooFewFields { line: 5, found: 2 })
        );
    }

    #[test]
    fn labels_parse_like_python_float() {
        for (text, want) in [
            ("1_0", 10.0),
            ("1_0.2_5", 10.25),
            ("1e1_0", 1e10),
            ("+1.5", 1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("-iNF", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
        ] {
            assert_eq!(parse_float(text), Some(want), "{text:?}");
        }
        assert!(parse_float("nan").unwrap().is_nan());
        for bad in [
            "_1", "1_", "1__0", "1_.0", "1._0", "1e_1", "0x10", "1,5", "", "_",
        ] {
            assert_eq!(parse_float(bad), None, "{bad:?}");
        }
        let row = LstEntry::parse("3\t1_0\t2_5.5\tp.jpg", 1).unwrap();
        assert_eq!(row.labels, vec![10.0, 25.5]);
    }

    #[test]
    fn fields_are_stripped_like_python() {
        // Python's str.strip() also removes \x1c-\x1f; Rust's trim() does not.
        let row = LstEntry::parse("0\x1f\t1\x1c\ta.jpg\x1e", 4).unwrap();
        assert_eq!(row, LstEntry::new(0, 1.0, "a.jpg"));
        let row = LstEntry::parse("\u{a0}2\u{2003}\t1\ta b.jpg\u{3000}\u{2028}", 4).unwrap();
        assert_eq!(row, LstEntry::new(2, 1.0, "a b.jpg"));
    }

    fn rows(bytes: &[u8]) -> Vec<Result<LstEntry, LstError>> {
        read_entries(bytes).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn lines_end_at_lf_crlf_or_a_lone_cr() {
        let want = vec![
            Ok(LstEntry::new(0, 0.0, "a.jpg")),
            Ok(LstEntry::new(1, 1.0, "b.png")),
            Ok(LstEntry::new(2, 2.0, "c.jpg")),
        ];
        for text in [
            &b"0\t0\ta.jpg\r1\t1\tb.png\r2\t2\tc.jpg\r"[..],
            b"0\t0\ta.jpg\r\n1\t1\tb.png\r\n2\t2\tc.jpg",
            b"0\t0\ta.jpg\r1\t1\tb.png\n2\t2\tc.jpg\r\n",
        ] {
            assert_eq!(rows(text), want, "{:?}", String::from_utf8_lossy(text));
        }
        // CR CR is two line breaks (the second line is blank but still counted).
        assert_eq!(
            rows(b"0\t0\ta.jpg\r\rx\r"),
            vec![
                Ok(LstEntry::new(0, 0.0, "a.jpg")),
                Err(LstError::TooFewFields { line: 3, found: 1 })
            ]
        );
        // A CR LF pair split across two reads of the underlying buffer.
        let reader = io::BufReader::with_capacity(12, &b"0\t0\ta.jpg\t\r\n1\t1\tb.png\r\nz\n"[..]);
        let got: Vec<_> = read_entries(reader).map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                Ok(LstEntry::new(0, 0.0, "a.jpg")),
                Ok(LstEntry::new(1, 1.0, "b.png")),
                Err(LstError::TooFewFields { line: 3, found: 1 })
            ]
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_row_error_naming_it() {
        let text = b"0\t1\ta.jpg\n1\t1\tcaf\xe9.jpg\n2\t1\tb.jpg\n";
        assert_eq!(
            rows(text),
            vec![
                Ok(LstEntry::new(0, 1.0, "a.jpg")),
                Err(LstError::NotUtf8 { line: 2, offset: 7 }),
                Ok(LstEntry::new(2, 1.0, "b.jpg")),
            ]
        );
        assert_eq!(
            LstError::NotUtf8 { line: 2, offset: 7 }.to_string(),
            "line 2: not valid UTF-8 (first bad byte at offset 7 in the line)"
        );
    }

    #[test]
    fn read_entries_skips_blank_lines_and_numbers_rows() {
        let text = "0\t0.000000\ta.jpg\n\n1\tbad\tb.jpg\n2\t1\tc.jpg\n";
        let rows: Vec<_> = read_entries(text.as_bytes()).map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], Ok(LstEntry::new(0, 0.0, "a.jpg")));
        assert_eq!(
            rows[1],
            Err(LstError::BadLabel {
                line: 3,
                text: "bad".into()
            })
        );
        assert_eq!(rows[2], Ok(LstEntry::new(2, 1.0, "c.jpg")));
    }
}
