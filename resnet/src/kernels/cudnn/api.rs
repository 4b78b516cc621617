//! The cuDNN library side of [`super::Cudnn`]: loading and version, the shape and
//! descriptor logic (plain code, tested without a GPU), and each device's handle,
//! stream and cached algorithm choices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::ops::ConvOptions;
use burn::tensor::DType;
use cudarc::cudnn::sys;
use cudarc::driver::{CudaContext, CudaStream};

/// Largest workspace an algorithm may ask for (PyTorch caps by free memory; a fixed
/// bound keeps the choice the same from run to run).
pub(super) const MAX_WORKSPACE: usize = 1 << 30;

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
                check_version(version)?;
                start_handle(0).map_err(|e| {
                    format!(
                        "cuDNN {} loaded but could not start: {e}",
                        version_name(version)
                    )
                })?;
                Ok(version)
            })
            .unwrap_or_else(|_| Err("loading cuDNN failed".to_string()))
        })
        .clone()
}

/// Creates and destroys a cuDNN handle on GPU `index`: a library that loads but cannot
/// start (a driver or toolkit it does not work with) is found here, once, rather than
/// at the first convolution.
fn start_handle(index: usize) -> CudnnResult<()> {
    let ctx = CudaContext::new(index).map_err(|e| format!("CUDA context {index}: {e:?}"))?;
    ctx.bind_to_thread().map_err(|e| format!("{e:?}"))?;
    let mut handle = std::ptr::null_mut();
    // SAFETY: the context is bound to this thread; the handle cudnnCreate writes is
    // destroyed once, right away.
    unsafe {
        check(sys::cudnnCreate(&mut handle), "cudnnCreate")?;
        check(sys::cudnnDestroy(handle), "cudnnDestroy")
    }
}

/// `major.minor.patch` of a cuDNN version number.
pub fn version_name(version: usize) -> String {
    if version >= 10_000 {
        format!(
            "{}.{}.{}",
            version / 10_000,
            version % 10_000 / 100,
            version % 100
        )
    } else {
        format!(
            "{}.{}.{}",
            version / 1_000,
            version % 1_000 / 100,
            version % 100
        )
    }
}

/// cuDNN 9 is what the bindings are for (cudarc's, from 9.2's headers). Versions read
/// `major·10000 + minor·100 + patch` since 9, `major·1000 + minor·100 + patch` before.
pub(super) fn check_version(version: usize) -> Result<usize, String> {
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

/// The operands of one convolution agree with its shape: `w` and `dy` in `x`'s dtype
/// and `dy` of the output's dims. burn-cubecl would reinterpret a tensor of another
/// dtype rather than fail, and cuDNN trusts the descriptors, so a mismatch is refused
/// here, naming what differs.
pub fn agree(
    shape: &ConvShape,
    x: DType,
    w: DType,
    dy: Option<(DType, [usize; 4])>,
) -> Result<(), String> {
    if w != x {
        return Err(format!("weight is {w:?}, input is {x:?}"));
    }
    if let Some((dtype, dims)) = dy {
        if dtype != x {
            return Err(format!("output gradient is {dtype:?}, input is {x:?}"));
        }
        if dims != shape.y() {
            return Err(format!(
                "output gradient has dims {dims:?}, the convolution gives {:?}",
                shape.y()
            ));
        }
    }
    Ok(())
}

/// Whether a failed bfloat16 batch norm call means this cuDNN has no bfloat16 batch
/// norm: `NOT_SUPPORTED`, or `BAD_PARAM*` (which some versions answer for the data type).
pub fn refuses_bf16(error: &str) -> bool {
    error.contains("NOT_SUPPORTED") || error.contains("BAD_PARAM")
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
pub(super) fn nchw_strides([_, c, h, w]: [usize; 4]) -> [i32; 4] {
    [(c * h * w) as i32, (h * w) as i32, w as i32, 1]
}

pub(super) fn ints(dims: [usize; 4]) -> [i32; 4] {
    dims.map(|d| d as i32)
}

pub(super) type CudnnResult<T> = Result<T, String>;

pub(super) fn check(status: sys::cudnnStatus_t, what: &str) -> CudnnResult<()> {
    match status {
        sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS => Ok(()),
        status => Err(format!("{what}: {status:?}")),
    }
}

/// A tensor descriptor (destroyed on drop).
pub(super) struct TensorDesc(pub(super) sys::cudnnTensorDescriptor_t);

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
    pub(super) fn nchw(dtype: sys::cudnnDataType_t, dims: [usize; 4]) -> CudnnResult<Self> {
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
    pub(super) fn batch_norm(x: &TensorDesc) -> CudnnResult<Self> {
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
pub(super) struct ConvDescs {
    pub(super) x: TensorDesc,
    pub(super) y: TensorDesc,
    pub(super) w: sys::cudnnFilterDescriptor_t,
    pub(super) conv: sys::cudnnConvolutionDescriptor_t,
}

impl ConvDescs {
    pub(super) fn new(shape: &ConvShape, dtype: DType) -> CudnnResult<Self> {
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

    pub(super) fn set_math(&self, math: sys::cudnnMathType_t) -> CudnnResult<()> {
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
pub(super) const NORM_MODE: sys::cudnnBatchNormMode_t =
    sys::cudnnBatchNormMode_t::CUDNN_BATCHNORM_SPATIAL;

/// Which step of a convolution an algorithm is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Pass {
    Forward,
    Data,
    Filter,
}

/// One algorithm for one convolution pass: its number (the pass's enum as an
/// integer), the math type it runs with and its workspace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Choice {
    pub(super) algo: u32,
    pub(super) math: sys::cudnnMathType_t,
    pub(super) workspace: usize,
}

/// One convolution shape's descriptors (made once) and, per pass, the algorithms
/// cuDNN's heuristics rank for it, best first, those that failed to run dropped.
pub(super) struct Plan {
    pub(super) descs: ConvDescs,
    ranked: HashMap<Pass, Vec<Choice>>,
}

impl Plan {
    /// Runs `launch` for `pass` with the best algorithm that runs ([`first_that_runs`]),
    /// the descriptors' math type set to the algorithm's first.
    pub(super) fn run(
        &mut self,
        handle: sys::cudnnHandle_t,
        pass: Pass,
        mut launch: impl FnMut(&ConvDescs, &Choice) -> CudnnResult<()>,
    ) -> CudnnResult<()> {
        let ranked = match self.ranked.entry(pass) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(heuristic(handle, pass, &self.descs)?)
            }
        };
        let descs = &self.descs;
        first_that_runs(ranked, |choice| {
            descs.set_math(choice.math)?;
            launch(descs, choice)
        })
        .map_err(|e| format!("{pass:?}: {e}"))
    }
}

/// Runs `run` with the first of `ranked` that succeeds, as PyTorch's `try_all`: an
/// algorithm that fails at execution (cuDNN's heuristics can rank one this GPU or
/// shape then refuses) is dropped from `ranked` with a note on stderr, so later calls
/// start with the one that ran. Every algorithm failing is an error naming each.
pub(super) fn first_that_runs(
    ranked: &mut Vec<Choice>,
    mut run: impl FnMut(&Choice) -> CudnnResult<()>,
) -> CudnnResult<()> {
    let mut failures = Vec::new();
    for (i, choice) in ranked.iter().enumerate() {
        match run(choice) {
            Ok(()) => {
                if i > 0 {
                    eprintln!(
                        "cuDNN: algorithm {} used after {}",
                        choice.algo,
                        failures.join("; ")
                    );
                    ranked.drain(..i);
                }
                return Ok(());
            }
            Err(e) => failures.push(format!("algorithm {} failed ({e})", choice.algo)),
        }
    }
    Err(if failures.is_empty() {
        "no algorithm to try".to_string()
    } else {
        failures.join("; ")
    })
}

/// One device's cuDNN: its handle, a stream of its own (used only where cubecl's
/// stream is unknown), and each convolution shape's [`Plan`].
pub(super) struct Device {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) handle: sys::cudnnHandle_t,
    plans: HashMap<(ConvShape, DType), Plan>,
}

// SAFETY: the handle and descriptors are used by one thread at a time (the Mutex in
// `with_device`), with the context bound to that thread first.
unsafe impl Send for Device {}

impl Device {
    pub(super) fn new(index: usize) -> CudnnResult<Self> {
        probe()?;
        let ctx = CudaContext::new(index).map_err(|e| format!("CUDA context {index}: {e:?}"))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("CUDA stream on device {index}: {e:?}"))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: the context is bound to this thread by new_stream; the handle is
        // written by cudnnCreate.
        unsafe {
            ctx.bind_to_thread().map_err(|e| format!("{e:?}"))?;
            check(sys::cudnnCreate(&mut handle), "cudnnCreate")?;
        }
        Ok(Device {
            ctx,
            stream,
            handle,
            plans: HashMap::new(),
        })
    }

    /// `shape`'s plan in `dtype` (descriptors made the first time).
    pub(super) fn plan(&mut self, shape: &ConvShape, dtype: DType) -> CudnnResult<&mut Plan> {
        Ok(match self.plans.entry((*shape, dtype)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Plan {
                descs: ConvDescs::new(shape, dtype)?,
                ranked: HashMap::new(),
            }),
        })
    }

    /// Points the handle at `stream` (cuDNN queues its work there).
    pub(super) fn set_stream(&self, stream: sys::cudaStream_t) -> CudnnResult<()> {
        // SAFETY: a live handle; the stream belongs to this device's context.
        check(
            unsafe { sys::cudnnSetStream(self.handle, stream) },
            "cudnnSetStream",
        )
    }
}

/// The algorithms cuDNN's heuristics rank for `pass`, best first, that succeeded and
/// fit [`MAX_WORKSPACE`].
pub(super) fn heuristic(
    handle: sys::cudnnHandle_t,
    pass: Pass,
    d: &ConvDescs,
) -> CudnnResult<Vec<Choice>> {
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
    let usable = usable(&ranked[..(found.clamp(0, WANTED) as usize)]);
    if usable.is_empty() {
        return Err(format!(
            "cuDNN's heuristics offer no {pass:?} algorithm within {MAX_WORKSPACE} bytes"
        ));
    }
    Ok(usable)
}

/// Those of cuDNN's ranked `(algo, status, workspace, math)` that succeeded and fit
/// the workspace limit, in cuDNN's order.
pub(super) fn usable(
    ranked: &[(u32, sys::cudnnStatus_t, usize, sys::cudnnMathType_t)],
) -> Vec<Choice> {
    ranked
        .iter()
        .filter(|(_, status, memory, _)| {
            *status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && *memory <= MAX_WORKSPACE
        })
        .map(|&(algo, _, workspace, math)| Choice {
            algo,
            math,
            workspace,
        })
        .collect()
}

/// Runs `f` with device `index`'s cuDNN (created on first use), the context bound to
/// this thread.
pub(super) fn with_device<R>(
    index: usize,
    f: impl FnOnce(&mut Device) -> CudnnResult<R>,
) -> CudnnResult<R> {
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
        assert_eq!(version_name(91400), "9.14.0");
        assert_eq!(version_name(8907), "8.9.7");
        assert_eq!(check_version(91400), Ok(91400));
        assert_eq!(check_version(90200), Ok(90200));
        assert!(check_version(8907)
            .unwrap_err()
            .contains("cuDNN 8.9 was found"));
        assert!(check_version(100100)
            .unwrap_err()
            .contains("cuDNN 10.1 was found"));
    }

    /// The ranked algorithms that succeeded within the workspace limit are kept, in
    /// cuDNN's order.
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
        let kept = usable(&ranked);
        assert_eq!(
            kept.iter()
                .map(|c| (c.algo, c.workspace))
                .collect::<Vec<_>>(),
            [(0, 4096), (2, 0)]
        );
        assert_eq!(kept[0].math, CUDNN_DEFAULT_MATH);
        assert!(usable(&ranked[..2]).is_empty());
    }

    fn choice(algo: u32) -> Choice {
        Choice {
            algo,
            math: sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
            workspace: 0,
        }
    }

    /// An algorithm that fails at execution is skipped and dropped, so the next call
    /// starts with the one that ran; all failing is an error naming each.
    #[test]
    fn failed_algorithms_fall_through_to_the_next() {
        let mut ranked = vec![choice(7), choice(1), choice(0)];
        let mut tried = Vec::new();
        first_that_runs(&mut ranked, |c| {
            tried.push(c.algo);
            if c.algo == 7 {
                Err("CUDNN_STATUS_EXECUTION_FAILED".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(tried, [7, 1]);
        assert_eq!(ranked, [choice(1), choice(0)]);

        // The first runs: nothing else is tried, nothing dropped.
        let mut tried = Vec::new();
        first_that_runs(&mut ranked, |c| {
            tried.push(c.algo);
            Ok(())
        })
        .unwrap();
        assert_eq!((tried, ranked.len()), (vec![1], 2));

        let err = first_that_runs(&mut ranked, |c| Err(format!("no {}", c.algo))).unwrap_err();
        assert_eq!(err, "algorithm 1 failed (no 1); algorithm 0 failed (no 0)");
        assert_eq!(ranked.len(), 2, "nothing dropped when none ran");
        assert!(first_that_runs(&mut Vec::new(), |_| Ok(())).is_err());
    }

    /// Operands of another dtype or an output gradient of the wrong dims are refused
    /// before any descriptor is made.
    #[test]
    fn operands_must_agree_with_the_shape() {
        let shape = ConvShape::new([2, 3, 8, 8], [4, 3, 3, 3], &options(1, 1)).unwrap();
        assert_eq!(agree(&shape, DType::BF16, DType::BF16, None), Ok(()));
        assert_eq!(
            agree(
                &shape,
                DType::F32,
                DType::F32,
                Some((DType::F32, [2, 4, 8, 8]))
            ),
            Ok(())
        );
        assert!(agree(&shape, DType::BF16, DType::F32, None)
            .unwrap_err()
            .contains("weight is F32, input is BF16"));
        assert!(agree(
            &shape,
            DType::F32,
            DType::F32,
            Some((DType::F16, [2, 4, 8, 8]))
        )
        .unwrap_err()
        .contains("output gradient is F16"));
        assert!(agree(
            &shape,
            DType::F32,
            DType::F32,
            Some((DType::F32, [2, 4, 4, 4]))
        )
        .unwrap_err()
        .contains("dims [2, 4, 4, 4]"));
    }

    /// Both ways a cuDNN refuses bfloat16 batch norm switch it to f32 copies; other
    /// failures do not.
    #[test]
    fn bfloat16_refusals() {
        assert!(refuses_bf16(
            "batch norm forward: CUDNN_STATUS_NOT_SUPPORTED"
        ));
        assert!(refuses_bf16("batch norm forward: CUDNN_STATUS_BAD_PARAM"));
        assert!(refuses_bf16(
            "batch norm forward: CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED"
        ));
        assert!(!refuses_bf16(
            "batch norm forward: CUDNN_STATUS_ALLOC_FAILED"
        ));
        assert!(!refuses_bf16(
            "batch norm forward: CUDNN_STATUS_EXECUTION_FAILED"
        ));
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
