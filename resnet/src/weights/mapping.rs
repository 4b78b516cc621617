//! The model under its tensor names (torchvision's state-dict keys, or MXNet's
//! parameter names for MXNet's layout): walking it leaf by leaf
//! ([`LeafVisitor`], [`visit`]), rebuilding it leaf by leaf ([`LeafMapper`],
//! [`map_model`]), the list of its keys and shapes ([`KeyLister`]) and its export as a
//! state dict ([`Exporter`]).

use burn::module::RunningState;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::backend::host_f32;
use crate::model::{Block, Downsample, Layout, ResNet};

use super::{HostData, HostTensor, StateDict, WeightsError};

// ---------------------------------------------------------------------------
// Walking the model with torchvision's or MXNet's names
// ---------------------------------------------------------------------------

/// How tensors are named: torchvision's state-dict keys (`layer1.0.bn1.running_mean`,
/// for [`Layout::Torchvision`]) or MXNet's parameter names without their `arg:`/`aux:`
/// prefix (`stage1_unit1_bn1_moving_mean`, for [`Layout::Mxnet`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Naming {
    Torch,
    Mxnet,
}

impl Naming {
    pub(super) fn of(layout: Layout) -> Self {
        match layout {
            Layout::Torchvision => Naming::Torch,
            Layout::Mxnet => Naming::Mxnet,
        }
    }
}

/// The names of one layer's tensors.
pub(super) struct Keys {
    layer: String,
    naming: Naming,
}

impl Keys {
    fn key(&self, torch: &str, mxnet: &str) -> String {
        match self.naming {
            Naming::Torch => format!("{}.{torch}", self.layer),
            Naming::Mxnet => format!("{}_{mxnet}", self.layer),
        }
    }
    /// A convolution's or a linear layer's weight.
    pub(super) fn weight(&self) -> String {
        self.key("weight", "weight")
    }
    /// A convolution's or a linear layer's bias.
    pub(super) fn bias(&self) -> String {
        self.key("bias", "bias")
    }
    /// A BatchNorm's γ.
    pub(super) fn gamma(&self) -> String {
        self.key("weight", "gamma")
    }
    /// A BatchNorm's β.
    pub(super) fn beta(&self) -> String {
        self.key("bias", "beta")
    }
    /// A BatchNorm's running mean.
    pub(super) fn mean(&self) -> String {
        self.key("running_mean", "moving_mean")
    }
    /// A BatchNorm's running variance.
    pub(super) fn var(&self) -> String {
        self.key("running_var", "moving_var")
    }
    /// torch's `num_batches_tracked` (MXNet has none).
    pub(super) fn counter(&self) -> Option<String> {
        (self.naming == Naming::Torch).then(|| self.key("num_batches_tracked", ""))
    }
}

/// Walks the model leaf by leaf with names, in the state-dict order of its layout
/// (torchvision's, or MXNet's parameter order), calling the visitor's `conv`, `bn`,
/// `linear`.
pub(super) trait LeafVisitor<B: Backend> {
    fn conv(&mut self, k: &Keys, c: &Conv2d<B>);
    fn bn(&mut self, k: &Keys, b: &BatchNorm<B>);
    fn linear(&mut self, k: &Keys, l: &Linear<B>);
}

/// A convolution or a BatchNorm of a block.
enum LeafRef<'a, B: Backend> {
    Conv(&'a Conv2d<B>),
    Bn(&'a BatchNorm<B>),
}

/// The projection shortcut's layer names: torchvision's `downsample.0`/`.1`, MXNet's
/// `sc` (a convolution alone).
fn shortcut_names(layout: Layout) -> (&'static str, &'static str) {
    match layout {
        Layout::Mxnet => ("sc", "sc_bn"),
        Layout::Torchvision => ("downsample.0", "downsample.1"),
    }
}

/// A block's layers in its layout's order with their names (torchvision's `conv1`,
/// `bn1`, …, `downsample.0`/`.1`; MXNet's `bn1`, `conv1`, …, `sc`).
fn block_leaves<B: Backend>(b: &Block<B>) -> Vec<(&'static str, LeafRef<'_, B>)> {
    let mut v = vec![
        ("conv1", LeafRef::Conv(&b.conv1)),
        ("bn1", LeafRef::Bn(&b.bn1)),
        ("conv2", LeafRef::Conv(&b.conv2)),
        ("bn2", LeafRef::Bn(&b.bn2)),
    ];
    if let (Some(c3), Some(b3)) = (&b.conv3, &b.bn3) {
        v.push(("conv3", LeafRef::Conv(c3)));
        v.push(("bn3", LeafRef::Bn(b3)));
    }
    if b.layout == Layout::Mxnet {
        // Pre-activation: each BatchNorm before its convolution.
        for pair in v.chunks_mut(2) {
            pair.swap(0, 1);
        }
    }
    if let Some(d) = &b.downsample {
        let (conv, bn) = shortcut_names(b.layout);
        v.push((conv, LeafRef::Conv(&d.conv)));
        if let Some(b) = &d.bn {
            v.push((bn, LeafRef::Bn(b)));
        }
    }
    v
}

/// The name of block `bi` (0-based) of stage `li` (1-based).
fn block_name(naming: Naming, li: usize, bi: usize) -> String {
    match naming {
        Naming::Torch => format!("layer{li}.{bi}"),
        Naming::Mxnet => format!("stage{li}_unit{}", bi + 1),
    }
}

/// The name of a block's layer: `layer1.0.conv1`, `stage1_unit1_conv1`.
fn leaf_name(naming: Naming, block: &str, leaf: &str) -> String {
    match naming {
        Naming::Torch => format!("{block}.{leaf}"),
        Naming::Mxnet => format!("{block}_{leaf}"),
    }
}

/// The names of the layers outside the blocks: input BatchNorm, stem convolution and
/// BatchNorm, final BatchNorm, classifier.
struct Outer {
    bn_data: &'static str,
    conv1: &'static str,
    bn1: &'static str,
    bn_out: &'static str,
    fc: &'static str,
}

fn outer(naming: Naming) -> Outer {
    match naming {
        Naming::Torch => Outer {
            bn_data: "bn_data",
            conv1: "conv1",
            bn1: "bn1",
            bn_out: "bn_out",
            fc: "fc",
        },
        Naming::Mxnet => Outer {
            bn_data: "bn_data",
            conv1: "conv0",
            bn1: "bn0",
            bn_out: "bn1",
            fc: "fc1",
        },
    }
}

pub(super) fn visit<B: Backend>(m: &ResNet<B>, v: &mut impl LeafVisitor<B>) {
    let naming = Naming::of(m.layout());
    let keys = |layer: String| Keys { layer, naming };
    let o = outer(naming);
    if let Some(bn) = &m.bn_data {
        v.bn(&keys(o.bn_data.into()), bn);
    }
    v.conv(&keys(o.conv1.into()), &m.conv1);
    v.bn(&keys(o.bn1.into()), &m.bn1);
    for (li, layer) in [&m.layer1, &m.layer2, &m.layer3, &m.layer4]
        .iter()
        .enumerate()
    {
        for (bi, block) in layer.iter().enumerate() {
            let p = block_name(naming, li + 1, bi);
            for (name, leaf) in block_leaves(block) {
                let k = keys(leaf_name(naming, &p, name));
                match leaf {
                    LeafRef::Conv(c) => v.conv(&k, c),
                    LeafRef::Bn(b) => v.bn(&k, b),
                }
            }
        }
    }
    if let Some(bn) = &m.bn_out {
        v.bn(&keys(o.bn_out.into()), bn);
    }
    v.linear(&keys(o.fc.into()), &m.fc);
}
/// Rebuilds the model leaf by leaf (same names as [`visit`]).
pub(super) trait LeafMapper<B: Backend> {
    fn conv(&mut self, k: &Keys, c: Conv2d<B>) -> Result<Conv2d<B>, WeightsError>;
    fn bn(&mut self, k: &Keys, b: BatchNorm<B>) -> Result<BatchNorm<B>, WeightsError>;
    fn linear(&mut self, k: &Keys, l: Linear<B>) -> Result<Linear<B>, WeightsError>;
}

fn map_block<B: Backend>(
    f: &mut impl LeafMapper<B>,
    naming: Naming,
    p: &str,
    b: Block<B>,
) -> Result<Block<B>, WeightsError> {
    let k = |leaf: &str| Keys {
        layer: leaf_name(naming, p, leaf),
        naming,
    };
    let (sc_conv, sc_bn) = shortcut_names(b.layout);
    Ok(Block {
        layout: b.layout,
        conv1: f.conv(&k("conv1"), b.conv1)?,
        bn1: f.bn(&k("bn1"), b.bn1)?,
        conv2: f.conv(&k("conv2"), b.conv2)?,
        bn2: f.bn(&k("bn2"), b.bn2)?,
        conv3: b.conv3.map(|c| f.conv(&k("conv3"), c)).transpose()?,
        bn3: b.bn3.map(|c| f.bn(&k("bn3"), c)).transpose()?,
        downsample: match b.downsample {
            Some(d) => Some(Downsample {
                conv: f.conv(&k(sc_conv), d.conv)?,
                bn: d.bn.map(|bn| f.bn(&k(sc_bn), bn)).transpose()?,
            }),
            None => None,
        },
    })
}

fn map_layer<B: Backend>(
    f: &mut impl LeafMapper<B>,
    naming: Naming,
    li: usize,
    layer: Vec<Block<B>>,
) -> Result<Vec<Block<B>>, WeightsError> {
    layer
        .into_iter()
        .enumerate()
        .map(|(bi, b)| map_block(f, naming, &block_name(naming, li, bi), b))
        .collect()
}

/// Rebuilds the model through `f`, leaf by leaf, with the names of [`visit`].
pub(super) fn map_model<B: Backend>(
    m: ResNet<B>,
    f: &mut impl LeafMapper<B>,
) -> Result<ResNet<B>, WeightsError> {
    let naming = Naming::of(m.layout());
    let keys = |layer: &str| Keys {
        layer: layer.to_string(),
        naming,
    };
    let o = outer(naming);
    let ResNet {
        layout,
        bn_data,
        conv1,
        bn1,
        maxpool,
        layer1,
        layer2,
        layer3,
        layer4,
        bn_out,
        fc,
    } = m;
    Ok(ResNet {
        layout,
        bn_data: bn_data.map(|b| f.bn(&keys(o.bn_data), b)).transpose()?,
        conv1: f.conv(&keys(o.conv1), conv1)?,
        bn1: f.bn(&keys(o.bn1), bn1)?,
        maxpool,
        layer1: map_layer(f, naming, 1, layer1)?,
        layer2: map_layer(f, naming, 2, layer2)?,
        layer3: map_layer(f, naming, 3, layer3)?,
        layer4: map_layer(f, naming, 4, layer4)?,
        bn_out: bn_out.map(|b| f.bn(&keys(o.bn_out), b)).transpose()?,
        fc: f.linear(&keys(o.fc), fc)?,
    })
}

/// The kind of value a state-dict key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Float,
    /// `num_batches_tracked`: an i64 scalar, ignored on load.
    Counter,
}

/// Names and torch shapes of every state-dict entry of `model`, in torchvision order.
pub(super) struct KeyLister(Vec<(String, Vec<usize>, Slot)>);

impl<B: Backend> LeafVisitor<B> for KeyLister {
    fn conv(&mut self, k: &Keys, c: &Conv2d<B>) {
        self.0
            .push((k.weight(), c.weight.dims().to_vec(), Slot::Float));
        if let Some(b) = &c.bias {
            self.0.push((k.bias(), b.dims().to_vec(), Slot::Float));
        }
    }
    fn bn(&mut self, k: &Keys, b: &BatchNorm<B>) {
        let n = b.gamma.dims().to_vec();
        for key in [k.gamma(), k.beta(), k.mean(), k.var()] {
            self.0.push((key, n.clone(), Slot::Float));
        }
        if let Some(key) = k.counter() {
            self.0.push((key, vec![], Slot::Counter));
        }
    }
    fn linear(&mut self, k: &Keys, l: &Linear<B>) {
        let [i, o] = l.weight.dims();
        self.0.push((k.weight(), vec![o, i], Slot::Float));
        if let Some(b) = &l.bias {
            self.0.push((k.bias(), b.dims().to_vec(), Slot::Float));
        }
    }
}

pub(super) fn key_list<B: Backend>(model: &ResNet<B>) -> Vec<(String, Vec<usize>, Slot)> {
    let mut l = KeyLister(Vec::new());
    visit(model, &mut l);
    l.0
}

/// torchvision's state-dict keys for `model`, in order (including
/// `num_batches_tracked`): exactly the keys [`save_safetensors`](super::save_safetensors) writes.
pub fn state_dict_keys<B: Backend>(model: &ResNet<B>) -> Vec<String> {
    key_list(model).into_iter().map(|(k, _, _)| k).collect()
}

// ---------------------------------------------------------------------------
// Model → state dict (saving)
// ---------------------------------------------------------------------------

pub(super) struct Exporter(StateDict);

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
    fn conv(&mut self, k: &Keys, c: &Conv2d<B>) {
        self.put(
            k.weight(),
            c.weight.dims().to_vec(),
            host_f32(c.weight.val()),
        );
        if let Some(b) = &c.bias {
            self.put(k.bias(), b.dims().to_vec(), host_f32(b.val()));
        }
    }
    fn bn(&mut self, k: &Keys, b: &BatchNorm<B>) {
        let n = b.gamma.dims().to_vec();
        self.put(k.gamma(), n.clone(), host_f32(b.gamma.val()));
        self.put(k.beta(), n.clone(), host_f32(b.beta.val()));
        self.put(k.mean(), n.clone(), host_f32(b.running_mean.value_sync()));
        self.put(k.var(), n, host_f32(b.running_var.value_sync()));
        if let Some(key) = k.counter() {
            self.0.insert(
                key,
                HostTensor {
                    shape: vec![],
                    data: HostData::I64(vec![0]),
                },
            );
        }
    }
    fn linear(&mut self, k: &Keys, l: &Linear<B>) {
        let [i, o] = l.weight.dims();
        let w = host_f32(l.weight.val());
        self.put(k.weight(), vec![o, i], transpose(&w, i, o));
        if let Some(b) = &l.bias {
            self.put(k.bias(), b.dims().to_vec(), host_f32(b.val()));
        }
    }
}

/// Row-major `[rows, cols]` → row-major `[cols, rows]`.
pub(super) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
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

// ---------------------------------------------------------------------------
// BatchNorm running statistics as one buffer (multi-process training)
// ---------------------------------------------------------------------------

struct StatsReader(Vec<f32>);

impl<B: Backend> LeafVisitor<B> for StatsReader {
    fn conv(&mut self, _: &Keys, _: &Conv2d<B>) {}
    fn bn(&mut self, _: &Keys, b: &BatchNorm<B>) {
        self.0.extend(host_f32(b.running_mean.value_sync()));
        self.0.extend(host_f32(b.running_var.value_sync()));
    }
    fn linear(&mut self, _: &Keys, _: &Linear<B>) {}
}

struct StatsWriter<'a>(&'a [f32]);

impl StatsWriter<'_> {
    fn take<B: Backend>(
        &mut self,
        k: &Keys,
        what: &str,
        like: Tensor<B, 1>,
    ) -> Result<RunningState<Tensor<B, 1>>, WeightsError> {
        let n = like.dims()[0];
        if self.0.len() < n {
            return Err(WeightsError::RunningStats(format!(
                "the buffer ends before {}'s {what}",
                k.layer
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        let device = like.device();
        Ok(RunningState::new(Tensor::from_data(
            TensorData::new(head.to_vec(), [n]),
            &device,
        )))
    }
}

impl<B: Backend> LeafMapper<B> for StatsWriter<'_> {
    fn conv(&mut self, _: &Keys, c: Conv2d<B>) -> Result<Conv2d<B>, WeightsError> {
        Ok(c)
    }
    fn bn(&mut self, k: &Keys, mut b: BatchNorm<B>) -> Result<BatchNorm<B>, WeightsError> {
        b.running_mean = self.take(k, "running mean", b.running_mean.value_sync())?;
        b.running_var = self.take(k, "running variance", b.running_var.value_sync())?;
        Ok(b)
    }
    fn linear(&mut self, _: &Keys, l: Linear<B>) -> Result<Linear<B>, WeightsError> {
        Ok(l)
    }
}

/// Every BatchNorm's running mean and variance, in the network's order, as one buffer
/// (what [`with_running_stats`] takes back).
pub fn running_stats<B: Backend>(model: &ResNet<B>) -> Vec<f32> {
    let mut r = StatsReader(Vec::new());
    visit(model, &mut r);
    r.0
}

/// `model` with the running statistics of `stats`, laid out as [`running_stats`] gives
/// them; the weights are untouched (same parameters, same ids).
pub fn with_running_stats<B: Backend>(
    model: ResNet<B>,
    stats: &[f32],
) -> Result<ResNet<B>, WeightsError> {
    let mut w = StatsWriter(stats);
    let model = map_model(model, &mut w)?;
    if !w.0.is_empty() {
        return Err(WeightsError::RunningStats(format!(
            "{} values left over",
            w.0.len()
        )));
    }
    Ok(model)
}
