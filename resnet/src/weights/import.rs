//! Applying a state dict to the model: the head policy, the key prefix search, the
//! checks (missing, unexpected, shapes, dtypes) and the [`LoadReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model::{Layout, ResNet};

use super::error::list;
use super::mapping::{key_list, map_model, transpose, Keys, LeafMapper, Slot};
use super::{HostData, StateDict, WeightsError};

/// What to do with the final fully connected layer when loading pretrained weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadPolicy {
    /// Keep the model's fresh `fc` (SageMaker's transfer learning: only the last
    /// layer is re-initialised, for `num_classes` outputs).
    Reinit,
    /// Load `fc` from the file too; its class count must match the model's.
    Keep,
}

/// What [`load_pretrained`](super::load_pretrained) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of tensors copied into the model.
    pub loaded: usize,
    /// Model tensors the file did not have and that kept their initial values (only
    /// the head can be missing; a missing backbone tensor is an error).
    pub missing: Vec<String>,
    /// File tensors that matched nothing in the model (skipped), with their full names.
    pub unexpected: Vec<String>,
    /// Whether `fc` kept its fresh initialisation.
    pub reinitialised_head: bool,
    /// The prefix removed from the file's keys (`"backbone."`, `"module."`), if any.
    pub stripped_prefix: Option<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if let Some(p) = &self.stripped_prefix {
            write!(f, " (key prefix {p:?} removed)")?;
        }
        if self.reinitialised_head {
            write!(f, "; fc re-initialised")?;
        }
        if !self.missing.is_empty() {
            write!(f, "; missing: {}", list(&self.missing))?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; unexpected (ignored): {}", list(&self.unexpected))?;
        }
        Ok(())
    }
}

struct Importer<'a, B: Backend> {
    path: &'a Path,
    sd: &'a StateDict,
    prefix: &'a str,
    /// Model names (no prefix) that must not be loaded (the head under Reinit).
    skip: BTreeSet<String>,
    device: &'a B::Device,
    used: BTreeSet<String>,
    missing: Vec<String>,
    loaded: usize,
}

impl<B: Backend> Importer<'_, B> {
    /// The file's values for model tensor `key` with torch shape `shape`, or `None`
    /// when the file lacks it (recorded as missing) or it is skipped.
    fn fetch(&mut self, key: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, WeightsError> {
        let full = format!("{}{key}", self.prefix);
        if self.skip.contains(key) {
            if self.sd.contains_key(&full) {
                self.used.insert(full);
            }
            return Ok(None);
        }
        let Some(t) = self.sd.get(&full) else {
            self.missing.push(key.to_string());
            return Ok(None);
        };
        self.used.insert(full);
        if t.shape != shape {
            let hint = if key.starts_with("fc.") || key.starts_with("fc1_") {
                " (the file's classifier has another class count)".to_string()
            } else {
                " (was the file saved for another num_layers?)".to_string()
            };
            return Err(WeightsError::ShapeMismatch {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
                hint,
            });
        }
        match &t.data {
            HostData::F32(v) => {
                self.loaded += 1;
                Ok(Some(v.clone()))
            }
            HostData::I64(_) => Err(WeightsError::NotFloat {
                path: self.path.to_path_buf(),
                key: key.to_string(),
            }),
        }
    }

    fn param<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D>>,
        key: &str,
    ) -> Result<Param<Tensor<B, D>>, WeightsError> {
        let shape = param.dims();
        match self.fetch(key, &shape)? {
            None => Ok(param),
            Some(values) => {
                let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), self.device);
                let id = param.id;
                Ok(param.transform_for_load(t, id))
            }
        }
    }

    fn running(
        &mut self,
        state: RunningState<Tensor<B, 1>>,
        key: &str,
    ) -> Result<RunningState<Tensor<B, 1>>, WeightsError> {
        let shape = state.value().dims();
        match self.fetch(key, &shape)? {
            None => Ok(state),
            Some(values) => Ok(RunningState::new(Tensor::from_data(
                TensorData::new(values, shape),
                self.device,
            ))),
        }
    }
}

impl<B: Backend> LeafMapper<B> for Importer<'_, B> {
    fn conv(&mut self, k: &Keys, mut c: Conv2d<B>) -> Result<Conv2d<B>, WeightsError> {
        c.weight = self.param(c.weight, &k.weight())?;
        if let Some(b) = c.bias.take() {
            c.bias = Some(self.param(b, &k.bias())?);
        }
        Ok(c)
    }
    fn bn(&mut self, k: &Keys, mut b: BatchNorm<B>) -> Result<BatchNorm<B>, WeightsError> {
        b.gamma = self.param(b.gamma, &k.gamma())?;
        b.beta = self.param(b.beta, &k.beta())?;
        b.running_mean = self.running(b.running_mean, &k.mean())?;
        b.running_var = self.running(b.running_var, &k.var())?;
        // num_batches_tracked: accepted and ignored.
        if let Some(counter) = k.counter() {
            self.used.insert(format!("{}{counter}", self.prefix));
        }
        Ok(b)
    }
    fn linear(&mut self, k: &Keys, mut l: Linear<B>) -> Result<Linear<B>, WeightsError> {
        let [i, o] = l.weight.dims();
        let key = k.weight();
        if let Some(values) = self.fetch(&key, &[o, i])? {
            let t = Tensor::<B, 2>::from_data(
                TensorData::new(transpose(&values, o, i), [i, o]),
                self.device,
            );
            let id = l.weight.id;
            l.weight = l.weight.transform_for_load(t, id);
        }
        if let Some(b) = l.bias.take() {
            l.bias = Some(self.param(b, &k.bias())?);
        }
        Ok(l)
    }
}

/// Finds the prefix (`"backbone."`, `"module."`, `"model.backbone."`, …) under which
/// the file holds the model's keys: the one that makes the most keys match.
fn find_prefix(file_keys: &BTreeSet<&str>, model_keys: &[String]) -> String {
    let direct = model_keys
        .iter()
        .filter(|k| file_keys.contains(k.as_str()))
        .count();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    // Candidate prefixes come from keys that end in a model key's full name.
    for fk in file_keys {
        for mk in ["conv1.weight", "bn1.running_mean", "fc.weight"] {
            if let Some(p) = fk.strip_suffix(mk) {
                if p.ends_with('.') {
                    counts.entry(p).or_default();
                }
            }
        }
    }
    let mut best = (String::new(), direct);
    for p in counts.keys() {
        let n = model_keys
            .iter()
            .filter(|k| file_keys.contains(format!("{p}{k}").as_str()))
            .count();
        if n > best.1 {
            best = (p.to_string(), n);
        }
    }
    best.0
}

/// Applies a state dict to `model`. `head` decides about `fc`; with `strict`, missing
/// and unexpected tensors are errors.
pub(super) fn apply_state_dict<B: Backend>(
    model: ResNet<B>,
    sd: &StateDict,
    path: &Path,
    head: HeadPolicy,
    strict: bool,
    device: &B::Device,
) -> Result<(ResNet<B>, LoadReport), WeightsError> {
    let keys = key_list(&model);
    let model_keys: Vec<String> = keys
        .iter()
        .filter(|(_, _, s)| *s == Slot::Float)
        .map(|(k, _, _)| k.clone())
        .collect();
    let file_keys: BTreeSet<&str> = sd.keys().map(String::as_str).collect();
    let prefix = if strict {
        String::new()
    } else {
        find_prefix(&file_keys, &model_keys)
    };
    // The classifier's tensors: torchvision's `fc.*`, MXNet's `fc1_*`.
    let head_prefix = match model.layout() {
        Layout::Torchvision => "fc.",
        Layout::Mxnet => "fc1_",
    };
    let is_head = |k: &str| k.starts_with(head_prefix);
    let skip: BTreeSet<String> = match head {
        HeadPolicy::Reinit => model_keys.iter().filter(|k| is_head(k)).cloned().collect(),
        HeadPolicy::Keep => BTreeSet::new(),
    };
    let mut imp = Importer {
        path,
        sd,
        prefix: &prefix,
        skip,
        device,
        used: BTreeSet::new(),
        missing: Vec::new(),
        loaded: 0,
    };
    // Check every key before touching the model, so errors list all missing keys.
    let backbone_missing: Vec<String> = model_keys
        .iter()
        .filter(|k| !(head == HeadPolicy::Reinit && is_head(k)))
        .filter(|k| !file_keys.contains(format!("{prefix}{k}").as_str()))
        .cloned()
        .collect();
    if !backbone_missing.is_empty() {
        let hint = if backbone_missing.len() == model_keys.len()
            || backbone_missing.len() + 2 >= model_keys.len()
        {
            let sample: Vec<String> = sd.keys().take(3).cloned().collect();
            format!(
                " (none of the model's keys are in the file, whose keys look like {}: \
                 not a torchvision ResNet state dict?)",
                sample.join(", ")
            )
        } else if head == HeadPolicy::Keep && backbone_missing.iter().all(|k| is_head(k)) {
            " (the file has no fc: re-initialise the head instead of keeping it)".to_string()
        } else {
            " (was the file saved for another num_layers?)".to_string()
        };
        return Err(WeightsError::MissingKeys {
            path: path.to_path_buf(),
            keys: backbone_missing,
            hint,
        });
    }
    let model = map_model(model, &mut imp)?;
    let Importer {
        used,
        missing,
        loaded,
        ..
    } = imp;
    let unexpected: Vec<String> = sd
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect();
    if strict && !unexpected.is_empty() {
        return Err(WeightsError::UnexpectedKeys {
            path: path.to_path_buf(),
            keys: unexpected,
        });
    }
    let report = LoadReport {
        loaded,
        missing,
        unexpected,
        reinitialised_head: head == HeadPolicy::Reinit,
        stripped_prefix: (!prefix.is_empty()).then_some(prefix),
    };
    Ok((model, report))
}
