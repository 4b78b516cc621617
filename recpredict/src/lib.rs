//! `recpredict`: batch prediction with a `rectrain` model artifact, printing one JSON
//! object per image (see [`output`] for the wire format), SageMaker's
//! `{"prediction": [...]}` lines (`--sagemaker`), or one `<name>.out` file per image
//! like a SageMaker batch transform (`--output-dir`).
//!
//! The pieces:
//! - [`input`]: image files, directories, paths on stdin, a `.lst` + root, a `.rec`;
//! - [`pipeline`]: decoding on worker threads ahead of the model, batching, ordered
//!   output, per-image errors;
//! - [`output`]: the JSON Lines wire format and SageMaker's formats;
//! - [`evaluate`]: the `--evaluate` summary (accuracy, top-k, per class, confusion;
//!   per-class and micro/macro precision/recall/F1, exact match and Hamming loss for
//!   multi-label models);
//! - [`model`]: the model (a rectrain artifact or an MXNet checkpoint) behind
//!   [`pipeline::Classifier`];
//! - [`serve`]: the same model and preprocessing behind SageMaker's HTTP inference
//!   contract (`--serve`), with dynamic batching.
//!
//! Preprocessing is `resnet::preprocess::preprocess_eval`, the very function that
//! measured the validation accuracy during training (shorter-side resize and centre
//! crop), or with `--squash` the SageMaker endpoint's resize to exactly H×W.
#![deny(missing_docs)]

pub mod app;
pub mod evaluate;
pub mod input;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod serve;

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use resnet::backend::{DeviceSpec, Precision};
use resnet::preprocess::{preprocess_eval_report, EvalMode};

pub use input::InputSpec;
pub use pipeline::{OutputMode, Report, Timings, TOOL};

/// The default `--top-k`: 5, or the class count when the model has fewer classes.
pub const DEFAULT_TOP_K: usize = 5;

/// A validated run configuration (the binary builds it from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// The model artifact directory written by `rectrain --out`.
    pub model_dir: PathBuf,
    /// What to predict.
    pub input: InputSpec,
    /// Where the predictions go.
    pub output: OutputMode,
    /// Centre crop (training's validation path) or squash (SageMaker's endpoint).
    pub eval_mode: EvalMode,
    /// Images per model call.
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Decoded batches that may wait for the model.
    pub prefetch_batches: usize,
    /// The device to run on.
    pub device: DeviceSpec,
    /// The floating-point precision of the model.
    pub precision: Precision,
    /// `top_k` length (default [`DEFAULT_TOP_K`], capped at the class count).
    pub top_k: Option<usize>,
    /// Add the `--evaluate` summary line.
    pub evaluate: bool,
    /// Also print the summary as a table on the diagnostics stream.
    pub table: bool,
    /// Print where the time went on the diagnostics stream.
    pub timings: bool,
    /// Flush after every line.
    pub line_buffered: bool,
}

/// A fatal error: nothing (more) can be predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The artifact's `config.json` is missing or unusable, or the MXNet checkpoint
    /// `--model` names is (its symbol, parameters or archive).
    #[error("cannot use the model in {dir}: {message}")]
    Artifact {
        /// The artifact directory.
        dir: PathBuf,
        /// What is wrong (the [`resnet::artifact::ArtifactError`] or
        /// [`resnet::mxnet::MxnetError`] message, which already names its file and
        /// cause; kept as text so the cause is not printed twice).
        message: String,
    },
    /// The artifact has no weights file.
    #[error("{path}: model weights not found (is {dir} a rectrain --out directory?)")]
    MissingWeights {
        /// The expected weights file.
        path: PathBuf,
        /// The artifact directory.
        dir: PathBuf,
    },
    /// The weights cannot be loaded into the network the config describes.
    #[error("cannot load the model weights {path}")]
    Model {
        /// The weights file.
        path: PathBuf,
        /// What failed (format, missing tensor, shape mismatch...).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The device cannot be used.
    #[error("cannot use the device")]
    Device(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An option does not fit this model or input.
    #[error("{0}")]
    Usage(String),
    /// The input list or record file is unusable.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// The prediction loop failed.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// The server (`--serve`) could not start or stopped on an error.
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
}

/// Check the options against the model.
fn validate(cfg: &Config, image_shape: [usize; 3], num_classes: usize) -> Result<usize, Error> {
    check_batch_size(cfg.batch_size, image_shape)?;
    let top_k = resolve_top_k(cfg.top_k, num_classes)?;
    if cfg.evaluate && !cfg.input.has_labels() {
        return Err(Error::Usage(
            "--evaluate needs true labels: give the images as --lst FILE --root DIR or --rec FILE"
                .into(),
        ));
    }
    Ok(top_k)
}

/// `--batch-size` against the model: at least 1, and one batch of decoded images must
/// fit in one tensor.
pub(crate) fn check_batch_size(batch_size: usize, image_shape: [usize; 3]) -> Result<(), Error> {
    if batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    // One batch of decoded images is one tensor: keep it within what a tensor can
    // index (2^31 − 1 values), which also bounds the memory of the batch buffers.
    let per_batch = image_shape
        .iter()
        .fold(batch_size, |n, &d| n.saturating_mul(d));
    if per_batch > i32::MAX as usize {
        let [c, h, w] = image_shape;
        return Err(Error::Usage(format!(
            "--batch-size {batch_size} at the model's image_shape {c},{h},{w} makes batches of \
             {per_batch} values, more than one tensor can (2^31 − 1); use a smaller --batch-size"
        )));
    }
    Ok(())
}

/// The `top_k` length: `--top-k` checked against the class count, or the default.
pub(crate) fn resolve_top_k(top_k: Option<usize>, num_classes: usize) -> Result<usize, Error> {
    match top_k {
        None => Ok(DEFAULT_TOP_K.min(num_classes)),
        Some(0) => Err(Error::Usage("--top-k must be at least 1".into())),
        Some(k) if k > num_classes => Err(Error::Usage(format!(
            "--top-k {k} is more than the model's {num_classes} classes"
        ))),
        Some(k) => Ok(k),
    }
}

/// Load the model in `cfg.model_dir`, predict every input, write the output to `out`
/// and messages (per-image errors, device notices, `--timings`, the `--evaluate`
/// table) to `diag`. `stdin` is read when an input path is `-`.
pub fn run(
    cfg: &Config,
    stdin: Box<dyn BufRead + Send>,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> Result<Report, Error> {
    let load_start = Instant::now();
    let source = model::open(&cfg.model_dir)?;
    let image_shape = source.image_shape();
    let top_k = validate(cfg, image_shape, source.num_classes())?;
    // Open the inputs before the (slower) model, so a bad list fails at once.
    let inputs = input::open(&cfg.input, stdin)?;
    if let OutputMode::Dir(dir) = &cfg.output {
        std::fs::create_dir_all(dir).map_err(|source| pipeline::PipelineError::OutputFile {
            path: dir.clone(),
            source,
        })?;
    }
    let mut classifier = model::load(
        &source,
        &cfg.device,
        cfg.precision,
        cfg.batch_size,
        &mut |msg| {
            let _ = writeln!(diag, "{TOOL}: {msg}");
        },
    )?;
    let load_time = load_start.elapsed();

    let pcfg = source.preprocess();
    let eval_mode = source.eval_mode(cfg.eval_mode);
    let upscaled = AtomicU64::new(0);
    let preprocess = |bytes: &[u8], buf: &mut [f32]| {
        let prepared =
            preprocess_eval_report(bytes, &pcfg, eval_mode, buf).map_err(|e| e.to_string())?;
        if prepared.upscaled {
            upscaled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    };
    let settings = pipeline::Settings {
        shape: image_shape,
        num_classes: source.num_classes(),
        class_names: source.class_names(),
        multi_label: source.multi_label(),
        batch_size: cfg.batch_size,
        workers: cfg.workers,
        prefetch_batches: cfg.prefetch_batches,
        output: cfg.output.clone(),
        top_k,
        evaluate: cfg.evaluate,
        line_buffered: cfg.line_buffered,
    };
    let report = pipeline::run(inputs, &preprocess, &mut classifier, &settings, out, diag)?;

    let upscaled = upscaled.into_inner();
    if upscaled > 0 {
        let [_, h, w] = image_shape;
        let _ = writeln!(
            diag,
            "{TOOL}: note: {upscaled} image(s) smaller than {w}x{h} were upscaled to fit"
        );
    }
    if cfg.table {
        if let Some(summary) = &report.summary {
            let _ = evaluate::write_any_table(diag, summary);
        }
    }
    if cfg.timings {
        let _ = write_timings(diag, &report, load_time, cfg);
    }
    Ok(report)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The `--timings` breakdown.
fn write_timings(
    w: &mut dyn Write,
    report: &Report,
    load: Duration,
    cfg: &Config,
) -> io::Result<()> {
    let t = &report.timings;
    let images = report.predicted + report.failed;
    let per = |d: Duration| {
        if images == 0 {
            0.0
        } else {
            secs(d) * 1000.0 / images as f64
        }
    };
    let rate = if secs(t.total) > 0.0 {
        images as f64 / secs(t.total)
    } else {
        0.0
    };
    writeln!(
        w,
        "{TOOL}: timings: {images} images in {:.3} s = {rate:.1} images/s \
         (batch size {}, {} decoding threads, {} batches)",
        secs(t.total),
        cfg.batch_size,
        cfg.workers,
        t.batches
    )?;
    writeln!(w, "{TOOL}:   model load            {:>9.3} s", secs(load))?;
    writeln!(
        w,
        "{TOOL}:   decode+preprocess     {:>9.3} s wall, {:.3} s thread time ({:.2} ms/image)",
        secs(t.decode_wall),
        secs(t.decode_busy),
        per(t.decode_busy)
    )?;
    writeln!(
        w,
        "{TOOL}:   model (forward)       {:>9.3} s ({:.2} ms/image)",
        secs(t.model),
        per(t.model)
    )?;
    writeln!(
        w,
        "{TOOL}:   waiting for decoding  {:>9.3} s",
        secs(t.input_wait)
    )?;
    writeln!(
        w,
        "{TOOL}:   output                {:>9.3} s",
        secs(t.output)
    )
}
