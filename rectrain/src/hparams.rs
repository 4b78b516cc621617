//! SageMaker image-classification hyperparameters: names, defaults, allowed values.
//!
//! SageMaker sends every hyperparameter as a string (`hyperparameters.json` holds
//! `{"num_layers": "18", "epochs": "2"}`), so parsing starts from a map of strings
//! ([`RawHyperparameters`]); `rectrain`'s command-line flags produce the same map and
//! override the file's entries. [`Hyperparameters::from_raw`] applies the defaults of
//! the reference (§5.1) and checks the documented ranges, naming the hyperparameter
//! and the offending value in every error.
//!
//! [`Hyperparameters::to_raw`] writes the resolved values back in the same string form,
//! which is what the artifact's `config.json` stores, so a stored configuration can be
//! fed to `--hyperparameters` again.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::augment::AugmentationType;
use resnet::backend::Precision;
use resnet::preprocess::MAX_SIDE;
use resnet::Head;

/// Hyperparameters as SageMaker passes them: name → string value.
pub type RawHyperparameters = BTreeMap<String, String>;

mod table;
pub use table::{spec, FlagKind, HelpDefault, HyperparameterSpec, KNOWN_NAMES, TABLE};

/// ResNet depths SageMaker accepts for ImageNet-style networks.
pub const IMAGENET_DEPTHS: &[usize] = &[18, 34, 50, 101, 152, 200];
/// SageMaker's CIFAR-style depths (accepted by SageMaker, not built by `rectrain`).
pub const CIFAR_DEPTHS: &[usize] = &[20, 32, 44, 56, 110];

/// A hyperparameter that could not be read or is out of its allowed range.
#[derive(Debug, thiserror::Error)]
pub enum HparamsError {
    /// A value that does not parse or is outside the documented range.
    #[error("hyperparameter {name}: invalid value {value:?}: {reason}")]
    Invalid {
        /// SageMaker's name of the hyperparameter.
        name: String,
        /// The value as given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// Two hyperparameters that cannot be used together.
    #[error("hyperparameters {first} and {second}: {reason}")]
    Conflict {
        /// One of the hyperparameters.
        first: &'static str,
        /// The other one.
        second: &'static str,
        /// Why they conflict.
        reason: String,
    },
    /// The hyperparameters file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The hyperparameters file is not a JSON object of strings.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The optimizers SageMaker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Stochastic gradient descent with momentum and weight decay.
    Sgd,
    /// Adam.
    Adam,
    /// RMSProp (non-centred; `gamma` is the decay of the squared-gradient average).
    RmsProp,
    /// SGD with Nesterov momentum.
    Nag,
}

impl FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            "rmsprop" => Ok(Self::RmsProp),
            "nag" => Ok(Self::Nag),
            _ => Err("must be one of sgd, adam, rmsprop, nag".into()),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sgd => "sgd",
            Self::Adam => "adam",
            Self::RmsProp => "rmsprop",
            Self::Nag => "nag",
        })
    }
}

/// The resolved, validated hyperparameters of one training run.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    /// ResNet depth (18, 34, 50, 101, 152, 200).
    pub num_layers: usize,
    /// Network input `[C, H, W]`.
    pub image_shape: [usize; 3],
    /// Output classes; `None` until inferred from the data.
    pub num_classes: Option<usize>,
    /// Number of training images; `None` until inferred from the data.
    pub num_training_samples: Option<usize>,
    /// Images per training step.
    pub mini_batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Initial learning rate.
    pub learning_rate: f64,
    /// Factor applied to the learning rate at each scheduled step.
    pub lr_scheduler_factor: f64,
    /// Epochs after which the learning rate drops (sorted, unique).
    pub lr_scheduler_step: Vec<usize>,
    /// Which optimizer.
    pub optimizer: OptimizerKind,
    /// Momentum (sgd, nag).
    pub momentum: f64,
    /// L2 weight decay (sgd, nag), on weights and BatchNorm gammas only, as MXNet's
    /// optimizer applies it.
    pub weight_decay: f64,
    /// Adam β1.
    pub beta_1: f64,
    /// Adam β2.
    pub beta_2: f64,
    /// Adam/RMSProp ε.
    pub eps: f64,
    /// RMSProp decay.
    pub gamma: f64,
    /// Also report top-k accuracy for this k (> 1).
    pub top_k: Option<usize>,
    /// Start from pretrained weights (`--pretrained PATH`).
    pub use_pretrained_model: bool,
    /// The head, from `multi_label`: softmax, or (`multi_label=1`: labels are
    /// multi-hot vectors) sigmoid outputs and binary cross-entropy.
    pub head: Head,
    /// Weight the multi-label loss by class frequency.
    pub use_weighted_loss: bool,
    /// Training augmentation (`None` = centre crop, no augmentation).
    pub augmentation_type: AugmentationType,
    /// Shorter side in pixels before cropping, if set.
    pub resize: Option<u32>,
    /// Also keep a checkpoint every this many epochs.
    pub checkpoint_frequency: Option<usize>,
    /// Stop when validation accuracy stops improving.
    pub early_stopping: bool,
    /// Epochs to run before early stopping may stop the run.
    pub early_stopping_min_epochs: usize,
    /// Epochs without improvement before stopping.
    pub early_stopping_patience: usize,
    /// Relative gain below which an epoch does not count as an improvement.
    pub early_stopping_tolerance: f64,
    /// Arithmetic precision of training.
    pub precision_dtype: Precision,
    /// SageMaker's distributed key-value store setting (accepted, not used).
    pub kv_store: Option<String>,
}

impl Default for Hyperparameters {
    /// SageMaker's defaults (reference §5.1).
    fn default() -> Self {
        Hyperparameters {
            num_layers: 152,
            image_shape: [3, 224, 224],
            num_classes: None,
            num_training_samples: None,
            mini_batch_size: 32,
            epochs: 30,
            learning_rate: 0.1,
            lr_scheduler_factor: 0.1,
            lr_scheduler_step: Vec::new(),
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 0.0001,
            beta_1: 0.9,
            beta_2: 0.999,
            eps: 1e-8,
            gamma: 0.9,
            top_k: None,
            use_pretrained_model: false,
            head: Head::Softmax,
            use_weighted_loss: false,
            augmentation_type: AugmentationType::None,
            resize: None,
            checkpoint_frequency: None,
            early_stopping: false,
            early_stopping_min_epochs: 10,
            early_stopping_patience: 5,
            early_stopping_tolerance: 0.0,
            precision_dtype: Precision::F32,
            kv_store: None,
        }
    }
}

/// Read SageMaker's `hyperparameters.json`: a JSON object whose values are strings.
/// Numbers and booleans are accepted too and turned into their text form.
pub fn read_hyperparameters_file(path: &Path) -> Result<RawHyperparameters, HparamsError> {
    let text = std::fs::read_to_string(path).map_err(|source| HparamsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_hyperparameters_json(&text).map_err(|reason| HparamsError::File {
        path: path.display().to_string(),
        reason,
    })
}

/// Parse the text of a `hyperparameters.json`.
pub fn parse_hyperparameters_json(text: &str) -> Result<RawHyperparameters, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("expected a JSON object of hyperparameters".into());
    };
    let mut raw = RawHyperparameters::new();
    for (key, value) in map {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "hyperparameter {key}: expected a string, found {other}"
                ))
            }
        };
        raw.insert(key, text);
    }
    Ok(raw)
}

fn invalid(name: &str, value: &str, reason: impl Into<String>) -> HparamsError {
    HparamsError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_int(name: &str, value: &str) -> Result<usize, HparamsError> {
    let t = value.trim();
    // SageMaker's consoles sometimes send integers as "10.0".
    let t = t.strip_suffix(".0").unwrap_or(t);
    t.parse::<usize>()
        .map_err(|_| invalid(name, value, "expected a non-negative integer"))
}

fn parse_positive(name: &str, value: &str) -> Result<usize, HparamsError> {
    let n = parse_int(name, value)?;
    if n == 0 {
        return Err(invalid(name, value, "must be positive"));
    }
    Ok(n)
}

fn parse_unit_float(name: &str, value: &str) -> Result<f64, HparamsError> {
    let x: f64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "expected a number"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(invalid(name, value, "must be between 0 and 1"));
    }
    Ok(x)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, HparamsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(invalid(name, value, "expected 0/1 or True/False")),
    }
}

/// Parse `"C,H,W"`.
fn parse_image_shape(value: &str) -> Result<[usize; 3], HparamsError> {
    let parts: Result<Vec<usize>, _> = value
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect();
    let parts = parts.map_err(|_| {
        invalid(
            "image_shape",
            value,
            "expected \"C,H,W\" with positive integers, e.g. \"3,224,224\"",
        )
    })?;
    let shape = match parts.as_slice() {
        [c, h, w] => [*c, *h, *w],
        _ => {
            return Err(invalid(
                "image_shape",
                value,
                "expected \"C,H,W\", e.g. \"3,224,224\"",
            ))
        }
    };
    if shape.contains(&0) {
        return Err(invalid("image_shape", value, "dimensions must be positive"));
    }
    if shape[1] > MAX_SIDE || shape[2] > MAX_SIDE {
        return Err(invalid(
            "image_shape",
            value,
            format!("height and width must be at most {MAX_SIDE}"),
        ));
    }
    if shape[0] != 3 {
        return Err(invalid(
            "image_shape",
            value,
            "only 3 channels are supported (grey images are expanded to RGB)",
        ));
    }
    Ok(shape)
}

/// Parse `"10, 20"` into sorted unique epochs.
fn parse_steps(value: &str) -> Result<Vec<usize>, HparamsError> {
    let mut steps = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        steps.push(parse_positive("lr_scheduler_step", part).map_err(|_| {
            invalid(
                "lr_scheduler_step",
                value,
                "expected comma-separated positive epochs, e.g. \"10, 20\"",
            )
        })?);
    }
    steps.sort_unstable();
    steps.dedup();
    Ok(steps)
}

impl Hyperparameters {
    /// Resolve a raw map: defaults for absent names, validation of every value.
    /// `warn` receives one message for each unknown name (which is then ignored).
    pub fn from_raw(
        raw: &RawHyperparameters,
        mut warn: impl FnMut(String),
    ) -> Result<Self, HparamsError> {
        let mut h = Hyperparameters::default();
        for (name, value) in raw {
            let v = value.as_str();
            match name.as_str() {
                "num_layers" => {
                    let n = parse_int(name, v)?;
                    if CIFAR_DEPTHS.contains(&n) {
                        return Err(invalid(
                            name,
                            v,
                            "the CIFAR depths 20, 32, 44, 56, 110 are not supported; use 18, 34, 50, 101, 152 or 200",
                        ));
                    }
                    if !IMAGENET_DEPTHS.contains(&n) {
                        return Err(invalid(name, v, "must be one of 18, 34, 50, 101, 152, 200"));
                    }
                    h.num_layers = n;
                }
                "image_shape" => h.image_shape = parse_image_shape(v)?,
                "num_classes" => h.num_classes = Some(parse_positive(name, v)?),
                "num_training_samples" => h.num_training_samples = Some(parse_positive(name, v)?),
                "mini_batch_size" => h.mini_batch_size = parse_positive(name, v)?,
                "epochs" => h.epochs = parse_positive(name, v)?,
                "learning_rate" => h.learning_rate = parse_unit_float(name, v)?,
                "lr_scheduler_factor" => h.lr_scheduler_factor = parse_unit_float(name, v)?,
                "lr_scheduler_step" => h.lr_scheduler_step = parse_steps(v)?,
                "optimizer" => h.optimizer = v.parse().map_err(|e: String| invalid(name, v, e))?,
                "momentum" => h.momentum = parse_unit_float(name, v)?,
                "weight_decay" => h.weight_decay = parse_unit_float(name, v)?,
                "beta_1" => h.beta_1 = parse_unit_float(name, v)?,
                "beta_2" => h.beta_2 = parse_unit_float(name, v)?,
                "eps" => h.eps = parse_unit_float(name, v)?,
                "gamma" => h.gamma = parse_unit_float(name, v)?,
                "top_k" => {
                    let k = parse_int(name, v)?;
                    if k <= 1 {
                        return Err(invalid(name, v, "must be greater than 1"));
                    }
                    h.top_k = Some(k);
                }
                "use_pretrained_model" => h.use_pretrained_model = parse_bool(name, v)?,
                "multi_label" => h.head = Head::from_multi_label(parse_bool(name, v)?),
                "use_weighted_loss" => h.use_weighted_loss = parse_bool(name, v)?,
                "augmentation_type" => {
                    h.augmentation_type = match v.trim().to_ascii_lowercase().as_str() {
                        "" | "none" => AugmentationType::None,
                        other => other.parse().map_err(|_| {
                            invalid(
                                name,
                                v,
                                "must be one of crop, crop_color, crop_color_transform",
                            )
                        })?,
                    }
                }
                "resize" => {
                    let n = parse_positive(name, v)?;
                    h.resize = Some(u32::try_from(n).map_err(|_| invalid(name, v, "too large"))?);
                }
                "checkpoint_frequency" => h.checkpoint_frequency = Some(parse_positive(name, v)?),
                "early_stopping" => h.early_stopping = parse_bool(name, v)?,
                "early_stopping_min_epochs" => {
                    h.early_stopping_min_epochs = parse_positive(name, v)?
                }
                "early_stopping_patience" => h.early_stopping_patience = parse_positive(name, v)?,
                "early_stopping_tolerance" => {
                    h.early_stopping_tolerance = parse_unit_float(name, v)?
                }
                "precision_dtype" => {
                    h.precision_dtype = v.trim().parse().map_err(|_| {
                        invalid(name, v, "must be one of float32, float16, bfloat16")
                    })?
                }
                "kv_store" => match v.trim() {
                    "" => h.kv_store = None,
                    "dist_sync" | "dist_async" | "device" | "local" => {
                        h.kv_store = Some(v.trim().to_string())
                    }
                    _ => return Err(invalid(name, v, "must be dist_sync or dist_async")),
                },
                _ => warn(format!("unknown hyperparameter {name:?} ignored")),
            }
        }
        h.check_combinations()?;
        Ok(h)
    }

    /// Checks that involve more than one hyperparameter.
    fn check_combinations(&self) -> Result<(), HparamsError> {
        if let Some(f) = self.checkpoint_frequency {
            if f > self.epochs {
                return Err(HparamsError::Conflict {
                    first: "checkpoint_frequency",
                    second: "epochs",
                    reason: format!(
                        "checkpoint_frequency ({f}) must not exceed epochs ({})",
                        self.epochs
                    ),
                });
            }
        }
        if let Some(r) = self.resize {
            let [_, h, w] = self.image_shape;
            if (r as usize) < h || (r as usize) < w {
                return Err(HparamsError::Conflict {
                    first: "resize",
                    second: "image_shape",
                    reason: format!(
                        "resize ({r}) must be at least the image height and width ({h}x{w})"
                    ),
                });
            }
        }
        if self.use_weighted_loss && !self.head.is_multi_label() {
            return Err(HparamsError::Conflict {
                first: "use_weighted_loss",
                second: "multi_label",
                reason: "use_weighted_loss=1 requires multi_label=1".into(),
            });
        }
        if self.head.is_multi_label() && self.top_k.is_some() {
            return Err(HparamsError::Conflict {
                first: "top_k",
                second: "multi_label",
                reason: "top_k accuracy is not defined for multi-label training".into(),
            });
        }
        Ok(())
    }

    /// The learning rate of epoch `epoch` (0-based): `learning_rate` times
    /// `lr_scheduler_factor` once for every scheduled step `s <= epoch` (the rate drops
    /// after `s` epochs have run).
    pub fn learning_rate_at(&self, epoch: usize) -> f64 {
        let drops = self
            .lr_scheduler_step
            .iter()
            .filter(|&&s| s <= epoch)
            .count();
        self.learning_rate * self.lr_scheduler_factor.powi(drops as i32)
    }

    /// The resolved values in SageMaker's string form (what `hyperparameters.json`
    /// would hold to reproduce this run). Unset optional values are left out.
    pub fn to_raw(&self) -> RawHyperparameters {
        let mut m = RawHyperparameters::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("num_layers", self.num_layers.to_string());
        let [c, h, w] = self.image_shape;
        put("image_shape", format!("{c},{h},{w}"));
        if let Some(n) = self.num_classes {
            put("num_classes", n.to_string());
        }
        if let Some(n) = self.num_training_samples {
            put("num_training_samples", n.to_string());
        }
        put("mini_batch_size", self.mini_batch_size.to_string());
        put("epochs", self.epochs.to_string());
        put("learning_rate", self.learning_rate.to_string());
        put("lr_scheduler_factor", self.lr_scheduler_factor.to_string());
        if !self.lr_scheduler_step.is_empty() {
            let s: Vec<String> = self
                .lr_scheduler_step
                .iter()
                .map(|s| s.to_string())
                .collect();
            put("lr_scheduler_step", s.join(","));
        }
        put("optimizer", self.optimizer.to_string());
        put("momentum", self.momentum.to_string());
        put("weight_decay", self.weight_decay.to_string());
        put("beta_1", self.beta_1.to_string());
        put("beta_2", self.beta_2.to_string());
        put("eps", self.eps.to_string());
        put("gamma", self.gamma.to_string());
        if let Some(k) = self.top_k {
            put("top_k", k.to_string());
        }
        put(
            "use_pretrained_model",
            u8::from(self.use_pretrained_model).to_string(),
        );
        put(
            "multi_label",
            u8::from(self.head.is_multi_label()).to_string(),
        );
        put(
            "use_weighted_loss",
            u8::from(self.use_weighted_loss).to_string(),
        );
        if let Some(a) = augmentation_name(self.augmentation_type) {
            put("augmentation_type", a.to_string());
        }
        if let Some(r) = self.resize {
            put("resize", r.to_string());
        }
        if let Some(f) = self.checkpoint_frequency {
            put("checkpoint_frequency", f.to_string());
        }
        put(
            "early_stopping",
            if self.early_stopping { "True" } else { "False" }.to_string(),
        );
        put(
            "early_stopping_min_epochs",
            self.early_stopping_min_epochs.to_string(),
        );
        put(
            "early_stopping_patience",
            self.early_stopping_patience.to_string(),
        );
        put(
            "early_stopping_tolerance",
            self.early_stopping_tolerance.to_string(),
        );
        put(
            "precision_dtype",
            precision_name(self.precision_dtype).to_string(),
        );
        if let Some(k) = &self.kv_store {
            put("kv_store", k.clone());
        }
        m
    }

    /// [`Self::to_raw`] as a JSON object of strings.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.to_raw()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        )
    }
}

/// SageMaker's name of an augmentation type; `None` for no augmentation.
pub fn augmentation_name(a: AugmentationType) -> Option<&'static str> {
    match a {
        AugmentationType::None => None,
        AugmentationType::Crop => Some("crop"),
        AugmentationType::CropColor => Some("crop_color"),
        AugmentationType::CropColorTransform => Some("crop_color_transform"),
    }
}

/// SageMaker's name of a precision.
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "float32",
        Precision::F16 => "float16",
        Precision::Bf16 => "bfloat16",
    }
}

#[cfg(test)]
mod tests;
