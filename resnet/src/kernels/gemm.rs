//! burn-cubecl's implicit-GEMM convolutions, selected directly: the CUDA path when
//! cuDNN cannot be loaded or is switched off (`--no-cudnn`, `RECTRAIN_NO_CUDNN=1`).
//!
//! burn's own module operations pass cubecl's `Direct` kernels when autotuning is off
//! (the lean build, see `Cargo.toml`); the implicit-GEMM kernels are 2–3× faster on an
//! H200 and need no tuning. Where cubek refuses a shape (`ConvSetupError`) the same
//! call runs `Direct`, and cubek itself takes `Direct` for the stride-2 data gradient.

use std::marker::PhantomData;

use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorMetadata;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::kernel::conv::{
    conv_data_backward, conv_forward, conv_weight_backward, ConvStrategy,
};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::FloatElement;

use super::autodiff::ConvKernels;
use super::cudnn::Inner;

type Tensor = CubeTensor<CudaRuntime>;

/// The implicit-GEMM convolution kernels in float type `F`.
#[derive(Debug)]
pub struct Gemm<F>(PhantomData<F>);

/// `run(ImplicitGemm)`, else `run(Direct)` when cubek refuses the shape.
fn gemm_or_direct<E: std::fmt::Debug>(
    run: impl Fn(ConvStrategy) -> Result<Tensor, E>,
    what: &str,
) -> Tensor {
    run(ConvStrategy::ImplicitGemm)
        .or_else(|_| run(ConvStrategy::Direct))
        .unwrap_or_else(|e| panic!("convolution {what} failed: {e:?}"))
}

impl<F: FloatElement> ConvKernels for Gemm<F> {
    type B = Inner<F>;

    fn forward(x: Tensor, w: Tensor, options: &ConvOptions<2>) -> Tensor {
        gemm_or_direct(
            |s| conv_forward::<CudaRuntime, 2>(x.clone(), w.clone(), None, options.clone(), s),
            "forward",
        )
    }

    fn backward(
        x: Tensor,
        w: Tensor,
        dy: Tensor,
        options: &ConvOptions<2>,
        [want_x, want_w]: [bool; 2],
    ) -> [Option<Tensor>; 2] {
        let dx = want_x.then(|| {
            gemm_or_direct(
                |s| {
                    conv_data_backward::<CudaRuntime, 2>(
                        dy.clone(),
                        w.clone(),
                        x.shape(),
                        options.clone(),
                        s,
                    )
                },
                "data gradient",
            )
        });
        let dw = want_w.then(|| {
            gemm_or_direct(
                |s| {
                    conv_weight_backward::<CudaRuntime, 2>(
                        x.clone(),
                        dy.clone(),
                        w.shape(),
                        options.clone(),
                        s,
                    )
                },
                "weight gradient",
            )
        });
        [dx, dw]
    }
}
