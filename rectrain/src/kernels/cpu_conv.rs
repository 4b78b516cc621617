//! Convolutions for training on the CPU backend, with a backward pass that uses every
//! core.
//!
//! burn's autodiff computes a convolution's input gradient with burn-flex's transposed
//! convolution, which walks the batch one image at a time on one thread: a fifth of a
//! CPU training step at 28×28 ran there while the other core waited. `conv2d` here is the
//! same convolution with its own backward step: the input gradient is computed for
//! slices of the batch in parallel (each image's gradient is independent of the
//! others, so the result is the same), beside the weight gradient (a strided view,
//! which the training loop's `contiguous_grads` copies). Any other backend, or a convolution with bias or groups, takes burn's
//! own `Conv2d::forward`.

use burn::backend::Autodiff;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, FloatTensor, FloatTensorOps, ModuleOps};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::NodeId;
use burn_flex::{Flex, FlexTensor};

use super::cast;
use rayon::prelude::*;

/// The training backend on the CPU.
pub(super) type Train = Autodiff<Flex>;

/// `conv.forward(x)` on `Autodiff<Flex>` (the backend [`super::conv2d`] selected), with
/// the parallel backward step; a convolution with bias, groups or asymmetric padding
/// takes burn's own.
pub(super) fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return conv.forward(x);
    };
    if conv.bias.is_some() || conv.groups != 1 || top != bottom || left != right {
        return conv.forward(x);
    }
    let weight = conv.weight.val();
    let x = cast::<FloatTensor<B>, FloatTensor<Train>>(x.into_primitive().tensor())
        .unwrap_or_else(|_| unreachable!("selected for Autodiff<Flex> only"));
    let weight = cast::<FloatTensor<B>, FloatTensor<Train>>(weight.into_primitive().tensor())
        .unwrap_or_else(|_| unreachable!("the weight is on the input's backend"));
    let options = ConvOptions::new(conv.stride, [top, left], conv.dilation, 1);
    let out = train_conv2d(x, weight, options);
    let out = cast::<FloatTensor<Train>, FloatTensor<B>>(out)
        .unwrap_or_else(|_| unreachable!("B is the training backend"));
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// burn-autodiff's `Conv2DNoBias` with [`ParallelConv2d`]'s backward step.
fn train_conv2d(
    x: FloatTensor<Train>,
    weight: FloatTensor<Train>,
    options: ConvOptions<2>,
) -> FloatTensor<Train> {
    match ParallelConv2d
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            prep.finish(
                (x_state, weight_state, options.clone()),
                Flex::conv2d(x.primitive, weight.primitive, None, options),
            )
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(Flex::conv2d(x.primitive, weight.primitive, None, options))
        }
    }
}

#[derive(Debug)]
struct ParallelConv2d;

impl Backward<Flex, 2> for ParallelConv2d {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
        let weight = checkpointer.retrieve_node_output::<FlexTensor>(weight_state);
        let (grad_x, grad_weight) = rayon::join(
            || {
                node_x
                    .is_some()
                    .then(|| x_backward(&x, &weight, &grad, &options))
            },
            || {
                node_weight.is_some().then(|| {
                    Flex::conv2d_weight_backward(
                        x.clone(),
                        weight.clone(),
                        grad.clone(),
                        options.clone(),
                    )
                })
            },
        );
        if let (Some(node), Some(g)) = (node_x, grad_x) {
            grads.register::<Flex>(node.id, g);
        }
        if let (Some(node), Some(g)) = (node_weight, grad_weight) {
            grads.register::<Flex>(node.id, g);
        }
    }
}

/// The input gradient, computed for slices of the batch on rayon's threads.
fn x_backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let n = x.layout().shape()[0];
    let parts = rayon::current_num_threads().min(n);
    if parts <= 1 {
        return Flex::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone());
    }
    let per = n.div_ceil(parts);
    let pieces: Vec<FlexTensor> = (0..n)
        .step_by(per)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let len = per.min(n - start);
            Flex::conv2d_x_backward(
                x.narrow(0, start, len),
                weight.clone(),
                grad.narrow(0, start, len),
                options.clone(),
            )
        })
        .collect();
    Flex::float_cat(pieces, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Output and both gradients equal burn's own convolution exactly, for the
    /// convolutions a ResNet has (7×7/2 stem, 3×3/1, 3×3/2, 1×1/2 shortcut) and batch
    /// sizes that do and do not split evenly over the threads.
    #[test]
    fn same_output_and_gradients_as_burns_convolution() {
        let device = Default::default();
        for (k, stride, pad, cin, cout, hw) in [
            (7, 2, 3, 3, 8, 17),
            (3, 1, 1, 6, 6, 9),
            (3, 2, 1, 6, 12, 9),
            (1, 2, 0, 6, 12, 8),
        ] {
            for n in [1, 2, 3, 5] {
                let conv: Conv2d<Train> = Conv2dConfig::new([cin, cout], [k, k])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                    .with_bias(false)
                    .init(&device);
                let x0 =
                    Tensor::<Train, 4>::random([n, cin, hw, hw], Distribution::Default, &device);
                let upstream = |y: &Tensor<Train, 4>| {
                    Tensor::<Train, 4>::random(y.dims(), Distribution::Default, &device)
                };
                // burn's own convolution.
                let x = x0.clone().require_grad();
                let y_ref = conv.forward(x.clone());
                let up = upstream(&y_ref);
                let g = (y_ref.clone() * up.clone()).sum().backward();
                let gx_ref = values(x.grad(&g).unwrap());
                let gw_ref = values(conv.weight.grad(&g).unwrap());
                // Ours, on the same input and upstream gradient.
                let x = x0.clone().require_grad();
                let y = conv2d(&conv, x.clone());
                assert_eq!(values(y.clone()), values(y_ref), "{k}x{k}/{stride} n={n}");
                let g = (y * up.clone()).sum().backward();
                let case = format!("{k}x{k}/{stride} n={n}");
                assert_eq!(values(x.grad(&g).unwrap()), gx_ref, "x grad {case}");
                assert_eq!(
                    values(conv.weight.grad(&g).unwrap()),
                    gw_ref,
                    "w grad {case}"
                );
                // An input without gradient (the stem's images): only the weight's.
                let y = conv2d(&conv, x0.clone());
                let g = (y * up).sum().backward();
                assert_eq!(
                    values(conv.weight.grad(&g).unwrap()),
                    gw_ref,
                    "w grad {case}"
                );
                assert!(x0.grad(&g).is_none());
            }
        }
    }

    /// Other backends (and inference on the CPU) take burn's own forward.
    #[test]
    fn other_backends_take_burns_forward() {
        let device = Default::default();
        let conv: Conv2d<CpuBackend> = Conv2dConfig::new([3, 4], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(true)
            .init(&device);
        let x = Tensor::<CpuBackend, 4>::random([2, 3, 5, 5], Distribution::Default, &device);
        assert_eq!(values(conv2d(&conv, x.clone())), values(conv.forward(x)));
    }
}
