//! Chunks and train/val/test splits, with im2rec.py 1.9.1's `make_list` arithmetic.
//!
//! With `n` items, `chunks` chunks and ratios `tr`, `te`:
//! `chunk_size = ceil(n / chunks)`, chunk `c` is `list[c*chunk_size:(c+1)*chunk_size]`;
//! `sep = int(chunk_size * tr)` and `sep_test = int(chunk_size * te)` are float products
//! truncated toward zero, computed from `chunk_size` even for a shorter last chunk.
//! If `tr == 1.0` the whole chunk goes to `<prefix><c>.lst` and `te` is ignored.
//! Otherwise `_test` = `chunk[:sep_test]` (only when `te` is non-zero), `_val` =
//! `chunk[sep_test+sep:]` (only when the float sum `tr + te < 1.0`), and `_train` =
//! `chunk[sep_test:sep_test+sep]`, always. Slices follow Python's rules, negative
//! bounds included, so any finite ratio gives what im2rec.py gives.

use std::ops::Range;

/// Which list of a chunk a part goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `<prefix><chunk>.lst`: the whole chunk (train ratio exactly 1.0).
    All,
    /// `<prefix><chunk>_test.lst`.
    Test,
    /// `<prefix><chunk>_val.lst`.
    Val,
    /// `<prefix><chunk>_train.lst`.
    Train,
}

/// One output list: the items `range` of the (shuffled) image list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The chunk number when there is more than one chunk, else `None`.
    pub chunk: Option<usize>,
    /// Which list of the chunk.
    pub kind: ListKind,
    /// Positions in the whole list.
    pub range: Range<usize>,
}

impl Part {
    /// What im2rec.py appends to the prefix: `_<c>` for chunks, then
    /// `.lst`, `_train.lst`, `_val.lst` or `_test.lst`.
    pub fn file_suffix(&self) -> String {
        let chunk = self.chunk.map(|c| format!("_{c}")).unwrap_or_default();
        let kind = match self.kind {
            ListKind::All => ".lst",
            ListKind::Test => "_test.lst",
            ListKind::Val => "_val.lst",
            ListKind::Train => "_train.lst",
        };
        format!("{chunk}{kind}")
    }
}

/// Python's `int(x)` for a finite float, saturated to `i64` (which never changes a
/// slice bound, since lists are far shorter).
fn py_int(x: f64) -> i64 {
    x as i64
}

/// Python's `seq[start:stop]` bounds for a sequence of length `len`.
fn py_slice(len: usize, start: Option<i64>, stop: Option<i64>) -> Range<usize> {
    let len_i = len as i64;
    let clamp = |b: i64| {
        let b = if b < 0 { b.saturating_add(len_i) } else { b };
        b.clamp(0, len_i) as usize
    };
    let lo = start.map_or(0, clamp);
    let hi = stop.map_or(len, clamp);
    lo..hi.max(lo)
}

/// The lists im2rec.py writes for `n` items, in the order it writes them.
/// `chunks` must be at least 1 and the ratios finite (the caller validates).
pub fn plan(n: usize, chunks: usize, train_ratio: f64, test_ratio: f64) -> Vec<Part> {
    assert!(chunks >= 1, "chunks must be at least 1");
    let chunk_size = n.div_ceil(chunks);
    let sep = py_int(chunk_size as f64 * train_ratio);
    let sep_test = py_int(chunk_size as f64 * test_ratio);
    let mut parts = Vec::new();
    for c in 0..chunks {
        let chunk_no = (chunks > 1).then_some(c);
        let start = c.saturating_mul(chunk_size).min(n);
        let end = (c + 1).saturating_mul(chunk_size).min(n);
        let len = end - start;
        let mut push = |kind, r: Range<usize>| {
            parts.push(Part {
                chunk: chunk_no,
                kind,
                range: start + r.start..start + r.end,
            })
        };
        if train_ratio == 1.0 {
            push(ListKind::All, 0..len);
            continue;
        }
        if test_ratio != 0.0 {
            push(ListKind::Test, py_slice(len, None, Some(sep_test)));
        }
        if train_ratio + test_ratio < 1.0 {
            let from = sep_test.saturating_add(sep);
            push(ListKind::Val, py_slice(len, Some(from), None));
        }
        let to = sep_test.saturating_add(sep);
        push(ListKind::Train, py_slice(len, Some(sep_test), Some(to)));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(parts: &[Part]) -> Vec<(String, Range<usize>)> {
        parts
            .iter()
            .map(|p| (p.file_suffix(), p.range.clone()))
            .collect()
    }

    fn s(name: &str, r: Range<usize>) -> (String, Range<usize>) {
        (name.to_string(), r)
    }

    #[test]
    fn single_list_by_default() {
        assert_eq!(summary(&plan(5, 1, 1.0, 0.0)), [s(".lst", 0..5)]);
        // tr == 1.0 ignores te entirely.
        assert_eq!(summary(&plan(5, 1, 1.0, 0.4)), [s(".lst", 0..5)]);
    }

    #[test]
    fn truncation_uses_float_products() {
        assert_eq!((100.0f64 * 0.29) as i64, 28);
        assert_eq!(
            summary(&plan(100, 1, 0.29, 0.0)),
            [s("_val.lst", 28..100), s("_train.lst", 0..28)]
        );
    }

    #[test]
    fn point_eight_plus_point_two_writes_no_val() {
        let (tr, te) = std::hint::black_box((0.8f64, 0.2f64));
        assert!(tr + te >= 1.0);
        assert_eq!(
            summary(&plan(10, 1, 0.8, 0.2)),
            [s("_test.lst", 0..2), s("_train.lst", 2..10)]
        );
        let (tr, te) = std::hint::black_box((0.7f64, 0.2f64));
        assert!(tr + te < 1.0);
        assert_eq!(
            summary(&plan(10, 1, 0.7, 0.2)),
            [
                s("_test.lst", 0..2),
                s("_val.lst", 9..10),
                s("_train.lst", 2..9)
            ]
        );
    }

    #[test]
    fn chunks_use_the_first_chunk_size_for_every_chunk() {
        // 23 items in 3 chunks: chunk_size 8, the last chunk holds 7.
        // sep = int(8*0.5) = 4, sep_test = int(8*0.25) = 2.
        assert_eq!(
            summary(&plan(23, 3, 0.5, 0.25)),
            [
                s("_0_test.lst", 0..2),
                s("_0_val.lst", 6..8),
                s("_0_train.lst", 2..6),
                s("_1_test.lst", 8..10),
                s("_1_val.lst", 14..16),
                s("_1_train.lst", 10..14),
                s("_2_test.lst", 16..18),
                s("_2_val.lst", 22..23),
                s("_2_train.lst", 18..22),
            ]
        );
        // More chunks than items: the trailing chunks are empty files.
        assert_eq!(
            summary(&plan(3, 5, 1.0, 0.0)),
            [
                s("_0.lst", 0..1),
                s("_1.lst", 1..2),
                s("_2.lst", 2..3),
                s("_3.lst", 3..3),
                s("_4.lst", 3..3),
            ]
        );
    }

    #[test]
    fn a_short_last_chunk_can_lose_its_val_part() {
        // chunk_size 4, sep = int(4*0.5) = 2: the 2-item last chunk is all train.
        assert_eq!(
            summary(&plan(10, 3, 0.5, 0.0))[4..],
            [s("_2_val.lst", 10..10), s("_2_train.lst", 8..10)]
        );
    }

    #[test]
    fn out_of_range_ratios_slice_like_python() {
        // Python: l = list(range(10)); l[:int(10*-0.2)] == l[:-2]
        assert_eq!(
            summary(&plan(10, 1, 0.5, -0.2)),
            [
                s("_test.lst", 0..8),
                s("_val.lst", 3..10),
                s("_train.lst", 8..8)
            ]
        );
        assert_eq!(summary(&plan(10, 1, 1.5, 0.0)), [s("_train.lst", 0..10)]);
    }
}
