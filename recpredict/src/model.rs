//! The model behind [`Classifier`], of either kind `--model` may name:
//!
//! - a rectrain artifact directory: its ResNet on the chosen device
//!   (`resnet::backend`, the same device rules as training) through
//!   `resnet::infer::Predictor`, which returns softmax probabilities, or independent
//!   sigmoids for a multi-label model;
//! - an MXNet Module checkpoint (a SageMaker `model.tar.gz`, a directory or prefix with
//!   `*-symbol.json` + `*-NNNN.params`): its graph interpreted in burn by
//!   `resnet::mxnet` ([`resnet::mxnet::net::predictor`]).
//!
//! Both load into one [`Predictor`].
//!
//! [`open`] reads what the options are checked against (input shape, classes, labels,
//! preprocessing) before [`load`] puts the network on the device.

use std::path::{Path, PathBuf};

use resnet::artifact::{self, ArtifactConfig, ArtifactError};
use resnet::backend::{self, DeviceSpec, Precision};
use resnet::infer::Predictor;
use resnet::mxnet::net;
use resnet::mxnet::MxnetModel;
use resnet::preprocess::{EvalMode, PreprocessConfig};

use crate::pipeline::Classifier;
use crate::Error;

/// A model found on disk, not yet on a device.
#[derive(Debug)]
pub enum Source {
    /// A rectrain artifact: its config and weights file.
    Rectrain {
        /// `config.json`.
        art: Box<ArtifactConfig>,
        /// `model.safetensors`.
        weights: PathBuf,
    },
    /// An MXNet checkpoint, compiled.
    Mxnet(Box<MxnetModel>),
}

/// Find the model `path` names: an MXNet checkpoint when it is one (see
/// `resnet::mxnet::archive`), else a rectrain artifact directory.
pub fn open(path: &Path) -> Result<Source, Error> {
    let artifact_err = |message: String| Error::Artifact {
        dir: path.to_path_buf(),
        message,
    };
    if let Some(m) = MxnetModel::open(path).map_err(|e| artifact_err(e.to_string()))? {
        return Ok(Source::Mxnet(Box::new(m)));
    }
    let art = ArtifactConfig::load(path).map_err(|e: ArtifactError| artifact_err(e.to_string()))?;
    let weights = artifact::weights_path(path);
    if !weights.is_file() {
        return Err(Error::MissingWeights {
            path: weights,
            dir: path.to_path_buf(),
        });
    }
    Ok(Source::Rectrain {
        art: Box::new(art),
        weights,
    })
}

impl Source {
    /// The input `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        match self {
            Source::Rectrain { art, .. } => art.image_shape,
            Source::Mxnet(m) => m.image_shape(),
        }
    }

    /// Classes.
    pub fn num_classes(&self) -> usize {
        match self {
            Source::Rectrain { art, .. } => art.num_classes,
            Source::Mxnet(m) => m.num_classes(),
        }
    }

    /// Class names (an MXNet checkpoint has none: classes are printed as indices).
    pub fn class_names(&self) -> Option<Vec<String>> {
        match self {
            Source::Rectrain { art, .. } => art.class_names.clone(),
            Source::Mxnet(_) => None,
        }
    }

    /// Independent per-class probabilities.
    pub fn multi_label(&self) -> bool {
        match self {
            Source::Rectrain { art, .. } => art.multi_label,
            Source::Mxnet(m) => m.multi_label(),
        }
    }

    /// The preprocessing the model expects.
    pub fn preprocess(&self) -> PreprocessConfig {
        match self {
            Source::Rectrain { art, .. } => art.preprocess(),
            Source::Mxnet(m) => m.preprocess(),
        }
    }

    /// How images are fitted to the input: `asked` for a rectrain model; always the
    /// SageMaker endpoint's squash for an MXNet model (it has no `resize` to crop after).
    pub fn eval_mode(&self, asked: EvalMode) -> EvalMode {
        match self {
            Source::Rectrain { .. } => asked,
            Source::Mxnet(_) => EvalMode::Squash,
        }
    }
}

/// A loaded model, ready to predict batches.
pub struct Model {
    predictor: Predictor,
}

/// Resolve `device` (notices such as "no GPU, using the CPU" go to `notice`) and load
/// the model's weights into its network there, to run `batch_size` images per
/// forward pass. A weights file that does not match the network (missing tensors,
/// other shapes) is an error. A half precision asked for on the CPU falls back to
/// float32 with a notice.
pub fn load(
    source: &Source,
    device: &DeviceSpec,
    precision: Precision,
    batch_size: usize,
    notice: &mut dyn FnMut(&str),
) -> Result<Model, Error> {
    let resolved =
        backend::resolve(device, &mut *notice).map_err(|e| Error::Device(Box::new(e)))?;
    let precision = resolved.effective_precision(precision, &mut *notice);
    let (loaded, path) = match source {
        Source::Rectrain { art, weights } => (
            Predictor::load(
                weights,
                &art.resnet(),
                art.multi_label,
                &resolved,
                precision,
            ),
            weights.clone(),
        ),
        Source::Mxnet(m) => (
            net::predictor(&m.plan, &resolved, precision),
            PathBuf::from(&m.source),
        ),
    };
    let predictor = loaded.map_err(|e| Error::Model {
        path,
        source: Box::new(e),
    })?;
    Ok(Model {
        predictor: predictor.with_batch_size(batch_size),
    })
}

impl Classifier for Model {
    fn predict(
        &mut self,
        images: &[f32],
        n: usize,
        shape: [usize; 3],
    ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.predictor.predict(images, n, shape)?)
    }
}
