//! Device selection and the backends behind it.
//!
//! `--device auto|cpu|cuda|cuda:N|cuda:0,1` parses to a [`DeviceSpec`] (an index listed
//! twice, `cuda:0,0`, means two data-parallel replicas on that GPU); [`resolve`]
//! turns it into a [`ResolvedDevice`] after probing the GPU, and [`dispatch`] /
//! [`dispatch_infer`] run generic code on the matching burn backend:
//!
//! | device | precision | backend |
//! |---|---|---|
//! | CPU | float32 | [`CpuBackend`] (`burn::backend::Flex`) |
//! | CUDA | float32 / float16 / bfloat16 | [`CudaBackend`], [`CudaF16Backend`], [`CudaBf16Backend`] |
//!
//! Inference runs on the plain backend of its precision. Training runs on
//! `Autodiff<CudaBackend>` whatever the precision: float16/bfloat16 are mixed precision
//! there (f32 master weights, half-type compute; `train::amp`).
//!
//! **Probing.** cudarc loads `libcuda` and `libnvrtc` at run time, so a binary built
//! with the `cuda` feature runs on machines without CUDA. The probe checks that both
//! libraries load, that `cuInit` succeeds and that a device exists, returning an error
//! instead of panicking (and catching a panic, should one occur). `auto` falls back to
//! the CPU with a one-line notice; an explicit `cuda` without a usable GPU is an error.
//!
//! **Kernel caches.** CubeCL compiles every GPU kernel with NVRTC at first use, and its
//! PTX cache is off by default, so each run would recompile everything (minutes for a
//! ResNet). Before the first CUDA tensor, [`configure_cuda_caches`] turns on the
//! compilation cache and points it, and the autotune cache, at a user directory:
//! `$RECTRAIN_CACHE_DIR` if set, else `$XDG_CACHE_HOME/rectrain/cubecl`, else
//! `~/.cache/rectrain/cubecl`. A `cubecl.toml` (or `burn.toml` with a `[cubecl]`
//! section) found from the working directory, and the `CUBECL_*` environment variables,
//! are still honoured; only caches they leave unset are redirected. Delete the
//! directory to force recompilation (e.g. after a driver upgrade).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// The CPU backend (pure-Rust `flex`, f32).
pub type CpuBackend = burn::backend::Flex;
/// CUDA, f32 (TF32 where cubecl chooses it).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32>;
/// CUDA, f16 storage and compute.
#[cfg(feature = "cuda")]
pub type CudaF16Backend = burn::backend::Cuda<burn::tensor::f16>;
/// CUDA, bf16 storage and compute.
#[cfg(feature = "cuda")]
pub type CudaBf16Backend = burn::backend::Cuda<burn::tensor::bf16>;

/// Environment variable that overrides the kernel cache directory.
pub const CACHE_DIR_ENV: &str = "RECTRAIN_CACHE_DIR";

/// What the user asked for with `--device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first CUDA GPU if one is usable, else the CPU (with a notice).
    Auto,
    /// The CPU.
    Cpu,
    /// These CUDA devices (`cuda` = `cuda:0`; several = data-parallel training).
    Cuda(Vec<usize>),
}

/// A `--device` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid device {0:?}: expected auto, cpu, cuda, cuda:N or cuda:N,M,...")]
pub struct ParseDeviceError(String);

impl FromStr for DeviceSpec {
    type Err = ParseDeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDeviceError(s.to_string());
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(vec![0])),
            other => {
                let list = other
                    .strip_prefix("cuda:")
                    .or_else(|| other.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                // The same index twice is allowed: several replicas on one GPU
                // ([`resolve`] says so), which exercises data-parallel training there.
                let ids = list
                    .split(',')
                    .map(|part| part.trim().parse::<usize>().map_err(|_| bad()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(DeviceSpec::Cuda(ids))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(ids) => write!(f, "cuda:{}", join_ids(ids)),
        }
    }
}

fn join_ids(ids: &[usize]) -> String {
    ids.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Floating-point precision of weights and compute (SageMaker's `precision_dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats (the default; the only choice on the CPU).
    #[default]
    F32,
    /// IEEE half precision (CUDA only).
    F16,
    /// bfloat16 (CUDA only).
    Bf16,
}

/// A precision name that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid precision {0:?}: expected float32, float16 or bfloat16")]
pub struct ParsePrecisionError(String);

impl FromStr for Precision {
    type Err = ParsePrecisionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "float32" | "fp32" | "f32" => Ok(Precision::F32),
            "float16" | "fp16" | "f16" | "half" => Ok(Precision::F16),
            "bfloat16" | "bf16" => Ok(Precision::Bf16),
            _ => Err(ParsePrecisionError(s.to_string())),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "float32",
            Precision::F16 => "float16",
            Precision::Bf16 => "bfloat16",
        })
    }
}

/// The device a run uses, after probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// The CPU ([`CpuBackend`]).
    Cpu,
    /// These CUDA devices (at least one), all present.
    Cuda(Vec<usize>),
}

impl ResolvedDevice {
    /// Whether this is a GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self, ResolvedDevice::Cuda(_))
    }

    /// Number of devices (GPUs for data-parallel work; 1 for the CPU).
    pub fn count(&self) -> usize {
        match self {
            ResolvedDevice::Cpu => 1,
            ResolvedDevice::Cuda(ids) => ids.len(),
        }
    }

    /// The precision to use on this device: `wanted`, except that the CPU only does
    /// float32 (a notice says so when something else was asked for).
    pub fn effective_precision(
        &self,
        wanted: Precision,
        mut notice: impl FnMut(&str),
    ) -> Precision {
        if !self.is_cuda() && wanted != Precision::F32 {
            notice(&format!(
                "{wanted} needs a CUDA GPU; computing in float32 on the CPU"
            ));
            return Precision::F32;
        }
        wanted
    }
}

impl fmt::Display for ResolvedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolvedDevice::Cpu => f.write_str("cpu"),
            ResolvedDevice::Cuda(ids) => write!(f, "cuda:{}", join_ids(ids)),
        }
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// CUDA was asked for but this binary was built without the `cuda` feature.
    #[error("CUDA was requested ({0}) but this build has no CUDA support (built without the `cuda` feature); use --device cpu")]
    CudaNotBuilt(String),
    /// CUDA was asked for but no usable GPU was found.
    #[error("CUDA was requested ({requested}) but no usable GPU was found: {reason}; use --device cpu or auto")]
    NoGpu {
        /// The `--device` value.
        requested: String,
        /// What the probe found.
        reason: String,
    },
    /// A device index beyond the number of GPUs.
    #[error("CUDA device {index} does not exist: {count} GPU(s) visible (indices 0..{count})")]
    NoSuchDevice {
        /// The requested index.
        index: usize,
        /// GPUs present.
        count: usize,
    },
    /// `cuda:` with an empty list.
    #[error("no CUDA device index given")]
    NoDevices,
    /// float16/bfloat16 requested on the CPU.
    #[error("{0} is only supported on CUDA; use float32 on the CPU")]
    PrecisionNeedsCuda(Precision),
}

/// Number of usable CUDA devices, or why there are none. Never panics; the result is
/// computed once per process.
pub fn probe_cuda() -> Result<usize, String> {
    static PROBE: std::sync::OnceLock<Result<usize, String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(probe_cuda_uncached).clone()
}

#[cfg(feature = "cuda")]
fn probe_cuda_uncached() -> Result<usize, String> {
    let probe = || -> Result<usize, String> {
        // SAFETY: these only try to dlopen the libraries; no symbol is called.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("the CUDA driver library (libcuda.so) is not installed".into());
        }
        cudarc::driver::result::init().map_err(|e| format!("cuInit failed: {e:?}"))?;
        let n = cudarc::driver::result::device::get_count()
            .map_err(|e| format!("cuDeviceGetCount failed: {e:?}"))?;
        if n <= 0 {
            return Err("the CUDA driver reports no device".into());
        }
        // SAFETY: as above, a dlopen attempt only.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(
                "NVRTC (libnvrtc.so), needed to compile GPU kernels, was not found; \
                        add CUDA's lib directory to LD_LIBRARY_PATH"
                    .into(),
            );
        }
        Ok(n as usize)
    };
    std::panic::catch_unwind(probe).unwrap_or_else(|_| Err("the CUDA probe panicked".into()))
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda_uncached() -> Result<usize, String> {
    Err("this build has no CUDA support".into())
}

/// Resolves `--device`. `auto` picks CUDA device 0 when a GPU is usable and otherwise
/// the CPU, calling `notice` with a one-line explanation; `cuda[:N,..]` without a usable
/// GPU is an error.
pub fn resolve(
    spec: &DeviceSpec,
    mut notice: impl FnMut(&str),
) -> Result<ResolvedDevice, BackendError> {
    match spec {
        DeviceSpec::Cpu => Ok(ResolvedDevice::Cpu),
        DeviceSpec::Auto => match probe_cuda() {
            Ok(_) => Ok(ResolvedDevice::Cuda(vec![0])),
            Err(reason) => {
                notice(&format!("no usable CUDA GPU ({reason}); using the CPU"));
                Ok(ResolvedDevice::Cpu)
            }
        },
        DeviceSpec::Cuda(ids) => {
            if !cfg!(feature = "cuda") {
                return Err(BackendError::CudaNotBuilt(spec.to_string()));
            }
            if ids.is_empty() {
                return Err(BackendError::NoDevices);
            }
            let count = probe_cuda().map_err(|reason| BackendError::NoGpu {
                requested: spec.to_string(),
                reason,
            })?;
            if let Some(&index) = ids.iter().find(|&&i| i >= count) {
                return Err(BackendError::NoSuchDevice { index, count });
            }
            if let Some(note) = duplicate_notice(ids) {
                notice(&note);
            }
            Ok(ResolvedDevice::Cuda(ids.clone()))
        }
    }
}

/// The notice for a device list that names a GPU more than once, if it does.
fn duplicate_notice(ids: &[usize]) -> Option<String> {
    let repeated: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|&(i, id)| ids[..i].contains(id) && !ids[i + 1..].contains(id))
        .map(|(_, &id)| {
            let n = ids.iter().filter(|&&x| x == id).count();
            format!("cuda:{id} {n} times")
        })
        .collect();
    (!repeated.is_empty()).then(|| {
        format!(
            "{} listed: each listing is a data-parallel replica on that GPU (they share it: \
             this checks the multi-device path, it is not faster)",
            repeated.join(", ")
        )
    })
}

/// A tensor's values on the host as `f32`, row-major (other float dtypes converted):
/// logits for the metrics, gradients for the tests, weights for saving.
pub fn host_f32<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

/// Default directory of the CubeCL kernel caches (see the module docs).
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env(CACHE_DIR_ENV) {
        return Some(dir);
    }
    let base = env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("rectrain").join("cubecl"))
}

/// Turns on CubeCL's PTX compilation cache and sends it and the autotune cache to
/// [`cache_dir`], unless a `cubecl.toml` already chose. Must run before the first CUDA
/// tensor; later calls (and calls after CubeCL configured itself) change nothing.
/// Returns the directory used, if any.
#[cfg(feature = "cuda")]
pub fn configure_cuda_caches() -> Option<PathBuf> {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

    static DONE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let dir = cache_dir()?;
        std::panic::catch_unwind(|| {
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            if config.compilation.cache.is_none() {
                config.compilation.cache = Some(CacheConfig::File(dir.clone()));
            }
            if matches!(config.autotune.cache, CacheConfig::Target) {
                config.autotune.cache = CacheConfig::File(dir.clone());
            }
            let mut slot = CubeClRuntimeConfig::storage().lock();
            if slot.is_none() {
                *slot = Some(std::sync::Arc::new(config));
                Some(dir.clone())
            } else {
                None
            }
        })
        .ok()
        .flatten()
    })
    .clone()
}

/// Generic training-side work to run on whichever autodiff backend the device needs.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs on backend `B` with the resolved devices (one per GPU, or the CPU).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Generic inference work (no autodiff) to run on the device's backend.
pub trait InferTask {
    /// What the task returns.
    type Output;
    /// Runs on backend `B` with the resolved devices.
    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Self::Output;
}

#[cfg(feature = "cuda")]
fn cuda_devices(ids: &[usize]) -> Vec<burn::backend::cuda::CudaDevice> {
    configure_cuda_caches();
    ids.iter()
        .map(|&i| burn::backend::cuda::CudaDevice::new(i))
        .collect()
}

/// Runs a training task on the backend for `dev` and `precision`.
pub fn dispatch<T: BackendTask>(
    dev: &ResolvedDevice,
    precision: Precision,
    task: T,
) -> Result<T::Output, BackendError> {
    match dev {
        ResolvedDevice::Cpu => {
            if precision != Precision::F32 {
                return Err(BackendError::PrecisionNeedsCuda(precision));
            }
            Ok(task.run::<Autodiff<CpuBackend>>(vec![Default::default()]))
        }
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(ids) => {
            let devices = cuda_devices(ids);
            Ok(match precision {
                // Every precision trains f32 master weights; float16/bfloat16 compute
                // in the half type (mixed precision, `train::amp`).
                Precision::F32 | Precision::F16 | Precision::Bf16 => {
                    task.run::<Autodiff<CudaBackend>>(devices)
                }
            })
        }
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(ids) => Err(BackendError::CudaNotBuilt(format!(
            "cuda:{}",
            join_ids(ids)
        ))),
    }
}

/// Runs an inference task on the backend for `dev` and `precision`.
pub fn dispatch_infer<T: InferTask>(
    dev: &ResolvedDevice,
    precision: Precision,
    task: T,
) -> Result<T::Output, BackendError> {
    match dev {
        ResolvedDevice::Cpu => {
            if precision != Precision::F32 {
                return Err(BackendError::PrecisionNeedsCuda(precision));
            }
            Ok(task.run::<CpuBackend>(vec![Default::default()]))
        }
        #[cfg(feature = "cuda")]
        ResolvedDevice::Cuda(ids) => {
            let devices = cuda_devices(ids);
            Ok(match precision {
                Precision::F32 => task.run::<CudaBackend>(devices),
                Precision::F16 => task.run::<CudaF16Backend>(devices),
                Precision::Bf16 => task.run::<CudaBf16Backend>(devices),
            })
        }
        #[cfg(not(feature = "cuda"))]
        ResolvedDevice::Cuda(ids) => Err(BackendError::CudaNotBuilt(format!(
            "cuda:{}",
            join_ids(ids)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(vec![0])));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(vec![1])));
        assert_eq!("cuda:0,1".parse(), Ok(DeviceSpec::Cuda(vec![0, 1])));
        assert_eq!(DeviceSpec::Cuda(vec![0, 1]).to_string(), "cuda:0,1");
        // The same GPU twice: two replicas on it (a notice at resolution).
        assert_eq!("cuda:0,0".parse(), Ok(DeviceSpec::Cuda(vec![0, 0])));
        assert_eq!(DeviceSpec::Cuda(vec![0, 0]).to_string(), "cuda:0,0");
        for bad in ["", "cuda:", "cuda:x", "cuda:0,", "tpu", "cuda:-1", "cuda0"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repeated_gpus_get_a_notice() {
        assert_eq!(duplicate_notice(&[0, 1]), None);
        assert_eq!(duplicate_notice(&[0]), None);
        let n = duplicate_notice(&[0, 0]).unwrap();
        assert!(
            n.starts_with("cuda:0 2 times listed: each listing is a data-parallel replica"),
            "{n}"
        );
        let n = duplicate_notice(&[1, 0, 1, 0, 1]).unwrap();
        assert!(
            n.starts_with("cuda:0 2 times, cuda:1 3 times listed"),
            "{n}"
        );
    }

    #[test]
    fn precisions_parse_with_sagemaker_names() {
        assert_eq!("float32".parse(), Ok(Precision::F32));
        assert_eq!("float16".parse(), Ok(Precision::F16));
        assert_eq!("bfloat16".parse(), Ok(Precision::Bf16));
        assert!("float64".parse::<Precision>().is_err());
        assert_eq!(Precision::Bf16.to_string(), "bfloat16");
    }

    #[test]
    fn cpu_resolves_and_auto_falls_back_with_a_notice_without_a_gpu() {
        assert_eq!(resolve(&DeviceSpec::Cpu, |_| {}), Ok(ResolvedDevice::Cpu));
        if probe_cuda().is_ok() {
            return; // a GPU machine: covered by scripts/gpu/gpu_run.sh
        }
        let mut notes = Vec::new();
        let dev = resolve(&DeviceSpec::Auto, |n| notes.push(n.to_string())).unwrap();
        assert_eq!(dev, ResolvedDevice::Cpu);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("using the CPU"), "{notes:?}");
    }

    #[test]
    fn explicit_cuda_without_a_gpu_is_an_error_not_a_panic() {
        if probe_cuda().is_ok() {
            return;
        }
        let e = resolve(&DeviceSpec::Cuda(vec![0, 1]), |_| {}).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("cuda:0,1"), "{msg}");
        assert!(
            matches!(
                e,
                BackendError::NoGpu { .. } | BackendError::CudaNotBuilt(_)
            ),
            "{e:?}"
        );
    }

    #[test]
    fn cpu_precision_is_float32() {
        let mut notes = Vec::new();
        let p =
            ResolvedDevice::Cpu.effective_precision(Precision::F16, |n| notes.push(n.to_string()));
        assert_eq!(p, Precision::F32);
        assert_eq!(notes.len(), 1);
        struct Noop;
        impl InferTask for Noop {
            type Output = ();
            fn run<B: Backend>(self, _: Vec<B::Device>) {}
        }
        assert_eq!(
            dispatch_infer(&ResolvedDevice::Cpu, Precision::Bf16, Noop),
            Err(BackendError::PrecisionNeedsCuda(Precision::Bf16))
        );
        assert_eq!(
            dispatch_infer(&ResolvedDevice::Cpu, Precision::F32, Noop),
            Ok(())
        );
    }

    #[test]
    fn cache_dir_prefers_the_override() {
        // Only reads the environment: RECTRAIN_CACHE_DIR is not set in tests unless the
        // user set it, in which case it must win.
        if let Some(v) = std::env::var_os(CACHE_DIR_ENV).filter(|v| !v.is_empty()) {
            assert_eq!(cache_dir(), Some(PathBuf::from(v)));
        } else if let Some(d) = cache_dir() {
            assert!(d.ends_with("rectrain/cubecl"), "{}", d.display());
        }
    }
}
