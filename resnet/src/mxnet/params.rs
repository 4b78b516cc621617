//! MXNet's `nd.save` file format (`.params`): a list of named NDArrays.
//!
//! The byte layout, from MXNet 1.9's `src/ndarray/ndarray.cc` (`NDArray::Save`,
//! `NDArray::Load`, `LegacyLoad`) and dmlc-core's serializer; every integer is
//! little-endian:
//!
//! ```text
//! u64 0x112 (kMXAPINDArrayListMagic)   u64 reserved (0)
//! u64 count, then count arrays:
//!   u32 magic: 0xF993FAC9 (V2) | 0xF993FACA (V3, NumPy shapes) | 0xF993FAC8 (V1) | else legacy
//!   V2/V3: i32 storage type (0 = dense; sparse arrays are refused)
//!   shape: V1/V2/V3: i32 ndim, then ndim × i64;  legacy: the magic is ndim, then ndim × u32
//!   (an array with no dimensions ends here: an empty NDArray)
//!   i32 dev_type, i32 dev_id (the context it was saved from)
//!   i32 type flag: 0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64
//!   the values, row-major, size(type) × product(shape) bytes
//! u64 count, then count names: u64 length + UTF-8 bytes (`arg:<name>` / `aux:<name>` in
//! a Module checkpoint); no names (count 0) is a plain list.
//! ```
//!
//! [`read_params`] parses it into f32 arrays (float16/float64 converted);
//! [`write_params`] writes the V2 form MXNet 1.9 writes, dense float32 on the CPU.

use std::fmt;

/// NDArray format magics (MXNet `ndarray.cc`).
const LIST_MAGIC: u64 = 0x112;
const V1_MAGIC: u32 = 0xF993_FAC8;
const V2_MAGIC: u32 = 0xF993_FAC9;
const V3_MAGIC: u32 = 0xF993_FACA;

/// One array of a `.params` file, as f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `product(shape)` values, row-major.
    pub data: Vec<f32>,
}

/// Why a `.params` file cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The file ends inside a field.
    #[error("truncated: the file ends at byte {len} while reading {what} (at byte {at})")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it started.
        at: usize,
        /// The file's length.
        len: usize,
    },
    /// Not an `nd.save` file.
    #[error("not an MXNet NDArray file: magic {0:#x} at byte 0 (expected 0x112)")]
    Magic(u64),
    /// A feature of the format this reader does not take.
    #[error("array {index}: {message}")]
    Unsupported {
        /// The array's position in the file.
        index: usize,
        /// What is unsupported.
        message: String,
    },
    /// The name list does not match the arrays.
    #[error("{names} names for {arrays} arrays")]
    NameCount {
        /// Names in the file.
        names: usize,
        /// Arrays in the file.
        arrays: usize,
    },
    /// Bytes follow the name list.
    #[error("{0} bytes of garbage after the last name")]
    Trailing(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &dyn fmt::Display) -> Result<&'a [u8], ParamsError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ParamsError::Truncated {
                what: what.to_string(),
                at: self.pos,
                len: self.bytes.len(),
            });
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &dyn fmt::Display) -> Result<u32, ParamsError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn i32(&mut self, what: &dyn fmt::Display) -> Result<i32, ParamsError> {
        Ok(self.u32(what)? as i32)
    }
    fn u64(&mut self, what: &dyn fmt::Display) -> Result<u64, ParamsError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

fn unsupported(index: usize, message: impl Into<String>) -> ParamsError {
    ParamsError::Unsupported {
        index,
        message: message.into(),
    }
}

/// A count that must fit in the bytes left (each item takes at least `min_item` bytes),
/// so that a corrupt count fails as truncation instead of a huge allocation.
fn bounded_count(
    r: &Reader<'_>,
    n: u64,
    min_item: usize,
    what: &str,
) -> Result<usize, ParamsError> {
    let left = (r.bytes.len() - r.pos) as u64;
    if n.saturating_mul(min_item as u64) > left {
        return Err(ParamsError::Truncated {
            what: format!("{n} {what}"),
            at: r.pos,
            len: r.bytes.len(),
        });
    }
    Ok(n as usize)
}

fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

fn read_array(r: &mut Reader<'_>, index: usize) -> Result<Option<NdArray>, ParamsError> {
    let what = |w: &str| format!("array {index}'s {w}");
    let magic = r.u32(&what("magic"))?;
    let shape: Vec<usize> = match magic {
        V1_MAGIC | V2_MAGIC | V3_MAGIC => {
            if magic != V1_MAGIC {
                let stype = r.i32(&what("storage type"))?;
                if stype != 0 {
                    return Err(unsupported(
                        index,
                        format!("sparse storage type {stype} (only dense arrays are read)"),
                    ));
                }
            }
            let ndim = r.i32(&what("dimension count"))?;
            if ndim <= 0 {
                // 0 (or -1, unknown, under NumPy semantics): an empty array.
                return Ok(None);
            }
            let ndim = bounded_count(r, ndim as u64, 8, "dimensions")?;
            let mut dims = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                let d = r.u64(&what("shape"))? as i64;
                if d < 0 {
                    return Err(unsupported(index, format!("negative dimension {d}")));
                }
                dims.push(d as usize);
            }
            dims
        }
        ndim => {
            // The oldest format: the magic is the dimension count, dims are u32.
            if ndim == 0 {
                return Ok(None);
            }
            let ndim = bounded_count(r, u64::from(ndim), 4, "dimensions")?;
            let mut dims = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                dims.push(r.u32(&what("shape"))? as usize);
            }
            dims
        }
    };
    r.take(8, &what("context"))?;
    let type_flag = r.i32(&what("type flag"))?;
    let size = match type_flag {
        0 | 4 => 4,
        1 | 6 => 8,
        2 => 2,
        3 | 5 => 1,
        t => return Err(unsupported(index, format!("unknown type flag {t}"))),
    };
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| unsupported(index, format!("shape {shape:?} overflows")))?;
    let nbytes = count
        .checked_mul(size)
        .ok_or_else(|| unsupported(index, format!("shape {shape:?} overflows")))?;
    let raw = r.take(nbytes, &what(&format!("{count} values of shape {shape:?}")))?;
    let data: Vec<f32> = match type_flag {
        0 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
            .collect(),
        1 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8")) as f32)
            .collect(),
        2 => raw
            .chunks_exact(2)
            .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        3 => raw.iter().map(|&b| f32::from(b)).collect(),
        4 => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4")) as f32)
            .collect(),
        5 => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        _ => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f32)
            .collect(),
    };
    Ok(Some(NdArray { shape, data }))
}

/// Parse an `nd.save` file: `(name, array)` pairs in file order (names are empty
/// strings for an unnamed list; empty arrays are skipped).
pub fn read_params(bytes: &[u8]) -> Result<Vec<(String, NdArray)>, ParamsError> {
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.u64(&"the file magic")?;
    if magic != LIST_MAGIC {
        return Err(ParamsError::Magic(magic));
    }
    r.u64(&"the reserved field")?;
    let n = r.u64(&"the array count")?;
    let n = bounded_count(&r, n, 4, "arrays")?;
    let mut arrays = Vec::with_capacity(n);
    for i in 0..n {
        arrays.push(read_array(&mut r, i)?);
    }
    let names_n = r.u64(&"the name count")?;
    let names_n = bounded_count(&r, names_n, 8, "names")?;
    if names_n != 0 && names_n != n {
        return Err(ParamsError::NameCount {
            names: names_n,
            arrays: n,
        });
    }
    let mut names = Vec::with_capacity(names_n);
    for i in 0..names_n {
        let len = r.u64(&format!("name {i}'s length"))?;
        let len = bounded_count(&r, len, 1, "name bytes")?;
        let raw = r.take(len, &format!("name {i}"))?;
        names.push(String::from_utf8_lossy(raw).into_owned());
    }
    if r.pos != bytes.len() {
        return Err(ParamsError::Trailing(bytes.len() - r.pos));
    }
    Ok(arrays
        .into_iter()
        .enumerate()
        .filter_map(|(i, a)| a.map(|a| (names.get(i).cloned().unwrap_or_default(), a)))
        .collect())
}

/// Write `(name, array)` pairs as MXNet 1.9's `nd.save` does (V2 arrays, dense
/// float32, CPU context), readable by `mx.nd.load`.
pub fn write_params(arrays: &[(String, NdArray)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&LIST_MAGIC.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(arrays.len() as u64).to_le_bytes());
    for (_, a) in arrays {
        out.extend_from_slice(&V2_MAGIC.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes()); // dense
        out.extend_from_slice(&(a.shape.len() as i32).to_le_bytes());
        for &d in &a.shape {
            out.extend_from_slice(&(d as i64).to_le_bytes());
        }
        out.extend_from_slice(&1i32.to_le_bytes()); // kCPU
        out.extend_from_slice(&0i32.to_le_bytes()); // device 0
        out.extend_from_slice(&0i32.to_le_bytes()); // float32
        for v in &a.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.extend_from_slice(&(arrays.len() as u64).to_le_bytes());
    for (name, _) in arrays {
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, NdArray)> {
        vec![
            (
                "arg:conv0_weight".into(),
                NdArray {
                    shape: vec![2, 1, 1, 2],
                    data: vec![1.0, -2.5, 3.25, 0.0],
                },
            ),
            (
                "aux:bn_moving_var".into(),
                NdArray {
                    shape: vec![3],
                    data: vec![0.5, 1.5, 2.5],
                },
            ),
        ]
    }

    #[test]
    fn round_trip_and_exact_layout() {
        let bytes = write_params(&sample());
        // Header, count, then the first array's V2 magic, dense, ndim 4, dims.
        assert_eq!(&bytes[0..8], &0x112u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &2u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &[0xc9, 0xfa, 0x93, 0xf9]);
        assert_eq!(&bytes[32..36], &4i32.to_le_bytes());
        assert_eq!(read_params(&bytes).unwrap(), sample());
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_field() {
        let bytes = write_params(&sample());
        for len in 0..bytes.len() {
            let e = read_params(&bytes[..len]).unwrap_err();
            assert!(matches!(e, ParamsError::Truncated { .. }), "{len}: {e}");
        }
        // Header 24 bytes; array 0: magic, storage, ndim, 4 dims (to 68), context,
        // type flag (to 80), then its values.
        let e = read_params(&bytes[..90]).unwrap_err().to_string();
        assert!(
            e.contains("array 0's 4 values of shape [2, 1, 1, 2]"),
            "{e}"
        );
        // Inside the dimensions: the count no longer fits the bytes left.
        let e = read_params(&bytes[..60]).unwrap_err().to_string();
        assert!(e.contains("4 dimensions (at byte 36)"), "{e}");
    }

    #[test]
    fn legacy_v1_half_and_bad_inputs() {
        // Legacy format: magic = ndim (1), u32 dims, context, float16 values.
        let mut b = Vec::new();
        b.extend_from_slice(&0x112u64.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&2i32.to_le_bytes());
        for h in [0x3c00u16, 0xc000, 0x0001] {
            b.extend_from_slice(&h.to_le_bytes());
        }
        b.extend_from_slice(&0u64.to_le_bytes());
        let got = read_params(&b).unwrap();
        assert_eq!(got[0].0, "");
        assert_eq!(got[0].1.shape, vec![3]);
        assert_eq!(got[0].1.data[..2], [1.0, -2.0]);
        assert_eq!(got[0].1.data[2], 2f32.powi(-24));

        let mut bad = write_params(&sample());
        bad[0] = 0x13;
        assert!(matches!(read_params(&bad), Err(ParamsError::Magic(0x113))));
        let mut extra = write_params(&sample());
        extra.push(0);
        assert!(matches!(read_params(&extra), Err(ParamsError::Trailing(1))));
        // A huge count fails as truncation, without allocating.
        let mut huge = write_params(&sample());
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_params(&huge),
            Err(ParamsError::Truncated { .. })
        ));
    }
}
