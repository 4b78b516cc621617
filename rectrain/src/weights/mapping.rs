//! The model under torchvision's state-dict names: walking it leaf by leaf
//! ([`LeafVisitor`], [`visit`]), rebuilding it leaf by leaf ([`LeafMapper`],
//! [`map_model`]), the list of its keys and shapes ([`KeyLister`]) and its export as a
//! state dict ([`Exporter`]).

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::model::{Block, Downsample, ResNet};

use super::{HostData, HostTensor, StateDict, WeightsError};

// ---------------------------------------------------------------------------
// Walking the model with torchvision names
// ---------------------------------------------------------------------------

/// Calls `f` on every leaf layer with its torchvision name (`conv1`, `layer1.0.bn2`,
/// `layer2.0.downsample.0`, `fc`, …), in torchvision's state-dict order.
pub(super) trait LeafVisitor<B: Backend> {
    fn conv(&mut self, name: &str, c: &Conv2d<B>);
    fn bn(&mut self, name: &str, b: &BatchNorm<B>);
    fn linear(&mut self, name: &str, l: &Linear<B>);
}

pub(super) fn visit<B: Backend>(m: &ResNet<B>, v: &mut impl LeafVisitor<B>) {
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
pub(super) trait LeafMapper<B: Backend> {
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
pub(super) fn map_model<B: Backend>(
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
pub(super) enum Slot {
    Float,
    /// `num_batches_tracked`: an i64 scalar, ignored on load.
    Counter,
}

/// Names and torch shapes of every state-dict entry of `model`, in torchvision order.
pub(super) struct KeyLister(Vec<(String, Vec<usize>, Slot)>);

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

fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

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
