//! The command-line options `rectrain` and `recpredict` share, declared once so that a
//! flag means the same in both tools: its spelling, values, help text, default and
//! error messages. Each tool flattens the groups into its own options
//! (`#[command(flatten)]`); the exit-code policy stays in `tool_cli`. They live in
//! the library both tools stand on, so that neither depends on the other; their tests
//! (both tools' flag sets side by side) are in `rectrain::cli`, next to the
//! hyperparameter flags that share `--precision-dtype`'s help.
//!
//! | flag | meaning |
//! |---|---|
//! | `--device auto\|cpu\|cuda[:N[,M…]]` | [`DeviceArgs`]: the device ([`DeviceSpec`]) |
//! | `--precision-dtype float32\|float16\|bfloat16` | [`DeviceArgs`]: the precision ([`Precision`]); in `rectrain` also SageMaker's `precision_dtype` hyperparameter |
//! | `--no-cudnn` | [`DeviceArgs`]: CUDA without cuDNN ([`crate::kernels::cuda_convolutions`]) |
//! | `--workers N` | [`WorkersArgs`]: image decoding threads, 0 = one per CPU, at most [`MAX_WORKERS`] |
//! | a `.lst`'s image root | optional, default the `.lst`'s folder ([`lst_root`]) |
//!
//! A value that does not parse is a usage error (exit code 2) reported by clap as
//! `error: --FLAG VALUE: reason`, the same line in both tools.
//!

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command};

use crate::backend::{DeviceSpec, Precision};

/// The most image decoding threads `--workers` takes.
pub const MAX_WORKERS: usize = 1024;

/// `--device` and `--precision-dtype`: where and in which precision the model runs.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct DeviceArgs {
    /// auto, cpu, cuda, cuda:N or cuda:N,M,...
    ///
    /// auto: a usable CUDA GPU, else the CPU (with a notice). Several GPUs, cuda:0,1:
    /// rectrain trains data-parallel on them (each mini-batch is split across them; the
    /// same index twice, cuda:0,0, puts two replicas on one GPU); recpredict uses the
    /// first.
    #[arg(
        long,
        value_name = "DEVICE",
        default_value = "auto",
        value_parser = FlagValue(parse_device)
    )]
    pub device: DeviceSpec,

    /// float32, float16 or bfloat16 (the last two on CUDA only). In rectrain this is
    /// SageMaker's precision_dtype hyperparameter, overriding --hyperparameters.
    #[arg(
        long,
        value_name = PRECISION_VALUE_NAME,
        value_parser = FlagValue(parse_precision),
        help = PRECISION_HELP
    )]
    pub precision_dtype: Option<Precision>,

    /// On CUDA, do not use cuDNN (also: RECTRAIN_NO_CUDNN=1)
    ///
    /// Convolutions then run on burn's implicit-GEMM kernels and batch norm on burn's
    /// own operations, as when cuDNN 9 cannot be loaded: for comparing the two. The
    /// path taken is said once on stderr.
    #[arg(long)]
    pub no_cudnn: bool,
}

/// `--precision-dtype`'s value placeholder (the same as rectrain's hyperparameter table's row).
pub const PRECISION_VALUE_NAME: &str = "DTYPE";
/// `--precision-dtype`'s short help (the same as rectrain's hyperparameter table's row, default
/// included).
pub const PRECISION_HELP: &str = "float32, float16 or bfloat16 (the last two on CUDA only). \
                              [default: float32]";

impl DeviceArgs {
    /// Applies the process-wide kernel switches (`--no-cudnn`); call before the first
    /// tensor.
    pub fn switch_kernels(&self) {
        if self.no_cudnn {
            crate::kernels::disable_cudnn();
        }
    }

    /// The precision asked for, float32 when none was.
    pub fn precision(&self) -> Precision {
        self.precision_dtype.unwrap_or_default()
    }
}

/// `--workers`: the threads that read and decode images.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkersArgs {
    /// Image decoding threads (0: one per CPU)
    ///
    /// Threads that read and decode images ahead of the model; 0 means one per CPU.
    /// At most 1024.
    #[arg(
        long,
        value_name = "N",
        default_value = "0",
        value_parser = FlagValue(parse_workers),
        allow_negative_numbers = true
    )]
    pub workers: usize,
}

impl WorkersArgs {
    /// The thread count: `--workers`, or one per CPU for 0.
    pub fn threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Parse a `--device` value.
pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse()
        .map_err(|e: crate::backend::ParseDeviceError| e.to_string())
}

/// Parse a `--precision-dtype` value.
pub fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse()
        .map_err(|e: crate::backend::ParsePrecisionError| e.to_string())
}

/// Parse a `--workers` value: 0 (one per CPU) to [`MAX_WORKERS`].
pub fn parse_workers(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of threads (0: one per CPU)".to_string())?;
    if n > MAX_WORKERS {
        return Err(format!("at most {MAX_WORKERS} decoding threads"));
    }
    Ok(n)
}

/// A clap value parser from a `parse` function, whose error reads
/// `--FLAG VALUE: reason` (clap prints it after `error: `).
#[derive(Clone)]
struct FlagValue<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for FlagValue<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let flag = arg
            .and_then(Arg::get_long)
            .map_or_else(|| "value".to_string(), |l| format!("--{l}"));
        let fail = |reason: String| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("{flag} {}: {reason}\n", value.to_string_lossy()),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| fail("not valid UTF-8".into()))?;
        (self.0)(text).map_err(fail)
    }
}

/// The folder a `.lst`'s paths are relative to when no root is given: the `.lst`'s
/// own folder (`.` for a bare file name).
pub fn lst_folder(lst: &Path) -> PathBuf {
    match lst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The image root of a `.lst`: `root` when given, else [`lst_folder`].
pub fn lst_root(lst: &Path, root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(|| lst_folder(lst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lst_images_default_to_the_lst_folder() {
        assert_eq!(lst_folder(Path::new("/d/x.lst")), PathBuf::from("/d"));
        assert_eq!(lst_folder(Path::new("sub/x.lst")), PathBuf::from("sub"));
        assert_eq!(lst_folder(Path::new("x.lst")), PathBuf::from("."));
        assert_eq!(lst_root(Path::new("sub/x.lst"), None), PathBuf::from("sub"));
        assert_eq!(
            lst_root(Path::new("sub/x.lst"), Some("imgs".into())),
            PathBuf::from("imgs")
        );
    }
}
