//! The training loop: SageMaker's image-classification semantics on burn.
//!
//! [`prepare`] opens the datasets and checks everything that can be checked before a
//! single step runs (sizes, label widths, label ranges, class names, a resumable state
//! that matches). [`train`] then runs the epochs on the chosen device:
//!
//! - optimizer: sgd / nag (momentum without dampening, L2 weight decay), adam,
//!   rmsprop (non-centred, `gamma` as the squared-gradient decay);
//! - learning rate `learning_rate × lr_scheduler_factor^k` where k counts the listed
//!   `lr_scheduler_step` epochs already passed;
//! - loss: softmax cross-entropy, or binary cross-entropy on logits for `multi_label`
//!   (optionally with a per-class positive weight `negatives / positives`);
//! - after each epoch: validation, SageMaker's log lines on the log writer, one JSON
//!   object on the data writer, the best checkpoint (strictly better accuracy only,
//!   numbered epoch + 1), every `checkpoint_frequency` epochs a checkpoint, the
//!   resumable state in `checkpoints/last/`, `metrics.jsonl` and `accuracy.svg`;
//! - early stopping with SageMaker's min-epochs / patience / relative tolerance;
//! - several devices train data-parallel ([`DataParallel`], [`train_on`]);
//! - a NaN or infinite training loss, validation loss or (before an interrupted save)
//!   weights stop the run with [`TrainError::NonFinite`] before anything is written, so
//!   the last good epoch's files stay as they were; resuming may lower the learning
//!   rate (the optimizer's numbers may change on resume, with a warning).
//! - an interrupt (Ctrl-C) finishes the current step, saves the resumable state with
//!   the position inside the epoch, and returns [`TrainOutcome::Interrupted`]. Resuming
//!   replays the same batches (the loader is deterministic for a seed and an epoch), so
//!   an interrupted and resumed run ends with the same weights as an uninterrupted one.
//!
//! At the end the best checkpoint becomes `model.safetensors` and `config.json` is
//! written.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamConfig, GradientsAccumulator, GradientsParams, Optimizer, RmsPropConfig, SgdConfig,
};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use im2list::cli::error_text;
use serde::{Deserialize, Serialize};

use crate::artifact::{self, ArtifactConfig};
use crate::augment::AugmentationType;
use crate::backend::{self, BackendTask, DeviceSpec, Precision};
use crate::contiguous::contiguous;
use crate::hparams::{self, Hyperparameters, OptimizerKind, RawHyperparameters};
use crate::loader::{self, Batch, LoaderConfig, RecDataset};
use crate::metrics::{self, Accumulator, BestTracker, EarlyStopping, EpochMetrics};
use crate::model::{ResNet, ResNetConfig};
use crate::plot;
use crate::preprocess::PreprocessConfig;
use crate::weights::{self, HeadPolicy};

/// SageMaker's message when a channel holds fewer images than one batch.
pub const TOO_FEW_IMAGES: &str =
    "The number of input images must be bigger or equal to the mini_batch_size";

/// Where a channel's images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A RecordIO file, with its `.idx` when there is one.
    Rec {
        /// The `.rec` file.
        rec: PathBuf,
        /// The `.idx` file, if any.
        idx: Option<PathBuf>,
    },
    /// An image folder and a `.lst` file whose paths are relative to it.
    Lst {
        /// The `.lst` file.
        lst: PathBuf,
        /// The folder the paths are relative to.
        root: PathBuf,
    },
}

impl DataSource {
    /// A `.rec` source, picking up `<stem>.idx` next to it when it exists.
    pub fn rec(rec: PathBuf) -> Self {
        let idx = rec.with_extension("idx");
        let idx = idx.is_file().then_some(idx);
        DataSource::Rec { rec, idx }
    }

    /// The file that names this source in messages.
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Rec { rec, .. } => rec,
            DataSource::Lst { lst, .. } => lst,
        }
    }

    fn open(&self) -> Result<RecDataset, TrainError> {
        let ds = match self {
            DataSource::Rec { rec, idx } => RecDataset::open(rec, idx.as_deref()),
            DataSource::Lst { lst, root } => RecDataset::from_lst(lst, root),
        };
        ds.map_err(|e| {
            // Loader errors name their file; name it here when one does not.
            let text = error_text(&e);
            let path = self.path().display().to_string();
            TrainError::Data(if text.contains(&path) {
                text
            } else {
                format!("{path}: {text}")
            })
        })
    }
}

/// Everything a training run needs, resolved and validated by the caller.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The hyperparameters (num_classes / num_training_samples may still be unset).
    pub hparams: Hyperparameters,
    /// Training images.
    pub train: DataSource,
    /// Validation images.
    pub validation: DataSource,
    /// The artifact directory.
    pub out: PathBuf,
    /// Class names by index, when known.
    pub class_names: Option<Vec<String>>,
    /// The file the class names were read from (for messages).
    pub classes_file: Option<PathBuf>,
    /// Pretrained weights (.pth or .safetensors), used when `use_pretrained_model`.
    pub pretrained: Option<PathBuf>,
    /// Keep the pretrained classifier instead of re-initialising it.
    pub keep_head: bool,
    /// Seed of the weight initialisation, the shuffling and the augmentation.
    pub seed: u64,
    /// Which device to train on.
    pub device: DeviceSpec,
    /// A directory holding a resumable state (the artifact directory of an earlier run,
    /// or its `checkpoints/last`).
    pub resume: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Decoding threads of the loader (0 = one per CPU).
    pub workers: usize,
    /// Behave as if interrupted after this many optimizer steps (testing aid).
    pub stop_after_steps: Option<usize>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// All epochs ran, or early stopping ended the run.
    Finished {
        /// Epochs completed.
        epochs_run: usize,
        /// `(epoch, validation accuracy)` of the best epoch.
        best: Option<(usize, f64)>,
        /// True when early stopping ended the run.
        stopped_early: bool,
    },
    /// Interrupted; the resumable state was saved.
    Interrupted {
        /// Epoch in progress.
        epoch: usize,
        /// Steps of that epoch already done.
        step: usize,
    },
}

/// Why training could not run or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad or unreadable data.
    #[error("{0}")]
    Data(String),
    /// A configuration problem found before training.
    #[error("{0}")]
    Config(String),
    /// Hyperparameter problem.
    #[error(transparent)]
    Hparams(#[from] hparams::HparamsError),
    /// The loss (or the weights) became NaN or infinite.
    #[error(
        "the {what} became {loss} at epoch {epoch}, step {step}: training diverged \
         (try a lower learning_rate); the last good state is kept in {kept}"
    )]
    NonFinite {
        /// What: "training loss", "validation loss" or "weights".
        what: &'static str,
        /// The value.
        loss: f64,
        /// Epoch.
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// Where the last good state is.
        kept: String,
    },
    /// Device or backend selection failed.
    #[error("device: {0}")]
    Backend(String),
    /// Reading or writing model weights failed.
    #[error("weights: {0}")]
    Weights(String),
    /// Saving or loading the resumable state failed.
    #[error("resumable state {path}: {reason}")]
    State {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The artifact could not be written.
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    /// The plot could not be written.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// Writing the per-epoch JSON to the data writer failed.
    #[error("writing metrics: {0}")]
    Output(#[source] std::io::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> TrainError {
    TrainError::State {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The resumable state's bookkeeping, `checkpoints/last/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    /// Always `"rectrain-state"`.
    pub format: String,
    /// Epoch to continue with.
    pub epoch: usize,
    /// Steps of that epoch already done (0 at an epoch boundary).
    pub step: usize,
    /// The run's seed.
    pub seed: u64,
    /// The learning rate in force.
    pub learning_rate: f64,
    /// The epoch's running sums so far.
    pub accumulator: Accumulator,
    /// Training seconds of the epoch so far.
    pub seconds: f64,
    /// Best epoch so far.
    pub best: BestTracker,
    /// Early-stopping counters.
    pub early_stopping: EarlyStopping,
    /// Metrics of the finished epochs.
    pub history: Vec<EpochMetrics>,
    /// The run's resolved hyperparameters.
    pub hyperparameters: RawHyperparameters,
    /// The best checkpoint file, relative to the artifact directory.
    pub best_checkpoint: Option<String>,
}

const STATE_FORMAT: &str = "rectrain-state";

/// Hyperparameters that may change between an interrupted run and its resumption.
const RESUMABLE_CHANGES: &[&str] = &[
    "epochs",
    "checkpoint_frequency",
    "early_stopping",
    "early_stopping_min_epochs",
    "early_stopping_patience",
    "early_stopping_tolerance",
    "num_training_samples",
];

/// Optimizer settings that may change when a run is resumed (e.g. a lower
/// learning_rate after the loss diverged): plain numbers that leave the optimizer's
/// saved state valid. A warning lists the changes.
const TUNABLE_ON_RESUME: &[&str] = &[
    "learning_rate",
    "lr_scheduler_factor",
    "lr_scheduler_step",
    "momentum",
    "weight_decay",
    "beta_1",
    "beta_2",
    "eps",
    "gamma",
];

/// The state directory inside `dir` (accepts the artifact directory or `last` itself).
pub fn find_resume_dir(dir: &Path) -> PathBuf {
    if dir.join("state.json").is_file() {
        dir.to_path_buf()
    } else {
        artifact::resume_dir(dir)
    }
}

/// Read `state.json` from a resumable state directory.
pub fn read_resume_state(dir: &Path) -> Result<ResumeState, TrainError> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| state_err(&path, e))?;
    let state: ResumeState = serde_json::from_str(&text).map_err(|e| state_err(&path, e))?;
    if state.format != STATE_FORMAT {
        return Err(state_err(
            &path,
            format!("format {:?} is not {STATE_FORMAT:?}", state.format),
        ));
    }
    Ok(state)
}

/// A run after the checks: datasets open, every number known.
pub struct Prepared {
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
}

/// Check every label against the class count (the loader's error names the record).
fn check_labels(name: &str, ds: &RecDataset, num_classes: usize) -> Result<(), TrainError> {
    ds.validate_labels(num_classes)
        .map_err(|e| TrainError::Data(format!("{name}: {}", error_text(&e))))
}

/// Open the data and check everything before training; `warn` receives warnings.
pub fn prepare(mut cfg: TrainConfig, mut warn: impl FnMut(String)) -> Result<Prepared, TrainError> {
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
    let num_classes = if h.multi_label {
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
    if num_classes < 2 && !h.multi_label {
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
    if let Some(path) = &cfg.pretrained {
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

    let pos_weights = (h.multi_label && h.use_weighted_loss).then(|| {
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

    let resume = match &cfg.resume {
        None if artifact::resume_dir(&cfg.out).join("state.json").is_file() => {
            return Err(TrainError::Config(format!(
                "{} already holds a training run: continue it with --resume {} or choose another --out",
                cfg.out.display(),
                cfg.out.display()
            )));
        }
        None => None,
        Some(dir) => {
            let dir = find_resume_dir(dir);
            let state = read_resume_state(&dir)?;
            let now = cfg.hparams.to_raw();
            let differing: Vec<&str> = KNOWN_FOR_RESUME
                .iter()
                .copied()
                .filter(|k| !RESUMABLE_CHANGES.contains(k) && !TUNABLE_ON_RESUME.contains(k))
                .filter(|k| state.hyperparameters.get(*k) != now.get(*k))
                .collect();
            let tuned: Vec<String> = TUNABLE_ON_RESUME
                .iter()
                .filter(|k| state.hyperparameters.get(**k) != now.get(**k))
                .map(|k| {
                    let show = |v: Option<&String>| v.map_or("unset".to_string(), |v| v.clone());
                    format!(
                        "{k} {} -> {}",
                        show(state.hyperparameters.get(*k)),
                        show(now.get(*k))
                    )
                })
                .collect();
            if !differing.is_empty() {
                return Err(state_err(
                    &dir,
                    format!(
                        "it was written with different hyperparameters: {}",
                        differing.join(", ")
                    ),
                ));
            }
            if !tuned.is_empty() {
                warn(format!(
                    "resuming with changed optimizer settings: {}",
                    tuned.join(", ")
                ));
            }
            if state.seed != cfg.seed {
                warn(format!(
                    "resuming with seed {} (the state's); --seed {} is ignored",
                    state.seed, cfg.seed
                ));
                cfg.seed = state.seed;
            }
            Some((dir, state))
        }
    };

    Ok(Prepared {
        cfg,
        train: Arc::new(train),
        validation: Arc::new(validation),
        num_classes,
        pos_weights,
        resume,
    })
}

const KNOWN_FOR_RESUME: &[&str] = hparams::KNOWN_NAMES;

/// SageMaker's defaults file (`default-input.json`), as its training log prints it.
pub const SAGEMAKER_DEFAULT_INPUT: &[(&str, &str)] = &[
    ("beta_1", "0.9"),
    ("gamma", "0.9"),
    ("beta_2", "0.999"),
    ("optimizer", "sgd"),
    ("use_pretrained_model", "0"),
    ("eps", "1e-08"),
    ("epochs", "30"),
    ("lr_scheduler_factor", "0.1"),
    ("num_layers", "152"),
    ("image_shape", "3,224,224"),
    ("precision_dtype", "float32"),
    ("mini_batch_size", "32"),
    ("weight_decay", "0.0001"),
    ("learning_rate", "0.1"),
    ("momentum", "0"),
];

/// `{u'key': u'value', ...}`: a dict of strings as Python 2 prints it, the form of
/// SageMaker's configuration log lines.
fn python2_dict<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let quote = |s: &str| format!("u'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let items: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// SageMaker's configuration lines (without the log prefix): the defaults, then the
/// final configuration, which holds every resolved hyperparameter, `num_classes` and
/// `num_training_samples` included (tools scrape `num_training_samples` from it).
pub fn configuration_lines(h: &Hyperparameters) -> Vec<String> {
    let defaults = python2_dict(SAGEMAKER_DEFAULT_INPUT.iter().copied());
    let raw = h.to_raw();
    let last = python2_dict(raw.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vec![
        format!(
            "Reading default configuration from rectrain's built-in default-input.json: {defaults}"
        ),
        format!("Final configuration: {last}"),
    ]
}

/// SageMaker's `---- Parameters ----` block (without the log prefix).
pub fn parameter_lines(h: &Hyperparameters) -> Vec<String> {
    let mut v = vec!["---- Parameters ----".to_string()];
    v.push(format!("num_layers: {}", h.num_layers));
    let dtype = match h.precision_dtype {
        Precision::F32 => "float32",
        Precision::F16 => "float16",
        Precision::Bf16 => "bfloat16",
    };
    v.push(format!("data type: <type 'numpy.{dtype}'>"));
    v.push(format!("epochs: {}", h.epochs));
    if let Some(r) = h.resize {
        v.push(format!("image resize size: {r}"));
    }
    v.push(format!("optimizer: {}", h.optimizer));
    v.push(format!("momentum: {}", h.momentum));
    v.push(format!("weight_decay: {}", h.weight_decay));
    v.push(format!("learning_rate: {}", h.learning_rate));
    if let Some(n) = h.num_training_samples {
        v.push(format!("num_training_samples: {n}"));
    }
    v.push(format!("mini_batch_size: {}", h.mini_batch_size));
    let [c, hh, w] = h.image_shape;
    v.push(format!("image_shape: {c},{hh},{w}"));
    if let Some(n) = h.num_classes {
        v.push(format!("num_classes: {n}"));
    }
    v.push(format!(
        "augmentation_type: {}",
        hparams::augmentation_name(h.augmentation_type).unwrap_or("None")
    ));
    v.push(format!(
        "kv_store: {}",
        h.kv_store.as_deref().unwrap_or("device")
    ));
    if let Some(k) = h.top_k {
        v.push(format!("top_k: {k}"));
    }
    match h.checkpoint_frequency {
        None => v.push("checkpoint_frequency not set, will store the best model".into()),
        Some(f) => v.push(format!("checkpoint_frequency: {f}")),
    }
    v.push("--------------------".into());
    v
}

/// Run a prepared training. `data` receives one JSON line per epoch; `log` receives
/// SageMaker's log lines; setting `interrupt` stops after the current step.
pub fn train(
    prepared: Prepared,
    data: &mut dyn Write,
    log: &mut dyn Write,
    interrupt: Arc<AtomicBool>,
) -> Result<TrainOutcome, TrainError> {
    let h = &prepared.cfg.hparams;
    let mut notices = Vec::new();
    let device = backend::resolve(&prepared.cfg.device, |n: &str| notices.push(n.to_string()))
        .map_err(|e| TrainError::Backend(e.to_string()))?;
    for n in notices {
        info(log, &n);
    }
    if !device.is_cuda() && h.precision_dtype != Precision::F32 {
        return Err(TrainError::Config(format!(
            "precision_dtype {} needs a CUDA GPU; on the CPU use float32",
            hparams::precision_name(h.precision_dtype)
        )));
    }
    let precision = h.precision_dtype;
    let task = TrainTask {
        prepared: &prepared,
        data,
        log,
        interrupt,
    };
    backend::dispatch(&device, precision, task).map_err(|e| TrainError::Backend(e.to_string()))?
}

/// Run a prepared training on backend `B` and these devices, without resolving
/// `cfg.device` (which [`train`] does before calling this through [`backend::dispatch`]).
///
/// One device trains as usual. Several devices train data-parallel (see
/// [`DataParallel`]): the first holds the model, runs the optimizer, the validation and
/// the checkpoints, and every device (the same one may be listed more than once, which
/// makes several replicas on it) computes the gradients of one contiguous shard of each
/// mini-batch. `mini_batch_size` must be at least the number of devices.
pub fn train_on<B: AutodiffBackend>(
    prepared: &Prepared,
    devices: Vec<B::Device>,
    data: &mut dyn Write,
    log: &mut dyn Write,
    interrupt: Arc<AtomicBool>,
) -> Result<TrainOutcome, TrainError> {
    let h = &prepared.cfg.hparams;
    if devices.is_empty() {
        return Err(TrainError::Backend("no device to train on".into()));
    }
    if devices.len() > h.mini_batch_size {
        return Err(TrainError::Config(format!(
            "mini_batch_size {} is smaller than the number of devices ({}): data-parallel \
             training gives each device a part of every mini-batch, so use a mini_batch_size \
             of at least {} or fewer devices",
            h.mini_batch_size,
            devices.len(),
            devices.len()
        )));
    }
    if !prepared.cfg.out.is_dir() {
        std::fs::create_dir_all(&prepared.cfg.out).map_err(io_err(&prepared.cfg.out))?;
    }
    let ckpt = artifact::checkpoints_dir(&prepared.cfg.out);
    std::fs::create_dir_all(&ckpt).map_err(io_err(&ckpt))?;
    for line in configuration_lines(h) {
        info(log, &line);
    }
    if h.use_pretrained_model {
        info(log, "use_pretrained_model: 1");
    }
    info(log, &format!("multi_label: {}", u8::from(h.multi_label)));
    if h.use_pretrained_model {
        info(
            log,
            "Using pretrained model for initializing weights and transfer learning.",
        );
    }
    for line in parameter_lines(h) {
        info(log, &line);
    }
    TrainTask {
        prepared,
        data,
        log,
        interrupt,
    }
    .run_on::<B>(devices)
}

/// Write one SageMaker-style log line; errors writing the log are ignored.
fn info(log: &mut dyn Write, msg: &str) {
    let _ = writeln!(log, "{}", metrics::log_line(msg));
}

struct TrainTask<'a> {
    prepared: &'a Prepared,
    data: &'a mut dyn Write,
    log: &'a mut dyn Write,
    interrupt: Arc<AtomicBool>,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<TrainOutcome, TrainError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        train_on::<B>(self.prepared, devices, self.data, self.log, self.interrupt)
    }
}

impl TrainTask<'_> {
    fn run_on<B: AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Result<TrainOutcome, TrainError> {
        let p = self.prepared;
        let h = &p.cfg.hparams;
        let Some(device) = devices.first().cloned() else {
            return Err(TrainError::Backend("no device to train on".into()));
        };
        let resnet = ResNetConfig::new(h.num_layers, p.num_classes);
        if devices.len() > 1 {
            let sizes = shard_sizes(h.mini_batch_size, devices.len());
            info(
                self.log,
                &format!(
                    "Data-parallel training on {} devices ({}): each mini-batch of {} is split \
                     into shards of {} images; the gradients are averaged on the first device, \
                     which runs the optimizer and the validation (BatchNorm running statistics \
                     come from its shard)",
                    devices.len(),
                    devices
                        .iter()
                        .map(|d| format!("{d:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    h.mini_batch_size,
                    sizes
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join("+"),
                ),
            );
        }
        B::seed(&device, p.cfg.seed);
        let mut model: ResNet<B> = resnet.init(&device);
        if let (true, Some(path)) = (h.use_pretrained_model, &p.cfg.pretrained) {
            let policy = if p.cfg.keep_head {
                HeadPolicy::Keep
            } else {
                HeadPolicy::Reinit
            };
            let (m, report) = weights::load_pretrained(model, path, policy, &device)
                .map_err(|e| TrainError::Weights(format!("{}: {e}", path.display())))?;
            model = m;
            info(
                self.log,
                &format!(
                    "Loaded pretrained weights from {}: {report}",
                    path.display()
                ),
            );
        }
        let parallel = DataParallel::new(devices, |d| resnet.init(d));
        let mut run = Run {
            p,
            device: device.clone(),
            parallel,
            data: Some(self.data),
            log: self.log,
            interrupt: self.interrupt,
            steps_done: 0,
            upscale: Default::default(),
        };
        match h.optimizer {
            OptimizerKind::Sgd | OptimizerKind::Nag => {
                // Weight decay is added to the gradients (`prepare_grads`), for the
                // parameters MXNet decays.
                let c = SgdConfig::new().with_momentum(Some(MomentumConfig {
                    momentum: h.momentum,
                    dampening: 0.0,
                    nesterov: h.optimizer == OptimizerKind::Nag,
                }));
                run.epochs(model, c.init::<B, ResNet<B>>())
            }
            OptimizerKind::Adam => {
                let c = AdamConfig::new()
                    .with_beta_1(h.beta_1 as f32)
                    .with_beta_2(h.beta_2 as f32)
                    .with_epsilon(h.eps as f32);
                run.epochs(model, c.init::<B, ResNet<B>>())
            }
            OptimizerKind::RmsProp => {
                let c = RmsPropConfig::new()
                    .with_alpha(h.gamma as f32)
                    .with_momentum(0.0)
                    .with_epsilon(h.eps as f32);
                run.epochs(model, c.init::<B, ResNet<B>>())
            }
        }
    }
}

/// Sizes of the contiguous shards that split `n` images over `devices` replicas: as
/// even as possible, larger ones first, none empty (fewer shards than devices when
/// `n < devices`; none when `n` is 0).
pub fn shard_sizes(n: usize, devices: usize) -> Vec<usize> {
    let k = devices.min(n);
    if k == 0 {
        return Vec::new();
    }
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

/// What [`DataParallel::step`] computed for one mini-batch.
pub struct ParallelStep {
    /// The gradient of the mini-batch's mean loss, on the first device, keyed by the
    /// model's parameter ids (ready for [`Optimizer::step`]).
    pub grads: GradientsParams,
    /// The mini-batch's mean loss: the shard losses weighted by shard size.
    pub loss: f64,
    /// The model outputs of every image (row-major, in batch order).
    pub outputs: Vec<f32>,
}

/// Data-parallel gradient computation over several devices, like PyTorch's
/// `DataParallel`: the model lives on the first device; each step splits the
/// mini-batch into contiguous shards (one per device, [`shard_sizes`]), copies the
/// current weights to one replica per further device, runs forward and backward of each
/// shard on its device, moves the gradients to the first device and sums them weighted by
/// shard size, so that they equal the gradient of the whole mini-batch's mean loss for
/// models without batch statistics. The caller then runs one optimizer step on the model.
///
/// BatchNorm in training mode normalises each shard by its own statistics (as in
/// PyTorch's `DataParallel`), and the running statistics the model keeps are those of
/// the first device's shard: the replicas' are overwritten by the model's at every step.
///
/// The work is issued device after device from the calling thread, and nothing is read
/// back to the host until every shard's backward pass is queued, so asynchronous
/// backends (CUDA) run the devices concurrently. The same device may appear more than
/// once (several replicas on one device); with one device this is plain training.
pub struct DataParallel<B: AutodiffBackend, M> {
    devices: Vec<B::Device>,
    /// One replica per device after the first, with its own buffers (BatchNorm running
    /// statistics) so that copying weights into it never touches the model.
    replicas: Vec<M>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> DataParallel<B, M> {
    /// Replicas for `devices[1..]`, made by `init` on each device (their weights are
    /// replaced by the model's at every step). `devices` must not be empty.
    pub fn new(devices: Vec<B::Device>, init: impl Fn(&B::Device) -> M) -> Self {
        let replicas = devices.iter().skip(1).map(&init).collect();
        DataParallel { devices, replicas }
    }

    /// The devices, the model's first.
    pub fn devices(&self) -> &[B::Device] {
        &self.devices
    }

    /// Gradient, mean loss and outputs of a mini-batch of `n` items for `model` (which
    /// must live on the first device). `shard(replica, range, device)` runs the forward
    /// pass of items `range` on `device` with `replica` and returns their mean loss (one
    /// element) and their outputs (`[range.len(), k]`).
    pub fn step<F>(&mut self, model: &M, n: usize, mut shard: F) -> ParallelStep
    where
        F: FnMut(&M, Range<usize>, &B::Device) -> (Tensor<B, 1>, Tensor<B, 2>),
    {
        let sizes = shard_sizes(n, self.devices.len());
        let main = &self.devices[0];
        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut pending = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for (i, &size) in sizes.iter().enumerate() {
            let range = start..start + size;
            start += size;
            let (loss, outputs, grads) = if i == 0 {
                let (loss, outputs) = shard(model, range, main);
                let scaled = if sizes.len() > 1 {
                    loss.clone().mul_scalar(size as f64 / n as f64)
                } else {
                    loss.clone()
                };
                let grads = GradientsParams::from_grads::<B, M>(scaled.backward(), model);
                (loss, outputs, grads)
            } else {
                let device = &self.devices[i];
                let replica = self.replicas[i - 1]
                    .clone()
                    .load_record(model.clone().into_record())
                    .map(&mut FreshLeaves);
                let (loss, outputs) = shard(&replica, range, device);
                let scaled = loss.clone().mul_scalar(size as f64 / n as f64);
                let grads = GradientsParams::from_grads::<B, M>(scaled.backward(), &replica)
                    .to_device::<B, M>(main, &replica);
                self.replicas[i - 1] = replica;
                (loss, outputs, grads)
            };
            if sizes.len() == 1 {
                pending.push((size, loss, outputs.detach()));
                return self.finish(n, pending, grads);
            }
            accumulator.accumulate::<B>(model, grads);
            pending.push((size, loss, outputs.detach()));
        }
        self.finish(n, pending, accumulator.grads())
    }

    /// Read the losses and outputs back once all the work is queued.
    fn finish(
        &self,
        n: usize,
        pending: Vec<(usize, Tensor<B, 1>, Tensor<B, 2>)>,
        grads: GradientsParams,
    ) -> ParallelStep {
        let single = pending.len() == 1;
        let mut loss = 0.0;
        let mut outputs = Vec::new();
        for (size, l, out) in pending {
            let l: f64 = l.into_scalar().elem();
            loss += if single {
                l
            } else {
                l * size as f64 / n as f64
            };
            outputs.extend(host_f32(out));
        }
        ParallelStep {
            grads,
            loss,
            outputs,
        }
    }
}

/// Whether every float tensor of a module (parameters and buffers) is finite. One
/// value is read back: the sum of `x × 0` over all elements, which is 0 exactly when
/// no element is NaN or infinite.
pub fn all_finite<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Zeros<B: Backend>(Option<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Zeros<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let z = param.val().mul_scalar(0.0).sum();
            self.0 = Some(match self.0.take() {
                Some(acc) => acc + z,
                None => z,
            });
        }
    }
    let mut v = Zeros::<B>(None);
    module.visit(&mut v);
    v.0.is_none_or(|t| t.into_scalar().elem::<f64>() == 0.0)
}

/// The gradients as the optimizer takes them:
/// - with a contiguous layout: a copy only of those a backend left strided (burn-flex's
///   convolution weight gradients are transposed views), so that the optimizer's
///   element-wise updates run on contiguous kernels instead of strided index walks (a
///   fifth of a CPU training step at 28×28); the copy itself is [`contiguous`]'s
///   parallel one;
/// - plus `weight_decay × parameter` (L2 decay, coupled as MXNet's `wd` and burn's
///   `WeightDecay`) for the parameters MXNet decays: those named `weight` or `gamma`.
///   MXNet's optimizer gives every other parameter (fc bias, BatchNorm beta) a decay
///   multiplier of 0 (`Optimizer.set_wd_mult`, which Module's `fit`, SageMaker's
///   trainer, uses).
fn prepare_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    weight_decay: f64,
) -> GradientsParams {
    struct Prepare<'a> {
        grads: &'a mut GradientsParams,
        weight_decay: f64,
        /// The field names entered so far; the last one names the parameter.
        path: Vec<String>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Prepare<'_> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let mut g = contiguous(g);
                if self.weight_decay > 0.0 && decays(self.path.last().map(String::as_str)) {
                    g = param.val().inner().mul_scalar(self.weight_decay).add(g);
                }
                self.grads.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    model.visit(&mut Prepare {
        grads: &mut grads,
        weight_decay,
        path: Vec::new(),
    });
    grads
}

/// Whether MXNet's optimizer applies weight decay to a parameter of this field name.
fn decays(name: Option<&str>) -> bool {
    matches!(name, Some("weight" | "gamma"))
}

/// Gives every trainable parameter of a replica a fresh autodiff leaf (same values, same
/// id), so that a replica on the model's own device never shares graph nodes with the
/// model; buffers (no gradient) are left alone.
struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if tensor.is_require_grad() {
            tensor.detach().require_grad()
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

type StateRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

struct Run<'a, B: AutodiffBackend> {
    p: &'a Prepared,
    device: B::Device,
    parallel: DataParallel<B, ResNet<B>>,
    /// stdout for the metrics; `None` once its reader has gone (training goes on).
    data: Option<&'a mut dyn Write>,
    log: &'a mut dyn Write,
    interrupt: Arc<AtomicBool>,
    steps_done: usize,
    /// The "small images are upscaled" notice, shown once per run.
    upscale: loader::UpscaleNotice,
}

/// Images of a batch as a `[n, C, H, W]` tensor.
fn images_tensor<B: Backend>(batch: &Batch, shape: [usize; 3], device: &B::Device) -> Tensor<B, 4> {
    let [c, h, w] = shape;
    Tensor::from_data(
        TensorData::new(batch.images.clone(), [batch.n, c, h, w]),
        device,
    )
}

/// Images `shard` of a batch as a `[shard.len(), C, H, W]` tensor on `device`.
fn shard_images<B: Backend>(
    batch: &Batch,
    shard: Range<usize>,
    shape: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let [c, h, w] = shape;
    let len = c * h * w;
    let pixels = batch.images[shard.start * len..shard.end * len].to_vec();
    Tensor::from_data(TensorData::new(pixels, [shard.len(), c, h, w]), device)
}

fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

/// Mean loss of a batch (a one-element tensor).
fn batch_loss<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[Vec<f32>],
    num_classes: usize,
    multi_label: bool,
    pos_weights: Option<&[f32]>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let n = labels.len();
    if multi_label {
        let flat: Vec<f32> = labels.iter().flat_map(|l| l.iter().copied()).collect();
        let y = Tensor::<B, 2>::from_data(TensorData::new(flat, [n, num_classes]), device);
        // Stable BCE on logits: (1−y)·x + (1 + (w−1)·y)·(log(1+e^{−|x|}) + max(−x, 0)).
        let x = logits;
        let softplus_neg = x.clone().abs().neg().exp().log1p() + x.clone().neg().clamp_min(0.0);
        let coef = match pos_weights {
            Some(w) => {
                let w =
                    Tensor::<B, 1>::from_data(TensorData::new(w.to_vec(), [num_classes]), device)
                        .reshape([1, num_classes]);
                y.clone().mul(w.sub_scalar(1.0)).add_scalar(1.0)
            }
            None => y.ones_like(),
        };
        let loss = y.neg().add_scalar(1.0).mul(x) + coef.mul(softplus_neg);
        loss.mean()
    } else {
        let targets: Vec<i64> = labels.iter().map(|l| l[0] as i64).collect();
        let t = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), device);
        burn::nn::loss::CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, t)
    }
}

impl<B: AutodiffBackend> Run<'_, B> {
    /// One epoch's JSON line on stdout. When stdout's reader has gone (`rectrain … |
    /// head -1`), training goes on without it: the model is the output that matters,
    /// and the same lines are in `OUT/metrics.jsonl`.
    fn emit_metrics(&mut self, line: &str) -> Result<(), TrainError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(());
        };
        match writeln!(data, "{line}").and_then(|()| data.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.data = None;
                info(
                    self.log,
                    "stdout was closed: training goes on, the metrics are in metrics.jsonl",
                );
                Ok(())
            }
            Err(e) => Err(TrainError::Output(e)),
        }
    }

    fn loader_config(&self, training: bool) -> LoaderConfig {
        let h = &self.p.cfg.hparams;
        LoaderConfig {
            batch_size: h.mini_batch_size,
            shuffle: training,
            seed: self.p.cfg.seed,
            augmentation: if training {
                h.augmentation_type
            } else {
                AugmentationType::None
            },
            preprocess: PreprocessConfig::new(h.image_shape, h.resize),
            workers: match self.p.cfg.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            prefetch_batches: 4,
            drop_last: false,
        }
    }

    fn epochs<O: Optimizer<ResNet<B>, B>>(
        &mut self,
        mut model: ResNet<B>,
        mut optim: O,
    ) -> Result<TrainOutcome, TrainError> {
        let p = self.p;
        let h = &p.cfg.hparams;
        let out = &p.cfg.out;
        let recorder = StateRecorder::new();

        let mut start_epoch = 0;
        let mut start_step = 0;
        let mut acc0 = Accumulator::default();
        let mut seconds0 = 0.0;
        let mut best = BestTracker::default();
        let mut early = EarlyStopping::new(
            h.early_stopping_min_epochs,
            h.early_stopping_patience,
            h.early_stopping_tolerance,
        );
        let mut history: Vec<EpochMetrics> = Vec::new();
        let mut best_checkpoint: Option<String> = None;
        // SageMaker's weight_decay is an sgd/nag hyperparameter.
        let weight_decay = match h.optimizer {
            OptimizerKind::Sgd | OptimizerKind::Nag => h.weight_decay,
            OptimizerKind::Adam | OptimizerKind::RmsProp => 0.0,
        };
        if let Some((dir, state)) = &p.resume {
            model = model
                .load_file(dir.join("model"), &recorder, &self.device)
                .map_err(|e| state_err(dir, e))?;
            let record = <StateRecorder as Recorder<B>>::load(
                &recorder,
                dir.join("optimizer.mpk"),
                &self.device,
            )
            .map_err(|e| state_err(dir, e))?;
            optim = optim.load_record(record);
            start_epoch = state.epoch;
            start_step = state.step;
            acc0 = state.accumulator.clone();
            seconds0 = state.seconds;
            best = state.best;
            early = EarlyStopping {
                min_epochs: h.early_stopping_min_epochs,
                patience: h.early_stopping_patience,
                tolerance: h.early_stopping_tolerance,
                ..state.early_stopping
            };
            history = state.history.clone();
            best_checkpoint = state.best_checkpoint.clone();
            info(
                self.log,
                &format!(
                    "Resuming from {} at epoch {start_epoch}, step {start_step}",
                    dir.display()
                ),
            );
        }

        let train_cfg = self.loader_config(true);
        let val_cfg = self.loader_config(false);
        let mut stopped_early = false;
        let mut epochs_run = start_epoch;
        let mut speedometer =
            metrics::Speedometer::new(h.mini_batch_size, metrics::Speedometer::FREQUENT);

        for epoch in start_epoch..h.epochs {
            let lr = h.learning_rate_at(epoch);
            let (mut acc, skip, prior_seconds) = if epoch == start_epoch {
                (acc0.clone(), start_step, seconds0)
            } else {
                (Accumulator::default(), 0, 0.0)
            };
            let steps_in_epoch = p.train.len().div_ceil(h.mini_batch_size);
            let bar = self.progress_bar(epoch, steps_in_epoch, skip);
            speedometer.start_epoch();
            let t0 = Instant::now();
            let mut step = 0;
            for batch in loader::epoch_batches(p.train.clone(), &train_cfg, epoch) {
                if step < skip {
                    step += 1;
                    continue;
                }
                let batch = batch
                    .map_err(|e| TrainError::Data(format!("training set: {}", error_text(&e))))?;
                if let Some(notice) = self.upscale.check(&batch, h.image_shape) {
                    info(self.log, &notice);
                }
                let out = self.parallel.step(&model, batch.n, |m, shard, device| {
                    let x = shard_images::<B>(&batch, shard.clone(), h.image_shape, device);
                    let logits = m.forward(x);
                    let loss = batch_loss(
                        logits.clone(),
                        &batch.labels[shard],
                        p.num_classes,
                        h.multi_label,
                        p.pos_weights.as_deref(),
                        device,
                    );
                    (loss, logits)
                });
                let loss_value = out.loss;
                if !loss_value.is_finite() {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    return Err(TrainError::NonFinite {
                        what: "training loss",
                        loss: loss_value,
                        epoch,
                        step,
                        kept: self.kept_description(),
                    });
                }
                let grads = prepare_grads(&model, out.grads, weight_decay);
                model = optim.step(lr, model, grads);
                for a in [&mut acc, &mut speedometer.window] {
                    a.add_batch(
                        &out.outputs,
                        p.num_classes,
                        &batch.labels,
                        loss_value,
                        h.multi_label,
                        h.top_k,
                    );
                }
                if let Some(line) = speedometer.after_batch(epoch, step, h.top_k, Instant::now()) {
                    match &bar {
                        Some(b) => b.suspend(|| info(self.log, &line)),
                        None => info(self.log, &line),
                    }
                }
                step += 1;
                self.steps_done += 1;
                if let Some(b) = &bar {
                    b.inc(1);
                }
                if p.cfg.stop_after_steps.is_some_and(|n| self.steps_done >= n) {
                    self.interrupt.store(true, Ordering::SeqCst);
                }
                if self.interrupt.load(Ordering::SeqCst) && step < steps_in_epoch {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    // The last update's loss is not known yet: never replace the last
                    // good state with weights that are already broken.
                    if !all_finite(&model.valid()) {
                        return Err(TrainError::NonFinite {
                            what: "weights",
                            loss: f64::NAN,
                            epoch,
                            step,
                            kept: self.kept_description(),
                        });
                    }
                    let state = ResumeState {
                        format: STATE_FORMAT.into(),
                        epoch,
                        step,
                        seed: p.cfg.seed,
                        learning_rate: lr,
                        accumulator: acc,
                        seconds: prior_seconds + t0.elapsed().as_secs_f64(),
                        best,
                        early_stopping: early,
                        history,
                        hyperparameters: h.to_raw(),
                        best_checkpoint,
                    };
                    let dir = self.save_state(&model, &optim, &state)?;
                    info(
                        self.log,
                        &format!(
                            "Interrupted at epoch {epoch}, step {step}: saved the resumable state to \"{}\"",
                            dir.display()
                        ),
                    );
                    return Ok(TrainOutcome::Interrupted { epoch, step });
                }
            }
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let seconds = prior_seconds + t0.elapsed().as_secs_f64();

            let valid = model.valid();
            let vacc = self.validate(&valid, &val_cfg)?;
            // Weights that give NaN/inf outputs are not saved as a checkpoint.
            if !vacc.loss().is_finite() {
                return Err(TrainError::NonFinite {
                    what: "validation loss",
                    loss: vacc.loss(),
                    epoch,
                    step: steps_in_epoch,
                    kept: self.kept_description(),
                });
            }

            let m = EpochMetrics {
                epoch,
                train_loss: acc.loss(),
                train_accuracy: acc.accuracy(),
                train_top_k_accuracy: h.top_k.map(|_| acc.top_k_accuracy()),
                validation_loss: vacc.loss(),
                validation_accuracy: vacc.accuracy(),
                validation_top_k_accuracy: h.top_k.map(|_| vacc.top_k_accuracy()),
                learning_rate: lr,
                images_per_second: if seconds > 0.0 {
                    acc.samples as f64 / seconds
                } else {
                    0.0
                },
                seconds,
            };
            for line in metrics::epoch_log_lines(&m, h.top_k) {
                info(self.log, &line);
            }
            self.emit_metrics(&metrics::json_line(&m))?;

            let periodic = h.checkpoint_frequency.is_some_and(|f| (epoch + 1) % f == 0);
            if best.update(epoch, m.validation_accuracy) {
                info(
                    self.log,
                    &format!(
                        "Storing the best model with validation accuracy: {:.6}",
                        m.validation_accuracy
                    ),
                );
                let path = artifact::checkpoint_path(out, epoch);
                self.save_weights(&model, &path)?;
                info(
                    self.log,
                    &format!("Saved checkpoint to \"{}\"", path.display()),
                );
                if let Some(old) = best_checkpoint.take() {
                    if !self.is_periodic_checkpoint(&old) {
                        let _ = std::fs::remove_file(out.join(old));
                    }
                }
                best_checkpoint = Some(relative_checkpoint(epoch));
            } else if periodic {
                let path = artifact::checkpoint_path(out, epoch);
                self.save_weights(&model, &path)?;
                info(
                    self.log,
                    &format!("Saved checkpoint to \"{}\"", path.display()),
                );
            }

            history.push(m.clone());
            artifact::write_atomic(
                &artifact::metrics_path(out),
                metrics::jsonl(&history).as_bytes(),
            )
            .map_err(io_err(&artifact::metrics_path(out)))?;
            plot::write_accuracy_svg(&artifact::plot_path(out), &history, &self.plot_title())?;
            epochs_run = epoch + 1;

            let stop = h.early_stopping && early.should_stop(epoch, m.validation_accuracy);
            if stop {
                let (be, ba) = best.best.unwrap_or((epoch, m.validation_accuracy));
                info(
                    self.log,
                    &format!(
                        "Early stopping criterion met at epoch {epoch}: validation accuracy did not \
                         improve by a relative {} for {} epochs (best {ba:.6} at epoch {be}); \
                         stopping training",
                        h.early_stopping_tolerance, h.early_stopping_patience
                    ),
                );
            }
            let state = ResumeState {
                format: STATE_FORMAT.into(),
                epoch: epoch + 1,
                step: 0,
                seed: p.cfg.seed,
                learning_rate: h.learning_rate_at(epoch + 1),
                accumulator: Accumulator::default(),
                seconds: 0.0,
                best,
                early_stopping: early,
                history: history.clone(),
                hyperparameters: h.to_raw(),
                best_checkpoint: best_checkpoint.clone(),
            };
            self.save_state(&model, &optim, &state)?;
            if stop {
                stopped_early = true;
                break;
            }
            if self.interrupt.load(Ordering::SeqCst) && epoch + 1 < h.epochs {
                info(
                    self.log,
                    &format!(
                        "Interrupted after epoch {epoch}: saved the resumable state to \"{}\"",
                        artifact::resume_dir(out).display()
                    ),
                );
                return Ok(TrainOutcome::Interrupted {
                    epoch: epoch + 1,
                    step: 0,
                });
            }
        }

        self.finish(
            &best,
            best_checkpoint.as_deref(),
            epochs_run,
            stopped_early,
            &history,
        )?;
        Ok(TrainOutcome::Finished {
            epochs_run,
            best: best.best,
            stopped_early,
        })
    }

    fn progress_bar(
        &self,
        epoch: usize,
        steps: usize,
        done: usize,
    ) -> Option<indicatif::ProgressBar> {
        if !self.p.cfg.progress {
            return None;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(steps as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "epoch {msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(epoch.to_string());
        bar.set_position(done as u64);
        Some(bar)
    }

    fn validate(
        &mut self,
        model: &ResNet<B::InnerBackend>,
        cfg: &LoaderConfig,
    ) -> Result<Accumulator, TrainError> {
        let p = self.p;
        let h = &p.cfg.hparams;
        // The inference form (BatchNorm folded into the convolutions), as recpredict.
        let model = model.fold_batch_norm();
        let mut acc = Accumulator::default();
        for batch in loader::epoch_batches(p.validation.clone(), cfg, 0) {
            let batch = batch
                .map_err(|e| TrainError::Data(format!("validation set: {}", error_text(&e))))?;
            if let Some(notice) = self.upscale.check(&batch, h.image_shape) {
                info(self.log, &notice);
            }
            let x = images_tensor::<B::InnerBackend>(&batch, h.image_shape, &self.device);
            let logits = model.forward(x);
            let loss = batch_loss(
                logits.clone(),
                &batch.labels,
                p.num_classes,
                h.multi_label,
                p.pos_weights.as_deref(),
                &self.device,
            );
            let loss_value: f64 = loss.into_scalar().elem();
            let host = host_f32(logits);
            acc.add_batch(
                &host,
                p.num_classes,
                &batch.labels,
                loss_value,
                h.multi_label,
                h.top_k,
            );
        }
        Ok(acc)
    }

    fn is_periodic_checkpoint(&self, relative: &str) -> bool {
        let Some(f) = self.p.cfg.hparams.checkpoint_frequency else {
            return false;
        };
        (0..self.p.cfg.hparams.epochs)
            .filter(|e| (e + 1) % f == 0)
            .any(|e| relative_checkpoint(e) == relative)
    }

    fn save_weights(&self, model: &ResNet<B>, path: &Path) -> Result<(), TrainError> {
        let tmp = artifact::temp_sibling(path);
        weights::save_safetensors(model, &tmp)
            .map_err(|e| TrainError::Weights(format!("{}: {e}", path.display())))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// Write `checkpoints/last/` through a temporary directory swapped into place.
    fn save_state<O: Optimizer<ResNet<B>, B>>(
        &self,
        model: &ResNet<B>,
        optim: &O,
        state: &ResumeState,
    ) -> Result<PathBuf, TrainError> {
        let out = &self.p.cfg.out;
        let last = artifact::resume_dir(out);
        let tmp = artifact::temp_sibling(&last);
        let old = last.with_file_name(format!(".last.old{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let recorder = StateRecorder::new();
        model
            .clone()
            .save_file(tmp.join("model"), &recorder)
            .map_err(|e| state_err(&tmp, e))?;
        <StateRecorder as Recorder<B>>::record(
            &recorder,
            optim.to_record(),
            tmp.join("optimizer.mpk"),
        )
        .map_err(|e| state_err(&tmp, e))?;
        let json = serde_json::to_string_pretty(state).map_err(|e| state_err(&tmp, e))?;
        artifact::write_atomic(&tmp.join("state.json"), json.as_bytes())
            .map_err(io_err(&tmp.join("state.json")))?;
        let _ = std::fs::remove_dir_all(&old);
        if last.exists() {
            std::fs::rename(&last, &old).map_err(io_err(&last))?;
        }
        std::fs::rename(&tmp, &last).map_err(io_err(&last))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(last)
    }

    fn kept_description(&self) -> String {
        let last = artifact::resume_dir(&self.p.cfg.out);
        if last.join("state.json").is_file() {
            last.display().to_string()
        } else {
            "nowhere (no epoch had finished)".to_string()
        }
    }

    fn plot_title(&self) -> String {
        format!("ResNet-{} accuracy", self.p.cfg.hparams.num_layers)
    }

    /// Copy the best checkpoint to `model.safetensors` and write `config.json`.
    fn finish(
        &mut self,
        best: &BestTracker,
        best_checkpoint: Option<&str>,
        epochs_run: usize,
        stopped_early: bool,
        history: &[EpochMetrics],
    ) -> Result<(), TrainError> {
        let p = self.p;
        let h = &p.cfg.hparams;
        let out = &p.cfg.out;
        if let Some(rel) = best_checkpoint {
            let src = out.join(rel);
            let dst = artifact::weights_path(out);
            let tmp = artifact::temp_sibling(&dst);
            std::fs::copy(&src, &tmp).map_err(io_err(&src))?;
            std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        }
        let mean_ips = if history.is_empty() {
            0.0
        } else {
            history.iter().map(|m| m.images_per_second).sum::<f64>() / history.len() as f64
        };
        let cfg = ArtifactConfig {
            format: artifact::FORMAT.into(),
            format_version: artifact::FORMAT_VERSION,
            architecture: "resnet".into(),
            num_layers: h.num_layers,
            num_classes: p.num_classes,
            image_shape: h.image_shape,
            resize: h.resize,
            multi_label: h.multi_label,
            normalization: PreprocessConfig::new(h.image_shape, h.resize).normalization,
            class_names: p.cfg.class_names.clone(),
            hyperparameters: h.to_json(),
            training: serde_json::json!({
                "epochs_run": epochs_run,
                "best_epoch": best.best.map(|b| b.0),
                "best_validation_accuracy": best.best.map(|b| b.1),
                "best_checkpoint": best_checkpoint,
                "stopped_early": stopped_early,
                "seed": p.cfg.seed,
                "num_training_samples": p.train.len(),
                "num_validation_samples": p.validation.len(),
                "device": self.device_name(),
                "pretrained": p.cfg.pretrained.as_ref().map(|x| x.display().to_string()),
                "mean_images_per_second": mean_ips,
            }),
        };
        cfg.save(out)?;
        Ok(())
    }

    fn device_name(&self) -> String {
        self.parallel
            .devices()
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn relative_checkpoint(epoch: usize) -> String {
    format!(
        "checkpoints/{}-{:04}.safetensors",
        artifact::CHECKPOINT_PREFIX,
        epoch + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_block_matches_sagemaker() {
        let mut h = Hyperparameters {
            num_layers: 18,
            epochs: 2,
            num_classes: Some(2),
            num_training_samples: Some(64),
            ..Hyperparameters::default()
        };
        let lines = parameter_lines(&h);
        assert_eq!(lines[0], "---- Parameters ----");
        assert_eq!(lines[1], "num_layers: 18");
        assert_eq!(lines[2], "data type: <type 'numpy.float32'>");
        assert!(lines.contains(&"kv_store: device".to_string()));
        assert!(
            lines.contains(&"checkpoint_frequency not set, will store the best model".to_string())
        );
        assert!(!lines.iter().any(|l| l.starts_with("image resize size")));
        h.resize = Some(256);
        h.top_k = Some(3);
        let lines = parameter_lines(&h);
        assert!(lines.contains(&"image resize size: 256".to_string()));
        assert!(lines.contains(&"top_k: 3".to_string()));
    }

    /// The configuration lines are Python 2 dict reprs of strings; the final one holds
    /// the resolved values, num_training_samples included (notebooks scrape it).
    #[test]
    fn configuration_lines_like_sagemakers() {
        let h = Hyperparameters {
            num_layers: 18,
            num_classes: Some(2),
            num_training_samples: Some(64),
            ..Hyperparameters::default()
        };
        let lines = configuration_lines(&h);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with(
                "Reading default configuration from rectrain's built-in default-input.json: \
                 {u'beta_1': u'0.9', u'gamma': u'0.9', u'beta_2': u'0.999', u'optimizer': u'sgd', "
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("u'momentum': u'0'}"), "{}", lines[0]);
        let last = &lines[1];
        assert!(last.starts_with("Final configuration: {u'"), "{last}");
        for item in [
            "u'num_training_samples': u'64'",
            "u'num_classes': u'2'",
            "u'num_layers': u'18'",
            "u'image_shape': u'3,224,224'",
            "u'early_stopping': u'False'",
        ] {
            assert!(last.contains(item), "{item} not in {last}");
        }
        assert_eq!(python2_dict([("a'b", "c\\d")]), "{u'a\\'b': u'c\\\\d'}");
    }

    type Cpu = burn::backend::Flex;
    type CpuAd = burn::backend::Autodiff<burn::backend::Flex>;

    /// Weight decay is added to the gradients of weights and BatchNorm gammas only, as
    /// MXNet's optimizer does; biases and betas keep their gradients.
    #[test]
    fn weight_decay_only_on_weights_and_gammas() {
        let device = Default::default();
        let model: ResNet<CpuAd> = ResNetConfig::new(18, 3).init(&device);
        let x =
            Tensor::<CpuAd, 4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let grads_of = |wd: f64| {
            let loss = model.forward(x.clone()).powi_scalar(2).sum();
            prepare_grads(
                &model,
                GradientsParams::from_grads(loss.backward(), &model),
                wd,
            )
        };
        let (plain, decayed) = (grads_of(0.0), grads_of(0.5));
        let grad = |g: &GradientsParams, id| -> Vec<f32> {
            g.get::<Cpu, 1>(id).unwrap().into_data().to_vec().unwrap()
        };
        let grad2 = |g: &GradientsParams, id| -> Vec<f32> {
            g.get::<Cpu, 2>(id).unwrap().into_data().to_vec().unwrap()
        };
        let values = |t: Tensor<CpuAd, 1>| -> Vec<f32> { t.into_data().to_vec().unwrap() };
        // Not decayed: fc bias, BatchNorm beta.
        let fc_bias = model.fc.bias.as_ref().unwrap();
        assert_eq!(grad(&plain, fc_bias.id), grad(&decayed, fc_bias.id));
        assert_eq!(
            grad(&plain, model.bn1.beta.id),
            grad(&decayed, model.bn1.beta.id)
        );
        assert!(!grad(&plain, model.bn1.beta.id).is_empty());
        // Decayed: BatchNorm gamma and fc weight, by exactly 0.5 × the parameter.
        let (g0, g1) = (
            grad(&plain, model.bn1.gamma.id),
            grad(&decayed, model.bn1.gamma.id),
        );
        let gamma = values(model.bn1.gamma.val());
        for i in 0..g0.len() {
            assert_eq!(g1[i], gamma[i] * 0.5 + g0[i]);
        }
        let (w0, w1) = (
            grad2(&plain, model.fc.weight.id),
            grad2(&decayed, model.fc.weight.id),
        );
        let w: Vec<f32> = model.fc.weight.val().into_data().to_vec().unwrap();
        assert!(w0
            .iter()
            .zip(&w1)
            .zip(&w)
            .all(|((a, b), p)| *b == p * 0.5 + a));
        assert!(decays(Some("weight")) && decays(Some("gamma")));
        assert!(!decays(Some("bias")) && !decays(Some("beta")) && !decays(None));
    }

    #[test]
    fn cross_entropy_and_bce_values() {
        let device = Default::default();
        let logits = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 2.0, 0.0], [2, 2]),
            &device,
        );
        let l: f64 = batch_loss(
            logits.clone(),
            &[vec![0.0], vec![0.0]],
            2,
            false,
            None,
            &device,
        )
        .into_scalar()
        .elem();
        // mean(ln 2, ln(1 + e^-2))
        let want = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");

        let labels = [vec![1.0, 0.0], vec![0.0, 1.0]];
        let l: f64 = batch_loss(logits.clone(), &labels, 2, true, None, &device)
            .into_scalar()
            .elem();
        let sp = |x: f64| (1.0 + x.exp()).ln(); // softplus
                                                // BCE(x, y) = softplus(x) - x*y
        let want = (sp(0.0) + sp(0.0) + (sp(2.0) - 0.0) + (sp(0.0) - 0.0)) / 4.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");

        // A positive weight of 3 on class 0 triples the y=1 term of class 0 only.
        let l: f64 = batch_loss(logits, &labels, 2, true, Some(&[3.0, 1.0]), &device)
            .into_scalar()
            .elem();
        let want = (3.0 * sp(0.0) + sp(0.0) + sp(2.0) + sp(0.0)) / 4.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
    }

    #[test]
    fn loss_decreases_on_a_fixed_batch() {
        let device = Default::default();
        CpuAd::seed(&device, 7);
        let mut model: ResNet<CpuAd> = ResNetConfig::new(18, 2).init(&device);
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            }))
            .init::<CpuAd, ResNet<CpuAd>>();
        // Four 3×16×16 images: two dark, two bright, labelled 0 and 1.
        let n = 4;
        let len = 3 * 16 * 16;
        let mut pixels = Vec::with_capacity(n * len);
        for i in 0..n {
            let v = if i % 2 == 0 { -1.5f32 } else { 1.5 };
            pixels.extend((0..len).map(|k| v + (k % 7) as f32 * 0.05));
        }
        let labels: Vec<Vec<f32>> = (0..n).map(|i| vec![(i % 2) as f32]).collect();
        let x = Tensor::<CpuAd, 4>::from_data(TensorData::new(pixels, [n, 3, 16, 16]), &device);
        let mut losses = Vec::new();
        for _ in 0..6 {
            let logits = model.forward(x.clone());
            let loss = batch_loss(logits, &labels, 2, false, None, &device);
            losses.push(loss.clone().into_scalar().elem::<f64>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(
            losses[5] < losses[0] * 0.5,
            "loss did not decrease enough: {losses:?}"
        );
    }

    #[test]
    fn shards_are_contiguous_even_and_never_empty() {
        assert_eq!(shard_sizes(8, 2), vec![4, 4]);
        assert_eq!(shard_sizes(7, 3), vec![3, 2, 2]);
        assert_eq!(shard_sizes(5, 1), vec![5]);
        assert_eq!(shard_sizes(2, 4), vec![1, 1]);
        assert_eq!(shard_sizes(0, 2), Vec::<usize>::new());
        for n in 1..20 {
            for k in 1..6 {
                let s = shard_sizes(n, k);
                assert_eq!(s.iter().sum::<usize>(), n);
                assert_eq!(s.len(), k.min(n));
                assert!(s.iter().all(|&x| x > 0));
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
            }
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn sharded_gradients_equal_the_full_batch_gradient() {
        use burn::nn::{Linear, LinearConfig};
        let device: burn::tensor::Device<CpuAd> = Default::default();
        CpuAd::seed(&device, 3);
        let (n, k, classes) = (7, 6, 3);
        let mut model: Linear<CpuAd> = LinearConfig::new(k, classes).init(&device);
        let xs: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let labels: Vec<Vec<f32>> = (0..n).map(|i| vec![(i % classes) as f32]).collect();
        let forward = |m: &Linear<CpuAd>, r: Range<usize>, d: &burn::tensor::Device<CpuAd>| {
            let x = Tensor::<CpuAd, 2>::from_data(
                TensorData::new(xs[r.start * k..r.end * k].to_vec(), [r.len(), k]),
                d,
            );
            let logits = m.forward(x);
            let loss = batch_loss(logits.clone(), &labels[r], classes, false, None, d);
            (loss, logits)
        };
        let init = |d: &burn::tensor::Device<CpuAd>| LinearConfig::new(k, classes).init(d);
        let mut single = DataParallel::new(vec![device], init);
        // Two and three replicas of the CPU device: shards 4+3 and 3+2+2.
        let mut split = [
            DataParallel::new(vec![device; 2], init),
            DataParallel::new(vec![device; 3], init),
        ];
        let mut optim = SgdConfig::new().init::<CpuAd, Linear<CpuAd>>();
        let grad = |g: &GradientsParams, m: &Linear<CpuAd>| {
            let w = g.get::<Cpu, 2>(m.weight.id).unwrap();
            let b = g.get::<Cpu, 1>(m.bias.as_ref().unwrap().id).unwrap();
            let mut v = host_f32(w);
            v.extend(host_f32(b));
            v
        };
        for step in 0..3 {
            let full = single.step(&model, n, forward);
            let want = grad(&full.grads, &model);
            assert!(want.iter().any(|g| g.abs() > 1e-3), "{want:?}");
            for dp in split.iter_mut() {
                let part = dp.step(&model, n, forward);
                let got = grad(&part.grads, &model);
                let d = max_diff(&got, &want);
                assert!(
                    d < 1e-5,
                    "step {step}, {} devices: gradient differs by {d}",
                    dp.devices().len()
                );
                assert!(
                    (part.loss - full.loss).abs() < 1e-5,
                    "{} vs {}",
                    part.loss,
                    full.loss
                );
                assert!(max_diff(&part.outputs, &full.outputs) < 1e-5);
                assert_eq!(part.outputs.len(), n * classes);
            }
            // The replicas must follow the updated weights at the next step.
            model = optim.step(0.5, model, full.grads);
        }
    }

    /// Replaces every weight of two or more dimensions with fixed He-uniform values from
    /// a seeded LCG: tests run in parallel and share burn's global RNG, so a seeded
    /// `init` alone does not give the same weights in two runs.
    struct FixedInit(u64);

    impl<B: Backend> ModuleMapper<B> for FixedInit {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            if D < 2 {
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let dims = tensor.dims();
            let n: usize = dims.iter().product();
            // Conv [out, in, kh, kw]: fan-in in·kh·kw; Linear [in, out]: fan-in in.
            let fan_in = if D == 4 { n / dims[0] } else { dims[0] };
            let bound = (6.0 / fan_in as f64).sqrt();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    self.0 = self
                        .0
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
                    ((2.0 * u - 1.0) * bound) as f32
                })
                .collect();
            let fixed = Tensor::<B, D>::from_data(TensorData::new(values, dims), &tensor.device());
            let fixed = if tensor.is_require_grad() {
                fixed.require_grad()
            } else {
                fixed
            };
            Param::from_mapped_value(id, fixed, mapper)
        }
    }

    /// Data-parallel training of a tiny ResNet-18 over two replicas of the CPU device.
    fn data_parallel_losses(seed: u64) -> Vec<f64> {
        let device: burn::tensor::Device<CpuAd> = Default::default();
        let cfg = ResNetConfig::new(18, 2);
        let mut model: ResNet<CpuAd> = cfg.init(&device).map(&mut FixedInit(seed));
        let bias = Tensor::<CpuAd, 1>::zeros([2], &device);
        model.fc.bias = Some(Param::from_tensor(bias));
        let mut dp = DataParallel::new(vec![device; 2], |d| cfg.init(d));
        let mut optim = AdamConfig::new().init::<CpuAd, ResNet<CpuAd>>();
        // Eight 3×32×32 images, dark (label 0) and bright (label 1): shards of 4 + 4.
        let (n, side) = (8, 32);
        let len = 3 * side * side;
        let mut pixels = Vec::with_capacity(n * len);
        for i in 0..n {
            let v = if i % 2 == 0 { -1.5f32 } else { 1.5 };
            pixels.extend((0..len).map(|k| v + ((k + i) % 7) as f32 * 0.05));
        }
        let labels: Vec<Vec<f32>> = (0..n).map(|i| vec![(i % 2) as f32]).collect();
        let batch = Batch {
            images: pixels,
            labels,
            indices: (0..n).collect(),
            n,
            ids: (0..n as u64).collect(),
            upscaled: Vec::new(),
        };
        let mut losses = Vec::new();
        for _ in 0..8 {
            let out = dp.step(&model, n, |m, r, d| {
                let x = shard_images::<CpuAd>(&batch, r.clone(), [3, side, side], d);
                let logits = m.forward(x);
                let loss = batch_loss(logits.clone(), &batch.labels[r], 2, false, None, d);
                (loss, logits)
            });
            losses.push(out.loss);
            model = optim.step(0.001, model, out.grads);
        }
        assert!(all_finite(&model.valid()));
        losses
    }

    #[test]
    fn data_parallel_resnet_learns_and_is_deterministic() {
        let a = data_parallel_losses(11);
        assert!(a.iter().all(|l| l.is_finite()), "{a:?}");
        assert!(a[7] < a[0] * 0.6, "loss did not decrease enough: {a:?}");
        let b = data_parallel_losses(11);
        assert_eq!(a, b, "same seed, different losses");
    }

    #[test]
    fn non_finite_weights_are_detected() {
        use burn::nn::{Linear, LinearConfig};
        let device = Default::default();
        let m: Linear<Cpu> = LinearConfig::new(3, 2).init(&device);
        assert!(all_finite(&m));
        let bad =
            Tensor::<Cpu, 1>::from_data(TensorData::new(vec![0.0f32, f32::NAN], [2]), &device);
        let mut m2 = m.clone();
        m2.bias = Some(Param::from_tensor(bad));
        assert!(!all_finite(&m2));
        let inf =
            Tensor::<Cpu, 1>::from_data(TensorData::new(vec![f32::INFINITY, 1.0], [2]), &device);
        let mut m3 = m;
        m3.bias = Some(Param::from_tensor(inf));
        assert!(!all_finite(&m3));
    }

    #[test]
    fn relative_checkpoint_names() {
        assert_eq!(
            relative_checkpoint(0),
            "checkpoints/image-classification-0001.safetensors"
        );
    }
}
