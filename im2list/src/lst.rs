//! The `.lst` row format shared by every tool: `index<TAB>label…<TAB>path\n`.
//!
//! Writing follows im2rec.py 1.9.1 byte for byte (`%d` index, `%f` labels, path last).
//! Reading follows im2rec.py's `read_list`: strip the line, split on TAB only, strip
//! each field, the first field is an integer index, the last the path, everything in
//! between a float label. Integer labels (`1`), Python-3 style (`1.0`) and `%f` style
//! (`1.000000`) all parse. Unlike im2rec.py, a malformed row is not skipped silently:
//! the reader returns an error naming the line, and the caller decides.

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
        let fields: Vec<&str> = line.trim().split('\t').map(str::trim).collect();
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

/// Python's `float()` for a label column (`1`, `1.0`, `1.000000`, `1e-3`, `inf`, `nan`).
fn parse_float(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Iterate the rows of a `.lst` read from any `BufRead` (a file or stdin). Blank
/// lines are skipped; every other row yields an entry or an error naming its line.
/// I/O errors end the iteration with an `io::Error`.
pub fn read_entries<R: BufRead>(
    reader: R,
) -> impl Iterator<Item = io::Result<Result<LstEntry, LstError>>> {
    reader
        .lines()
        .enumerate()
        .filter_map(|(i, line)| match line {
            Err(e) => Some(Err(e)),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(Ok(LstEntry::parse(&l, i + 1))),
        })
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
