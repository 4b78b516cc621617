//! Tensors as read from a file ([`HostTensor`], [`StateDict`]) and the recognition of
//! a file's format from its first bytes.

use std::collections::BTreeMap;
use std::path::Path;

use super::{safetensors, torch, WeightsError};

/// Values of a tensor read from a file, widened to `f32` (floats) or `i64` (integers).
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// Any floating-point tensor (f16, bf16, f32 and f64 are converted).
    F32(Vec<f32>),
    /// Any integer or boolean tensor.
    I64(Vec<i64>),
}

/// A tensor in host memory in torch's layout (row-major, torch's shape).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// torch's shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The values in row-major order.
    pub data: HostData,
}

/// A state dict: tensor name → tensor.
pub type StateDict = BTreeMap<String, HostTensor>;

pub(super) fn parse_state_dict(bytes: &[u8], path: &Path) -> Result<StateDict, WeightsError> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return torch::read_torch_zip(bytes).map_err(|source| WeightsError::Torch {
            path: path.to_path_buf(),
            source,
        });
    }
    // Legacy torch files start with the pickled magic number 0x1950a86a20f9469cfc6c.
    if bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20]) {
        return torch::read_torch_legacy(bytes).map_err(|source| WeightsError::Torch {
            path: path.to_path_buf(),
            source,
        });
    }
    if bytes.len() >= 9 && bytes[8] == b'{' {
        return safetensors::read_safetensors_bytes(bytes, path);
    }
    Err(WeightsError::UnknownFormat {
        path: path.to_path_buf(),
        first: bytes.iter().take(8).copied().collect(),
    })
}
