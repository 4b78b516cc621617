//! The kernel layer: ResNet's heavy operations, with each backend's own
//! implementation chosen here, in one place, so that [`crate::model`] reads like a
//! ResNet and every backend trick lives in this module.
//!
//! | operation | CPU training (`Autodiff<Flex>`) | CPU inference (`Flex`) | CUDA training | CUDA inference | other backends |
//! |---|---|---|---|---|---|
//! | [`conv2d()`] | oneDNN ([`onednn`]; else [`cpu`]: burn-flex's convolution with a batch-parallel input gradient) | oneDNN with the bias (else burn's) | cuDNN (else implicit GEMM) | cuDNN (else implicit GEMM) + bias | burn's |
//! | [`batch_norm_train()`] | oneDNN (else burn's operations, [`batch_norm_ops`]) | — | cuDNN | — | burn's operations |
//! | [`contiguous()`] | burn's (the autodiff wrapper) | [`contiguous`](mod@contiguous): block copies over the threads | a reshape round trip | a reshape round trip | a reshape round trip |
//!
//! Training kernels enter burn's autodiff graph as one node each with their own
//! backward step ([`autodiff`]), the same plumbing for every backend. [`Kernels::of`]
//! is the only place that looks at the backend's type; the functions below match on
//! its answer. On CUDA, [`cuda_convolutions`] decides once per process between cuDNN
//! ([`cudnn`]) and burn-cubecl's implicit-GEMM convolutions ([`gemm`]), and says on
//! stderr which it took and why. On the CPU, [`cpu_kernels`] decides once between
//! oneDNN ([`onednn`], loaded at run time) and burn-flex's kernels ([`cpu`]), and says
//! so on stderr when oneDNN is not used.

pub mod autodiff;
pub mod contiguous;
pub mod cpu;
pub mod cpu_norm;
#[cfg(feature = "cuda")]
pub mod cudnn;
#[cfg(feature = "cuda")]
pub mod gemm;
pub mod onednn;

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::Flex;

#[cfg(feature = "cuda")]
use crate::backend::Precision;
use autodiff::{ConvKernels, NormKernels};
use cpu::CpuKernels;

/// Which kernels a backend gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// `Autodiff<Flex>`: CPU training.
    CpuTrain(CpuKernelLibrary),
    /// `Flex`: CPU inference, and the inner backend of CPU training (gradients).
    Cpu(CpuKernelLibrary),
    /// `Autodiff<Cuda<F>>` (burn-cuda without fusion): CUDA training.
    #[cfg(feature = "cuda")]
    CudaTrain(Precision, CudaConvolutions),
    /// `Cuda<F>`: CUDA inference.
    #[cfg(feature = "cuda")]
    Cuda(Precision, CudaConvolutions),
    /// Any other backend: burn's own kernels.
    Burn,
}

impl Kernels {
    /// The kernels of backend `B`.
    pub fn of<B: Backend>() -> Self {
        let id = TypeId::of::<B>();
        if id == TypeId::of::<Autodiff<Flex>>() {
            return Kernels::CpuTrain(cpu_kernels());
        }
        if id == TypeId::of::<Flex>() {
            return Kernels::Cpu(cpu_kernels());
        }
        #[cfg(feature = "cuda")]
        {
            use burn::tensor::{bf16, f16};
            use cudnn::Inner;
            for (precision, inner, train) in [
                (
                    Precision::F32,
                    TypeId::of::<Inner<f32>>(),
                    TypeId::of::<Autodiff<Inner<f32>>>(),
                ),
                (
                    Precision::F16,
                    TypeId::of::<Inner<f16>>(),
                    TypeId::of::<Autodiff<Inner<f16>>>(),
                ),
                (
                    Precision::Bf16,
                    TypeId::of::<Inner<bf16>>(),
                    TypeId::of::<Autodiff<Inner<bf16>>>(),
                ),
            ] {
                if id == train {
                    return Kernels::CudaTrain(precision, cuda_convolutions());
                }
                if id == inner {
                    return Kernels::Cuda(precision, cuda_convolutions());
                }
            }
        }
        Kernels::Burn
    }
}

/// Which library the CPU's convolutions and batch norm run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuKernelLibrary {
    /// oneDNN ([`onednn`]): f32 convolutions and batch norm.
    Onednn,
    /// burn-flex's convolutions ([`cpu`]) and batch norm as burn's operations.
    Flex,
}

/// The environment switch that keeps the CPU on burn-flex's kernels even where oneDNN
/// loads, for A/B runs.
pub const NO_ONEDNN_ENV: &str = "RECTRAIN_NO_ONEDNN";

/// The CPU's kernels for this process, decided at the first CPU kernel: oneDNN when it
/// loads (`libdnnl.so.2`) and [`NO_ONEDNN_ENV`] is not set, else burn-flex's. Says once
/// on stderr when oneDNN is not used, and why.
pub fn cpu_kernels() -> CpuKernelLibrary {
    static CHOICE: std::sync::OnceLock<CpuKernelLibrary> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        let why = match std::env::var(NO_ONEDNN_ENV) {
            Ok(v) if !v.is_empty() && v != "0" => format!("oneDNN switched off ({NO_ONEDNN_ENV})"),
            _ => match ::onednn::Dnnl::get() {
                Ok(_) => return CpuKernelLibrary::Onednn,
                Err(why) => why,
            },
        };
        eprintln!(
            "CPU kernels: {why}: convolutions on burn-flex \
             (slower; install oneDNN 2, e.g. Debian's libdnnl2, for full speed)"
        );
        CpuKernelLibrary::Flex
    })
}

/// Which kernels CUDA's convolutions (and batch norm) run on.
#[cfg(feature = "cuda")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaConvolutions {
    /// cuDNN's convolutions and batch norm ([`cudnn`]).
    Cudnn,
    /// burn-cubecl's implicit-GEMM convolutions ([`gemm`]); batch norm as burn's
    /// operations.
    ImplicitGemm,
}

/// The environment switch that turns cuDNN off (as `--no-cudnn`), for A/B runs.
pub const NO_CUDNN_ENV: &str = "RECTRAIN_NO_CUDNN";

static NO_CUDNN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--no-cudnn`: CUDA uses the implicit-GEMM convolutions even where cuDNN loads.
/// Takes effect when called before the first CUDA kernel runs.
pub fn disable_cudnn() {
    NO_CUDNN.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(feature = "cuda")]
/// Whether cuDNN was switched off: `--no-cudnn`, or [`NO_CUDNN_ENV`] set to anything
/// but empty or `0`.
fn cudnn_switched_off() -> Option<&'static str> {
    if NO_CUDNN.load(std::sync::atomic::Ordering::Relaxed) {
        return Some("--no-cudnn");
    }
    match std::env::var(NO_CUDNN_ENV) {
        Ok(v) if !v.is_empty() && v != "0" => Some(NO_CUDNN_ENV),
        _ => None,
    }
}

/// CUDA's convolutions for this process, decided at the first CUDA kernel: cuDNN
/// when it loads and is not switched off, else implicit GEMM. Says once on stderr
/// which and why.
#[cfg(feature = "cuda")]
pub fn cuda_convolutions() -> CudaConvolutions {
    static CHOICE: std::sync::OnceLock<CudaConvolutions> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        let (choice, why) = match (cudnn_switched_off(), cudnn::probe()) {
            (Some(switch), _) => (
                CudaConvolutions::ImplicitGemm,
                format!("cuDNN switched off ({switch})"),
            ),
            (None, Err(why)) => (CudaConvolutions::ImplicitGemm, why),
            (None, Ok(version)) => (
                CudaConvolutions::Cudnn,
                format!("cuDNN {}", cudnn::version_name(version)),
            ),
        };
        match choice {
            CudaConvolutions::Cudnn => {
                eprintln!("CUDA kernels: {why}: convolutions and batch norm on cuDNN")
            }
            CudaConvolutions::ImplicitGemm => eprintln!(
                "CUDA kernels: {why}: convolutions on burn's implicit-GEMM kernels, \
                 batch norm on burn's (slower; install cuDNN 9 for full speed)"
            ),
        }
        choice
    })
}

/// `f::<B, K>(args)` with the CUDA kernels `$family<F>` of `$precision`.
#[cfg(feature = "cuda")]
macro_rules! cuda_kernels {
    ($precision:expr, $family:ident, $f:ident::<$b:ty>($($arg:expr),* $(,)?)) => {{
        use burn::tensor::{bf16, f16};
        match $precision {
            Precision::F32 => $f::<$b, $family<f32>>($($arg),*),
            Precision::F16 => $f::<$b, $family<f16>>($($arg),*),
            Precision::Bf16 => $f::<$b, $family<bf16>>($($arg),*),
        }
    }};
}

/// `conv.forward(x)` with the backend's convolution kernel, in `x`'s dtype: under
/// mixed precision the f32 weights are cast to the activations' half type on the way
/// in (inside autodiff's graph, so their gradients come back in f32).
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let dtype = x.dtype();
    let weight = in_dtype(conv.weight.val(), dtype);
    let bias = conv.bias.as_ref().map(|b| in_dtype(b.val(), dtype));
    let Some(options) = kernel_options(conv) else {
        let out = conv.forward(in_dtype(x, conv.weight.val().dtype()));
        return in_dtype(out, dtype);
    };
    match (Kernels::of::<B>(), bias) {
        (Kernels::CpuTrain(CpuKernelLibrary::Onednn), None) => {
            train_conv::<B, onednn::Onednn>(x, weight, options)
        }
        (Kernels::CpuTrain(CpuKernelLibrary::Flex), None) => {
            train_conv::<B, CpuKernels>(x, weight, options)
        }
        (Kernels::Cpu(CpuKernelLibrary::Onednn), bias)
            if onednn::conv_takes(x.dtype(), weight.dtype(), bias.as_ref().map(|b| b.dtype())) =>
        {
            let flex = |t: FloatTensor<B>| to::<B, burn_flex::FlexTensor>(t);
            let y = onednn::conv_forward(
                flex(x.into_primitive().tensor()),
                flex(weight.into_primitive().tensor()),
                bias.map(|b| flex(b.into_primitive().tensor())),
                &options,
            );
            from_primitive(to::<Flex, FloatTensor<B>>(y))
        }
        #[cfg(feature = "cuda")]
        (Kernels::CudaTrain(precision, path), None) => {
            use cudnn::Cudnn;
            use gemm::Gemm;
            match path {
                CudaConvolutions::Cudnn => {
                    cuda_kernels!(precision, Cudnn, train_conv::<B>(x, weight, options))
                }
                CudaConvolutions::ImplicitGemm => {
                    cuda_kernels!(precision, Gemm, train_conv::<B>(x, weight, options))
                }
            }
        }
        #[cfg(feature = "cuda")]
        (Kernels::Cuda(precision, path), bias) => {
            use cudnn::Cudnn;
            use gemm::Gemm;
            let y = match path {
                CudaConvolutions::Cudnn => {
                    cuda_kernels!(precision, Cudnn, infer_conv::<B>(x, weight, options))
                }
                CudaConvolutions::ImplicitGemm => {
                    cuda_kernels!(precision, Gemm, infer_conv::<B>(x, weight, options))
                }
            };
            with_bias(y, bias)
        }
        (_, bias) => burn::tensor::module::conv2d(x, weight, bias, options),
    }
}

/// `t` in `dtype` (itself when it already is): where mixed precision's half-type
/// activations meet f32 parameters.
pub fn in_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn with_bias<B: Backend>(y: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    match bias {
        Some(bias) => {
            let k = bias.dims()[0];
            y + bias.reshape([1, k, 1, 1])
        }
        None => y,
    }
}

/// The convolution's options when the kernels take it (one group, symmetric
/// explicit padding), else `None`.
fn kernel_options<B: Backend>(conv: &Conv2d<B>) -> Option<ConvOptions<2>> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return None;
    };
    (conv.groups == 1 && top == bottom && left == right)
        .then(|| ConvOptions::new(conv.stride, [top, left], conv.dilation, 1))
}

/// `B`'s float tensor as `T` (`B` is the backend [`Kernels::of`] selected `T`'s
/// kernels for).
fn to<B: Backend, T: 'static>(t: FloatTensor<B>) -> T {
    cast::<FloatTensor<B>, T>(t)
        .unwrap_or_else(|_| unreachable!("Kernels::of selected these kernels for B"))
}

fn from_primitive<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A training convolution on `B = Autodiff<K::B>` through [`autodiff::conv2d`].
fn train_conv<B: Backend, K: ConvKernels>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    let x = to::<B, FloatTensor<Autodiff<K::B>>>(x.into_primitive().tensor());
    let w = to::<B, FloatTensor<Autodiff<K::B>>>(weight.into_primitive().tensor());
    let y = autodiff::conv2d::<K>(x, w, options);
    from_primitive(to::<Autodiff<K::B>, FloatTensor<B>>(y))
}

/// An inference convolution on `B = K::B` (no bias).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn infer_conv<B: Backend, K: ConvKernels>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    let x = to::<B, FloatTensor<K::B>>(x.into_primitive().tensor());
    let w = to::<B, FloatTensor<K::B>>(weight.into_primitive().tensor());
    from_primitive(to::<K::B, FloatTensor<B>>(K::forward(x, w, &options)))
}

/// What [`batch_norm_train`] returns: the output and the batch's statistics (for the
/// running statistics; no gradient flows through them).
#[derive(Debug, Clone)]
pub struct NormOutput<B: Backend> {
    /// The normalised output, `[N, C, H, W]`.
    pub y: Tensor<B, 4>,
    /// The batch's per-channel mean, `[C]`.
    pub mean: Tensor<B, 1>,
    /// The batch's per-channel biased variance, `[C]`.
    pub var: Tensor<B, 1>,
}

/// Training-mode batch norm over `[N, C, H, W]` with the batch's statistics:
/// `y = γ·(x − μ)/√(σ² + ε) + β` per channel, then `max(y, 0)` when `relu`, with the
/// backend's kernel. On the CPU (f32) that is [`cpu_norm::CpuNorm`] with the ReLU fused,
/// whichever library runs the convolutions: with oneDNN's convolutions it trains as fast
/// as oneDNN 2.6's plain-layout batch norm followed by burn's ReLU did, and on burn-flex's
/// 20–40% faster than burn's operations (ResNet-18 b64 28²: 65.9 → 93.8 and 61.4 → 74.5
/// img/s; b16 224²: 2.4 → 3.3 and 2.1 → 3.0; two interleaved rounds, 2-core AMD EPYC,
/// 2026-12-07).
pub fn batch_norm_train<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
) -> NormOutput<B> {
    let param_dtype = gamma.dtype();
    let out = match Kernels::of::<B>() {
        Kernels::CpuTrain(_) if cpu_norm::takes(x.dtype(), param_dtype) => {
            return train_norm::<B, cpu_norm::CpuNorm>(x, gamma, beta, epsilon, relu);
        }
        // cuDNN takes f32 parameters with half-type data (and gives their gradients in
        // the parameters' dtype).
        #[cfg(feature = "cuda")]
        Kernels::CudaTrain(precision, CudaConvolutions::Cudnn) if epsilon >= cudnn::MIN_EPSILON => {
            use cudnn::Cudnn;
            return cuda_kernels!(
                precision,
                Cudnn,
                train_norm::<B>(x, gamma, beta, epsilon, relu)
            );
        }
        _ => {
            // Statistics in the parameters' dtype (f32 under mixed precision, as
            // cuDNN): half-type sums over N·H·W values lose most of their digits.
            let dtype = x.dtype();
            let out = batch_norm_ops(in_dtype(x, param_dtype), gamma, beta, epsilon);
            NormOutput {
                y: in_dtype(relu_if(out.y, relu), dtype),
                mean: out.mean.detach(),
                var: out.var.detach(),
            }
        }
    };
    NormOutput {
        y: out.y,
        mean: in_dtype(out.mean, param_dtype),
        var: in_dtype(out.var, param_dtype),
    }
}

/// `max(t, 0)` when `relu`, else `t`.
fn relu_if<B: Backend>(t: Tensor<B, 4>, relu: bool) -> Tensor<B, 4> {
    if relu {
        burn::tensor::activation::relu(t)
    } else {
        t
    }
}

/// Training batch norm on `B = Autodiff<K::B>` through [`autodiff::batch_norm`], then
/// burn's ReLU when `relu`.
fn train_norm<B: Backend, K: NormKernels>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    relu: bool,
) -> NormOutput<B> {
    let ad = |t: FloatTensor<B>| to::<B, FloatTensor<Autodiff<K::B>>>(t);
    let [y, mean, var] = autodiff::batch_norm::<K>(
        ad(x.into_primitive().tensor()),
        ad(gamma.into_primitive().tensor()),
        ad(beta.into_primitive().tensor()),
        epsilon,
        relu && K::FUSES_RELU,
    );
    let back = |t| to::<Autodiff<K::B>, FloatTensor<B>>(t);
    NormOutput {
        y: relu_if(from_primitive(back(y)), relu && !K::FUSES_RELU),
        mean: from_primitive(back(mean)),
        var: from_primitive(back(var)),
    }
}

/// Batch norm with the batch's statistics written as burn operations (which autodiff
/// differentiates), with what a backward step needs: the CPU kernel's forward step,
/// and every backend's where no kernel of its own exists.
///
/// `y = x·s + t` with per-channel `s = γ/√(σ²+ε)` and `t = β − μ·s`, whose
/// `[N, C, 1, 1]` operands are materialised so that CPU backends take their contiguous
/// broadcast kernels (burn's four `[1, C, 1, 1]` broadcasts walk strided indices on
/// burn-flex: about 40% of a CPU training step).
pub fn batch_norm_ops<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> NormStatistics<B> {
    let [n, c, h, w] = x.dims();
    let flat = x.clone().swap_dims(0, 1).reshape([c, n * h * w]);
    let mean = flat.clone().mean_dim(1); // [C, 1]
    let var = (flat - mean.clone()).square().mean_dim(1).reshape([c]);
    let mean = mean.reshape([c]);
    let inv_std = var.clone().add_scalar(epsilon).sqrt().recip();
    let scale = gamma * inv_std.clone();
    let shift = beta - mean.clone() * scale.clone();
    let y = x * per_channel(scale, n) + per_channel(shift, n);
    NormStatistics {
        y,
        mean,
        var,
        inv_std,
    }
}

/// [`batch_norm_ops`]' results.
#[derive(Debug, Clone)]
pub struct NormStatistics<B: Backend> {
    /// The normalised output.
    pub y: Tensor<B, 4>,
    /// The per-channel mean.
    pub mean: Tensor<B, 1>,
    /// The per-channel biased variance.
    pub var: Tensor<B, 1>,
    /// `1/√(σ²+ε)` per channel.
    pub inv_std: Tensor<B, 1>,
}

/// `t: [C]` as `[N, C, 1, 1]`, materialised.
pub(crate) fn per_channel<B: Backend>(t: Tensor<B, 1>, n: usize) -> Tensor<B, 4> {
    let c = t.dims()[0];
    t.reshape([1, c, 1, 1]).repeat_dim(0, n)
}

/// `t` with a contiguous layout (the same values, in row-major order): gradients before
/// the optimizer's element-wise updates.
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    match Kernels::of::<B>() {
        Kernels::Cpu(_) => contiguous::contiguous(t),
        _ => {
            // Reshaping a strided tensor to one dimension copies it in order (and is
            // free when it is contiguous already).
            let dims = t.dims();
            t.reshape([dims.iter().product::<usize>()]).reshape(dims)
        }
    }
}

/// `t` as a `U` when `T` is `U` (the same type), else `t` back: how a kernel selected
/// by [`Kernels::of`] gets its backend's concrete tensor type.
pub fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
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
        assert_eq!(
            Kernels::of::<Autodiff<Flex>>(),
            Kernels::CpuTrain(cpu_kernels())
        );
        assert_eq!(Kernels::of::<Flex>(), Kernels::Cpu(cpu_kernels()));
        #[cfg(feature = "cuda")]
        {
            use burn::tensor::bf16;
            assert!(matches!(
                Kernels::of::<cudnn::Inner<f32>>(),
                Kernels::Cuda(Precision::F32, _)
            ));
            assert!(matches!(
                Kernels::of::<Autodiff<cudnn::Inner<bf16>>>(),
                Kernels::CudaTrain(Precision::Bf16, _)
            ));
        }
        // Another backend (autodiff with gradient checkpointing): burn's kernels.
        type Checkpointed =
            Autodiff<Flex, burn_autodiff::checkpoint::strategy::BalancedCheckpointing>;
        assert_eq!(Kernels::of::<Checkpointed>(), Kernels::Burn);
    }
}
