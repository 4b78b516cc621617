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
//! [`OpenedModel::open`] finds the model and checks the options both modes share
//! against it (batch size, `--top-k`) and settles its preprocessing, before
//! [`OpenedModel::load`] puts the network on the device: batch mode and `--serve` both
//! start there.

use std::path::{Path, PathBuf};

use resnet::artifact::{self, ArtifactConfig, ArtifactError};
use resnet::backend::{self, DeviceSpec, Precision};
use resnet::infer::Predictor;
use resnet::mxnet::net;
use resnet::mxnet::MxnetModel;
use resnet::preprocess::{preprocess_eval_report, EvalMode, PreprocessConfig};
use resnet::Head;

use crate::error::Error;
use crate::pipeline::Classifier;

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

    /// How the logits become probabilities (softmax, or independent per-class
    /// sigmoids).
    pub fn head(&self) -> Head {
        match self {
            Source::Rectrain { art, .. } => art.head,
            Source::Mxnet(m) => m.head(),
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

/// The default `--top-k`: 5, or the class count when the model has fewer classes.
pub const DEFAULT_TOP_K: usize = 5;

/// `--batch-size` against the model: at least 1, and one batch of decoded images must
/// fit in one tensor.
fn check_batch_size(batch_size: usize, image_shape: [usize; 3]) -> Result<(), Error> {
    if batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    // One batch of decoded images is one tensor: keep it within what a tensor can
    // index (2^31 − 1 values), which also bounds the memory of the batch buffers.
    let per_batch = image_shape
        .iter()
        .fold(batch_size, |n, &d| n.saturating_mul(d));
    if per_batch > i32::MAX as usize {
        let [c, h, w] = image_shape;
        return Err(Error::Usage(format!(
            "--batch-size {batch_size} at the model's image_shape {c},{h},{w} makes batches of \
             {per_batch} values, more than one tensor can (2^31 − 1); use a smaller --batch-size"
        )));
    }
    Ok(())
}

/// The `top_k` length: `--top-k` checked against the class count, or the default.
fn resolve_top_k(top_k: Option<usize>, num_classes: usize) -> Result<usize, Error> {
    match top_k {
        None => Ok(DEFAULT_TOP_K.min(num_classes)),
        Some(0) => Err(Error::Usage("--top-k must be at least 1".into())),
        Some(k) if k > num_classes => Err(Error::Usage(format!(
            "--top-k {k} is more than the model's {num_classes} classes"
        ))),
        Some(k) => Ok(k),
    }
}

/// A model found on disk with the options both modes share settled against it: the
/// batch size (checked), the `top_k` length (resolved) and how images are fitted to
/// its input.
#[derive(Debug)]
pub struct OpenedModel {
    /// What `--model` names.
    pub source: Source,
    /// Images per forward pass.
    pub batch_size: usize,
    /// The `top_k` length of each prediction (and the k of top-k accuracy).
    pub top_k: usize,
    /// Decoding and preprocessing for this model.
    pub preprocessor: Preprocessor,
}

impl OpenedModel {
    /// Opens the model `path` names ([`open`]) and checks `batch_size` and `top_k`
    /// (`None`: [`DEFAULT_TOP_K`], at most the class count) against it; `eval_mode` is
    /// `--squash`'s choice, which an MXNet model overrides ([`Source::eval_mode`]).
    pub fn open(
        path: &Path,
        batch_size: usize,
        top_k: Option<usize>,
        eval_mode: EvalMode,
    ) -> Result<Self, Error> {
        let source = open(path)?;
        let shape = source.image_shape();
        check_batch_size(batch_size, shape)?;
        let top_k = resolve_top_k(top_k, source.num_classes())?;
        let preprocessor = Preprocessor {
            config: source.preprocess(),
            mode: source.eval_mode(eval_mode),
            shape,
        };
        Ok(OpenedModel {
            source,
            batch_size,
            top_k,
            preprocessor,
        })
    }

    /// The input `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.preprocessor.shape
    }

    /// Resolves `device` and puts the network on it, for
    /// [`batch_size`](Self::batch_size) images per forward pass.
    pub fn load(
        &self,
        device: &DeviceSpec,
        precision: Precision,
        notice: &mut dyn FnMut(&str),
    ) -> Result<Model, Error> {
        load(&self.source, device, precision, self.batch_size, notice)
    }
}

/// How encoded images become a model's input: `resnet::preprocess::preprocess_eval`
/// with the model's preprocessing, fitted by `mode`.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    /// The model's preprocessing.
    pub config: PreprocessConfig,
    /// Centre crop or squash.
    pub mode: EvalMode,
    /// The input `[C, H, W]`.
    pub shape: [usize; 3],
}

impl Preprocessor {
    /// Decodes `bytes` into `buf` (C·H·W floats): `Ok(true)` when the image was smaller
    /// than the input and upscaled, `Err` why it could not be used.
    pub fn apply(&self, bytes: &[u8], buf: &mut [f32]) -> Result<bool, String> {
        preprocess_eval_report(bytes, &self.config, self.mode, buf)
            .map(|prepared| prepared.upscaled)
            .map_err(|e| e.to_string())
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
fn load(
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
            Predictor::load(weights, &art.resnet(), art.head, &resolved, precision),
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
