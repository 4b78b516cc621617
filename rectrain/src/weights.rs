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

mod torch;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model::{Block, Downsample, ResNet};

pub use torch::TorchError;

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

/// What to do with the final fully connected layer when loading pretrained weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadPolicy {
    /// Keep the model's fresh `fc` (SageMaker's transfer learning: only the last
    /// layer is re-initialised, for `num_classes` outputs).
    Reinit,
    /// Load `fc` from the file too; its class count must match the model's.
    Keep,
}

/// What [`load_pretrained`] did.
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

/// Joins up to 8 names, then says how many more there are.
fn list(names: &[String]) -> String {
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
    /// A model tensor is stored with an integer type.
    #[error("{}: tensor {key} is not floating point", path.display())]
    NotFloat {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
    },
}

// ---------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------

/// Reads every tensor of a `.pth` (PyTorch zip format) or `.safetensors` file. The
/// format is recognised from the content, not the extension.
pub fn read_state_dict(path: &Path) -> Result<StateDict, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_state_dict(&bytes, path)
}

fn parse_state_dict(bytes: &[u8], path: &Path) -> Result<StateDict, WeightsError> {
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
        return read_safetensors_bytes(bytes, path);
    }
    Err(WeightsError::UnknownFormat {
        path: path.to_path_buf(),
        first: bytes.iter().take(8).copied().collect(),
    })
}

fn read_safetensors_bytes(bytes: &[u8], path: &Path) -> Result<StateDict, WeightsError> {
    use safetensors::Dtype;
    let err = |message: String| WeightsError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let chunks = |n: usize| raw.chunks_exact(n);
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(
                chunks(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect(),
            ),
            Dtype::F64 => HostData::F32(
                chunks(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
                    .collect(),
            ),
            Dtype::F16 => HostData::F32(
                chunks(2)
                    .map(|c| burn::tensor::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => HostData::F32(
                chunks(2)
                    .map(|c| burn::tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::I64 => HostData::I64(
                chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                    .collect(),
            ),
            Dtype::I32 => HostData::I64(
                chunks(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4"))))
                    .collect(),
            ),
            Dtype::U8 | Dtype::BOOL => HostData::I64(raw.iter().map(|&b| i64::from(b)).collect()),
            other => return Err(err(format!("tensor {name}: unsupported dtype {other:?}"))),
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Walking the model with torchvision names
// ---------------------------------------------------------------------------

/// Calls `f` on every leaf layer with its torchvision name (`conv1`, `layer1.0.bn2`,
/// `layer2.0.downsample.0`, `fc`, …), in torchvision's state-dict order.
trait LeafVisitor<B: Backend> {
    fn conv(&mut self, name: &str, c: &Conv2d<B>);
    fn bn(&mut self, name: &str, b: &BatchNorm<B>);
    fn linear(&mut self, name: &str, l: &Linear<B>);
}

fn visit<B: Backend>(m: &ResNet<B>, v: &mut impl LeafVisitor<B>) {
    v.conv("conv1", &m.conv1);
    v.bn("bn1", &m.bn1);
    for (li, layer) in [&m.layer1, &m.layer2, &m.layer3, &m.layer4]
        .iter()
        .enumerate()
    {
        for (bi, block) in layer.iter().enumerate() {
            let p = format!("layer{}.{bi}", li + 1);
            v.conv(&format!("{p}.conv1"), &block.conv1);
            v.bn(&format!("{p}.bn1"), &block.bn1);
            v.conv(&format!("{p}.conv2"), &block.conv2);
            v.bn(&format!("{p}.bn2"), &block.bn2);
            if let (Some(c3), Some(b3)) = (&block.conv3, &block.bn3) {
                v.conv(&format!("{p}.conv3"), c3);
                v.bn(&format!("{p}.bn3"), b3);
            }
            if let Some(d) = &block.downsample {
                v.conv(&format!("{p}.downsample.0"), &d.conv);
                v.bn(&format!("{p}.downsample.1"), &d.bn);
            }
        }
    }
    v.linear("fc", &m.fc);
}

/// Rebuilds the model leaf by leaf (same names and order as [`visit`]).
trait LeafMapper<B: Backend> {
    fn conv(&mut self, name: &str, c: Conv2d<B>) -> Result<Conv2d<B>, WeightsError>;
    fn bn(&mut self, name: &str, b: BatchNorm<B>) -> Result<BatchNorm<B>, WeightsError>;
    fn linear(&mut self, name: &str, l: Linear<B>) -> Result<Linear<B>, WeightsError>;
}

fn map_block<B: Backend>(
    f: &mut impl LeafMapper<B>,
    p: &str,
    b: Block<B>,
) -> Result<Block<B>, WeightsError> {
    Ok(Block {
        conv1: f.conv(&format!("{p}.conv1"), b.conv1)?,
        bn1: f.bn(&format!("{p}.bn1"), b.bn1)?,
        conv2: f.conv(&format!("{p}.conv2"), b.conv2)?,
        bn2: f.bn(&format!("{p}.bn2"), b.bn2)?,
        conv3: b
            .conv3
            .map(|c| f.conv(&format!("{p}.conv3"), c))
            .transpose()?,
        bn3: b.bn3.map(|c| f.bn(&format!("{p}.bn3"), c)).transpose()?,
        downsample: match b.downsample {
            Some(d) => Some(Downsample {
                conv: f.conv(&format!("{p}.downsample.0"), d.conv)?,
                bn: f.bn(&format!("{p}.downsample.1"), d.bn)?,
            }),
            None => None,
        },
    })
}

fn map_layer<B: Backend>(
    f: &mut impl LeafMapper<B>,
    li: usize,
    layer: Vec<Block<B>>,
) -> Result<Vec<Block<B>>, WeightsError> {
    layer
        .into_iter()
        .enumerate()
        .map(|(bi, b)| map_block(f, &format!("layer{li}.{bi}"), b))
        .collect()
}

/// Rebuilds the model through `f`, leaf by leaf, in the order of [`visit`] (so errors
/// name the first offending tensor in torchvision's order).
fn map_model<B: Backend>(
    m: ResNet<B>,
    f: &mut impl LeafMapper<B>,
) -> Result<ResNet<B>, WeightsError> {
    let ResNet {
        conv1,
        bn1,
        maxpool,
        layer1,
        layer2,
        layer3,
        layer4,
        fc,
    } = m;
    Ok(ResNet {
        conv1: f.conv("conv1", conv1)?,
        bn1: f.bn("bn1", bn1)?,
        maxpool,
        layer1: map_layer(f, 1, layer1)?,
        layer2: map_layer(f, 2, layer2)?,
        layer3: map_layer(f, 3, layer3)?,
        layer4: map_layer(f, 4, layer4)?,
        fc: f.linear("fc", fc)?,
    })
}

/// The kind of value a state-dict key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Float,
    /// `num_batches_tracked`: an i64 scalar, ignored on load.
    Counter,
}

/// Names and torch shapes of every state-dict entry of `model`, in torchvision order.
struct KeyLister(Vec<(String, Vec<usize>, Slot)>);

impl<B: Backend> LeafVisitor<B> for KeyLister {
    fn conv(&mut self, name: &str, c: &Conv2d<B>) {
        self.0.push((
            format!("{name}.weight"),
            c.weight.dims().to_vec(),
            Slot::Float,
        ));
        if let Some(b) = &c.bias {
            self.0
                .push((format!("{name}.bias"), b.dims().to_vec(), Slot::Float));
        }
    }
    fn bn(&mut self, name: &str, b: &BatchNorm<B>) {
        let n = b.gamma.dims().to_vec();
        for k in ["weight", "bias", "running_mean", "running_var"] {
            self.0.push((format!("{name}.{k}"), n.clone(), Slot::Float));
        }
        self.0
            .push((format!("{name}.num_batches_tracked"), vec![], Slot::Counter));
    }
    fn linear(&mut self, name: &str, l: &Linear<B>) {
        let [i, o] = l.weight.dims();
        self.0
            .push((format!("{name}.weight"), vec![o, i], Slot::Float));
        if let Some(b) = &l.bias {
            self.0
                .push((format!("{name}.bias"), b.dims().to_vec(), Slot::Float));
        }
    }
}

fn key_list<B: Backend>(model: &ResNet<B>) -> Vec<(String, Vec<usize>, Slot)> {
    let mut l = KeyLister(Vec::new());
    visit(model, &mut l);
    l.0
}

/// torchvision's state-dict keys for `model`, in order (including
/// `num_batches_tracked`): exactly the keys [`save_safetensors`] writes.
pub fn state_dict_keys<B: Backend>(model: &ResNet<B>) -> Vec<String> {
    key_list(model).into_iter().map(|(k, _, _)| k).collect()
}

// ---------------------------------------------------------------------------
// Model → state dict (saving)
// ---------------------------------------------------------------------------

fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

struct Exporter(StateDict);

impl Exporter {
    fn put(&mut self, key: String, shape: Vec<usize>, data: Vec<f32>) {
        self.0.insert(
            key,
            HostTensor {
                shape,
                data: HostData::F32(data),
            },
        );
    }
}

impl<B: Backend> LeafVisitor<B> for Exporter {
    fn conv(&mut self, name: &str, c: &Conv2d<B>) {
        self.put(
            format!("{name}.weight"),
            c.weight.dims().to_vec(),
            to_f32(c.weight.val()),
        );
        if let Some(b) = &c.bias {
            self.put(format!("{name}.bias"), b.dims().to_vec(), to_f32(b.val()));
        }
    }
    fn bn(&mut self, name: &str, b: &BatchNorm<B>) {
        let n = b.gamma.dims().to_vec();
        self.put(format!("{name}.weight"), n.clone(), to_f32(b.gamma.val()));
        self.put(format!("{name}.bias"), n.clone(), to_f32(b.beta.val()));
        self.put(
            format!("{name}.running_mean"),
            n.clone(),
            to_f32(b.running_mean.value_sync()),
        );
        self.put(
            format!("{name}.running_var"),
            n,
            to_f32(b.running_var.value_sync()),
        );
        self.0.insert(
            format!("{name}.num_batches_tracked"),
            HostTensor {
                shape: vec![],
                data: HostData::I64(vec![0]),
            },
        );
    }
    fn linear(&mut self, name: &str, l: &Linear<B>) {
        let [i, o] = l.weight.dims();
        let w = to_f32(l.weight.val());
        self.put(format!("{name}.weight"), vec![o, i], transpose(&w, i, o));
        if let Some(b) = &l.bias {
            self.put(format!("{name}.bias"), b.dims().to_vec(), to_f32(b.val()));
        }
    }
}

/// Row-major `[rows, cols]` → row-major `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// The model's weights as a torchvision state dict (f32, torch layouts).
pub fn to_state_dict<B: Backend>(model: &ResNet<B>) -> StateDict {
    let mut e = Exporter(StateDict::new());
    visit(model, &mut e);
    e.0
}

struct SafeView<'a> {
    dtype: safetensors::Dtype,
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl safetensors::View for SafeView<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes a state dict as safetensors (`{"format": "pt"}` metadata, like
/// `safetensors.torch.save_file`), through a temporary file renamed into place.
pub fn write_safetensors(sd: &StateDict, path: &Path) -> Result<(), WeightsError> {
    let views = sd.iter().map(|(k, t)| {
        let (dtype, bytes) = match &t.data {
            HostData::F32(v) => (
                safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            HostData::I64(v) => (
                safetensors::Dtype::I64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        };
        (
            k.as_str(),
            SafeView {
                dtype,
                shape: &t.shape,
                bytes,
            },
        )
    });
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes = safetensors::serialize(views, metadata).map_err(|e| WeightsError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Saves the model as `.safetensors` with torchvision's key names, f32 tensors and an
/// i64 `num_batches_tracked` per BatchNorm, so that
/// `torchvision.models.resnetXX(num_classes=N).load_state_dict(load_file(path))`
/// accepts it with `strict=True`.
pub fn save_safetensors<B: Backend>(model: &ResNet<B>, path: &Path) -> Result<(), WeightsError> {
    write_safetensors(&to_state_dict(model), path)
}

// ---------------------------------------------------------------------------
// State dict → model (loading)
// ---------------------------------------------------------------------------

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
            let hint = if key.starts_with("fc.") {
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
    fn conv(&mut self, name: &str, mut c: Conv2d<B>) -> Result<Conv2d<B>, WeightsError> {
        c.weight = self.param(c.weight, &format!("{name}.weight"))?;
        if let Some(b) = c.bias.take() {
            c.bias = Some(self.param(b, &format!("{name}.bias"))?);
        }
        Ok(c)
    }
    fn bn(&mut self, name: &str, mut b: BatchNorm<B>) -> Result<BatchNorm<B>, WeightsError> {
        b.gamma = self.param(b.gamma, &format!("{name}.weight"))?;
        b.beta = self.param(b.beta, &format!("{name}.bias"))?;
        b.running_mean = self.running(b.running_mean, &format!("{name}.running_mean"))?;
        b.running_var = self.running(b.running_var, &format!("{name}.running_var"))?;
        // num_batches_tracked: accepted and ignored.
        self.used
            .insert(format!("{}{name}.num_batches_tracked", self.prefix));
        Ok(b)
    }
    fn linear(&mut self, name: &str, mut l: Linear<B>) -> Result<Linear<B>, WeightsError> {
        let [i, o] = l.weight.dims();
        let key = format!("{name}.weight");
        if let Some(values) = self.fetch(&key, &[o, i])? {
            let t = Tensor::<B, 2>::from_data(
                TensorData::new(transpose(&values, o, i), [i, o]),
                self.device,
            );
            let id = l.weight.id;
            l.weight = l.weight.transform_for_load(t, id);
        }
        if let Some(b) = l.bias.take() {
            l.bias = Some(self.param(b, &format!("{name}.bias"))?);
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
fn apply_state_dict<B: Backend>(
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
    let skip: BTreeSet<String> = match head {
        HeadPolicy::Reinit => ["fc.weight", "fc.bias"].map(String::from).into(),
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
        .filter(|k| !(head == HeadPolicy::Reinit && k.starts_with("fc.")))
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
        } else if head == HeadPolicy::Keep && backbone_missing.iter().all(|k| k.starts_with("fc."))
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResNetConfig;
    use burn::backend::Flex;

    type B = Flex;

    fn model(classes: usize) -> ResNet<B> {
        ResNetConfig::new(18, classes).init::<B>(&Default::default())
    }

    fn logits(m: &ResNet<B>) -> Vec<f32> {
        let device = Default::default();
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(
                (0..2 * 3 * 32 * 32)
                    .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
                    .collect::<Vec<_>>(),
                [2, 3, 32, 32],
            ),
            &device,
        );
        m.forward(x).into_data().to_vec::<f32>().unwrap()
    }

    /// Perturbs BatchNorm statistics so that a loader that skipped them would be caught.
    fn with_random_stats(m: ResNet<B>) -> ResNet<B> {
        let mut sd = to_state_dict(&m);
        for (k, t) in sd.iter_mut() {
            if let HostData::F32(v) = &mut t.data {
                if k.ends_with("running_var") {
                    v.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = 0.5 + (i % 7) as f32 / 7.0);
                } else if k.ends_with("running_mean") || k.ends_with("bn1.bias") {
                    v.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = ((i % 5) as f32 - 2.0) / 10.0);
                }
            }
        }
        load_state_dict(m, &sd, Path::new("test"), &Default::default()).unwrap()
    }

    #[test]
    fn save_then_load_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let a = with_random_stats(model(5));
        save_safetensors(&a, &path).unwrap();
        let b = load_safetensors(model(5), &path, &Default::default()).unwrap();
        assert_eq!(to_state_dict(&a), to_state_dict(&b));
        assert_eq!(logits(&a), logits(&b));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn saved_keys_are_torchvisions() {
        let m = model(10);
        let keys = state_dict_keys(&m);
        assert_eq!(keys.len(), 122); // torchvision resnet18().state_dict() has 122 entries
        assert_eq!(keys[0], "conv1.weight");
        assert!(keys.contains(&"layer2.0.downsample.0.weight".to_string()));
        assert!(keys.contains(&"layer4.1.bn2.num_batches_tracked".to_string()));
        assert_eq!(keys.last().unwrap(), "fc.bias");
        let sd = to_state_dict(&m);
        assert_eq!(sd["fc.weight"].shape, vec![10, 512]);
        assert_eq!(sd["bn1.num_batches_tracked"].data, HostData::I64(vec![0]));
    }

    fn prefixed(sd: &StateDict, prefix: &str) -> StateDict {
        sd.iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
            .collect()
    }

    #[test]
    fn prefix_is_stripped_and_extras_reported() {
        let src = with_random_stats(model(10));
        let mut sd = prefixed(&to_state_dict(&src), "backbone.");
        sd.insert(
            "head2.weight".into(),
            HostTensor {
                shape: vec![1],
                data: HostData::F32(vec![1.0]),
            },
        );
        let (m, report) = apply_state_dict(
            model(10),
            &sd,
            Path::new("x.pth"),
            HeadPolicy::Keep,
            false,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(report.stripped_prefix.as_deref(), Some("backbone."));
        assert_eq!(report.unexpected, vec!["head2.weight".to_string()]);
        assert!(report.missing.is_empty());
        assert!(!report.reinitialised_head);
        // resnet18 has 122 entries, 20 of them num_batches_tracked.
        assert_eq!(report.loaded, 102);
        assert_eq!(logits(&m), logits(&src));
    }

    #[test]
    fn head_is_reinitialised_or_kept() {
        let src = with_random_stats(model(1000));
        let sd = to_state_dict(&src);
        // Reinit: a 1000-class file into a 10-class model.
        let fresh = model(10);
        let fresh_fc = to_state_dict(&fresh)["fc.weight"].clone();
        let (m, report) = apply_state_dict(
            fresh,
            &sd,
            Path::new("x.pth"),
            HeadPolicy::Reinit,
            false,
            &Default::default(),
        )
        .unwrap();
        assert!(report.reinitialised_head);
        assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
        let out = to_state_dict(&m);
        assert_eq!(out["fc.weight"], fresh_fc);
        assert_eq!(out["conv1.weight"], sd["conv1.weight"]);
        assert_eq!(
            out["layer3.1.bn2.running_var"],
            sd["layer3.1.bn2.running_var"]
        );
        // Keep with a different class count: an error naming fc.weight.
        let e = apply_state_dict(
            model(10),
            &sd,
            Path::new("x.pth"),
            HeadPolicy::Keep,
            false,
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, WeightsError::ShapeMismatch { ref key, .. } if key == "fc.weight"),
            "{e}"
        );
        // Keep with the same count: identical network.
        let (m, _) = apply_state_dict(
            model(1000),
            &sd,
            Path::new("x.pth"),
            HeadPolicy::Keep,
            false,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(to_state_dict(&m), sd);
    }

    #[test]
    fn missing_backbone_tensors_are_an_error_listing_them() {
        let mut sd = to_state_dict(&model(10));
        sd.remove("layer1.0.conv1.weight");
        sd.remove("bn1.running_var");
        let e = apply_state_dict(
            model(10),
            &sd,
            Path::new("w.safetensors"),
            HeadPolicy::Reinit,
            false,
            &Default::default(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("w.safetensors"), "{msg}");
        assert!(msg.contains("2 tensor(s) missing"), "{msg}");
        assert!(msg.contains("layer1.0.conv1.weight") && msg.contains("bn1.running_var"));
    }

    #[test]
    fn a_file_for_another_depth_is_rejected() {
        let sd = to_state_dict(&ResNetConfig::new(34, 10).init::<B>(&Default::default()));
        let e = apply_state_dict(
            model(10),
            &sd,
            Path::new("r34.pth"),
            HeadPolicy::Reinit,
            false,
            &Default::default(),
        );
        // resnet34 has every resnet18 key (with the same shapes) plus more blocks: the
        // extra blocks are unexpected, so a non-strict load succeeds but reports them.
        let (_, report) = e.unwrap();
        assert!(report.unexpected.iter().any(|k| k.starts_with("layer1.2.")));
        // The other way round, resnet18 weights into resnet34 miss blocks.
        let sd18 = to_state_dict(&model(10));
        let e = apply_state_dict(
            ResNetConfig::new(34, 10).init::<B>(&Default::default()),
            &sd18,
            Path::new("r18.pth"),
            HeadPolicy::Reinit,
            false,
            &Default::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("layer1.2.conv1.weight"), "{e}");
    }

    #[test]
    fn strict_load_rejects_extra_tensors() {
        let mut sd = to_state_dict(&model(3));
        sd.insert(
            "extra".into(),
            HostTensor {
                shape: vec![],
                data: HostData::F32(vec![0.0]),
            },
        );
        let e = load_state_dict(
            model(3),
            &sd,
            Path::new("m.safetensors"),
            &Default::default(),
        )
        .unwrap_err();
        assert!(matches!(e, WeightsError::UnexpectedKeys { .. }), "{e}");
    }

    #[test]
    fn unknown_bytes_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.pth");
        std::fs::write(&p, b"hello world, not weights").unwrap();
        let e = read_state_dict(&p).unwrap_err();
        assert!(e.to_string().contains("not a PyTorch"), "{e}");
        let e = read_state_dict(&dir.path().join("absent.pth")).unwrap_err();
        assert!(matches!(e, WeightsError::Io { .. }));
    }

    #[test]
    fn transposed_linear_round_trips() {
        let m = model(4);
        let w = m.fc.weight.val();
        let sd = to_state_dict(&m);
        // torch's fc.weight[o][i] is burn's weight[i][o].
        let burn_w = w.clone().into_data().to_vec::<f32>().unwrap();
        let HostData::F32(torch_w) = &sd["fc.weight"].data else {
            panic!()
        };
        assert_eq!(torch_w[512 + 7], burn_w[7 * 4 + 1]);
    }
}
