//! The CPU's training batch norm ([`CpuNorm`]) on the `cpu-norm` crate's kernels, for
//! f32 burn-flex tensors with either CPU kernel library: statistics, normalisation and
//! the following ReLU in one pass over the output, and the three gradients in two passes,
//! where burn's operations take a dozen passes and oneDNN 2.6's plain-layout batch norm
//! (which rectrain used before) was the slowest primitive of a ResNet step.

use burn::tensor::DType;
use burn_flex::{Flex, FlexTensor};
use cpu_norm::Shape;

use super::autodiff::{NormForward, NormKernels};
use super::cpu::{contiguous, dims4, tensor, values};

/// The `cpu-norm` kernels on burn-flex tensors, ReLU fused.
#[derive(Debug)]
pub struct CpuNorm;

/// Whether [`CpuNorm`] takes these operands (f32 data and parameters; the caller runs
/// burn's operations otherwise, e.g. for the bf16 of the mixed-precision tests).
pub fn takes(x: DType, gamma: DType) -> bool {
    x == DType::F32 && gamma == DType::F32
}

impl NormKernels for CpuNorm {
    type B = Flex;
    const FUSES_RELU: bool = true;

    /// `saved` is `[mean ‖ 1/√(σ²+ε)]` (`[2C]`) and, with `relu`, the output (whose
    /// positive values gate the gradient; it is kept alive by the next layer anyway).
    fn forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> NormForward<FlexTensor> {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let dims = dims4(&x);
        let out = cpu_norm::forward(
            values(&x),
            Shape::nchw(dims),
            values(&gamma),
            values(&beta),
            epsilon as f32,
            relu,
        );
        let c = dims[1];
        let y = tensor(out.y, &dims);
        let mut stats = out.mean.clone();
        stats.extend_from_slice(&out.inv_std);
        let gate = if relu {
            y.clone()
        } else {
            tensor(vec![], &[0])
        };
        NormForward {
            y,
            mean: tensor(out.mean, &[c]),
            var: tensor(out.var, &[c]),
            saved: [tensor(stats, &[2 * c]), gate],
        }
    }

    fn backward(
        x: FlexTensor,
        gamma: FlexTensor,
        [stats, gate]: [FlexTensor; 2],
        dy: FlexTensor,
        _epsilon: f64,
        relu: bool,
    ) -> [FlexTensor; 3] {
        let (x, gamma, dy) = (contiguous(x), contiguous(gamma), contiguous(dy));
        let dims = dims4(&x);
        let c = dims[1];
        let (mean, inv_std) = values(&stats).split_at(c);
        let out = cpu_norm::backward(
            values(&x),
            values(&dy),
            relu.then(|| values(&gate)),
            Shape::nchw(dims),
            values(&gamma),
            mean,
            inv_std,
        );
        [
            tensor(out.dx, &dims),
            tensor(out.dgamma, &[c]),
            tensor(out.dbeta, &[c]),
        ]
    }
}
