//! `.safetensors` files: reading any float/integer dtype into a [`StateDict`], and
//! writing one (f32/i64) through a temporary file renamed into place.

use std::path::Path;

use super::{HostData, HostTensor, StateDict, WeightsError};

pub(super) fn read_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<StateDict, WeightsError> {
    use ::safetensors::Dtype;
    let err = |message: String| WeightsError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let st = ::safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let chunks = |n: usize| raw.chunks_exact(n);
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(
                chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect(),
            ),
            Dtype::F64 => HostData::F32(
                chunks(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
                    .collect(),
            ),
            Dtype::F16 => HostData::F32(
                chunks(2)
                    .map(|c| burn::tensor::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => HostData::F32(
                chunks(2)
                    .map(|c| burn::tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::I64 => HostData::I64(
                chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            Dtype::I32 => HostData::I64(
                chunks(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4"))))
                    .collect(),
            ),
            Dtype::U8 | Dtype::BOOL => HostData::I64(raw.iter().map(|&b| i64::from(b)).collect()),
            other => return Err(err(format!("tensor {name}: unsupported dtype {other:?}"))),
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

struct SafeView<'a> {
    dtype: ::safetensors::Dtype,
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl ::safetensors::View for SafeView<'_> {
    fn dtype(&self) -> ::safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes a state dict as safetensors (`{"format": "pt"}` metadata, like
/// `safetensors.torch.save_file`), through a temporary file renamed into place.
pub fn write_safetensors(sd: &StateDict, path: &Path) -> Result<(), WeightsError> {
    let views = sd.iter().map(|(k, t)| {
        let (dtype, bytes) = match &t.data {
            HostData::F32(v) => (
                ::safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            HostData::I64(v) => (
                ::safetensors::Dtype::I64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        };
        (
            k.as_str(),
            SafeView {
                dtype,
                shape: &t.shape,
                bytes,
            },
        )
    });
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes =
        ::safetensors::serialize(views, metadata).map_err(|e| WeightsError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    write_atomically(path, &bytes)
}

/// `bytes` to `path` through a synced temporary sibling renamed into place; after a
/// failure (a full disk...) the temporary file is removed and `path` is untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    crate::artifact::write_atomic(path, bytes).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}
