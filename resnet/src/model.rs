//! ResNet with torchvision's layout and parameter names.
//!
//! The module tree mirrors `torchvision.models.resnet` field for field, so that a
//! torchvision `state_dict` maps onto it one key per tensor (see [`crate::weights`]):
//!
//! ```text
//! conv1, bn1, (relu, maxpool), layer1 .. layer4, (avgpool), fc
//! layerN.I.conv1 / bn1 / conv2 / bn2 [/ conv3 / bn3] [/ downsample.0 (conv) / downsample.1 (bn)]
//! ```
//!
//! Depths 18 and 34 use the basic block (two 3×3 convolutions), 50, 101, 152 and 200
//! the bottleneck block (1×1, 3×3, 1×1, expansion 4) with the stride on the 3×3
//! convolution ("ResNet v1.5", as torchvision). ResNet-200 is the bottleneck network
//! with `[3, 24, 36, 3]` blocks. The classifier pools adaptively to 1×1, so any input
//! size of at least 1×1 works (the strided layers shrink the feature maps by 32, but
//! never below 1×1: 28×28 Fashion-MNIST images give 1×1 maps before the pooling).
//!
//! [`Layout::Mxnet`] is the other network rectrain trains: MXNet's pre-activation ResNet
//! ("ResNet v2", `example/image-classification/symbols/resnet.py`), the network of
//! SageMaker's built-in image classifier, so that its `model.tar.gz` can be trained
//! further (incremental training). The same fields hold it, under MXNet's order:
//! `bn_data` (a BatchNorm with γ fixed at 1 on the raw 0–255 input), the stem
//! `conv1`/`bn1` (MXNet's `conv0`/`bn0`), units whose BatchNorms come *before* their
//! convolutions (`bn1 → relu → conv1 → bn2 → relu → conv2 [→ bn3 → relu → conv3]`, the
//! projection shortcut a bare convolution of the first activation, in the first unit
//! of every stage), then `bn_out` (MXNet's `bn1`) and a ReLU before the pooling.
//! MXNet's BatchNorms use `eps = 2e-5` and move their running variance by the biased
//! batch variance. The weight names of this layout are MXNet's (see [`crate::weights`]).
//!
//! Initialisation follows torchvision: convolutions are Kaiming-normal with
//! `mode="fan_out"` and the ReLU gain, BatchNorm weights are 1 and biases 0, and `fc`
//! keeps `nn.Linear`'s default `U(-1/√fan_in, 1/√fan_in)` for weight and bias.
//! BatchNorm uses torch's defaults (`eps = 1e-5`, `momentum = 0.1`). It normalises with
//! batch statistics when the backend records gradients (training) and with the
//! running statistics otherwise (`model.valid()` / inference backends).

use burn::module::{Initializer, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::Config;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::kernels::conv2d;

/// The depths this implementation builds (SageMaker's `num_layers` values that
/// support transfer learning). The CIFAR depths 20/32/44/56/110 are not supported.
pub const SUPPORTED_DEPTHS: [usize; 6] = [18, 34, 50, 101, 152, 200];

/// An invalid [`ResNetConfig`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// `num_layers` is not one of [`SUPPORTED_DEPTHS`].
    #[error(
        "num_layers {0} is not supported: use 18, 34, 50, 101, 152 or 200 \
         (the CIFAR depths 20, 32, 44, 56 and 110 are not implemented)"
    )]
    UnsupportedDepth(usize),
    /// `num_classes` is zero.
    #[error("num_classes must be at least 1")]
    NoClasses,
    /// The classifier would have more weights than one tensor can hold.
    #[error(
        "num_classes {0} is too large: the classifier would hold {0}×{1} weights, \
         more than one tensor can (2^31 − 1)"
    )]
    TooManyClasses(usize, usize),
}

/// Which residual block a depth uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1×1 → 3×3 (strided) → 1×1 convolutions (ResNet-50 and deeper), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block relative to its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Which ResNet (see the module documentation).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// torchvision's post-activation ResNet (v1.5): training from scratch and transfer
    /// learning from torchvision weights.
    #[default]
    Torchvision,
    /// MXNet's pre-activation ResNet, SageMaker's network: incremental training from
    /// its `model.tar.gz`.
    Mxnet,
}

impl Layout {
    /// `config.json`'s `architecture` for this layout.
    pub fn architecture(self) -> &'static str {
        match self {
            Layout::Torchvision => "resnet",
            Layout::Mxnet => "mxnet-resnet",
        }
    }

    /// The layout of an `architecture` name ([`Layout::architecture`]).
    pub fn from_architecture(name: &str) -> Option<Self> {
        [Layout::Torchvision, Layout::Mxnet]
            .into_iter()
            .find(|l| l.architecture() == name)
    }

    /// The pixel normalisation this network is trained with: ImageNet's mean and
    /// standard deviation for torchvision's, raw 0–255 values for MXNet's (its `bn_data`
    /// normalises; SageMaker's `ImageRecordIter` feeds raw pixels).
    pub fn normalization(self) -> crate::preprocess::Normalization {
        match self {
            Layout::Torchvision => crate::preprocess::Normalization::imagenet(),
            Layout::Mxnet => crate::preprocess::Normalization::raw(),
        }
    }

    /// The BatchNorm epsilon of this network (torch's default; MXNet's `resnet.py`).
    pub fn bn_epsilon(self) -> f64 {
        match self {
            Layout::Torchvision => 1e-5,
            Layout::Mxnet => 2e-5,
        }
    }
}

/// Architecture of a ResNet: depth, number of output classes and layout.
#[derive(Config, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Depth: 18, 34, 50, 101, 152 or 200.
    pub num_layers: usize,
    /// Size of the final fully connected layer.
    pub num_classes: usize,
    /// torchvision's network or MXNet's pre-activation one.
    #[config(default = "Layout::Torchvision")]
    pub layout: Layout,
}

impl ResNetConfig {
    /// Checks the depth and class count.
    pub fn validate(&self) -> Result<(), ModelError> {
        let (kind, _) = self.table()?;
        if self.num_classes == 0 {
            return Err(ModelError::NoClasses);
        }
        let width = 512 * kind.expansion();
        if self.num_classes.saturating_mul(width) > i32::MAX as usize {
            return Err(ModelError::TooManyClasses(self.num_classes, width));
        }
        Ok(())
    }

    /// Block type and number of blocks in `layer1..layer4` (torchvision's table).
    pub fn stages(&self) -> Result<(BlockKind, [usize; 4]), ModelError> {
        self.validate()?;
        self.table()
    }

    /// [`stages`](Self::stages) without the class-count checks.
    fn table(&self) -> Result<(BlockKind, [usize; 4]), ModelError> {
        Ok(match self.num_layers {
            18 => (BlockKind::Basic, [2, 2, 2, 2]),
            34 => (BlockKind::Basic, [3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
            200 => (BlockKind::Bottleneck, [3, 24, 36, 3]),
            other => return Err(ModelError::UnsupportedDepth(other)),
        })
    }

    /// Input features of `fc` (512 for basic blocks, 2048 for bottlenecks).
    pub fn fc_in_features(&self) -> Result<usize, ModelError> {
        Ok(512 * self.stages()?.0.expansion())
    }

    /// Builds a randomly initialised network (torchvision's initialisation).
    ///
    /// # Panics
    ///
    /// When the configuration is invalid; call [`ResNetConfig::validate`] first (or use
    /// [`ResNetConfig::try_init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid ResNet configuration: {e}"))
    }

    /// Builds a randomly initialised network, or says why the configuration is invalid.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<ResNet<B>, ModelError> {
        self.build(Fill::Torchvision, device)
    }

    /// Builds the network with zero weights (BatchNorm as new), for loading every tensor
    /// from a file right after: it skips drawing random weights that the file replaces
    /// (most of the model load time of a prediction on the CPU).
    pub fn try_init_zeroed<B: Backend>(&self, device: &B::Device) -> Result<ResNet<B>, ModelError> {
        self.build(Fill::Zeros, device)
    }

    fn build<B: Backend>(&self, fill: Fill, device: &B::Device) -> Result<ResNet<B>, ModelError> {
        let (kind, blocks) = self.stages()?;
        let layout = self.layout;
        let eps = layout.bn_epsilon();
        let mut in_planes = 64;
        let mut make_layer = |planes: usize, count: usize, stride: usize| {
            let mut layer = Vec::with_capacity(count);
            for i in 0..count {
                let s = if i == 0 { stride } else { 1 };
                layer.push(match layout {
                    Layout::Torchvision => Block::new(kind, in_planes, planes, s, fill, device),
                    // resnet.py: every stage's first unit projects its shortcut.
                    Layout::Mxnet => {
                        let shortcut = if i == 0 {
                            Shortcut::Projection
                        } else {
                            Shortcut::Identity
                        };
                        Block::new_preact(kind, in_planes, planes, s, shortcut, fill, device)
                    }
                });
                in_planes = planes * kind.expansion();
            }
            layer
        };
        let layer1 = make_layer(64, blocks[0], 1);
        let layer2 = make_layer(128, blocks[1], 2);
        let layer3 = make_layer(256, blocks[2], 2);
        let layer4 = make_layer(512, blocks[3], 2);
        let preact = layout == Layout::Mxnet;
        Ok(ResNet {
            layout,
            bn_data: preact.then(|| batch_norm(3, eps, device)),
            conv1: conv(3, 64, 7, 2, 3, fill, device),
            bn1: batch_norm(64, eps, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            bn_out: preact.then(|| batch_norm(512 * kind.expansion(), eps, device)),
            fc: {
                let fc = LinearConfig::new(512 * kind.expansion(), self.num_classes);
                match fill {
                    Fill::Torchvision => fc,
                    Fill::Zeros => fc.with_initializer(Initializer::Zeros),
                }
                .init(device)
            },
        })
    }
}

/// A pre-activation unit's shortcut ([`Block::new_preact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shortcut {
    /// The input itself.
    Identity,
    /// A (strided) 1×1 convolution of the activated input.
    Projection,
}

/// How [`ResNetConfig`] fills a new network's weights.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// torchvision's initialisation (see the module documentation).
    Torchvision,
    /// Zeros, for weights that are loaded next.
    Zeros,
}

/// A convolution without bias, torchvision's Kaiming-normal (fan-out, ReLU gain) init.
fn conv<B: Backend>(
    inp: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    fill: Fill,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([inp, out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(match fill {
            Fill::Torchvision => Initializer::KaimingNormal {
                gain: std::f64::consts::SQRT_2,
                fan_out_only: true,
            },
            Fill::Zeros => Initializer::Zeros,
        })
        .init(device)
}

/// BatchNorm with momentum 0.1 (torch's; MXNet's `momentum = 0.9` is the same update).
fn batch_norm<B: Backend>(features: usize, eps: f64, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(features)
        .with_epsilon(eps)
        .with_momentum(0.1)
        .init(device)
}

/// torchvision's `downsample`: a strided 1×1 convolution (`downsample.0`) and a
/// BatchNorm (`downsample.1`) on the shortcut when the shape changes. MXNet's
/// pre-activation units project with the convolution alone (`_sc`, no BatchNorm).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// `downsample.0`: 1×1 convolution.
    pub conv: Conv2d<B>,
    /// `downsample.1`: BatchNorm (torchvision's layout only).
    pub bn: Option<BatchNorm<B>>,
}

/// One residual block. A basic block has `conv1`, `bn1`, `conv2`, `bn2`; a bottleneck
/// block also has `conv3`, `bn3` (the names torchvision uses for both). In a
/// pre-activation block ([`Layout::Mxnet`]), `bnK` normalises the input of `convK`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Which network's block: torchvision's post-activation block, or MXNet's
    /// pre-activation unit ([`Layout::Mxnet`]).
    pub layout: Layout,
    /// 3×3 (basic, strided) or 1×1 (bottleneck) convolution.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3×3 convolution (strided in a bottleneck block).
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// Bottleneck only: the expanding 1×1 convolution.
    pub conv3: Option<Conv2d<B>>,
    /// Bottleneck only: BatchNorm after `conv3`.
    pub bn3: Option<BatchNorm<B>>,
    /// Projection shortcut, when stride ≠ 1 or the channel count changes.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> Block<B> {
    fn new(
        kind: BlockKind,
        in_planes: usize,
        planes: usize,
        stride: usize,
        fill: Fill,
        device: &B::Device,
    ) -> Self {
        let out = planes * kind.expansion();
        let eps = Layout::Torchvision.bn_epsilon();
        let downsample = (stride != 1 || in_planes != out).then(|| Downsample {
            conv: conv(in_planes, out, 1, stride, 0, fill, device),
            bn: Some(batch_norm(out, eps, device)),
        });
        match kind {
            BlockKind::Basic => Block {
                layout: Layout::Torchvision,
                conv1: conv(in_planes, planes, 3, stride, 1, fill, device),
                bn1: batch_norm(planes, eps, device),
                conv2: conv(planes, planes, 3, 1, 1, fill, device),
                bn2: batch_norm(planes, eps, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            BlockKind::Bottleneck => Block {
                layout: Layout::Torchvision,
                conv1: conv(in_planes, planes, 1, 1, 0, fill, device),
                bn1: batch_norm(planes, eps, device),
                conv2: conv(planes, planes, 3, stride, 1, fill, device),
                bn2: batch_norm(planes, eps, device),
                conv3: Some(conv(planes, out, 1, 1, 0, fill, device)),
                bn3: Some(batch_norm(out, eps, device)),
                downsample,
            },
        }
    }

    /// MXNet's pre-activation unit (`residual_unit` of `resnet.py`): the same
    /// convolutions as [`Block::new`] (the stride on the 3×3 one), each after a
    /// BatchNorm and a ReLU; a [`Shortcut::Projection`] has a 1×1 convolution.
    fn new_preact(
        kind: BlockKind,
        in_planes: usize,
        planes: usize,
        stride: usize,
        shortcut: Shortcut,
        fill: Fill,
        device: &B::Device,
    ) -> Self {
        let out = planes * kind.expansion();
        let eps = Layout::Mxnet.bn_epsilon();
        let downsample = (shortcut == Shortcut::Projection).then(|| Downsample {
            conv: conv(in_planes, out, 1, stride, 0, fill, device),
            bn: None,
        });
        let bottleneck = kind == BlockKind::Bottleneck;
        let (k1, s1, p1, s2) = if bottleneck {
            (1, 1, 0, stride)
        } else {
            (3, stride, 1, 1)
        };
        Block {
            layout: Layout::Mxnet,
            bn1: batch_norm(in_planes, eps, device),
            conv1: conv(in_planes, planes, k1, s1, p1, fill, device),
            bn2: batch_norm(planes, eps, device),
            conv2: conv(planes, planes, 3, s2, 1, fill, device),
            bn3: bottleneck.then(|| batch_norm(planes, eps, device)),
            conv3: bottleneck.then(|| conv(planes, out, 1, 1, 0, fill, device)),
            downsample,
        }
    }

    /// `[N, in, H, W]` → `[N, out, H/stride, W/stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.layout {
            Layout::Torchvision => self.forward_post_activation(x),
            Layout::Mxnet => self.forward_preact(x),
        }
    }

    /// torchvision's block: `conv → bn → relu` per layer, the last without its ReLU,
    /// which follows the sum with the (projected) shortcut.
    fn forward_post_activation(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(d) => {
                let y = conv2d(&d.conv, x.clone());
                match &d.bn {
                    Some(bn) => norm(bn, y),
                    None => y,
                }
            }
            None => x.clone(),
        };
        let out = norm_relu(&self.bn1, conv2d(&self.conv1, x));
        let out = conv2d(&self.conv2, out);
        let out = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => norm(bn3, conv2d(conv3, norm_relu(&self.bn2, out))),
            _ => norm(&self.bn2, out),
        };
        relu(out + identity)
    }

    /// The pre-activation unit: `bn1 → relu` feeds `conv1` and the projection, and the
    /// sum is not activated (the next unit's BatchNorm and ReLU come first).
    fn forward_preact(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let act1 = norm_mxnet_relu(&self.bn1, x.clone());
        let shortcut = match &self.downsample {
            Some(d) => conv2d(&d.conv, act1.clone()),
            None => x,
        };
        let mut out = conv2d(&self.conv1, act1);
        out = conv2d(&self.conv2, norm_mxnet_relu(&self.bn2, out));
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            out = conv2d(conv3, norm_mxnet_relu(bn3, out));
        }
        out + shortcut
    }
}

/// A ResNet classifier with torchvision's field names.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// Which network: torchvision's, or MXNet's pre-activation ResNet (which has
    /// `bn_data` and `bn_out`, and pre-activation blocks).
    pub layout: Layout,
    /// [`Layout::Mxnet`] only: MXNet's `bn_data`, a BatchNorm with γ fixed at 1 on
    /// the input.
    pub bn_data: Option<BatchNorm<B>>,
    /// Stem: 7×7 stride-2 convolution, 3 → 64 channels.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Stem 3×3 stride-2 max pooling (padding 1).
    pub maxpool: MaxPool2d,
    /// Stage 1 (64 planes, stride 1).
    pub layer1: Vec<Block<B>>,
    /// Stage 2 (128 planes, stride 2).
    pub layer2: Vec<Block<B>>,
    /// Stage 3 (256 planes, stride 2).
    pub layer3: Vec<Block<B>>,
    /// Stage 4 (512 planes, stride 2).
    pub layer4: Vec<Block<B>>,
    /// [`Layout::Mxnet`] only: the BatchNorm (MXNet's `bn1`) before the final ReLU.
    pub bn_out: Option<BatchNorm<B>>,
    /// Classifier: `512 × expansion` → `num_classes`.
    pub fc: Linear<B>,
}

impl<B: Backend> ResNet<B> {
    /// `[N, 3, H, W]` normalised images → `[N, num_classes]` logits.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        // Under mixed precision the features are in the half type: the classifier and
        // the loss work in the weights' f32.
        let features = self.features(x);
        let features = crate::kernels::in_dtype(features, self.fc.weight.val().dtype());
        self.fc.forward(features)
    }

    /// Everything but `fc`: `[N, 3, H, W]` → pooled `[N, 512 × expansion]` features.
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = match self.layout {
            // torchvision: conv1 → bn1 → relu → max pool → the stages.
            Layout::Torchvision => self.run_stages(
                self.maxpool
                    .forward(norm_relu(&self.bn1, conv2d(&self.conv1, x))),
            ),
            // MXNet's resnet.py: bn_data (γ fixed at 1) → conv0 → bn0 → relu → max pool
            // → the pre-activation stages → bn1 → relu.
            Layout::Mxnet => {
                let x = match &self.bn_data {
                    Some(bn) => norm_fixed_gamma(bn, x),
                    None => x,
                };
                let x = norm_mxnet_relu(&self.bn1, conv2d(&self.conv1, x));
                let x = self.run_stages(self.maxpool.forward(x));
                match &self.bn_out {
                    Some(bn) => norm_mxnet_relu(bn, x),
                    None => x,
                }
            }
        };
        global_average_pool(x)
    }

    /// The four stages' blocks in turn.
    fn run_stages(&self, mut x: Tensor<B, 4>) -> Tensor<B, 4> {
        for block in self.blocks() {
            x = block.forward(x);
        }
        x
    }

    /// Which network this is.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The residual blocks of the four stages, in order.
    fn blocks(&self) -> impl Iterator<Item = &Block<B>> {
        self.layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
    }

    /// The same network for inference, with every BatchNorm folded into the
    /// convolution before it (BatchNorm with running statistics is an affine map per
    /// channel: `conv(x, w·s) + (β − μ·s)` with `s = γ / √(σ² + ε)`). It gives the
    /// logits of `forward` in eval mode, up to rounding, without BatchNorm's four
    /// broadcast operations per layer (about half of a CPU forward pass at 224²).
    ///
    /// MXNet's pre-activation network keeps its BatchNorms (each follows a sum or the
    /// input, not a convolution): its "folded" form is the network itself in eval mode.
    pub fn fold_batch_norm(&self) -> FoldedResNet<B> {
        if self.layout() == Layout::Mxnet {
            return FoldedResNet(Folded::Unfolded(self.clone()));
        }
        let blocks = self
            .blocks()
            .map(|b| {
                let mut convs = vec![fold(&b.conv1, &b.bn1), fold(&b.conv2, &b.bn2)];
                if let (Some(conv3), Some(bn3)) = (&b.conv3, &b.bn3) {
                    convs.push(fold(conv3, bn3));
                }
                FoldedBlock {
                    convs,
                    downsample: b.downsample.as_ref().map(|d| match &d.bn {
                        Some(bn) => fold(&d.conv, bn),
                        None => d.conv.clone(),
                    }),
                }
            })
            .collect();
        FoldedResNet(Folded::Folded {
            conv1: fold(&self.conv1, &self.bn1),
            maxpool: self.maxpool.clone(),
            blocks,
            fc: self.fc.clone(),
        })
    }

    /// Learnable parameters, counted like torch's `sum(p.numel() for p in
    /// model.parameters())` (burn's `num_params` also counts the BatchNorm running
    /// statistics).
    pub fn parameter_count(&self) -> usize {
        let bn = |b: &BatchNorm<B>| 2 * b.gamma.dims()[0];
        let mut running = bn(&self.bn1);
        running += self.bn_data.as_ref().map_or(0, bn) + self.bn_out.as_ref().map_or(0, bn);
        for block in self.blocks() {
            running += bn(&block.bn1) + bn(&block.bn2);
            running += block.bn3.as_ref().map_or(0, bn);
            running += block
                .downsample
                .as_ref()
                .and_then(|d| d.bn.as_ref())
                .map_or(0, bn);
        }
        self.num_params() - running
    }

    /// The number of output classes (rows of `fc`).
    pub fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Depth and class count of this network, read from its structure.
    pub fn config(&self) -> ResNetConfig {
        let blocks = [
            self.layer1.len(),
            self.layer2.len(),
            self.layer3.len(),
            self.layer4.len(),
        ];
        let per_block = if self.layer1.first().is_some_and(|b| b.conv3.is_some()) {
            3
        } else {
            2
        };
        ResNetConfig::new(
            2 + per_block * blocks.iter().sum::<usize>(),
            self.num_classes(),
        )
        .with_layout(self.layout())
    }
}

/// BatchNorm over `[N, C, H, W]`, as torch's `BatchNorm2d`: with the batch's statistics
/// when the backend records gradients (training; the running statistics move by
/// `momentum`, the variance unbiased as in torch), else with the running statistics.
///
/// The same function as burn's `BatchNorm::forward`: in training the kernel layer's
/// [`batch_norm_train`](crate::kernels::batch_norm_train) (cuDNN on CUDA, a closed-form
/// backward step on the CPU); with running statistics one multiply-add per element,
/// `x·s + t` with per-channel `s = γ/√(σ²+ε)` and `t = β − μ·s` on materialised
/// `[N, C, 1, 1]` operands (CPU backends take their contiguous broadcast kernels).
fn norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_forward(bn, x, true, false, false)
}

/// `relu(norm(bn, x))`, as one kernel where the backend fuses them.
fn norm_relu<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_forward(bn, x, true, false, true)
}

/// MXNet's BatchNorm (the running variance moves by the batch's biased variance), then
/// a ReLU: every BatchNorm of MXNet's pre-activation units but `bn_data` has one after
/// it, fused into one kernel where the backend can.
fn norm_mxnet_relu<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_forward(bn, x, false, false, true)
}

/// MXNet's BatchNorm with `fix_gamma=True` (`bn_data`): γ is 1 whatever the parameter
/// holds, and gets no gradient.
fn norm_fixed_gamma<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    batch_norm_forward(bn, x, false, true, false)
}

/// BatchNorm (training: the batch's statistics, moving the running ones; else the
/// running ones), then a ReLU when `relu`.
fn batch_norm_forward<B: Backend>(
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    unbiased_running_var: bool,
    fix_gamma: bool,
    relu: bool,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    if B::ad_enabled(&device) {
        let gamma = if fix_gamma {
            Tensor::ones([c], &device)
        } else {
            bn.gamma.val()
        };
        let out = crate::kernels::batch_norm_train(x, gamma, bn.beta.val(), bn.epsilon, relu);
        let count = (n * h * w) as f64;
        let unbiased = if count > 1.0 && unbiased_running_var {
            count / (count - 1.0)
        } else {
            1.0
        };
        let m = bn.momentum;
        let running_mean = bn.running_mean.value_sync().to_device(&device);
        let running_var = bn.running_var.value_sync().to_device(&device);
        bn.running_mean
            .update((running_mean.mul_scalar(1.0 - m) + out.mean.mul_scalar(m)).detach());
        bn.running_var
            .update((running_var.mul_scalar(1.0 - m) + out.var.mul_scalar(m * unbiased)).detach());
        return out.y;
    }
    let (mean, var) = (
        bn.running_mean.value().to_device(&device),
        bn.running_var.value().to_device(&device),
    );
    let (scale, shift) = if fix_gamma {
        let scale = var.add_scalar(bn.epsilon).sqrt().recip();
        let shift = bn.beta.val() - mean * scale.clone();
        (scale, shift)
    } else {
        affine(bn, mean, var)
    };
    let per_channel = |t: Tensor<B, 1>| t.reshape([1, c, 1, 1]).repeat_dim(0, n);
    let y = x * per_channel(scale) + per_channel(shift);
    if relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    }
}

/// Adaptive average pooling to 1×1, then flatten: `[N, C, H, W]` → `[N, C]`.
fn global_average_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([n, c])
}

/// BatchNorm with statistics `mean`, `var` as a per-channel affine map `x·s + t`:
/// `s = γ/√(σ²+ε)`, `t = β − μ·s`.
fn affine<B: Backend>(
    bn: &BatchNorm<B>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    (scale, shift)
}

/// `bn(conv(x))` with running statistics as one convolution with a bias.
fn fold<B: Backend>(conv: &Conv2d<B>, bn: &BatchNorm<B>) -> Conv2d<B> {
    let (scale, shift) = affine(bn, bn.running_mean.value(), bn.running_var.value());
    let out = scale.dims()[0];
    let weight = conv.weight.val() * scale.clone().reshape([out, 1, 1, 1]);
    let bias = match &conv.bias {
        Some(b) => b.val() * scale + shift,
        None => shift,
    };
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        ..conv.clone()
    }
}

/// A residual block of a [`FoldedResNet`]: its convolutions in order (ReLU between
/// them) and the projection shortcut, each with its BatchNorm folded in.
#[derive(Debug)]
struct FoldedBlock<B: Backend> {
    convs: Vec<Conv2d<B>>,
    downsample: Option<Conv2d<B>>,
}

impl<B: Backend> FoldedBlock<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(d) => conv2d(d, x.clone()),
            None => x.clone(),
        };
        let mut out = x;
        for (i, conv) in self.convs.iter().enumerate() {
            if i > 0 {
                out = relu(out);
            }
            out = conv2d(conv, out);
        }
        relu(out + identity)
    }
}

/// An inference-only [`ResNet`] whose BatchNorms are folded into the convolutions;
/// made by [`ResNet::fold_batch_norm`]. Prediction and validation use it.
#[derive(Debug)]
pub struct FoldedResNet<B: Backend>(Folded<B>);

// One value per loaded model: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Folded<B: Backend> {
    Folded {
        conv1: Conv2d<B>,
        maxpool: MaxPool2d,
        blocks: Vec<FoldedBlock<B>>,
        fc: Linear<B>,
    },
    /// [`Layout::Mxnet`]: nothing to fold.
    Unfolded(ResNet<B>),
}

impl<B: Backend> FoldedResNet<B> {
    /// `[N, 3, H, W]` normalised images → `[N, num_classes]` logits, as
    /// [`ResNet::forward`] in eval mode.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match &self.0 {
            Folded::Folded {
                conv1,
                maxpool,
                blocks,
                fc,
            } => {
                let mut x = maxpool.forward(relu(conv2d(conv1, x)));
                for block in blocks {
                    x = block.forward(x);
                }
                // As in `ResNet::forward`: half-type features meet the classifier's f32
                // weights in f32 (burn-cubecl would read the f32 weights as the half type).
                let features =
                    crate::kernels::in_dtype(global_average_pool(x), fc.weight.val().dtype());
                fc.forward(features)
            }
            Folded::Unfolded(m) => m.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};

    type B = Flex;

    #[test]
    fn every_depth_has_torchvisions_parameter_count() {
        // torchvision.models.resnetXX(num_classes=1000): sum(p.numel() for p in m.parameters())
        let expected = [
            (18, 11_689_512usize),
            (34, 21_797_672),
            (50, 25_557_032),
            (101, 44_549_160),
            (152, 60_192_808),
            // torchvision ResNet(Bottleneck, [3, 24, 36, 3]).
            (200, 64_673_832),
        ];
        let device = Default::default();
        for (depth, params) in expected {
            let model = ResNetConfig::new(depth, 1000).init::<B>(&device);
            assert_eq!(model.parameter_count(), params, "resnet{depth}");
            assert_eq!(model.config(), ResNetConfig::new(depth, 1000));
            // The zeroed network (for loading) has the same structure, and zero weights.
            let zeroed = ResNetConfig::new(depth, 1000)
                .try_init_zeroed::<B>(&device)
                .unwrap();
            assert_eq!(zeroed.parameter_count(), params, "resnet{depth} zeroed");
            assert_eq!(zeroed.config(), ResNetConfig::new(depth, 1000));
            let w = zeroed.layer4[0]
                .conv2
                .weight
                .val()
                .abs()
                .sum()
                .into_scalar();
            let fc = zeroed.fc.weight.val().abs().sum().into_scalar();
            assert_eq!((w, fc), (0.0, 0.0), "resnet{depth} zeroed");
        }
    }

    /// MXNet's layout: every depth builds and reads back its configuration; every
    /// stage's first unit (only) projects its shortcut, with a bare convolution; the
    /// logits come one row per image; `bn_data`'s γ gets no gradient (`fix_gamma`)
    /// while its β does.
    #[test]
    fn mxnet_layout_is_resnet_py() {
        let device = Default::default();
        for depth in [18, 34, 50, 101, 152, 200] {
            let cfg = ResNetConfig::new(depth, 4).with_layout(Layout::Mxnet);
            let m = cfg.try_init_zeroed::<B>(&device).unwrap();
            assert_eq!(m.config(), cfg, "resnet{depth}");
            for layer in [&m.layer1, &m.layer2, &m.layer3, &m.layer4] {
                assert_eq!(layer[0].layout, Layout::Mxnet);
                assert!(layer[0].downsample.as_ref().is_some_and(|d| d.bn.is_none()));
                assert!(layer[1..].iter().all(|b| b.downsample.is_none()));
            }
        }
        type Ad = burn::backend::Autodiff<B>;
        let m = ResNetConfig::new(18, 3)
            .with_layout(Layout::Mxnet)
            .init::<Ad>(&device);
        let x = Tensor::<Ad, 4>::random([2, 3, 40, 40], Distribution::Uniform(0.0, 255.0), &device);
        let y = m.forward(x);
        assert_eq!(y.dims(), [2, 3]);
        let grads = y.sum().backward();
        let bn = m.bn_data.as_ref().unwrap();
        assert!(bn.gamma.val().grad(&grads).is_none());
        assert!(bn.beta.val().grad(&grads).is_some());
        assert!(m.layer1[0].bn1.gamma.val().grad(&grads).is_some());
    }

    #[test]
    fn class_count_changes_only_fc() {
        let device = Default::default();
        let m = ResNetConfig::new(18, 10).init::<B>(&device);
        assert_eq!(m.parameter_count(), 11_689_512 - 990 * 512 - 990);
        assert_eq!(m.num_classes(), 10);
    }

    #[test]
    fn forward_gives_one_row_of_logits_per_image() {
        let device = Default::default();
        for depth in [18, 50] {
            let m = ResNetConfig::new(depth, 7).init::<B>(&device);
            let x = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
            let y = m.forward(x);
            assert_eq!(y.dims(), [2, 7], "resnet{depth}");
            let values = y.into_data().to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }

    /// Folding BatchNorm into the convolutions keeps the eval-mode logits, with
    /// non-trivial statistics and affine parameters in every BatchNorm, for both block
    /// kinds (and the projection shortcuts).
    #[test]
    fn folded_network_gives_the_eval_logits() {
        use burn::module::{Param, RunningState};
        let device = Default::default();
        let rand = |n: usize, lo: f64, hi: f64| {
            Tensor::<B, 1>::random([n], Distribution::Uniform(lo, hi), &device)
        };
        let perturb = |bn: &mut BatchNorm<B>| {
            let n = bn.gamma.dims()[0];
            bn.gamma = Param::from_tensor(rand(n, 0.5, 1.5));
            bn.beta = Param::from_tensor(rand(n, -0.5, 0.5));
            bn.running_mean = RunningState::new(rand(n, -0.3, 0.3));
            bn.running_var = RunningState::new(rand(n, 0.2, 2.0));
        };
        for depth in [18, 50] {
            let mut m = ResNetConfig::new(depth, 5).init::<B>(&device);
            perturb(&mut m.bn1);
            for block in m
                .layer1
                .iter_mut()
                .chain(&mut m.layer2)
                .chain(&mut m.layer3)
                .chain(&mut m.layer4)
            {
                perturb(&mut block.bn1);
                perturb(&mut block.bn2);
                if let Some(bn3) = &mut block.bn3 {
                    perturb(bn3);
                }
                if let Some(bn) = block.downsample.as_mut().and_then(|d| d.bn.as_mut()) {
                    perturb(bn);
                }
            }
            let x = Tensor::<B, 4>::random([3, 3, 40, 36], Distribution::Normal(0.0, 1.0), &device);
            let want = m.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
            let got = m
                .fold_batch_norm()
                .forward(x)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(got.len(), 15);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!(scale > 1e-3, "resnet{depth}: degenerate logits {want:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * scale.max(1.0),
                    "resnet{depth}: {got:?} vs {want:?}"
                );
            }
        }
    }

    /// Inference in bfloat16 (recpredict `--precision-dtype bfloat16`): the folded
    /// network's half-type features reach the f32 classifier as f32, so the logits are
    /// f32 and close to float32's (burn-flex computes bf16 as the CUDA backend does).
    #[test]
    fn folded_network_in_bfloat16_gives_f32_logits_close_to_f32s() {
        use burn::tensor::DType;
        let device = Default::default();
        let m = ResNetConfig::new(18, 7)
            .init::<B>(&device)
            .fold_batch_norm();
        let x = Tensor::<B, 4>::random([2, 3, 48, 40], Distribution::Normal(0.0, 1.0), &device);
        let full = m.forward(x.clone());
        let half = m.forward(x.cast(DType::BF16));
        assert_eq!(half.dtype(), DType::F32, "logits of a bf16 input");
        let (full, half) = (
            full.into_data().to_vec::<f32>().unwrap(),
            half.into_data().to_vec::<f32>().unwrap(),
        );
        let scale = full.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(scale > 1e-3, "degenerate logits {full:?}");
        let worst = full
            .iter()
            .zip(&half)
            .fold(0f32, |a, (f, h)| a.max((f - h).abs()));
        // bf16 keeps 8 bits of mantissa through ~20 layers: a few percent of the scale.
        assert!(worst <= 0.1 * scale, "bf16 {half:?} vs f32 {full:?}");
    }

    /// In training, `norm` gives burn's `BatchNorm` output and gradients (input, γ, β)
    /// and moves the running statistics as torch does (unbiased running variance).
    #[test]
    fn training_norm_matches_batch_norm_with_torchs_running_variance() {
        use burn::backend::Autodiff;
        use burn::module::{Param, RunningState};
        use burn::tensor::TensorData;
        type A = Autodiff<B>;
        let device = Default::default();
        let (n, c, h, w) = (4, 3, 5, 6);
        let xs: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919 % 211) as f32 / 211.0 - 0.3) * (1.0 + (i % 3) as f32))
            .collect();
        let ws: Vec<f32> = (0..n * c * h * w)
            .map(|i| (i * 104_729 % 97) as f32 / 97.0 - 0.5)
            .collect();
        let (gamma, beta, rm, rv) = (
            [0.7f32, 1.3, 0.9],
            [0.1f32, -0.2, 0.3],
            [0.05f32, -0.1, 0.2],
            [1.5f32, 0.6, 1.1],
        );
        let make = || {
            let mut bn = batch_norm::<A>(c, 1e-5, &device);
            bn.gamma = Param::from_tensor(Tensor::from_floats(gamma, &device));
            bn.beta = Param::from_tensor(Tensor::from_floats(beta, &device));
            bn.running_mean = RunningState::new(Tensor::from_floats(rm, &device));
            bn.running_var = RunningState::new(Tensor::from_floats(rv, &device));
            bn
        };
        let run = |ours: bool| {
            let bn = make();
            let x = Tensor::<A, 4>::from_data(TensorData::new(xs.clone(), [n, c, h, w]), &device)
                .require_grad();
            let y = if ours {
                norm(&bn, x.clone())
            } else {
                bn.forward(x.clone())
            };
            let wt = Tensor::<A, 4>::from_data(TensorData::new(ws.clone(), [n, c, h, w]), &device);
            let grads = (y.clone() * wt).sum().backward();
            let v = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().unwrap();
            let flat = |t: Tensor<B, 4>| t.into_data().to_vec::<f32>().unwrap();
            (
                flat(y.inner()),
                flat(x.grad(&grads).unwrap()),
                v(bn.gamma.val().grad(&grads).unwrap()),
                v(bn.beta.val().grad(&grads).unwrap()),
                v(bn.running_mean.value_sync().inner()),
                v(bn.running_var.value_sync().inner()),
            )
        };
        let (ours, theirs) = (run(true), run(false));
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{what}: {a:?} vs {b:?}"
                );
            }
        };
        close(&ours.0, &theirs.0, "output");
        close(&ours.1, &theirs.1, "input gradient");
        close(&ours.2, &theirs.2, "gamma gradient");
        close(&ours.3, &theirs.3, "beta gradient");
        // The running statistics, from the data by hand (torch: unbiased variance).
        let count = (n * h * w) as f64;
        for ch in 0..c {
            let vals: Vec<f64> = (0..n)
                .flat_map(|b| (0..h * w).map(move |k| (b * c + ch) * h * w + k))
                .map(|i| f64::from(xs[i]))
                .collect();
            let mean = vals.iter().sum::<f64>() / count;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
            let want_mean = 0.9 * f64::from(rm[ch]) + 0.1 * mean;
            let want_var = 0.9 * f64::from(rv[ch]) + 0.1 * var;
            assert!(
                (f64::from(ours.4[ch]) - want_mean).abs() < 1e-5,
                "running mean {ch}: {} vs {want_mean} (burn {})",
                ours.4[ch],
                theirs.4[ch]
            );
            assert!(
                (f64::from(ours.5[ch]) - want_var).abs() < 1e-5,
                "running var {ch}"
            );
        }
        // burn moves the running mean the same way, up to the order of the sums.
        close(&ours.4, &theirs.4, "running mean against burn's");
    }

    #[test]
    fn invalid_configs_are_errors() {
        assert_eq!(
            ResNetConfig::new(20, 10).validate(),
            Err(ModelError::UnsupportedDepth(20))
        );
        assert_eq!(
            ResNetConfig::new(18, 0).validate(),
            Err(ModelError::NoClasses)
        );
        assert!(ResNetConfig::new(110, 10)
            .try_init::<B>(&Default::default())
            .is_err());
        assert_eq!(ResNetConfig::new(152, 3).fc_in_features(), Ok(2048));
    }
}
