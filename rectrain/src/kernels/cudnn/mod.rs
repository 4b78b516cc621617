//! cuDNN's convolutions and batch norm on the memory of burn-cuda tensors.
//!
//! [`Cudnn<F>`] implements the kernel layer's [`ConvKernels`] and [`NormKernels`] for
//! `CubeBackend<CudaRuntime, F, i32, u8>` (burn-cuda without fusion), F = f32, f16 or
//! bf16:
//!
//! - **Memory.** Inputs are made contiguous (NCHW, row-major) when they are not; outputs
//!   and cuDNN's workspace come from cubecl's allocator (the tensor's own client), and
//!   cuDNN gets their device pointers. cubecl and cudarc retain the same primary
//!   context, so the pointers are valid for both.
//! - **Ordering.** cubecl 0.10 runs its kernels on a stream of its own that it does not
//!   expose, so each cuDNN call is ordered by synchronisation: cubecl's work is waited
//!   for (`Backend::sync`) before cuDNN reads its tensors, and cuDNN's stream is
//!   synchronised before the outputs go back to cubecl. Inputs, outputs and workspace
//!   are held until then. The cost is two host waits per call, which the GPU benchmark
//!   measures (`scripts/gpu_run.sh`).
//! - **Algorithms.** cuDNN's heuristics (`cudnnGetConvolution*Algorithm_v7`, what
//!   PyTorch uses when `cudnn.benchmark` is off) rank the algorithms for each
//!   convolution shape once per process; the first that succeeds within the workspace
//!   limit is cached with its math type. No timing runs, so the first step is not
//!   minutes of tuning.
//! - **Precision.** Tensors are `CUDNN_DATA_FLOAT`, `HALF` or `BFLOAT16`, convolutions
//!   accumulate in f32; f32 convolutions allow TF32 tensor cores (`CUDNN_DEFAULT_MATH`,
//!   PyTorch's default for convolutions), half types use tensor-op math. Batch norm's
//!   statistics and parameters are f32 whatever the data type (cuDNN derives them so);
//!   γ and β are cast to f32 on the way in and their gradients back on the way out.
//!
//! The descriptor and shape logic ([`ConvShape`], [`data_type`]) is plain code, tested
//! without a GPU; the calls themselves are checked against burn's own CUDA kernels by
//! the GPU script.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, FloatElement};
use cudarc::cudnn::sys;

use super::autodiff::{ConvKernels, NormForward, NormKernels};
use api::{check, with_device, ConvDescs, CudnnResult, Device, Pass, TensorDesc, NORM_MODE};
pub use api::{data_type, math_type, probe, ConvShape};

mod api;

/// burn-cuda's backend (without fusion) in float type `F`: what these kernels run on.
pub type Inner<F> = CubeBackend<CudaRuntime, F, i32, u8>;

type Tensor = CubeTensor<CudaRuntime>;

/// The smallest epsilon cuDNN's batch norm accepts (`CUDNN_BN_MIN_EPSILON`).
pub const MIN_EPSILON: f64 = 1e-5;

/// cuDNN's kernels in float type `F`.
#[derive(Debug)]
pub struct Cudnn<F>(PhantomData<F>);

/// The device pointer of a cubecl buffer (its offset included).
fn pointer(t: &Tensor) -> *mut c_void {
    let resource = t
        .client
        .get_resource(t.handle.clone())
        .unwrap_or_else(|e| panic!("cuDNN: the tensor's GPU memory is not reachable: {e:?}"));
    resource.resource().ptr as *mut c_void
}

/// Scratch memory from cubecl's allocator (`None` for zero bytes) and its pointer.
fn workspace(
    like: &Tensor,
    bytes: usize,
) -> (Option<burn_cubecl::cubecl::server::Handle>, *mut c_void) {
    if bytes == 0 {
        return (None, std::ptr::null_mut());
    }
    let handle = like.client.empty(bytes);
    let resource = like
        .client
        .get_resource(handle.clone())
        .unwrap_or_else(|e| panic!("cuDNN: workspace of {bytes} bytes is not reachable: {e:?}"));
    let ptr = resource.resource().ptr as *mut c_void;
    (Some(handle), ptr)
}

/// Waits for cubecl's work on `device` (so cuDNN reads finished inputs).
fn wait_for_cubecl(device: &CudaDevice) {
    Inner::<f32>::sync(device)
        .unwrap_or_else(|e| panic!("cuDNN: waiting for the GPU's earlier work failed: {e:?}"));
}

/// Waits for cuDNN's work on its stream (so cubecl reads finished outputs).
fn wait_for_cudnn(device: &Device) -> CudnnResult<()> {
    device
        .stream
        .synchronize()
        .map_err(|e| format!("synchronising cuDNN's stream: {e:?}"))
}

fn dims4(t: &Tensor) -> [usize; 4] {
    let shape = t.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

fn contiguous(t: Tensor) -> Tensor {
    if t.is_contiguous() && t.is_contiguous_buffer() {
        t
    } else {
        into_contiguous(t)
    }
}

fn empty_like(t: &Tensor, dims: &[usize], dtype: DType) -> Tensor {
    empty_device_contiguous_dtype(
        t.client.clone(),
        t.device.clone(),
        Shape::from(dims.to_vec()),
        dtype,
    )
}

/// Unwraps a cuDNN result inside a kernel (which cannot return errors to burn): the
/// message names the operation and its shape.
fn or_panic<T>(result: CudnnResult<T>, what: impl std::fmt::Display) -> T {
    result.unwrap_or_else(|e| panic!("cuDNN {what} failed: {e}"))
}

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn one() -> *const c_void {
    &ONE as *const f32 as *const c_void
}

fn zero() -> *const c_void {
    &ZERO as *const f32 as *const c_void
}

/// One convolution pass: `x`, `w` and `y` are the forward step's tensors (the
/// output of the pass among them, already allocated).
fn convolve(pass: Pass, shape: &ConvShape, x: &Tensor, w: &Tensor, y: &Tensor) -> CudnnResult<()> {
    let dtype = x.dtype;
    with_device(x.device.index, |dev| {
        let descs = ConvDescs::new(shape, dtype)?;
        let choice = dev.choose(pass, shape, dtype, &descs)?;
        descs.set_math(choice.math)?;
        let (_keep, ws) = workspace(x, choice.workspace);
        let (xp, wp, yp) = (pointer(x), pointer(w), pointer(y));
        wait_for_cubecl(&x.device);
        let h = dev.handle;
        // SAFETY: live handle and descriptors matching the tensors' shapes and dtype
        // (ConvShape, contiguous NCHW); the pointers are cubecl buffers of those
        // sizes, held (with the workspace) until cuDNN's stream is synchronised. The
        // algorithm numbers come from cuDNN's own heuristics for this pass.
        let status = unsafe {
            match pass {
                Pass::Forward => sys::cudnnConvolutionForward(
                    h,
                    one(),
                    descs.x.0,
                    xp,
                    descs.w,
                    wp,
                    descs.conv,
                    std::mem::transmute::<u32, sys::cudnnConvolutionFwdAlgo_t>(choice.algo),
                    ws,
                    choice.workspace,
                    zero(),
                    descs.y.0,
                    yp,
                ),
                Pass::Data => sys::cudnnConvolutionBackwardData(
                    h,
                    one(),
                    descs.w,
                    wp,
                    descs.y.0,
                    yp,
                    descs.conv,
                    std::mem::transmute::<u32, sys::cudnnConvolutionBwdDataAlgo_t>(choice.algo),
                    ws,
                    choice.workspace,
                    zero(),
                    descs.x.0,
                    xp,
                ),
                Pass::Filter => sys::cudnnConvolutionBackwardFilter(
                    h,
                    one(),
                    descs.x.0,
                    xp,
                    descs.y.0,
                    yp,
                    descs.conv,
                    std::mem::transmute::<u32, sys::cudnnConvolutionBwdFilterAlgo_t>(choice.algo),
                    ws,
                    choice.workspace,
                    zero(),
                    descs.w,
                    wp,
                ),
            }
        };
        check(status, &format!("convolution {pass:?}"))?;
        wait_for_cudnn(dev)
    })
}

/// One batch norm call on `x`'s device: `call(handle, x's descriptor, the per-channel
/// descriptor, the pointers of tensors)`, after cubecl's queued work and before the
/// outputs go back (cuDNN's stream synchronised; the tensors are the caller's, held).
fn normalize<const N: usize>(
    x: &Tensor,
    tensors: [&Tensor; N],
    what: &str,
    call: impl FnOnce(
        sys::cudnnHandle_t,
        sys::cudnnTensorDescriptor_t,
        sys::cudnnTensorDescriptor_t,
        [*mut c_void; N],
    ) -> sys::cudnnStatus_t,
) -> CudnnResult<()> {
    with_device(x.device.index, |dev| {
        let data = data_type(x.dtype).ok_or_else(|| format!("dtype {:?}", x.dtype))?;
        let xd = TensorDesc::nchw(data, dims4(x))?;
        let bd = TensorDesc::batch_norm(&xd)?;
        let pointers = tensors.map(pointer);
        wait_for_cubecl(&x.device);
        check(call(dev.handle, xd.0, bd.0, pointers), what)?;
        wait_for_cudnn(dev)
    })
}

fn conv_shape(x: &Tensor, w: &Tensor, options: &ConvOptions<2>) -> ConvShape {
    or_panic(ConvShape::new(dims4(x), dims4(w), options), "convolution")
}

impl<F: FloatElement> ConvKernels for Cudnn<F> {
    type B = Inner<F>;

    fn forward(x: Tensor, w: Tensor, options: &ConvOptions<2>) -> Tensor {
        let (x, w) = (contiguous(x), contiguous(w));
        let shape = conv_shape(&x, &w, options);
        let y = empty_like(&x, &shape.y(), x.dtype);
        or_panic(
            convolve(Pass::Forward, &shape, &x, &w, &y),
            format_args!("{shape:?}"),
        );
        y
    }

    fn backward(
        x: Tensor,
        w: Tensor,
        dy: Tensor,
        options: &ConvOptions<2>,
        [want_x, want_w]: [bool; 2],
    ) -> [Option<Tensor>; 2] {
        let (x, w, dy) = (contiguous(x), contiguous(w), contiguous(dy));
        let shape = conv_shape(&x, &w, options);
        let dx = want_x.then(|| {
            let dx = empty_like(&x, &shape.x, x.dtype);
            or_panic(
                convolve(Pass::Data, &shape, &dx, &w, &dy),
                format_args!("data gradient {shape:?}"),
            );
            dx
        });
        let dw = want_w.then(|| {
            let dw = empty_like(&w, &shape.w, w.dtype);
            or_panic(
                convolve(Pass::Filter, &shape, &x, &dw, &dy),
                format_args!("weight gradient {shape:?}"),
            );
            dw
        });
        [dx, dw]
    }
}

/// Whether cuDNN's batch norm refused bfloat16 data (learnt at the first refusal).
/// Where it does (`CUDNN_STATUS_NOT_SUPPORTED`), bfloat16 batch norm
/// runs on f32 copies of its input and output gradient (said once on stderr).
static BF16_NORM_REFUSED: AtomicBool = AtomicBool::new(false);

impl<F: FloatElement> NormKernels for Cudnn<F> {
    type B = Inner<F>;

    fn forward(x: Tensor, gamma: Tensor, beta: Tensor, epsilon: f64) -> NormForward<Tensor> {
        let what = format!("batch norm of {:?}", dims4(&x));
        let dtype = x.dtype;
        let out = in_norm_dtype(x, |x| {
            norm_forward::<F>(x, gamma.clone(), beta.clone(), epsilon)
        });
        let mut out = or_panic(out, what);
        out.y = cast(out.y, dtype);
        out
    }

    fn backward(
        x: Tensor,
        gamma: Tensor,
        saved: [Tensor; 2],
        dy: Tensor,
        epsilon: f64,
    ) -> [Tensor; 3] {
        let what = format!("batch norm gradient of {:?}", dims4(&x));
        let dtype = x.dtype;
        let run = |x: Tensor| {
            let dy = cast(dy.clone(), x.dtype);
            norm_backward(x, gamma.clone(), saved.clone(), dy, epsilon)
        };
        let [dx, d_gamma, d_beta] = or_panic(in_norm_dtype(x, run), what);
        [cast(dx, dtype), d_gamma, d_beta]
    }
}

/// `run(x)`, or `run(x as f32)` for bfloat16 `x` where cuDNN's batch norm refuses
/// bfloat16 (learnt at the first refusal, said once on stderr). The caller casts the
/// data output back to `x`'s dtype.
fn in_norm_dtype<T>(x: Tensor, run: impl Fn(Tensor) -> CudnnResult<T>) -> CudnnResult<T> {
    if x.dtype != DType::BF16 {
        return run(x);
    }
    if BF16_NORM_REFUSED.load(Ordering::Relaxed) {
        return run(cast(x, DType::F32));
    }
    match run(x.clone()) {
        Err(e) if e.contains("NOT_SUPPORTED") => {
            BF16_NORM_REFUSED.store(true, Ordering::Relaxed);
            eprintln!(
                "CUDA kernels: this cuDNN has no bfloat16 batch norm ({e}); \
                 batch norm runs on f32 copies"
            );
            run(cast(x, DType::F32))
        }
        result => result,
    }
}

/// cuDNN's training batch norm on contiguous `x` (output in `x`'s dtype).
fn norm_forward<F: FloatElement>(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    epsilon: f64,
) -> CudnnResult<NormForward<Tensor>> {
    let x = contiguous(x);
    let param_dtype = gamma.dtype;
    let [_, c, _, _] = dims4(&x);
    let (gamma, beta) = (
        cast(contiguous(gamma), DType::F32),
        cast(contiguous(beta), DType::F32),
    );
    let y = empty_like(&x, &dims4(&x), x.dtype);
    let mean = empty_like(&x, &[c], DType::F32);
    let inv_std = empty_like(&x, &[c], DType::F32);
    let tensors = [&x, &y, &gamma, &beta, &mean, &inv_std];
    let run = normalize(&x, tensors, "batch norm forward", |h, xd, bd, p| {
        // SAFETY: live handle and descriptors for these contiguous tensors
        // (parameters and statistics f32, as cuDNN derives them); the running
        // statistics are not asked for (null).
        unsafe {
            sys::cudnnBatchNormalizationForwardTraining(
                h,
                NORM_MODE,
                one(),
                zero(),
                xd,
                p[0],
                xd,
                p[1],
                bd,
                p[2],
                p[3],
                1.0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                epsilon,
                p[4],
                p[5],
            )
        }
    });
    run?;
    // The biased variance from 1/√(σ²+ε), for the running statistics.
    let var = {
        use burn::tensor::ops::FloatTensorOps;
        let std = Inner::<F>::float_recip(inv_std.clone());
        let var =
            Inner::<F>::float_sub_scalar(Inner::<F>::float_mul(std.clone(), std), epsilon.into());
        Inner::<F>::float_clamp_min(var, 0.0.into())
    };
    Ok(NormForward {
        y,
        mean: cast(mean.clone(), param_dtype),
        var: cast(var, param_dtype),
        saved: [mean, inv_std],
    })
}

/// cuDNN's batch norm gradients (`dx` in `x`'s dtype, `dγ`, `dβ` in γ's).
fn norm_backward(
    x: Tensor,
    gamma: Tensor,
    [mean, inv_std]: [Tensor; 2],
    dy: Tensor,
    epsilon: f64,
) -> CudnnResult<[Tensor; 3]> {
    let (x, dy) = (contiguous(x), contiguous(dy));
    let param_dtype = gamma.dtype;
    let [_, c, _, _] = dims4(&x);
    let gamma = cast(contiguous(gamma), DType::F32);
    let dx = empty_like(&x, &dims4(&x), x.dtype);
    let d_gamma = empty_like(&x, &[c], DType::F32);
    let d_beta = empty_like(&x, &[c], DType::F32);
    let tensors = [&x, &dy, &dx, &gamma, &d_gamma, &d_beta, &mean, &inv_std];
    let run = normalize(&x, tensors, "batch norm backward", |h, xd, bd, p| {
        // SAFETY: as in `forward`; the saved statistics are the forward step's.
        unsafe {
            sys::cudnnBatchNormalizationBackward(
                h,
                NORM_MODE,
                one(),
                zero(),
                one(),
                zero(),
                xd,
                p[0],
                xd,
                p[1],
                xd,
                p[2],
                bd,
                p[3],
                p[4],
                p[5],
                epsilon,
                p[6],
                p[7],
            )
        }
    });
    run?;
    Ok([dx, cast(d_gamma, param_dtype), cast(d_beta, param_dtype)])
}
