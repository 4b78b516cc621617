//! The CPU's kernels ([`Flex`]): convolution with a backward step that uses every
//! core, and batch norm as a few whole-tensor operations.
//!
//! burn's autodiff computes a convolution's input gradient with burn-flex's transposed
//! convolution, which walks the batch one image at a time on one thread: a fifth of a
//! CPU training step at 28×28 ran there while the other core waited. [`CpuKernels`]'
//! backward step computes the input gradient for slices of the batch in parallel (each
//! image's gradient is independent of the others, so the result is the same), beside
//! the weight gradient (a strided view, which the training loop's `contiguous_grads`
//! copies).
//!
//! Batch norm's forward step is `x·s + t` with per-channel `s = γ/√(σ²+ε)` and
//! `t = β − μ·s`, its `[N, C, 1, 1]` operands materialised so that burn-flex takes its
//! contiguous broadcast kernels (burn's four `[1, C, 1, 1]` broadcasts walk strided
//! indices: about 40% of a CPU training step); the backward step is the closed form
//! `dx = s·(dy − mean(dy) − x̂·mean(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.

use burn::tensor::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::tensor::TensorData;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::autodiff::ConvKernels;

/// The CPU's kernels.
#[derive(Debug)]
pub struct CpuKernels;

/// Makes glibc's allocator keep large freed blocks for reuse: call first thing in
/// `main` (rectrain, recpredict, gpu_probe).
///
/// By default glibc maps every block over 128 KiB–32 MiB afresh with `mmap` and
/// unmaps it when freed, so each training step's new activations, gradients and
/// oneDNN outputs (up to 51 MB each for ResNet-18 at batch 16, 224²) are page-faulted
/// and zeroed by the kernel again: 12% of a CPU training step in the kernel's
/// `clear_page` (perf). With blocks up to 1 GiB served from the heap and the heap's top
/// kept up to 2 GiB, they are reused: ResNet-18 b16 224² training went from 12.4 to
/// 14.5 img/s on 2 cores. The process keeps its peak memory (as PyTorch's and burn's
/// caching allocators do on GPUs). Not glibc (musl, other systems): nothing to do.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two of glibc's allocator settings; called before
    // any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

impl ConvKernels for CpuKernels {
    type B = Flex;

    fn forward(x: FlexTensor, w: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
        Flex::conv2d(x, w, None, options.clone())
    }

    fn backward(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        options: &ConvOptions<2>,
        [want_x, want_w]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let (dx, dw) = rayon::join(
            || want_x.then(|| x_backward(&x, &w, &dy, options)),
            || {
                want_w.then(|| {
                    Flex::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), options.clone())
                })
            },
        );
        [dx, dw]
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

// burn-flex tensors as the CPU kernels (oneDNN's, cpu-norm's) take and give them.

pub(super) fn dims4(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// `t` as a contiguous f32 slice (`t` must be contiguous f32: see [`contiguous`]).
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .unwrap_or_else(|| unreachable!("f32, made contiguous before the call"))
}

/// `t`, copied into row-major order where it is not.
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

pub(super) fn tensor(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
}

/// The CPU's batch norm node ([`NormKernels`]): the reference that tests
/// [`super::autodiff::batch_norm`]'s plumbing (forward kernel, closed-form backward step,
/// constants for the running statistics) against burn's autodiff of
/// [`super::batch_norm_ops`], for the cuDNN node that shares it. CPU training itself
/// differentiates [`super::batch_norm_ops`].
#[cfg(test)]
mod reference {
    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};

    use super::CpuKernels;
    use crate::kernels::autodiff::{NormForward, NormKernels};
    use crate::kernels::per_channel;

    /// Per-channel mean of `x: [N, C, H, W]` as `[C]`.
    fn channel_mean(x: Tensor<Flex, 4>) -> Tensor<Flex, 1> {
        let c = x.dims()[1];
        x.mean_dim(0).mean_dim(2).mean_dim(3).reshape([c])
    }

    fn tensor<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    fn primitive<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
        t.into_primitive().tensor()
    }

    impl NormKernels for CpuKernels {
        type B = Flex;

        fn forward(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f64,
            _relu: bool,
        ) -> NormForward<FlexTensor> {
            let out =
                crate::kernels::batch_norm_ops(tensor(x), tensor(gamma), tensor(beta), epsilon);
            NormForward {
                y: primitive(out.y),
                mean: primitive(out.mean.clone()),
                var: primitive(out.var),
                saved: [primitive(out.mean), primitive(out.inv_std)],
            }
        }

        fn backward(
            x: FlexTensor,
            gamma: FlexTensor,
            [mean, inv_std]: [FlexTensor; 2],
            dy: FlexTensor,
            _epsilon: f64,
            _relu: bool,
        ) -> [FlexTensor; 3] {
            let (x, dy) = (tensor::<4>(x), tensor::<4>(dy));
            let n = x.dims()[0];
            let (mean, inv_std) = (tensor::<1>(mean), tensor::<1>(inv_std));
            let x_hat = (x - per_channel(mean, n)) * per_channel(inv_std.clone(), n);
            let mean_dy = channel_mean(dy.clone());
            let mean_dy_x_hat = channel_mean(dy.clone() * x_hat.clone());
            let count = dy.dims().iter().product::<usize>() / dy.dims()[1];
            let d_beta = mean_dy.clone().mul_scalar(count as f64);
            let d_gamma = mean_dy_x_hat.clone().mul_scalar(count as f64);
            let scale = tensor::<1>(gamma) * inv_std;
            let dx = (dy - per_channel(mean_dy, n) - x_hat * per_channel(mean_dy_x_hat, n))
                * per_channel(scale, n);
            [primitive(dx), primitive(d_gamma), primitive(d_beta)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CpuKernels;
    use crate::backend::CpuBackend;
    use crate::kernels::autodiff::{ConvKernels, NormKernels};
    use crate::kernels::cpu_norm::CpuNorm;
    use crate::kernels::onednn::{onednn_here, Onednn};
    use crate::kernels::{
        batch_norm_ops, conv2d, cpu_kernels, train_conv, train_norm, CpuKernelLibrary,
    };
    use burn::backend::Autodiff;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::PaddingConfig2d;
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};
    use burn_autodiff::checkpoint::strategy::BalancedCheckpointing;
    use burn_flex::Flex;

    type Train = Autodiff<Flex>;
    /// The same autodiff over the same CPU backend, but a type the kernel layer does
    /// not know: burn's own operations, the reference.
    type Reference = Autodiff<Flex, BalancedCheckpointing>;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst <= tolerance, "{what}: relative error {worst}");
    }

    /// burn-flex's kernels: output and both gradients equal burn's own convolution
    /// exactly, for the convolutions a ResNet has (7×7/2 stem, 3×3/1, 3×3/2, 1×1/2
    /// shortcut) and batch sizes that do and do not split evenly over the threads.
    #[test]
    fn same_output_and_gradients_as_burns_convolution() {
        conv_node_matches_burn::<CpuKernels>(0.0);
    }

    /// oneDNN's kernels through the same node: burn's convolution to floating-point
    /// order.
    #[test]
    fn onednn_convolution_node_matches_burns() {
        if onednn_here() {
            conv_node_matches_burn::<Onednn>(1e-5);
        }
    }

    /// The convolution node with `K`'s kernels against burn's own convolution and its
    /// autodiff: equal (`tolerance` 0) or within `tolerance` relative to 1 + |value|.
    fn conv_node_matches_burn<K: ConvKernels<B = Flex>>(tolerance: f32) {
        let same = |a: &[f32], b: &[f32], what: &str| {
            if tolerance == 0.0 {
                assert_eq!(a, b, "{what}");
            } else {
                close(a, b, tolerance, what);
            }
        };
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
                let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
                let ours = |x| train_conv::<Train, K>(x, conv.weight.val(), options.clone());
                let x = x0.clone().require_grad();
                let y = ours(x.clone());
                let case = format!("{k}x{k}/{stride} n={n}");
                same(&values(y.clone()), &values(y_ref), &case);
                let g = (y * up.clone()).sum().backward();
                same(
                    &values(x.grad(&g).unwrap()),
                    &gx_ref,
                    &format!("x grad {case}"),
                );
                same(
                    &values(conv.weight.grad(&g).unwrap()),
                    &gw_ref,
                    &format!("w grad {case}"),
                );
                // An input without gradient (the stem's images): only the weight's.
                let y = ours(x0.clone());
                let g = (y * up).sum().backward();
                same(
                    &values(conv.weight.grad(&g).unwrap()),
                    &gw_ref,
                    &format!("w grad {case}"),
                );
                assert!(x0.grad(&g).is_none());
            }
        }
    }

    /// Inference on the CPU (a convolution with a bias): oneDNN's forward where it
    /// loads, to floating-point order, else burn's own, exactly.
    #[test]
    fn cpu_inference_takes_onednn_or_burns_forward() {
        let device = Default::default();
        let conv: Conv2d<CpuBackend> = Conv2dConfig::new([3, 4], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(true)
            .init(&device);
        let x = Tensor::<CpuBackend, 4>::random([3, 3, 5, 7], Distribution::Default, &device);
        let (ours, burns) = (values(conv2d(&conv, x.clone())), values(conv.forward(x)));
        match cpu_kernels() {
            CpuKernelLibrary::Onednn => close(&ours, &burns, 1e-5, "oneDNN with bias"),
            CpuKernelLibrary::Flex => assert_eq!(ours, burns),
        }
    }

    /// The batch norm node (forward kernel, closed-form backward step) gives burn's
    /// autodiff of the same function: output, statistics and the gradients of x, γ
    /// and β, for shapes with one and several images, and a γ without gradient
    /// (MXNet's fixed γ).
    #[test]
    fn batch_norm_node_matches_burns_autodiff() {
        norm_node_matches_burn::<CpuKernels>(false);
        // A ReLU after it: burn's, after the node (these kernels do not fuse one).
        norm_node_matches_burn::<CpuKernels>(true);
    }

    /// The same with the CPU's training kernels (`cpu-norm`), alone and with the ReLU
    /// they fuse.
    #[test]
    fn cpu_norm_batch_norm_node_matches_burns_autodiff() {
        norm_node_matches_burn::<CpuNorm>(false);
        norm_node_matches_burn::<CpuNorm>(true);
    }

    /// `relu(batch_norm)` when `relu`: the reference applies burn's ReLU to burn's
    /// operations.
    fn norm_node_matches_burn<K: NormKernels<B = Flex>>(relu: bool) {
        use burn::tensor::activation::relu as burn_relu;
        let device = Default::default();
        for [n, c, h, w] in [[1, 3, 4, 5], [4, 8, 3, 3], [7, 2, 1, 1], [2, 16, 7, 6]] {
            let data =
                Tensor::<Flex, 4>::random([n, c, h, w], Distribution::Normal(3.0, 2.0), &device)
                    .into_data();
            let gamma =
                Tensor::<Flex, 1>::random([c], Distribution::Normal(1.0, 0.5), &device).into_data();
            let beta = Tensor::<Flex, 1>::random([c], Distribution::Default, &device).into_data();
            let up =
                Tensor::<Flex, 4>::random([n, c, h, w], Distribution::Default, &device).into_data();
            for fixed_gamma in [false, true] {
                let case = format!("{n}x{c}x{h}x{w} fixed γ {fixed_gamma} relu {relu}");
                // The reference: burn's operations and autodiff.
                let x = Tensor::<Reference, 4>::from_data(data.clone(), &device).require_grad();
                let g = Tensor::<Reference, 1>::from_data(gamma.clone(), &device);
                let g = if fixed_gamma { g } else { g.require_grad() };
                let b = Tensor::<Reference, 1>::from_data(beta.clone(), &device).require_grad();
                let mut r = batch_norm_ops(x.clone(), g.clone(), b.clone(), 1e-5);
                if relu {
                    r.y = burn_relu(r.y);
                }
                let u = Tensor::<Reference, 4>::from_data(up.clone(), &device);
                let grads = (r.y.clone() * u).sum().backward();
                // The kernel layer's node.
                let x2 = Tensor::<Train, 4>::from_data(data.clone(), &device).require_grad();
                let g2 = Tensor::<Train, 1>::from_data(gamma.clone(), &device);
                let g2 = if fixed_gamma { g2 } else { g2.require_grad() };
                let b2 = Tensor::<Train, 1>::from_data(beta.clone(), &device).require_grad();
                let out = train_norm::<Train, K>(x2.clone(), g2.clone(), b2.clone(), 1e-5, relu);
                let u2 = Tensor::<Train, 4>::from_data(up.clone(), &device);
                let grads2 = (out.y.clone() * u2).sum().backward();

                close(&values(out.y), &values(r.y), 1e-5, &format!("y {case}"));
                close(
                    &values(out.mean),
                    &values(r.mean),
                    1e-5,
                    &format!("mean {case}"),
                );
                close(
                    &values(out.var),
                    &values(r.var),
                    1e-5,
                    &format!("var {case}"),
                );
                let grad = |t: &Tensor<Reference, 4>| values(t.grad(&grads).unwrap());
                close(
                    &values(x2.grad(&grads2).unwrap()),
                    &grad(&x),
                    1e-4,
                    &format!("dx {case}"),
                );
                close(
                    &values(b2.grad(&grads2).unwrap()),
                    &values(b.grad(&grads).unwrap()),
                    1e-4,
                    &format!("dβ {case}"),
                );
                if fixed_gamma {
                    assert!(g2.grad(&grads2).is_none(), "{case}");
                } else {
                    close(
                        &values(g2.grad(&grads2).unwrap()),
                        &values(g.grad(&grads).unwrap()),
                        1e-4,
                        &format!("dγ {case}"),
                    );
                }
            }
        }
    }
}
