//! A compiled [`Plan`] run in burn, on any backend, and [`predictor`]: batched class
//! probabilities from it, like [`crate::infer::Predictor`] for rectrain's own models.
//! Convolutions go through [`crate::kernels::conv2d`], so the kernel layer applies.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::{Tensor, TensorData};

use super::graph::{Act, Op, Plan};
use super::params::NdArray;
use crate::backend::{dispatch_infer, InferTask, Precision, ResolvedDevice};
use crate::infer::{logits, InferError, Network, Predictor};
use crate::kernels;

enum Layer<B: Backend> {
    Conv(Box<Conv2d<B>>),
    Affine {
        scale: Tensor<B, 4>,
        shift: Tensor<B, 4>,
    },
    Act(Act),
    Pool {
        max: bool,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        ceil: bool,
        count_include_pad: bool,
    },
    GlobalPool {
        max: bool,
    },
    Fc {
        weight_t: Tensor<B, 2>,
        bias: Option<Tensor<B, 2>>,
    },
    Add,
    Flatten,
    Identity,
    Softmax(usize),
    Concat(usize),
}

struct LoadedStep<B: Backend> {
    layer: Layer<B>,
    inputs: Vec<usize>,
    /// Per input: this is the slot's last read, so the tensor can be moved out.
    moves: Vec<bool>,
    out: usize,
}

/// A [`Plan`]'s network with its weights on a device.
pub struct GraphNet<B: Backend> {
    steps: Vec<LoadedStep<B>>,
    input: usize,
    logits: usize,
    slots: usize,
}

fn tensor<B: Backend, const D: usize>(
    a: &NdArray,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(a.data.clone(), shape), device)
}

fn per_channel<B: Backend>(v: &[f32], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len(), 1, 1]), device)
}

impl<B: Backend> GraphNet<B> {
    /// Put `plan`'s weights on `device`.
    pub fn new(plan: &Plan, device: &B::Device) -> Self {
        let steps = plan
            .steps
            .iter()
            .map(|s| {
                let layer = match &s.op {
                    Op::Conv {
                        weight,
                        bias,
                        stride,
                        pad,
                        dilate,
                        groups,
                    } => {
                        let [o, i, kh, kw] = [
                            weight.shape[0],
                            weight.shape[1],
                            weight.shape[2],
                            weight.shape[3],
                        ];
                        Layer::Conv(Box::new(Conv2d {
                            weight: Param::from_tensor(tensor(weight, [o, i, kh, kw], device)),
                            bias: bias
                                .as_ref()
                                .map(|b| Param::from_tensor(tensor(b, [o], device))),
                            stride: *stride,
                            kernel_size: [kh, kw],
                            dilation: *dilate,
                            groups: *groups,
                            padding: PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]),
                        }))
                    }
                    Op::BatchNorm { scale, shift } => Layer::Affine {
                        scale: per_channel(scale, device),
                        shift: per_channel(shift, device),
                    },
                    Op::Act(a) => Layer::Act(*a),
                    Op::Pool {
                        max,
                        kernel,
                        stride,
                        pad,
                        ceil,
                        count_include_pad,
                    } => Layer::Pool {
                        max: *max,
                        kernel: *kernel,
                        stride: *stride,
                        pad: *pad,
                        ceil: *ceil,
                        count_include_pad: *count_include_pad,
                    },
                    Op::GlobalPool { max } => Layer::GlobalPool { max: *max },
                    Op::Fc { weight, bias } => {
                        let [o, i] = [weight.shape[0], weight.shape[1]];
                        Layer::Fc {
                            weight_t: tensor::<B, 2>(weight, [o, i], device).transpose(),
                            bias: bias.as_ref().map(|b| tensor(b, [1, o], device)),
                        }
                    }
                    Op::Add => Layer::Add,
                    Op::Flatten => Layer::Flatten,
                    Op::Identity => Layer::Identity,
                    Op::Softmax { dim } => Layer::Softmax(*dim),
                    Op::Concat { dim } => Layer::Concat(*dim),
                };
                LoadedStep {
                    layer,
                    inputs: s.inputs.clone(),
                    moves: Vec::new(),
                    out: s.out,
                }
            })
            .collect::<Vec<_>>();
        // A slot is moved out at its last read (the logits never: they are the result).
        let mut last_read = vec![None; plan.slots];
        for (k, s) in steps.iter().enumerate() {
            for (p, &i) in s.inputs.iter().enumerate() {
                last_read[i] = Some((k, p));
            }
        }
        let mut steps = steps;
        for (k, s) in steps.iter_mut().enumerate() {
            s.moves = s
                .inputs
                .iter()
                .enumerate()
                .map(|(p, &i)| i != plan.logits && last_read[i] == Some((k, p)))
                .collect();
        }
        GraphNet {
            steps,
            input: plan.input,
            logits: plan.logits,
            slots: plan.slots,
        }
    }

    /// The logits (`[N, classes]`) of `x` (`[N, C, H, W]`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut slots: Vec<Option<Tensor<B, 4>>> = vec![None; self.slots];
        slots[self.input] = Some(x);
        for step in &self.steps {
            let mut take = |p: usize| -> Tensor<B, 4> {
                let i = step.inputs[p];
                let t = if step.moves[p] {
                    slots[i].take()
                } else {
                    slots[i].clone()
                };
                t.expect("plan order: inputs are computed before use")
            };
            let out = match &step.layer {
                Layer::Conv(conv) => kernels::conv2d(conv, take(0)),
                Layer::Affine { scale, shift } => take(0).mul(scale.clone()).add(shift.clone()),
                Layer::Act(a) => {
                    let x = take(0);
                    match a {
                        Act::Relu => activation::relu(x),
                        Act::Sigmoid => activation::sigmoid(x),
                        Act::Tanh => activation::tanh(x),
                        Act::SoftRelu => activation::softplus(x, 1.0),
                        Act::SoftSign => {
                            let d = x.clone().abs().add_scalar(1.0);
                            x.div(d)
                        }
                    }
                }
                Layer::Pool {
                    max,
                    kernel,
                    stride,
                    pad,
                    ceil,
                    count_include_pad,
                } => {
                    let x = take(0);
                    if *max {
                        max_pool2d(x, *kernel, *stride, *pad, [1, 1], *ceil)
                    } else {
                        avg_pool2d(x, *kernel, *stride, *pad, *count_include_pad, *ceil)
                    }
                }
                Layer::GlobalPool { max } => {
                    let x = take(0);
                    let [n, c, h, w] = x.dims();
                    let flat = x.reshape([n, c, h * w]);
                    let r = if *max {
                        flat.max_dim(2)
                    } else {
                        flat.mean_dim(2)
                    };
                    r.reshape([n, c, 1, 1])
                }
                Layer::Fc { weight_t, bias } => {
                    let x = take(0);
                    let [n, c, h, w] = x.dims();
                    let y = x.reshape([n, c * h * w]).matmul(weight_t.clone());
                    let y = match bias {
                        Some(b) => y.add(b.clone()),
                        None => y,
                    };
                    let [n, o] = y.dims();
                    y.reshape([n, o, 1, 1])
                }
                Layer::Add => {
                    let mut acc = take(0);
                    for p in 1..step.inputs.len() {
                        acc = acc.add(take(p));
                    }
                    acc
                }
                Layer::Flatten => {
                    let x = take(0);
                    let [n, c, h, w] = x.dims();
                    x.reshape([n, c * h * w, 1, 1])
                }
                Layer::Identity => take(0),
                Layer::Softmax(dim) => activation::softmax(take(0), *dim),
                Layer::Concat(dim) => {
                    let parts: Vec<_> = (0..step.inputs.len()).map(&mut take).collect();
                    Tensor::cat(parts, *dim)
                }
            };
            slots[step.out] = Some(out);
        }
        let z = slots[self.logits]
            .take()
            .expect("plan order: the logits are computed");
        let [n, c, h, w] = z.dims();
        z.reshape([n, c * h * w])
    }
}

struct GraphOnDevice<B: Backend> {
    net: GraphNet<B>,
    device: B::Device,
}

impl<B: Backend> Network for GraphOnDevice<B> {
    fn logits(&self, images: &[f32], n: usize, shape: [usize; 3]) -> Vec<f32> {
        logits(|x| self.net.forward(x), images, n, shape, &self.device)
    }
}

struct LoadTask<'a> {
    plan: &'a Plan,
}

impl InferTask for LoadTask<'_> {
    type Output = Box<dyn Network>;
    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = devices.into_iter().next().unwrap_or_default();
        Box::new(GraphOnDevice {
            net: GraphNet::<B>::new(self.plan, &device),
            device,
        })
    }
}

/// Puts `plan`'s network on `device` with `precision`, as a [`Predictor`] that takes
/// the graph's input shape and gives its head's probabilities (softmax, or per-class
/// sigmoids for a multi-label graph).
pub fn predictor(
    plan: &Plan,
    device: &ResolvedDevice,
    precision: Precision,
) -> Result<Predictor, InferError> {
    let network = dispatch_infer(device, precision, LoadTask { plan })?;
    Ok(Predictor::on_device(
        network,
        Some(plan.input_shape),
        plan.num_classes,
        plan.head,
        device,
        precision,
    ))
}
