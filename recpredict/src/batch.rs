//! Batch mode: predict every input in order ([`run`]), with the `--evaluate` summary
//! and `--timings` on the diagnostics stream.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use resnet::backend::{DeviceSpec, Precision};
use resnet::preprocess::EvalMode;

use crate::error::Error;
use crate::evaluate;
use crate::input::{self, InputSpec};
use crate::model::OpenedModel;
use crate::pipeline::{self, OutputMode, Report, TOOL};

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
    /// `top_k` length (default [`DEFAULT_TOP_K`](crate::DEFAULT_TOP_K), capped at the class count).
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
    let model = OpenedModel::open(&cfg.model_dir, cfg.batch_size, cfg.top_k, cfg.eval_mode)?;
    if cfg.evaluate && !cfg.input.has_labels() {
        return Err(Error::Usage(
            "--evaluate needs true labels: give the images as --lst FILE --root DIR or --rec FILE"
                .into(),
        ));
    }
    // Open the inputs before the (slower) model, so a bad list fails at once.
    let inputs = input::open(&cfg.input, stdin)?;
    if let OutputMode::Dir(dir) = &cfg.output {
        std::fs::create_dir_all(dir).map_err(|source| pipeline::PipelineError::OutputFile {
            path: dir.clone(),
            source,
        })?;
    }
    let mut classifier = model.load(&cfg.device, cfg.precision, &mut |msg| {
        let _ = writeln!(diag, "{TOOL}: {msg}");
    })?;
    let load_time = load_start.elapsed();

    let upscaled = AtomicU64::new(0);
    let preprocess = |bytes: &[u8], buf: &mut [f32]| {
        if model.preprocessor.apply(bytes, buf)? {
            upscaled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    };
    let image_shape = model.image_shape();
    let settings = pipeline::Settings {
        shape: image_shape,
        num_classes: model.source.num_classes(),
        class_names: model.source.class_names(),
        head: model.source.head(),
        batch_size: cfg.batch_size,
        workers: cfg.workers,
        prefetch_batches: cfg.prefetch_batches,
        output: cfg.output.clone(),
        top_k: model.top_k,
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
            let _ = evaluate::write_summary_table(diag, summary);
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
