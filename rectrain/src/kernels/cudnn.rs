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

use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use burn_cubecl::kernel::{cast, into_contiguous};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, FloatElement};
use cudarc::cudnn::sys;
use cudarc::driver::{CudaContext, CudaStream};

use super::autodiff::{ConvKernels, NormForward, NormKernels};

/// burn-cuda's backend (without fusion) in float type `F`: what these kernels run on.
pub type Inner<F> = CubeBackend<CudaRuntime, F, i32, u8>;

type Tensor = CubeTensor<CudaRuntime>;

/// The smallest epsilon cuDNN's batch norm accepts (`CUDNN_BN_MIN_EPSILON`).
pub const MIN_EPSILON: f64 = 1e-5;

/// Largest workspace an algorithm may ask for (PyTorch caps by free memory; a fixed
/// bound keeps the choice the same from run to run).
const MAX_WORKSPACE: usize = 1 << 30;

/// cuDNN's kernels in float type `F`.
#[derive(Debug)]
pub struct Cudnn<F>(PhantomData<F>);

/// The cuDNN version found, or why cuDNN cannot be used. Loads the library once per
/// process; never panics.
pub fn probe() -> Result<usize, String> {
    static PROBE: OnceLock<Result<usize, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            std::panic::catch_unwind(|| {
                // SAFETY: only tries to dlopen the library.
                if !unsafe { sys::is_culib_present() } {
                    return Err("libcudnn.so (cuDNN 9) was not found".to_string());
                }
                // SAFETY: the library is present; cudnnGetVersion takes no arguments.
                let version = unsafe { sys::cudnnGetVersion() };
                check_version(version)
            })
            .unwrap_or_else(|_| Err("loading cuDNN failed".to_string()))
        })
        .clone()
}

/// cuDNN 9 is what the bindings are for (cudarc's, from 9.2's headers). Versions read
/// `major·10000 + minor·100 + patch` since 9, `major·1000 + minor·100 + patch` before.
fn check_version(version: usize) -> Result<usize, String> {
    let (major, minor) = if version >= 10_000 {
        (version / 10_000, version % 10_000 / 100)
    } else {
        (version / 1_000, version % 1_000 / 100)
    };
    if major == 9 {
        Ok(version)
    } else {
        Err(format!(
            "cuDNN {major}.{minor} was found; rectrain needs cuDNN 9"
        ))
    }
}

/// The shape of one convolution: input `x` `[N, C, H, W]`, weight `w` `[K, C, R, S]`,
/// and its stride, padding and dilation (one group, symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Input `[N, C, H, W]`.
    pub x: [usize; 4],
    /// Weight `[K, C, R, S]`.
    pub w: [usize; 4],
    /// Stride `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[vertical, horizontal]`.
    pub padding: [usize; 2],
    /// Dilation `[vertical, horizontal]`.
    pub dilation: [usize; 2],
}

impl ConvShape {
    /// The shape of `conv(x, w)` with `options`, or why cuDNN cannot run it.
    pub fn new(x: [usize; 4], w: [usize; 4], options: &ConvOptions<2>) -> Result<Self, String> {
        if options.groups != 1 {
            return Err(format!("{} groups (only 1 is supported)", options.groups));
        }
        if x[1] != w[1] {
            return Err(format!(
                "input has {} channels, the weight expects {}",
                x[1], w[1]
            ));
        }
        let shape = ConvShape {
            x,
            w,
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        };
        let y = shape
            .checked_y()
            .ok_or_else(|| format!("no output: input {x:?}, weight {w:?}, options {options:?}"))?;
        for d in x.iter().chain(&w).chain(&y) {
            if *d == 0 || i32::try_from(*d).is_err() {
                return Err(format!(
                    "dimension {d} out of cuDNN's range (input {x:?}, weight {w:?})"
                ));
            }
        }
        if x.iter().product::<usize>() > i32::MAX as usize
            || y.iter().product::<usize>() > i32::MAX as usize
        {
            return Err(format!("tensor of input {x:?} exceeds 2^31 elements"));
        }
        Ok(shape)
    }

    fn checked_y(&self) -> Option<[usize; 4]> {
        let out = |i: usize| {
            let span = self.dilation[i] * (self.w[2 + i].checked_sub(1)?) + 1;
            let padded = self.x[2 + i] + 2 * self.padding[i];
            let stride = self.stride[i];
            (stride > 0 && padded >= span).then(|| (padded - span) / stride + 1)
        };
        Some([self.x[0], self.w[0], out(0)?, out(1)?])
    }

    /// The output `[N, K, P, Q]`.
    pub fn y(&self) -> [usize; 4] {
        self.checked_y().expect("checked by ConvShape::new")
    }
}

/// cuDNN's data type for a burn float dtype (`None`: not supported).
pub fn data_type(dtype: DType) -> Option<sys::cudnnDataType_t> {
    match dtype {
        DType::F32 | DType::Flex32 => Some(sys::cudnnDataType_t::CUDNN_DATA_FLOAT),
        DType::F16 => Some(sys::cudnnDataType_t::CUDNN_DATA_HALF),
        DType::BF16 => Some(sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16),
        _ => None,
    }
}

/// The math a convolution of `dtype` may use before the heuristics choose: f32 allows
/// TF32 tensor cores (cuDNN's default math, as PyTorch's `allow_tf32` for
/// convolutions), half types use tensor cores.
pub fn math_type(dtype: DType) -> sys::cudnnMathType_t {
    match dtype {
        DType::F16 | DType::BF16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        _ => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
    }
}

/// Strides of a contiguous `[N, C, H, W]` tensor, as cuDNN's ints.
fn nchw_strides([_, c, h, w]: [usize; 4]) -> [i32; 4] {
    [(c * h * w) as i32, (h * w) as i32, w as i32, 1]
}

fn ints(dims: [usize; 4]) -> [i32; 4] {
    dims.map(|d| d as i32)
}

type CudnnResult<T> = Result<T, String>;

fn check(status: sys::cudnnStatus_t, what: &str) -> CudnnResult<()> {
    match status {
        sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS => Ok(()),
        status => Err(format!("{what}: {status:?}")),
    }
}

/// A tensor descriptor (destroyed on drop).
struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl TensorDesc {
    fn empty() -> CudnnResult<Self> {
        let mut desc = std::ptr::null_mut();
        // SAFETY: writes a new descriptor into `desc`.
        check(
            unsafe { sys::cudnnCreateTensorDescriptor(&mut desc) },
            "cudnnCreateTensorDescriptor",
        )?;
        Ok(TensorDesc(desc))
    }

    /// A contiguous NCHW tensor.
    fn nchw(dtype: sys::cudnnDataType_t, dims: [usize; 4]) -> CudnnResult<Self> {
        let desc = Self::empty()?;
        let [n, c, h, w] = ints(dims);
        let [sn, sc, sh, sw] = nchw_strides(dims);
        // SAFETY: `desc` is a live descriptor.
        check(
            unsafe { sys::cudnnSetTensor4dDescriptorEx(desc.0, dtype, n, c, h, w, sn, sc, sh, sw) },
            "cudnnSetTensor4dDescriptorEx",
        )?;
        Ok(desc)
    }

    /// Batch norm's per-channel descriptor for `x` (spatial mode).
    fn batch_norm(x: &TensorDesc) -> CudnnResult<Self> {
        let desc = Self::empty()?;
        // SAFETY: both descriptors are live.
        check(
            unsafe { sys::cudnnDeriveBNTensorDescriptor(desc.0, x.0, NORM_MODE) },
            "cudnnDeriveBNTensorDescriptor",
        )?;
        Ok(desc)
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreateTensorDescriptor, destroyed once.
        unsafe { sys::cudnnDestroyTensorDescriptor(self.0) };
    }
}

/// The three descriptors of one convolution (destroyed on drop).
struct ConvDescs {
    x: TensorDesc,
    y: TensorDesc,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl ConvDescs {
    fn new(shape: &ConvShape, dtype: DType) -> CudnnResult<Self> {
        let data = data_type(dtype).ok_or_else(|| format!("dtype {dtype:?}"))?;
        let x = TensorDesc::nchw(data, shape.x)?;
        let y = TensorDesc::nchw(data, shape.y())?;
        let mut descs = ConvDescs {
            x,
            y,
            w: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
        };
        let [k, c, r, s] = ints(shape.w);
        let [ph, pw] = shape.padding.map(|p| p as i32);
        let [sh, sw] = shape.stride.map(|p| p as i32);
        let [dh, dw] = shape.dilation.map(|p| p as i32);
        // SAFETY: each call creates or sets a descriptor this value owns; Drop
        // destroys the ones created (null ones are skipped).
        unsafe {
            check(
                sys::cudnnCreateFilterDescriptor(&mut descs.w),
                "cudnnCreateFilterDescriptor",
            )?;
            check(
                sys::cudnnSetFilter4dDescriptor(
                    descs.w,
                    data,
                    sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                    k,
                    c,
                    r,
                    s,
                ),
                "cudnnSetFilter4dDescriptor",
            )?;
            check(
                sys::cudnnCreateConvolutionDescriptor(&mut descs.conv),
                "cudnnCreateConvolutionDescriptor",
            )?;
            check(
                sys::cudnnSetConvolution2dDescriptor(
                    descs.conv,
                    ph,
                    pw,
                    sh,
                    sw,
                    dh,
                    dw,
                    sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                ),
                "cudnnSetConvolution2dDescriptor",
            )?;
        }
        descs.set_math(math_type(dtype))?;
        Ok(descs)
    }

    fn set_math(&self, math: sys::cudnnMathType_t) -> CudnnResult<()> {
        // SAFETY: a live convolution descriptor.
        check(
            unsafe { sys::cudnnSetConvolutionMathType(self.conv, math) },
            "cudnnSetConvolutionMathType",
        )
    }
}

impl Drop for ConvDescs {
    fn drop(&mut self) {
        // SAFETY: created above (or null, skipped), destroyed once.
        unsafe {
            if !self.w.is_null() {
                sys::cudnnDestroyFilterDescriptor(self.w);
            }
            if !self.conv.is_null() {
                sys::cudnnDestroyConvolutionDescriptor(self.conv);
            }
        }
    }
}

/// Batch norm over each channel of `[N, C, H, W]`.
const NORM_MODE: sys::cudnnBatchNormMode_t = sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// Which step of a convolution an algorithm is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    Data,
    Filter,
}

/// The algorithm chosen for one convolution pass: its number (the pass's enum as an
/// integer), the math type it runs with and its workspace.
#[derive(Debug, Clone, Copy)]
struct Choice {
    algo: u32,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

/// One device's cuDNN: its handle on a stream of its own, and the algorithms chosen.
struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    handle: sys::cudnnHandle_t,
    choices: HashMap<(Pass, ConvShape, DType), Choice>,
}

// SAFETY: the handle is used by one thread at a time (the Mutex in `device`), with
// the context bound to that thread first.
unsafe impl Send for Device {}

impl Device {
    fn new(index: usize) -> CudnnResult<Self> {
        probe()?;
        let ctx = CudaContext::new(index).map_err(|e| format!("CUDA context {index}: {e:?}"))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("CUDA stream on device {index}: {e:?}"))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: the context is bound to this thread by new_stream; the handle is
        // written by cudnnCreate and attached to our stream.
        unsafe {
            ctx.bind_to_thread().map_err(|e| format!("{e:?}"))?;
            check(sys::cudnnCreate(&mut handle), "cudnnCreate")?;
            check(
                sys::cudnnSetStream(handle, stream.cu_stream() as _),
                "cudnnSetStream",
            )?;
        }
        Ok(Device {
            ctx,
            stream,
            handle,
            choices: HashMap::new(),
        })
    }

    /// The algorithm for `pass` of `shape`, from cuDNN's heuristics the first time.
    fn choose(
        &mut self,
        pass: Pass,
        shape: &ConvShape,
        dtype: DType,
        descs: &ConvDescs,
    ) -> CudnnResult<Choice> {
        let key = (pass, *shape, dtype);
        if let Some(choice) = self.choices.get(&key) {
            return Ok(*choice);
        }
        let choice = heuristic(self.handle, pass, descs)?;
        self.choices.insert(key, choice);
        Ok(choice)
    }
}

/// The first algorithm cuDNN's heuristics rank for `pass` that succeeds within
/// [`MAX_WORKSPACE`].
fn heuristic(handle: sys::cudnnHandle_t, pass: Pass, d: &ConvDescs) -> CudnnResult<Choice> {
    const WANTED: i32 = 16;
    let mut found = 0;
    // SAFETY (all three): live descriptors and handle; cuDNN writes at most WANTED
    // results into zero-initialised plain-data arrays of that length. The enums in
    // them are cuDNN's own values.
    let ranked: Vec<(u32, sys::cudnnStatus_t, usize, sys::cudnnMathType_t)> = unsafe {
        match pass {
            Pass::Forward => {
                let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); 16];
                check(
                    sys::cudnnGetConvolutionForwardAlgorithm_v7(
                        handle,
                        d.x.0,
                        d.w,
                        d.conv,
                        d.y.0,
                        WANTED,
                        &mut found,
                        perf.as_mut_ptr(),
                    ),
                    "cudnnGetConvolutionForwardAlgorithm_v7",
                )?;
                perf.iter()
                    .map(|p| (p.algo as u32, p.status, p.memory, p.mathType))
                    .collect()
            }
            Pass::Data => {
                let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); 16];
                check(
                    sys::cudnnGetConvolutionBackwardDataAlgorithm_v7(
                        handle,
                        d.w,
                        d.y.0,
                        d.conv,
                        d.x.0,
                        WANTED,
                        &mut found,
                        perf.as_mut_ptr(),
                    ),
                    "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                )?;
                perf.iter()
                    .map(|p| (p.algo as u32, p.status, p.memory, p.mathType))
                    .collect()
            }
            Pass::Filter => {
                let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); 16];
                check(
                    sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                        handle,
                        d.x.0,
                        d.y.0,
                        d.conv,
                        d.w,
                        WANTED,
                        &mut found,
                        perf.as_mut_ptr(),
                    ),
                    "cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                )?;
                perf.iter()
                    .map(|p| (p.algo as u32, p.status, p.memory, p.mathType))
                    .collect()
            }
        }
    };
    pick(&ranked[..(found.clamp(0, WANTED) as usize)]).ok_or_else(|| {
        format!("cuDNN's heuristics offer no {pass:?} algorithm within {MAX_WORKSPACE} bytes")
    })
}

/// The first of cuDNN's ranked `(algo, status, workspace, math)` that succeeded and
/// fits the workspace limit.
fn pick(ranked: &[(u32, sys::cudnnStatus_t, usize, sys::cudnnMathType_t)]) -> Option<Choice> {
    ranked
        .iter()
        .find(|(_, status, memory, _)| {
            *status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && *memory <= MAX_WORKSPACE
        })
        .map(|&(algo, _, workspace, math)| Choice {
            algo,
            math,
            workspace,
        })
}

/// Runs `f` with device `index`'s cuDNN (created on first use), the context bound to
/// this thread.
fn with_device<R>(index: usize, f: impl FnOnce(&mut Device) -> CudnnResult<R>) -> CudnnResult<R> {
    type Devices = Mutex<HashMap<usize, Arc<Mutex<Device>>>>;
    static DEVICES: OnceLock<Devices> = OnceLock::new();
    let device = {
        let mut devices = DEVICES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match devices.get(&index) {
            Some(d) => d.clone(),
            None => {
                let d = Arc::new(Mutex::new(Device::new(index)?));
                devices.insert(index, d.clone());
                d
            }
        }
    };
    let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
    device.ctx.bind_to_thread().map_err(|e| format!("{e:?}"))?;
    f(&mut device)
}

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

/// Whether cuDNN's batch norm takes bfloat16 data: unknown until first tried, then
/// remembered. Where it does not (`CUDNN_STATUS_NOT_SUPPORTED`), bfloat16 batch norm
/// runs on f32 copies of its input and output gradient (said once on stderr).
static BF16_NORM: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

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
    if BF16_NORM.load(Ordering::Relaxed) == UNSUPPORTED {
        return run(cast(x, DType::F32));
    }
    match run(x.clone()) {
        Err(e) if e.contains("NOT_SUPPORTED") => {
            BF16_NORM.store(UNSUPPORTED, Ordering::Relaxed);
            eprintln!(
                "CUDA kernels: this cuDNN has no bfloat16 batch norm ({e}); \
                 batch norm runs on f32 copies"
            );
            run(cast(x, DType::F32))
        }
        result => {
            if result.is_ok() {
                BF16_NORM.store(SUPPORTED, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(stride: usize, padding: usize) -> ConvOptions<2> {
        ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1)
    }

    /// Output shapes of ResNet's convolutions agree with burn's own formula.
    #[test]
    fn output_shapes_are_burns() {
        use burn::tensor::ops::conv::calculate_conv_output_size;
        for (x, w, stride, pad) in [
            ([256, 3, 224, 224], [64, 3, 7, 7], 2, 3),
            ([256, 64, 56, 56], [64, 64, 3, 3], 1, 1),
            ([256, 64, 56, 56], [128, 64, 3, 3], 2, 1),
            ([256, 64, 56, 56], [128, 64, 1, 1], 2, 0),
            ([8, 512, 7, 7], [2048, 512, 1, 1], 1, 0),
            ([1, 3, 33, 31], [8, 3, 7, 7], 2, 3),
        ] {
            let shape = ConvShape::new(x, w, &options(stride, pad)).unwrap();
            let out = |i: usize| calculate_conv_output_size(w[2 + i], stride, pad, 1, x[2 + i]);
            assert_eq!(shape.y(), [x[0], w[0], out(0), out(1)], "{x:?} {w:?}");
        }
    }

    /// What cuDNN cannot run is refused with a reason, not passed on.
    #[test]
    fn impossible_shapes_are_refused() {
        let refused = |x, w, o: ConvOptions<2>| ConvShape::new(x, w, &o).unwrap_err();
        assert!(refused([1, 3, 8, 8], [4, 6, 3, 3], options(1, 1)).contains("channels"));
        assert!(refused([1, 3, 2, 2], [4, 3, 7, 7], options(1, 0)).contains("no output"));
        assert!(refused(
            [1, 4, 8, 8],
            [4, 2, 3, 3],
            ConvOptions::new([1, 1], [1, 1], [1, 1], 2)
        )
        .contains("groups"));
        assert!(refused([1 << 31, 3, 8, 8], [4, 3, 3, 3], options(1, 1)).contains("range"));
        assert!(refused([1 << 20, 64, 64, 64], [4, 64, 3, 3], options(1, 1)).contains("2^31"));
    }

    #[test]
    fn dtypes_and_math() {
        use sys::cudnnDataType_t::*;
        assert_eq!(data_type(DType::F32), Some(CUDNN_DATA_FLOAT));
        assert_eq!(data_type(DType::F16), Some(CUDNN_DATA_HALF));
        assert_eq!(data_type(DType::BF16), Some(CUDNN_DATA_BFLOAT16));
        assert_eq!(data_type(DType::F64), None);
        assert_eq!(
            math_type(DType::F32),
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
        );
        assert_eq!(
            math_type(DType::BF16),
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        );
        assert_eq!(nchw_strides([2, 3, 4, 5]), [60, 20, 5, 1]);
    }

    #[test]
    fn versions() {
        assert_eq!(check_version(91400), Ok(91400));
        assert_eq!(check_version(90200), Ok(90200));
        assert!(check_version(8907)
            .unwrap_err()
            .contains("cuDNN 8.9 was found"));
        assert!(check_version(100100)
            .unwrap_err()
            .contains("cuDNN 10.1 was found"));
    }

    /// The first ranked algorithm that succeeded within the workspace limit wins.
    #[test]
    fn heuristic_choice() {
        use sys::cudnnMathType_t::*;
        use sys::cudnnStatus_t::*;
        let ranked = [
            (6, CUDNN_STATUS_NOT_SUPPORTED, 0, CUDNN_TENSOR_OP_MATH),
            (
                1,
                CUDNN_STATUS_SUCCESS,
                MAX_WORKSPACE + 1,
                CUDNN_TENSOR_OP_MATH,
            ),
            (0, CUDNN_STATUS_SUCCESS, 4096, CUDNN_DEFAULT_MATH),
            (2, CUDNN_STATUS_SUCCESS, 0, CUDNN_FMA_MATH),
        ];
        let choice = pick(&ranked).unwrap();
        assert_eq!((choice.algo, choice.workspace), (0, 4096));
        assert_eq!(choice.math, CUDNN_DEFAULT_MATH);
        assert!(pick(&ranked[..2]).is_none());
    }

    /// Without a GPU (this test's machine may have none) `probe` answers, never panics.
    #[test]
    fn probe_answers() {
        match probe() {
            Ok(v) => assert_eq!(v / 10_000, 9),
            Err(why) => assert!(why.contains("cuDNN") || why.contains("libcudnn"), "{why}"),
        }
    }
}
