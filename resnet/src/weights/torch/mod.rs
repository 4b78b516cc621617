// Own reader, not burn-store 0.21's PytorchReader: tried on tests/fixtures, that one ignores strides (a transposed tensor comes back in storage order) and reads a truncated legacy file without error.
//! Reader for PyTorch's `torch.save` zip format (PyTorch ≥ 1.6, the format of
//! torchvision's published `.pth` files).
//!
//! The file is a zip archive (entries stored uncompressed) holding
//! `<archive>/data.pkl`, a pickle of the saved object whose tensors refer to
//! storages by key through pickle "persistent ids", and one entry
//! `<archive>/data/<key>` with the raw little-endian bytes of each storage.
//!
//! Only what a `state_dict` (or a checkpoint dict around one) needs is interpreted:
//! dicts, lists, tuples, scalars, strings, `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`/`_v3` and `_rebuild_parameter`. Any other object
//! is kept as an opaque value, never executed: reading a file runs no code from it.
//!
//! Modules: `zip` (the archive directory), `pickle` (the unpickler); this file turns
//! the unpickled object into named host tensors, for the zip format and for torch's
//! legacy (pre-1.6) format.

mod pickle;
mod zip;

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{bf16, f16};

use super::{HostData, HostTensor};
use pickle::{DictRc, Elem, TensorRef, Unpickler, Value};
use zip::{u64_at, zip_data, zip_directory, zip_err};

/// Why a torch file could not be read (the caller adds the path).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchError {
    /// The zip container is damaged or uses a feature we do not read.
    #[error("zip archive: {0}")]
    Zip(String),
    /// The pickle stream is damaged or uses an opcode we do not read.
    #[error("pickle at byte {offset} of {entry}: {message}")]
    Pickle {
        /// The archive entry (`.../data.pkl`).
        entry: String,
        /// Byte offset of the failing opcode.
        offset: usize,
        /// What went wrong.
        message: String,
    },
    /// The pickle was read but does not describe tensors we can load.
    #[error("{0}")]
    Content(String),
}

/// Reads a torch zip-format file: every tensor of the state dict it holds, by name.
///
/// When the pickled object is a dict whose values are not tensors (a training
/// checkpoint), the first of `state_dict`, `model_state_dict`, `model`, `net` and
/// `module` that is a dict of tensors is used.
pub(super) fn read_torch_zip(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, TorchError> {
    let dir = zip_directory(bytes)?;
    let pkl_name = dir
        .keys()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min()
        .cloned()
        .ok_or_else(|| zip_err("no <archive>/data.pkl entry: not a torch.save file"))?;
    let archive = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Some(e) = dir.get(&format!("{archive}byteorder")) {
        let order = zip_data(bytes, "byteorder", e)?;
        if order != b"little" {
            return Err(TorchError::Content(format!(
                "tensors are stored {}-endian; only little-endian files are supported",
                String::from_utf8_lossy(order)
            )));
        }
    }
    let pkl = zip_data(bytes, &pkl_name, &dir[&pkl_name])?;
    let root = Unpickler::new(pkl, &pkl_name).run()?;
    tensors_of(&root, |key| {
        let entry_name = format!("{archive}data/{key}");
        let entry = dir
            .get(&entry_name)
            .ok_or_else(|| TorchError::Content(format!("storage entry {entry_name} missing")))?;
        zip_data(bytes, &entry_name, entry)
    })
}

/// Reads a file in torch's legacy (pre-1.6) format: five pickles (magic number,
/// protocol version, system info, the object, the sorted storage keys), then each
/// storage as a little-endian u64 element count followed by its raw bytes.
pub(super) fn read_torch_legacy(bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>, TorchError> {
    let mut u = Unpickler::new(bytes, "legacy pickle stream");
    for _ in 0..3 {
        u.run()?; // magic number, protocol version, sys_info
    }
    let root = u.run()?;
    let keys = match u.run()? {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.clone()),
                other => Err(TorchError::Content(format!(
                    "storage key {} is not a string",
                    other.describe()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(TorchError::Content(format!(
                "expected the list of storage keys, found {}",
                other.describe()
            )))
        }
    };
    let mut pos = u.pos;
    let mut raw: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let elem = u.storages.get(&key).copied().flatten().ok_or_else(|| {
            TorchError::Content(format!("storage {key} has an unknown element type"))
        })?;
        let numel = u64_at(bytes, pos).ok_or_else(|| {
            TorchError::Content(format!("storage {key}: file truncated at byte {pos}"))
        })?;
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(elem.size()))
            .ok_or_else(|| TorchError::Content(format!("storage {key}: bad size {numel}")))?;
        let start = pos + 8;
        let data = bytes.get(start..start + len).ok_or_else(|| {
            TorchError::Content(format!(
                "storage {key}: needs {len} bytes from byte {start}, the file has {}",
                bytes.len()
            ))
        })?;
        raw.insert(key, data);
        pos = start + len;
    }
    tensors_of(&root, |key| {
        raw.get(key)
            .copied()
            .ok_or_else(|| TorchError::Content(format!("storage {key} missing")))
    })
}

/// Every named tensor of the state dict in `root`, with storages from `storage`.
fn tensors_of<'b>(
    root: &Value,
    mut storage: impl FnMut(&str) -> Result<&'b [u8], TorchError>,
) -> Result<BTreeMap<String, HostTensor>, TorchError> {
    let dict = state_dict_of(root)?;
    let mut out = BTreeMap::new();
    for (k, v) in dict.borrow().iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue; // non-tensor entries (e.g. `_metadata`, hyperparameters)
        };
        let raw = storage(&t.storage.key)
            .map_err(|e| TorchError::Content(format!("tensor {name}: {e}")))?;
        let tensor =
            materialise(raw, t).map_err(|m| TorchError::Content(format!("tensor {name}: {m}")))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

fn is_tensor_dict(d: &DictRc) -> bool {
    d.borrow()
        .iter()
        .any(|(_, v)| matches!(v, Value::Tensor(_)))
}

fn state_dict_of(root: &Value) -> Result<DictRc, TorchError> {
    let Value::Dict(d) = root else {
        return Err(TorchError::Content(format!(
            "the file holds {}, not a state dict (save model.state_dict(), not the model)",
            root.describe()
        )));
    };
    if is_tensor_dict(d) {
        return Ok(d.clone());
    }
    for wanted in ["state_dict", "model_state_dict", "model", "net", "module"] {
        for (k, v) in d.borrow().iter() {
            if let (Value::Str(k), Value::Dict(inner)) = (k, v) {
                if k == wanted && is_tensor_dict(inner) {
                    return Ok(inner.clone());
                }
            }
        }
    }
    let keys: Vec<String> = d
        .borrow()
        .iter()
        .filter_map(|(k, _)| match k {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .take(10)
        .collect();
    Err(TorchError::Content(format!(
        "no tensors found in the saved dict (top-level keys: {})",
        keys.join(", ")
    )))
}

fn materialise(raw: &[u8], t: &TensorRef) -> Result<HostTensor, String> {
    let elem = t.storage.elem.ok_or("storage of unknown element type")?;
    if t.shape.len() != t.stride.len() {
        return Err("size and stride differ in length".into());
    }
    let numel: usize = t.shape.iter().product();
    let size = elem.size();
    // Element index (in the storage) of every element, in row-major order of `shape`.
    let mut indices = Vec::with_capacity(numel);
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (d, s) in t.shape.iter().zip(&t.stride).rev() {
            if *d != 1 && *s != expect {
                ok = false;
            }
            expect *= d;
        }
        ok
    };
    let offset = t.offset + t.storage.view_offset;
    if contiguous {
        indices.extend(offset..offset + numel);
    } else if numel > 0 {
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            indices.push(at);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    let last = indices.iter().max().copied().unwrap_or(0);
    if numel > 0 && (last + 1) * size > raw.len() {
        return Err(format!(
            "needs {} bytes of storage, the archive holds {}",
            (last + 1) * size,
            raw.len()
        ));
    }
    let at = |i: usize| &raw[i * size..(i + 1) * size];
    let data = match elem {
        Elem::F32 => HostData::F32(
            indices
                .iter()
                .map(|&i| f32::from_le_bytes(at(i).try_into().expect("4")))
                .collect(),
        ),
        Elem::F64 => HostData::F32(
            indices
                .iter()
                .map(|&i| f64::from_le_bytes(at(i).try_into().expect("8")) as f32)
                .collect(),
        ),
        Elem::F16 => HostData::F32(
            indices
                .iter()
                .map(|&i| f16::from_le_bytes(at(i).try_into().expect("2")).to_f32())
                .collect(),
        ),
        Elem::Bf16 => HostData::F32(
            indices
                .iter()
                .map(|&i| bf16::from_le_bytes(at(i).try_into().expect("2")).to_f32())
                .collect(),
        ),
        Elem::I64 => HostData::I64(
            indices
                .iter()
                .map(|&i| i64::from_le_bytes(at(i).try_into().expect("8")))
                .collect(),
        ),
        Elem::I32 => HostData::I64(
            indices
                .iter()
                .map(|&i| i64::from(i32::from_le_bytes(at(i).try_into().expect("4"))))
                .collect(),
        ),
        Elem::I16 => HostData::I64(
            indices
                .iter()
                .map(|&i| i64::from(i16::from_le_bytes(at(i).try_into().expect("2"))))
                .collect(),
        ),
        Elem::I8 => HostData::I64(indices.iter().map(|&i| i64::from(raw[i] as i8)).collect()),
        Elem::U8 | Elem::Bool => {
            HostData::I64(indices.iter().map(|&i| i64::from(raw[i])).collect())
        }
    };
    Ok(HostTensor {
        shape: t.shape.clone(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::pickle::StorageRef;
    use super::*;

    #[test]
    fn strided_tensors_are_gathered_in_row_major_order() {
        // Storage 0..6 as f32; a transposed 3×2 view of a 2×3 matrix.
        let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            storage: StorageRef {
                elem: Some(Elem::F32),
                key: "0".into(),
                view_offset: 0,
            },
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        let h = materialise(&raw, &t).unwrap();
        assert_eq!(h.shape, vec![3, 2]);
        assert_eq!(h.data, HostData::F32(vec![0., 3., 1., 4., 2., 5.]));
    }

    #[test]
    fn not_a_zip_is_a_clear_error() {
        let e = read_torch_zip(b"definitely not a zip archive")
            .err()
            .unwrap();
        assert!(e.to_string().contains("zip"), "{e}");
    }
}
