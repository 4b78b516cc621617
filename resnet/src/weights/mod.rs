//! Weights in torchvision's format: `.pth` (PyTorch zip, or the legacy pre-1.6
//! format) and `.safetensors` in,
//! `.safetensors` out.
//!
//! Names are torchvision's state-dict keys (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `fc.bias`, …), so a file
//! written by [`save_safetensors`] loads into `torchvision.models.resnetXX` with
//! `load_state_dict(strict=True)`, and torchvision's own `.pth` files load here.
//!
//! Layout conversions: burn's `Linear` stores `[in, out]`, torch `[out, in]` (`fc.weight`
//! is transposed both ways); BatchNorm `gamma`/`beta` are torch's `weight`/`bias`.
//! `num_batches_tracked` is ignored on load and written as 0 on save: torch only uses
//! it when BatchNorm's `momentum` is `None`, which torchvision's ResNets never set.
//!
//! Pretrained files ([`load_pretrained`]) may carry a key prefix such as `backbone.` or
//! `module.` (a wrapped model or `DataParallel`), found automatically. Every backbone
//! tensor must be present with the right shape; extra tensors are reported as
//! unexpected and skipped. The head (`fc`) is re-initialised ([`HeadPolicy::Reinit`],
//! SageMaker's `use_pretrained_model=1`) or loaded ([`HeadPolicy::Keep`], which
//! requires the file's class count to match). Our own artifacts load strictly with
//! [`load_safetensors`].
//!
//! Modules: `state_dict` (the [`StateDict`] types, recognising a file's format),
//! `safetensors` (reading and writing `.safetensors`), `mapping` (the model under
//! torchvision's names: walking, rebuilding, exporting), `import` (applying a state
//! dict: prefix, [`HeadPolicy`], [`LoadReport`]), `torch` (the `.pth` reader) and
//! `error` ([`WeightsError`]). This file holds the entry points.

mod error;
mod import;
mod mapping;
mod safetensors;
mod state_dict;
mod torch;

#[cfg(test)]
mod tests;

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::model::ResNet;

pub use error::WeightsError;
pub use import::{HeadPolicy, LoadReport};
pub use mapping::{running_stats, state_dict_keys, to_state_dict, with_running_stats};
pub use safetensors::write_safetensors;
pub use state_dict::{HostData, HostTensor, StateDict};
pub use torch::TorchError;

use import::apply_state_dict;

/// Reads every tensor of a `.pth` (PyTorch zip format) or `.safetensors` file. The
/// format is recognised from the content, not the extension.
pub fn read_state_dict(path: &Path) -> Result<StateDict, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    state_dict::parse_state_dict(&bytes, path)
}

/// Saves the model as `.safetensors` with torchvision's key names, f32 tensors and an
/// i64 `num_batches_tracked` per BatchNorm, so that
/// `torchvision.models.resnetXX(num_classes=N).load_state_dict(load_file(path))`
/// accepts it with `strict=True`.
pub fn save_safetensors<B: Backend>(model: &ResNet<B>, path: &Path) -> Result<(), WeightsError> {
    write_safetensors(&to_state_dict(model), path)
}

/// Loads torchvision-format pretrained weights (`.pth` zip or `.safetensors`) into
/// `model`, which should be freshly initialised for the wanted class count.
///
/// A key prefix (`backbone.`, `module.`, …) is detected and removed. All backbone
/// tensors must be present with the model's shapes. With [`HeadPolicy::Reinit`] the
/// model's own `fc` is kept (the file's is ignored whatever its size); with
/// [`HeadPolicy::Keep`] the file's `fc` is loaded and must have the model's class count.
pub fn load_pretrained<B: Backend>(
    model: ResNet<B>,
    path: &Path,
    head: HeadPolicy,
    device: &B::Device,
) -> Result<(ResNet<B>, LoadReport), WeightsError> {
    let sd = read_state_dict(path)?;
    apply_state_dict(model, &sd, path, head, false, device)
}

/// Loads weights written by [`save_safetensors`] (a model artifact) strictly: every
/// tensor present with the model's shape, no prefix, nothing unexpected.
pub fn load_safetensors<B: Backend>(
    model: ResNet<B>,
    path: &Path,
    device: &B::Device,
) -> Result<ResNet<B>, WeightsError> {
    let sd = read_state_dict(path)?;
    apply_state_dict(model, &sd, path, HeadPolicy::Keep, true, device).map(|(m, _)| m)
}

/// Applies an in-memory state dict strictly (every key the model has, right shapes,
/// none extra), except that with [`HeadPolicy::Reinit`] the model keeps its own fresh
/// classifier (the file's is ignored). `origin` names the source in errors.
pub fn load_state_dict_with_head<B: Backend>(
    model: ResNet<B>,
    sd: &StateDict,
    origin: &Path,
    head: HeadPolicy,
    device: &B::Device,
) -> Result<(ResNet<B>, LoadReport), WeightsError> {
    apply_state_dict(model, sd, origin, head, true, device)
}

/// Applies an in-memory state dict strictly (all keys, right shapes, none extra).
/// `origin` names the source in errors.
pub fn load_state_dict<B: Backend>(
    model: ResNet<B>,
    sd: &StateDict,
    origin: &Path,
    device: &B::Device,
) -> Result<ResNet<B>, WeightsError> {
    apply_state_dict(model, sd, origin, HeadPolicy::Keep, true, device).map(|(m, _)| m)
}
