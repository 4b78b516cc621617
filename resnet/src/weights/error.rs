//! [`WeightsError`]: why weights could not be read, applied or written.

use std::path::PathBuf;

use super::torch::TorchError;

/// Why weights could not be read, applied or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither a torch zip archive nor a safetensors file.
    #[error(
        "{}: not a PyTorch .pth (zip) or .safetensors file (first bytes {first:02x?})",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes.
        first: Vec<u8>,
    },
    /// The torch archive could not be read.
    #[error("{}: {source}", path.display())]
    Torch {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: TorchError,
    },
    /// The safetensors file could not be read or written.
    #[error("{}: safetensors: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A tensor has another shape than the model's.
    #[error(
        "{}: tensor {key} has shape {} in the file but {} in the model{hint}",
        path.display(), shape_str(found), shape_str(expected)
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor (model name).
        key: String,
        /// torch shape the model needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
        /// Extra advice (e.g. about `num_layers`).
        hint: String,
    },
    /// Tensors the model needs are absent.
    #[error("{}: {} tensor(s) missing: {}{hint}", path.display(), keys.len(), list(keys))]
    MissingKeys {
        /// The file.
        path: PathBuf,
        /// The missing names.
        keys: Vec<String>,
        /// Extra advice.
        hint: String,
    },
    /// A strict load found tensors the model does not have.
    #[error("{}: {} unexpected tensor(s): {}", path.display(), keys.len(), list(keys))]
    UnexpectedKeys {
        /// The file.
        path: PathBuf,
        /// The extra names.
        keys: Vec<String>,
    },
    /// A buffer of BatchNorm running statistics does not fit the model.
    #[error("running statistics: {0}")]
    RunningStats(String),
    /// A model tensor is stored with an integer type.
    #[error("{}: tensor {key} is not floating point", path.display())]
    NotFloat {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
    },
}

/// Joins up to 8 names, then says how many more there are.
pub(super) fn list(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(8)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 8 {
        s.push_str(&format!(" … and {} more", names.len() - 8));
    }
    s
}

fn shape_str(s: &[usize]) -> String {
    format!("{s:?}")
}
