//! The model artifact: a directory that `recpredict` (and PyTorch) can load.
//!
//! ```text
//! <out>/model.safetensors   best-validation weights, torchvision key names
//! <out>/config.json         ArtifactConfig: architecture, classes, preprocessing, hyperparameters
//! <out>/checkpoints/        image-classification-NNNN.safetensors (NNNN = epoch + 1) and last/
//! <out>/accuracy.svg        train/validation accuracy per epoch
//! <out>/metrics.jsonl       one JSON object per epoch
//! ```
//!
//! Every file is written to a temporary name in the same directory and renamed into
//! place, so a reader never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Layout, ResNetConfig};
use crate::preprocess::{Normalization, PreprocessConfig};
use crate::Head;

/// `config.json`'s `format` value.
pub const FORMAT: &str = "rectrain-model";
/// The `format_version` this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// SageMaker's checkpoint file prefix.
pub const CHECKPOINT_PREFIX: &str = "image-classification";

/// A problem reading or writing an artifact directory.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not valid.
    #[error("{path}: invalid model configuration: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `config.json`: everything needed to rebuild the network and its preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for files written by this build.
    pub format_version: u32,
    /// `"resnet"` (torchvision's ResNet) or `"mxnet-resnet"` (MXNet's pre-activation
    /// ResNet, SageMaker's, trained further from its `model.tar.gz`): [`Layout`].
    pub architecture: String,
    /// ResNet depth.
    pub num_layers: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Network input `[C, H, W]`.
    pub image_shape: [usize; 3],
    /// Shorter side before the crop, if training used one.
    pub resize: Option<u32>,
    /// Softmax, or per-class sigmoids (multi-label); written as SageMaker's boolean
    /// `multi_label`.
    #[serde(rename = "multi_label")]
    pub head: Head,
    /// Pixel normalisation used in training.
    pub normalization: Normalization,
    /// Class names by index (from im2list's `.classes` sidecar), if known.
    pub class_names: Option<Vec<String>>,
    /// The resolved hyperparameters, SageMaker names, string values.
    pub hyperparameters: serde_json::Value,
    /// Run summary: `epochs_run`, `best_epoch`, `best_validation_accuracy`, ...
    pub training: serde_json::Value,
}

impl ArtifactConfig {
    /// Read and check `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Self, ArtifactError> {
        let path = config_path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ArtifactError::Io {
            path: path.clone(),
            source,
        })?;
        let cfg: ArtifactConfig =
            serde_json::from_str(&text).map_err(|e| ArtifactError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        cfg.check()
            .map_err(|reason| ArtifactError::Invalid { path, reason })?;
        Ok(cfg)
    }

    /// Consistency checks on a parsed configuration.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if Layout::from_architecture(&self.architecture).is_none() {
            return Err(format!(
                "architecture {:?} is not supported (\"resnet\" or \"mxnet-resnet\")",
                self.architecture
            ));
        }
        if self.num_classes == 0 {
            return Err("num_classes is 0".into());
        }
        if let Some(names) = &self.class_names {
            if names.len() != self.num_classes {
                return Err(format!(
                    "{} class names for {} classes",
                    names.len(),
                    self.num_classes
                ));
            }
        }
        if self.image_shape.contains(&0) {
            return Err(format!(
                "image_shape {:?} has a zero dimension",
                self.image_shape
            ));
        }
        if self.image_shape[0] != 3 {
            return Err(format!(
                "image_shape {:?}: the network takes 3 channels",
                self.image_shape
            ));
        }
        self.preprocess().validate().map_err(|e| e.to_string())?;
        // The network itself: a depth we build, a class count its classifier can hold.
        self.resnet().validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Write `<dir>/config.json` (pretty-printed, atomically).
    pub fn save(&self, dir: &Path) -> Result<(), ArtifactError> {
        let path = config_path(dir);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| ArtifactError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        write_atomic(&path, text.as_bytes()).map_err(|source| ArtifactError::Io { path, source })
    }

    /// The preprocessing that training used (for validation-style prediction).
    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig {
            image_shape: self.image_shape,
            resize: self.resize,
            normalization: self.normalization.clone(),
        }
    }

    /// The network configuration.
    pub fn resnet(&self) -> ResNetConfig {
        ResNetConfig::new(self.num_layers, self.num_classes).with_layout(self.layout())
    }

    /// The network's layout, from `architecture` (checked by [`ArtifactConfig::load`]).
    pub fn layout(&self) -> Layout {
        Layout::from_architecture(&self.architecture).unwrap_or_default()
    }

    /// The display name of class `i`: its name when known, else the index.
    pub fn class_name(&self, i: usize) -> String {
        self.class_names
            .as_ref()
            .and_then(|n| n.get(i).cloned())
            .unwrap_or_else(|| i.to_string())
    }
}

/// `<dir>/config.json`.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

/// `<dir>/model.safetensors`.
pub fn weights_path(dir: &Path) -> PathBuf {
    dir.join("model.safetensors")
}

/// `<dir>/checkpoints`.
pub fn checkpoints_dir(dir: &Path) -> PathBuf {
    dir.join("checkpoints")
}

/// `<dir>/checkpoints/image-classification-NNNN.safetensors` for 0-based `epoch`
/// (SageMaker numbers checkpoints `epoch + 1`).
pub fn checkpoint_path(dir: &Path, epoch: usize) -> PathBuf {
    checkpoints_dir(dir).join(format!("{CHECKPOINT_PREFIX}-{:04}.safetensors", epoch + 1))
}

/// `<dir>/checkpoints/last`: the resumable state.
pub fn resume_dir(dir: &Path) -> PathBuf {
    checkpoints_dir(dir).join("last")
}

/// `<dir>/accuracy.svg`.
pub fn plot_path(dir: &Path) -> PathBuf {
    dir.join("accuracy.svg")
}

/// `<dir>/metrics.jsonl`.
pub fn metrics_path(dir: &Path) -> PathBuf {
    dir.join("metrics.jsonl")
}

/// A temporary sibling of `path` (same directory, so a rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Write `bytes` to a temporary sibling of `path`, sync it, and rename it to `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Produce `path` with `write` (which receives a temporary sibling path) and rename
/// the result into place; the temporary file is removed on failure.
pub fn write_via_temp<E>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let tmp = temp_sibling(path);
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            E::from(e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArtifactConfig {
        ArtifactConfig {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            architecture: "resnet".into(),
            num_layers: 18,
            num_classes: 2,
            image_shape: [3, 32, 32],
            resize: None,
            head: Head::Softmax,
            normalization: Normalization::imagenet(),
            class_names: Some(vec!["cat".into(), "dog".into()]),
            hyperparameters: serde_json::json!({"num_layers": "18"}),
            training: serde_json::json!({"epochs_run": 1, "best_epoch": 0}),
        }
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sample();
        cfg.save(dir.path()).unwrap();
        let back = ArtifactConfig::load(dir.path()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.preprocess().image_shape, [3, 32, 32]);
        assert_eq!(back.class_name(1), "dog");
        let text = std::fs::read_to_string(config_path(dir.path())).unwrap();
        assert!(text.contains("\"format\": \"rectrain-model\""));
        assert!(text.contains("\"resize\": null"));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn load_rejects_bad_configs() {
        let dir = tempfile::tempdir().unwrap();
        let err = ArtifactConfig::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        let mut cfg = sample();
        cfg.format_version = 2;
        cfg.save(dir.path()).unwrap();
        let err = ArtifactConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("format_version 2"), "{err}");
        let mut cfg = sample();
        cfg.class_names = Some(vec!["one".into()]);
        cfg.save(dir.path()).unwrap();
        let err = ArtifactConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1 class names for 2 classes"), "{err}");
        std::fs::write(config_path(dir.path()), "{}").unwrap();
        let err = ArtifactConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("invalid model configuration"), "{err}");
        // The network is checked when the file is read, so the error names config.json
        // rather than the weights the network would be built for.
        let mut cfg = sample();
        cfg.num_layers = 7;
        cfg.save(dir.path()).unwrap();
        let err = ArtifactConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(err.contains("num_layers 7 is not supported"), "{err}");
        let mut cfg = sample();
        cfg.num_classes = 5_000_000;
        cfg.class_names = None;
        cfg.save(dir.path()).unwrap();
        let err = ArtifactConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("num_classes 5000000 is too large"), "{err}");
    }

    #[test]
    fn checkpoint_names_are_epoch_plus_one() {
        let d = Path::new("/out");
        assert_eq!(
            checkpoint_path(d, 9),
            Path::new("/out/checkpoints/image-classification-0010.safetensors")
        );
        assert_eq!(resume_dir(d), Path::new("/out/checkpoints/last"));
        assert_eq!(weights_path(d), Path::new("/out/model.safetensors"));
    }
}
