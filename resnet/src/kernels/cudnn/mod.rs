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
//! - **Ordering.** cuDNN queues its work on the CUDA stream that the calling thread's
//!   cubecl kernels run on, which rectrain's patch of cubecl-cuda exposes
//!   (`vendor/README.md`): in order with cubecl's kernels, with no host wait at all.
//!   Where that stream is unknown, or `RECTRAIN_CUDNN_HOST_WAITS=1` asks for it (the
//!   A/B the GPU script runs), each call is ordered by synchronisation instead: cubecl's
//!   work is waited for (`Backend::sync`) before cuDNN reads its tensors, and cuDNN's
//!   own stream is synchronised before the outputs go back to cubecl, one wait pair for
//!   a convolution's two gradients together. [`host_waits`] counts those waits.
//! - **Algorithms.** cuDNN's heuristics (`cudnnGetConvolution*Algorithm_v7`, what
//!   PyTorch uses when `cudnn.benchmark` is off) rank the algorithms for each
//!   convolution shape once per process, kept with the shape's descriptors; the best
//!   that runs is used, and one that fails at execution falls through to the next
//!   (PyTorch's `try_all`). No timing runs, so the first step is not minutes of tuning.
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
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

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
pub use api::{agree, data_type, math_type, probe, refuses_bf16, version_name, ConvShape};
use api::{
    check, with_device, Choice, ConvDescs, CudnnResult, Device, Pass, TensorDesc, NORM_MODE,
};

mod api;

/// burn-cuda's backend (without fusion) in float type `F`: what these kernels run on.
pub type Inner<F> = CubeBackend<CudaRuntime, F, i32, u8>;

type Tensor = CubeTensor<CudaRuntime>;

/// The smallest epsilon cuDNN's batch norm accepts (`CUDNN_BN_MIN_EPSILON`).
pub const MIN_EPSILON: f64 = 1e-5;

/// cuDNN's kernels in float type `F`.
#[derive(Debug)]
pub struct Cudnn<F>(PhantomData<F>);

/// The device pointer of a cubecl buffer (its offset included) and the stream the
/// calling thread's cubecl kernels run on (null where cubecl-cuda does not say).
fn pointer(t: &Tensor) -> (*mut c_void, cudarc::driver::sys::CUstream) {
    let resource = t
        .client
        .get_resource(t.handle.clone())
        .unwrap_or_else(|e| panic!("cuDNN: the tensor's GPU memory is not reachable: {e:?}"));
    let resource = resource.resource();
    (resource.ptr as *mut c_void, resource.stream)
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

/// Host waits so far (cubecl's work, then cuDNN's stream: two per call that cannot
/// use cubecl's stream); `gpu_probe` reports them per step.
pub fn host_waits() -> u64 {
    HOST_WAITS.load(Ordering::Relaxed)
}

static HOST_WAITS: AtomicU64 = AtomicU64::new(0);

/// `RECTRAIN_CUDNN_HOST_WAITS=1`: order every call by host waits even where cubecl's
/// stream is known (the A/B the GPU script measures).
fn forced_host_waits() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| std::env::var_os("RECTRAIN_CUDNN_HOST_WAITS").is_some_and(|v| v == "1"))
}

/// How one call's cuDNN work is ordered with cubecl's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Queued on cubecl's own stream: nothing to wait for.
    CubeclStream,
    /// On cuDNN's stream after cubecl's work; cuDNN's stream is waited for at the end.
    HostWaits,
}

/// Points `dev`'s handle at `stream` (cubecl's, from [`pointer`]), or, where it is
/// null or host waits are asked for, at cuDNN's own stream after cubecl's work is done.
fn begin(
    dev: &Device,
    stream: cudarc::driver::sys::CUstream,
    device: &CudaDevice,
) -> CudnnResult<Order> {
    if !stream.is_null() && !forced_host_waits() {
        dev.set_stream(stream as sys::cudaStream_t)?;
        return Ok(Order::CubeclStream);
    }
    dev.set_stream(dev.stream.cu_stream() as sys::cudaStream_t)?;
    HOST_WAITS.fetch_add(1, Ordering::Relaxed);
    Inner::<f32>::sync(device).map_err(|e| format!("waiting for the GPU's earlier work: {e:?}"))?;
    Ok(Order::HostWaits)
}

/// The end of a call begun with `order`: under host waits, cuDNN's stream is
/// synchronised, so that cubecl reads finished outputs.
fn end(dev: &Device, order: Order) -> CudnnResult<()> {
    match order {
        Order::CubeclStream => Ok(()),
        Order::HostWaits => {
            HOST_WAITS.fetch_add(1, Ordering::Relaxed);
            dev.stream
                .synchronize()
                .map_err(|e| format!("synchronising cuDNN's stream: {e:?}"))
        }
    }
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

/// One convolution pass of [`convolve`]: the pass and the forward step's `x`, `w` and
/// `y` (the pass's output among them, already allocated).
type PassOf<'a> = (Pass, &'a Tensor, &'a Tensor, &'a Tensor);

/// Runs the `passes` of the convolution `shape` (one call's worth: the forward step,
/// or both gradients) on their device, in order, under one [`begin`]/[`end`].
fn convolve(shape: &ConvShape, passes: &[PassOf<'_>]) -> CudnnResult<()> {
    let Some(&(_, first, _, _)) = passes.first() else {
        return Ok(());
    };
    let dtype = first.dtype;
    with_device(first.device.index, |dev| {
        let pointers: Vec<[(*mut c_void, _); 3]> = passes
            .iter()
            .map(|&(_, x, w, y)| [pointer(x), pointer(w), pointer(y)])
            .collect();
        let order = begin(dev, pointers[0][0].1, &first.device)?;
        let handle = dev.handle;
        // Workspaces live until `end`: under host waits, cuDNN's stream is not cubecl's,
        // so cubecl must not hand their memory out again before it has finished.
        let mut workspaces = Vec::new();
        for (&(pass, x, _, _), [(xp, _), (wp, _), (yp, _)]) in passes.iter().zip(&pointers) {
            let plan = dev.plan(shape, dtype)?;
            plan.run(handle, pass, |descs, choice| {
                let (keep, ws) = workspace(x, choice.workspace);
                workspaces.push(keep);
                // SAFETY: live handle and descriptors matching the tensors' shapes and
                // dtype (ConvShape, contiguous NCHW, checked by `agree`); the pointers
                // are cubecl buffers of those sizes, ordered with cubecl's work by
                // `begin`/`end` and held until then. The algorithm numbers come from
                // cuDNN's own heuristics for this pass.
                let status = unsafe { launch(handle, pass, descs, choice, *xp, *wp, *yp, ws) };
                check(status, &format!("convolution {pass:?}"))
            })?;
        }
        end(dev, order)
    })
}

/// Queues one convolution pass (see [`convolve`]'s safety comment).
#[allow(clippy::too_many_arguments)]
unsafe fn launch(
    h: sys::cudnnHandle_t,
    pass: Pass,
    descs: &ConvDescs,
    choice: &Choice,
    xp: *mut c_void,
    wp: *mut c_void,
    yp: *mut c_void,
    ws: *mut c_void,
) -> sys::cudnnStatus_t {
    // SAFETY: the caller's.
    unsafe {
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
    }
}

/// One batch norm call on `x`'s device: `call(handle, x's descriptor, the per-channel
/// descriptor, the pointers of tensors)`, ordered with cubecl's work by
/// [`begin`]/[`end`] (the tensors are the caller's, held until it returns).
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
        let order = begin(dev, pointers[0].1, &x.device)?;
        check(call(dev.handle, xd.0, bd.0, pointers.map(|p| p.0)), what)?;
        end(dev, order)
    })
}

/// The shape of `conv(x, w)`, its operands checked to agree ([`agree`]; `dy` for the
/// backward step).
fn conv_shape(x: &Tensor, w: &Tensor, dy: Option<&Tensor>, options: &ConvOptions<2>) -> ConvShape {
    let shape = or_panic(ConvShape::new(dims4(x), dims4(w), options), "convolution");
    or_panic(
        agree(&shape, x.dtype, w.dtype, dy.map(|dy| (dy.dtype, dims4(dy)))),
        format_args!("convolution {shape:?}"),
    );
    shape
}

impl<F: FloatElement> ConvKernels for Cudnn<F> {
    type B = Inner<F>;

    /// Contiguous copies where burn's tensors are not (the autodiff node keeps these
    /// for the backward step, so each is copied once per step).
    fn operands(x: Tensor, w: Tensor) -> (Tensor, Tensor) {
        (contiguous(x), contiguous(w))
    }

    fn forward(x: Tensor, w: Tensor, options: &ConvOptions<2>) -> Tensor {
        let (x, w) = Self::operands(x, w);
        let shape = conv_shape(&x, &w, None, options);
        let y = empty_like(&x, &shape.y(), x.dtype);
        or_panic(
            convolve(&shape, &[(Pass::Forward, &x, &w, &y)]),
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
        let (x, w) = Self::operands(x, w);
        let dy = contiguous(dy);
        let shape = conv_shape(&x, &w, Some(&dy), options);
        let dx = want_x.then(|| empty_like(&x, &shape.x, x.dtype));
        let dw = want_w.then(|| empty_like(&w, &shape.w, w.dtype));
        let mut passes = Vec::with_capacity(2);
        if let Some(dx) = &dx {
            passes.push((Pass::Data, dx, &w, &dy));
        }
        if let Some(dw) = &dw {
            passes.push((Pass::Filter, &x, dw, &dy));
        }
        or_panic(
            convolve(&shape, &passes),
            format_args!("gradients {shape:?}"),
        );
        [dx, dw]
    }
}

/// What this process learnt of cuDNN's bfloat16 batch norm: [`BF16_UNKNOWN`] until the
/// first call, then [`BF16_WORKS`] or [`BF16_REFUSED`]. Where it is refused
/// ([`refuses_bf16`] on the first call), bfloat16 batch norm runs on f32 copies of its
/// input and output gradient (said once on stderr); once it has worked, a later failure
/// is an error like any other.
static BF16_NORM: AtomicU8 = AtomicU8::new(BF16_UNKNOWN);
const BF16_UNKNOWN: u8 = 0;
const BF16_WORKS: u8 = 1;
const BF16_REFUSED: u8 = 2;

impl<F: FloatElement> NormKernels for Cudnn<F> {
    type B = Inner<F>;

    fn forward(
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        epsilon: f64,
        _relu: bool,
    ) -> NormForward<Tensor> {
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
        _relu: bool,
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
/// bfloat16 (learnt at the first call, see [`BF16_NORM`]). The caller casts the data
/// output back to `x`'s dtype.
fn in_norm_dtype<T>(x: Tensor, run: impl Fn(Tensor) -> CudnnResult<T>) -> CudnnResult<T> {
    if x.dtype != DType::BF16 {
        return run(x);
    }
    match BF16_NORM.load(Ordering::Relaxed) {
        BF16_REFUSED => return run(cast(x, DType::F32)),
        BF16_WORKS => return run(x),
        _ => {}
    }
    match run(x.clone()) {
        Err(e) if refuses_bf16(&e) => {
            BF16_NORM.store(BF16_REFUSED, Ordering::Relaxed);
            eprintln!(
                "CUDA kernels: this cuDNN has no bfloat16 batch norm ({e}); \
                 batch norm runs on f32 copies"
            );
            run(cast(x, DType::F32))
        }
        result => {
            if result.is_ok() {
                BF16_NORM.store(BF16_WORKS, Ordering::Relaxed);
            }
            result
        }
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
