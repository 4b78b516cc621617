//! Everything checked before a single step runs: the datasets, label widths and
//! ranges, class names, pretrained weights, tensor sizes and a matching resumable state.

use std::path::PathBuf;
use std::sync::Arc;

use crate::loader::{self, RecDataset};
use resnet::model::{Layout, ResNetConfig};
use resnet::mxnet::resnet::{open_trainable, TrainableCheckpoint};
use resnet::preprocess::PreprocessConfig;
use resnet::weights::HeadPolicy;

use super::resume::{self, ResumeState};
use super::{TrainConfig, TrainError};

/// SageMaker's message when a channel holds fewer images than one batch.
pub const TOO_FEW_IMAGES: &str =
    "The number of input images must be bigger or equal to the mini_batch_size";

/// A run after the checks: datasets open, every number known.
pub struct TrainingSetup {
    /// The configuration, with `num_classes` and `num_training_samples` filled in.
    pub cfg: TrainConfig,
    /// Training images.
    pub train: Arc<RecDataset>,
    /// Validation images.
    pub validation: Arc<RecDataset>,
    /// Number of classes.
    pub num_classes: usize,
    /// Per-class positive weights for the weighted multi-label loss.
    pub pos_weights: Option<Vec<f32>>,
    /// The state to resume from.
    pub resume: Option<(PathBuf, ResumeState)>,
    /// The network trained: torchvision's, or MXNet's when training goes on from
    /// SageMaker's model (`--model`, or a resumed run that did).
    pub layout: Layout,
    /// The starting weights when they are SageMaker's network (`--model`, or
    /// `--pretrained` naming an MXNet checkpoint).
    pub initial: Option<InitialModel>,
}

/// SageMaker's network as the starting point of a run.
pub struct InitialModel {
    /// The checkpoint.
    pub checkpoint: TrainableCheckpoint,
    /// [`HeadPolicy::Keep`] for `--model` (incremental training) and `--pretrained`
    /// with `--keep-head`; [`HeadPolicy::Reinit`] for `--pretrained` (transfer
    /// learning: a fresh `fc1` for `num_classes`).
    pub head: HeadPolicy,
}

impl TrainingSetup {
    /// The network's configuration.
    pub fn network(&self) -> ResNetConfig {
        ResNetConfig::new(self.cfg.hparams.num_layers, self.num_classes).with_layout(self.layout)
    }

    /// The preprocessing of training and validation: `image_shape`, `resize` and the
    /// layout's pixel normalisation (stored in the artifact for prediction).
    pub fn preprocess(&self) -> PreprocessConfig {
        let h = &self.cfg.hparams;
        PreprocessConfig {
            normalization: self.layout.normalization(),
            ..PreprocessConfig::new(h.image_shape, h.resize)
        }
    }
}

/// `--pretrained` naming a SageMaker model: transfer learning from SageMaker's network.
/// `num_layers` must be the model's (the network is the model's); the classifier is
/// re-initialised for `num_classes`, or kept with `--keep-head` (then `num_classes`
/// must be the model's too).
fn check_pretrained_model(
    path: &std::path::Path,
    h: &crate::hparams::Hyperparameters,
    num_classes: usize,
    keep_head: bool,
) -> Result<InitialModel, TrainError> {
    let ck = open_trainable(path).map_err(|e| TrainError::Config(format!("--pretrained: {e}")))?;
    if ck.network.num_layers != h.num_layers {
        return Err(TrainError::Config(format!(
            "--pretrained {}: num_layers is {} but the model has {} (transfer learning keeps \
             the model's network)",
            ck.source, h.num_layers, ck.network.num_layers
        )));
    }
    if keep_head && ck.network.num_classes != num_classes {
        return Err(TrainError::Config(format!(
            "--pretrained {} --keep-head: num_classes is {num_classes} but the model's \
             classifier has {}",
            ck.source, ck.network.num_classes
        )));
    }
    Ok(InitialModel {
        checkpoint: ck,
        head: if keep_head {
            HeadPolicy::Keep
        } else {
            HeadPolicy::Reinit
        },
    })
}

/// `--model`: SageMaker's rule for incremental training — the same `num_layers`,
/// `image_shape` and `num_classes` as the model (and the same head).
fn check_initial_model(
    path: &std::path::Path,
    h: &crate::hparams::Hyperparameters,
    num_classes: usize,
) -> Result<TrainableCheckpoint, TrainError> {
    let ck = open_trainable(path).map_err(|e| TrainError::Config(format!("--model: {e}")))?;
    let mut differences = Vec::new();
    if ck.network.num_layers != h.num_layers {
        differences.push(format!(
            "num_layers is {} but the model has {}",
            h.num_layers, ck.network.num_layers
        ));
    }
    if ck.image_shape != h.image_shape {
        let [c, ih, iw] = ck.image_shape;
        let [hc, hh, hw] = h.image_shape;
        differences.push(format!(
            "image_shape is {hc},{hh},{hw} but the model has {c},{ih},{iw}"
        ));
    }
    if ck.network.num_classes != num_classes {
        differences.push(format!(
            "num_classes is {num_classes} but the model has {}",
            ck.network.num_classes
        ));
    }
    if ck.head != h.head {
        differences.push(format!(
            "multi_label is {} but the model's is {}",
            u8::from(h.head.is_multi_label()),
            u8::from(ck.head.is_multi_label())
        ));
    }
    if !differences.is_empty() {
        return Err(TrainError::Config(format!(
            "--model {}: incremental training keeps the model's network: {} (set them to the \
             model's)",
            ck.source,
            differences.join("; ")
        )));
    }
    Ok(ck)
}

/// Check every label against the class count (the loader's error names the record).
fn check_labels(
    channel: &'static str,
    ds: &RecDataset,
    num_classes: usize,
) -> Result<(), TrainError> {
    ds.validate_labels(num_classes)
        .map_err(|source| TrainError::Dataset {
            channel,
            source: Box::new(source),
        })
}

/// Open the data and check everything before training; `warn` receives warnings.
pub fn prepare(
    mut cfg: TrainConfig,
    mut warn: impl FnMut(String),
) -> Result<TrainingSetup, TrainError> {
    let train = cfg.train.open()?;
    let validation = cfg.validation.open()?;
    let h = &mut cfg.hparams;

    for (name, ds, source) in [
        ("training set", &train, &cfg.train),
        ("validation set", &validation, &cfg.validation),
    ] {
        if ds.is_empty() {
            return Err(TrainError::Data(format!(
                "the {name} ({}) has no images",
                source.path().display()
            )));
        }
    }
    if train.len() < h.mini_batch_size {
        return Err(TrainError::Data(format!(
            "{TOO_FEW_IMAGES} ({} training images, mini_batch_size {})",
            train.len(),
            h.mini_batch_size
        )));
    }

    let (tw, vw) = (train.label_width(), validation.label_width());
    if tw != vw {
        return Err(TrainError::Data(format!(
            "the training labels have width {tw} but the validation labels have width {vw}"
        )));
    }
    let num_classes = if h.head.is_multi_label() {
        if tw < 2 {
            return Err(TrainError::Data(format!(
                "multi_label=1 needs multi-hot label vectors (one entry per class), but the labels have width {tw}"
            )));
        }
        if let Some(n) = h.num_classes {
            if n != tw {
                return Err(TrainError::Data(format!(
                    "num_classes is {n} but the multi-label vectors have {tw} entries"
                )));
            }
        }
        tw
    } else {
        if tw != 1 {
            return Err(TrainError::Data(format!(
                "the labels have width {tw}: set multi_label=1 for multi-label data"
            )));
        }
        let inferred = train
            .num_classes_inferred()
            .max(validation.num_classes_inferred());
        h.num_classes.unwrap_or(inferred)
    };
    check_labels("training set", &train, num_classes)?;
    check_labels("validation set", &validation, num_classes)?;
    if num_classes < 2 && !h.head.is_multi_label() {
        return Err(TrainError::Data(format!(
            "the data has only {num_classes} class: classification needs at least 2"
        )));
    }
    h.num_classes = Some(num_classes);

    match h.num_training_samples {
        Some(n) if n != train.len() => warn(format!(
            "num_training_samples is {n} but the training set has {} images; using {}",
            train.len(),
            train.len()
        )),
        _ => {}
    }
    h.num_training_samples = Some(train.len());

    if let Some(names) = &mut cfg.class_names {
        let file = match &cfg.classes_file {
            Some(path) => format!("{}: ", path.display()),
            None => String::new(),
        };
        if names.len() > num_classes {
            return Err(TrainError::Config(format!(
                "{file}{} class names, but num_classes is {num_classes}",
                names.len()
            )));
        }
        if names.len() < num_classes {
            // SageMaker takes a num_classes above the classes present; the classes
            // without a name are named by their index.
            warn(format!(
                "{file}{} class names for {num_classes} classes: classes {}..{} are named by their index",
                names.len(),
                names.len(),
                num_classes - 1
            ));
            names.extend((names.len()..num_classes).map(|i| i.to_string()));
        }
    }
    // --pretrained may also be a model SageMaker trained (an MXNet checkpoint: a
    // model.tar.gz, a folder, a prefix): transfer learning from SageMaker's network.
    let pretrained_mxnet = match &cfg.pretrained {
        Some(path) => resnet::mxnet::archive::locate(path)
            .map_err(|e| TrainError::Config(format!("--pretrained: {e}")))?
            .is_some(),
        None => false,
    };
    if let (Some(path), false) = (&cfg.pretrained, pretrained_mxnet) {
        if let Err(e) = loader::not_a_directory(path) {
            return Err(TrainError::Config(format!(
                "pretrained weights {}: {e}",
                path.display()
            )));
        }
    }
    if h.use_pretrained_model && cfg.pretrained.is_none() {
        return Err(TrainError::Config(
            "use_pretrained_model=1 needs the weights: pass --pretrained PATH to a torchvision \
             ResNet .pth or .safetensors file (rectrain cannot download them)"
                .into(),
        ));
    }
    if let Some(top_k) = h.top_k {
        if top_k > num_classes {
            warn(format!(
                "top_k ({top_k}) is larger than num_classes ({num_classes}): top-k accuracy will be 1"
            ));
        }
    }
    ResNetConfig::new(h.num_layers, num_classes)
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let [c, ih, iw] = h.image_shape;
    let stem_values = [64, ih.div_ceil(2), iw.div_ceil(2)]
        .iter()
        .fold(h.mini_batch_size, |n, &d| n.saturating_mul(d));
    if stem_values > i32::MAX as usize {
        return Err(TrainError::Config(format!(
            "image_shape {c},{ih},{iw} with mini_batch_size {}: the first convolution's output \
             would hold {stem_values} values, more than one tensor can (2^31 − 1); use smaller \
             images or batches",
            h.mini_batch_size
        )));
    }

    let pos_weights = (h.head.is_multi_label() && h.use_weighted_loss).then(|| {
        let mut pos = vec![0usize; num_classes];
        for i in 0..train.len() {
            for (c, &v) in train.labels()[i].iter().enumerate() {
                if v > 0.5 {
                    pos[c] += 1;
                }
            }
        }
        let n = train.len();
        pos.iter()
            .map(|&p| {
                if p == 0 {
                    1.0
                } else {
                    (n - p) as f32 / p as f32
                }
            })
            .collect()
    });

    let initial = match (&cfg.model, &cfg.pretrained) {
        (Some(path), _) => Some(InitialModel {
            checkpoint: check_initial_model(path, &cfg.hparams, num_classes)?,
            head: HeadPolicy::Keep,
        }),
        (None, Some(path)) if pretrained_mxnet => Some(check_pretrained_model(
            path,
            &cfg.hparams,
            num_classes,
            cfg.keep_head,
        )?),
        _ => None,
    };
    let resume = resume::check(&mut cfg, &mut warn)?;
    let layout = match (&initial, &resume) {
        (Some(_), _) => Layout::Mxnet,
        (None, Some((_, state))) => state.layout,
        (None, None) => Layout::Torchvision,
    };
    if layout == Layout::Mxnet && cfg.hparams.image_shape[1] <= 32 {
        let [c, ih, iw] = cfg.hparams.image_shape;
        return Err(TrainError::Config(format!(
            "image_shape {c},{ih},{iw}: SageMaker's network (--model, or --pretrained with a \
             SageMaker model) is trained here for images over 32 pixels high; for smaller ones \
             its resnet.py builds another stem (a 3×3 convolution, no pooling)"
        )));
    }

    Ok(TrainingSetup {
        cfg,
        train: Arc::new(train),
        validation: Arc::new(validation),
        num_classes,
        pos_weights,
        resume,
        layout,
        initial,
    })
}
