//! The kernel layer: ResNet's heavy operations, with each backend's own
//! implementation chosen here, in one place, so that [`crate::model`] reads like a
//! ResNet and every backend trick lives in this module.
//!
//! | operation | `Autodiff<Flex>` (CPU training) | `Flex` (CPU inference) | other backends (CUDA) |
//! |---|---|---|---|
//! | [`conv2d()`] | [`cpu_conv`]: burn-flex's convolution with a batch-parallel input gradient | burn's | burn's |
//! | [`contiguous()`] | burn's (the autodiff wrapper) | [`contiguous`](mod@contiguous): block copies over the threads | a reshape round trip |
//!
//! [`Kernels::of`] is the only place that looks at the backend's type; the functions
//! below match on its answer. The cuDNN kernels planned for CUDA (convolution and
//! batch norm, forward and backward) get a `Kernels` variant and a module here.

pub mod contiguous;
pub mod cpu_conv;

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::Flex;

/// Which kernels a backend gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// `Autodiff<Flex>`: CPU training.
    CpuTrain,
    /// `Flex`: CPU inference, and the inner backend of CPU training (gradients).
    Cpu,
    /// Any other backend: burn's own kernels.
    Burn,
}

impl Kernels {
    /// The kernels of backend `B`.
    pub fn of<B: Backend>() -> Self {
        let id = TypeId::of::<B>();
        if id == TypeId::of::<Autodiff<Flex>>() {
            Kernels::CpuTrain
        } else if id == TypeId::of::<Flex>() {
            Kernels::Cpu
        } else {
            Kernels::Burn
        }
    }
}

/// `conv.forward(x)` with the backend's convolution kernel.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match Kernels::of::<B>() {
        Kernels::CpuTrain => cpu_conv::conv2d(conv, x),
        Kernels::Cpu | Kernels::Burn => conv.forward(x),
    }
}

/// `t` with a contiguous layout (the same values, in row-major order): gradients before
/// the optimizer's element-wise updates.
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match Kernels::of::<B>() {
        Kernels::Cpu => contiguous::contiguous(t),
        Kernels::CpuTrain | Kernels::Burn => {
            // Reshaping a strided tensor to one dimension copies it in order (and is
            // free when it is contiguous already).
            let dims = t.dims();
            t.reshape([dims.iter().product::<usize>()]).reshape(dims)
        }
    }
}

/// `t` as a `U` when `T` is `U` (the same type), else `t` back: how a kernel selected
/// by [`Kernels::of`] gets its backend's concrete tensor type.
pub(crate) fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("the slot was just filled")),
        None => Err(slot.expect("not taken: no downcast")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_gets_its_kernels() {
        assert_eq!(Kernels::of::<Autodiff<Flex>>(), Kernels::CpuTrain);
        assert_eq!(Kernels::of::<Flex>(), Kernels::Cpu);
        #[cfg(feature = "cuda")]
        assert_eq!(Kernels::of::<burn::backend::Cuda>(), Kernels::Burn);
    }
}
