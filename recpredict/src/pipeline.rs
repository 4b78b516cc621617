//! The prediction loop: items are read and preprocessed on a pool of worker threads,
//! a batch at a time, ahead of the model (at most `prefetch_batches` decoded batches
//! wait in a bounded channel, so memory stays bounded however long the input is);
//! the calling thread runs the model on each batch and writes its lines, in input
//! order, flushing after every batch (or every line with `line_buffered`).
//!
//! The model and the preprocessing are parameters ([`Classifier`] and a function), so
//! this loop is the same on every backend and can be tested without a network.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use resnet::Head;

use crate::evaluate::{Evaluator, Summary};
use crate::input::{self, Inputs, Item, ItemKey};
use crate::output::{self, TrueClass};

/// The tool name that prefixes every stderr line.
pub const TOOL: &str = "recpredict";

/// A model that turns a batch of preprocessed images into class probabilities.
pub trait Classifier {
    /// `images` holds `n` images of `shape` (C, H, W), normalised, image after image;
    /// returns `n` probability vectors (one per image, `num_classes` long).
    fn predict(
        &mut self,
        images: &[f32],
        n: usize,
        shape: [usize; 3],
    ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>>;
}

/// Decode and preprocess one encoded image into `out` (C·H·W floats); `Err` is the
/// message of the image's error line.
pub type Preprocess<'a> = dyn Fn(&[u8], &mut [f32]) -> Result<(), String> + Sync + 'a;

/// Where the predictions go.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputMode {
    /// The JSON Lines wire format (see [`crate::output`]).
    JsonLines,
    /// `{"prediction": [...]}` per image (`--sagemaker`).
    SageMaker,
    /// One `<name>.out` file per image in this directory (`--output-dir`).
    Dir(PathBuf),
}

/// How to run the loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The model's input shape (C, H, W).
    pub shape: [usize; 3],
    /// The model's class count.
    pub num_classes: usize,
    /// The model's class names, if any.
    pub class_names: Option<Vec<String>>,
    /// The model's head (true labels are vectors for [`Head::Sigmoid`]).
    pub head: Head,
    /// Images per model call.
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Decoded batches that may wait for the model.
    pub prefetch_batches: usize,
    /// The output format.
    pub output: OutputMode,
    /// Length of each line's `top_k` list and the k of the summary's top-k accuracy.
    pub top_k: usize,
    /// Compute the `--evaluate` summary.
    pub evaluate: bool,
    /// Flush after every line, not only after every batch.
    pub line_buffered: bool,
}

/// Where the time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Batches run.
    pub batches: u64,
    /// Wall time of the whole loop.
    pub total: Duration,
    /// Worker time spent reading, decoding and preprocessing (summed over threads).
    pub decode_busy: Duration,
    /// Wall time the producer spent on batches (reading + decoding, in parallel).
    pub decode_wall: Duration,
    /// Time the model thread waited for a decoded batch.
    pub input_wait: Duration,
    /// Time in the model (including the transfer to the device and back).
    pub model: Duration,
    /// Time writing output lines or files.
    pub output: Duration,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Images predicted.
    pub predicted: u64,
    /// Inputs that failed (an error line each), plus images whose true class could not
    /// be evaluated.
    pub failed: u64,
    /// The `--evaluate` summary (already written as the last line).
    pub summary: Option<Summary>,
    /// Where the time went.
    pub timings: Timings,
}

/// A fatal error of the loop (a bad image is not one: it gets an error line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Writing the output failed (a closed pipe ends up here too).
    #[error("writing to stdout")]
    Output(#[source] io::Error),
    /// Writing an `--output-dir` file failed.
    #[error("writing {path}")]
    OutputFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The model failed on a batch.
    #[error("the model failed on a batch of {n} images")]
    Model {
        /// Images in the batch.
        n: usize,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The model returned the wrong number of results.
    #[error("the model returned {got} results for {n} images")]
    ModelShape {
        /// Images in the batch.
        n: usize,
        /// Results returned.
        got: usize,
    },
    /// The decoding threads could not be started.
    #[error("starting {workers} decoding threads")]
    Threads {
        /// Threads asked for.
        workers: usize,
        /// What failed.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
}

/// One decoded item: where it is in the batch's image buffer, or why it failed.
struct Decoded {
    key: ItemKey,
    out_name: Option<PathBuf>,
    labels: Option<Vec<f32>>,
    result: Result<(), String>,
}

/// A batch ready for the model: `images` holds only the successful items, in order.
struct DecodedBatch {
    entries: Vec<Decoded>,
    images: Vec<f32>,
    ok: usize,
    busy: Duration,
    wall: Duration,
}

fn decode_batch(
    chunk: Vec<Item>,
    rec: Option<&im2rec::recordio::MmapReader>,
    preprocess: &Preprocess<'_>,
    chw: usize,
) -> DecodedBatch {
    let start = Instant::now();
    let mut images = vec![0f32; chunk.len() * chw];
    let results: Vec<(Decoded, Duration)> = images
        .par_chunks_mut(chw)
        .zip(chunk.into_par_iter())
        .map(|(buf, item)| {
            let t = Instant::now();
            let mut d = Decoded {
                key: item.key.clone(),
                out_name: item.out_name.clone(),
                labels: item.labels.clone(),
                result: Ok(()),
            };
            d.result = match input::read_item(&item, rec) {
                Ok(bytes) => {
                    if let Some(id) = bytes.id {
                        if let ItemKey::Record { offset, .. } = d.key {
                            d.key = ItemKey::Record {
                                id: Some(id),
                                offset,
                            };
                        }
                        d.out_name = Some(PathBuf::from(id.to_string()));
                    }
                    if bytes.labels.is_some() {
                        d.labels = bytes.labels;
                    }
                    preprocess(&bytes.image, buf)
                }
                Err(e) => Err(e),
            };
            (d, t.elapsed())
        })
        .collect();
    // Move the successful images to the front, keeping their order.
    let mut ok = 0;
    let mut busy = Duration::ZERO;
    let mut entries = Vec::with_capacity(results.len());
    for (i, (d, t)) in results.into_iter().enumerate() {
        busy += t;
        if d.result.is_ok() {
            if ok != i {
                images.copy_within(i * chw..(i + 1) * chw, ok * chw);
            }
            ok += 1;
        }
        entries.push(d);
    }
    images.truncate(ok * chw);
    DecodedBatch {
        entries,
        images,
        ok,
        busy,
        wall: start.elapsed(),
    }
}

/// How long a partly filled batch waits for its next item before it is predicted.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// Up to `n` items: blocks for the first, then takes more until the batch is full or
/// none comes for `wait`. Empty when the items have ended.
fn next_chunk(items: &mpsc::Receiver<Item>, n: usize, wait: Duration) -> Vec<Item> {
    let mut chunk = Vec::new();
    let Ok(first) = items.recv() else {
        return chunk;
    };
    chunk.push(first);
    while chunk.len() < n {
        match items.recv_timeout(wait) {
            Ok(item) => chunk.push(item),
            Err(_) => break,
        }
    }
    chunk
}

/// Run the model over every input and write the output to `out` (stdout) and the
/// per-image error messages to `diag` (stderr).
pub fn run(
    inputs: Inputs,
    preprocess: &Preprocess<'_>,
    model: &mut dyn Classifier,
    settings: &Settings,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> Result<Report, PipelineError> {
    let start = Instant::now();
    let chw: usize = settings.shape.iter().product();
    let batch_size = settings.batch_size.max(1);
    let workers = settings.workers.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("recpredict-decode-{i}"))
        .build()
        .map_err(|source| PipelineError::Threads { workers, source })?;
    let Inputs { items, rec } = inputs;
    let mut writer = LineWriter::new(settings, out, diag);
    let mut timings = Timings::default();

    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<DecodedBatch>(settings.prefetch_batches.max(1));
        let rec = rec.as_deref();
        let pool = &pool;
        // Items are listed on their own thread (reading stdin may block), and a batch
        // goes out when it is full or when no new item came for BATCH_WAIT: paths that
        // arrive slowly on stdin are predicted as they come instead of waiting for a
        // full batch (results do not depend on how images are batched).
        let (item_tx, item_rx) = mpsc::sync_channel::<Item>(batch_size.saturating_mul(2));
        s.spawn(move || {
            for item in items {
                if item_tx.send(item).is_err() {
                    break;
                }
            }
        });
        s.spawn(move || loop {
            let chunk = next_chunk(&item_rx, batch_size, BATCH_WAIT);
            if chunk.is_empty() {
                break;
            }
            let batch = pool.install(|| decode_batch(chunk, rec, preprocess, chw));
            // The receiver is gone when the model thread stopped on an error.
            if tx.send(batch).is_err() {
                break;
            }
        });
        // `rx` is dropped when this closure returns, early or not, which stops the
        // producer at its next send.
        loop {
            let wait = Instant::now();
            let Ok(batch) = rx.recv() else { break };
            timings.input_wait += wait.elapsed();
            timings.decode_busy += batch.busy;
            timings.decode_wall += batch.wall;
            timings.batches += 1;
            let probs = if batch.ok > 0 {
                let t = Instant::now();
                let probs = model
                    .predict(&batch.images, batch.ok, settings.shape)
                    .map_err(|source| PipelineError::Model {
                        n: batch.ok,
                        source,
                    })?;
                timings.model += t.elapsed();
                if probs.len() != batch.ok {
                    return Err(PipelineError::ModelShape {
                        n: batch.ok,
                        got: probs.len(),
                    });
                }
                probs
            } else {
                Vec::new()
            };
            let t = Instant::now();
            writer.write_batch(batch.entries, probs)?;
            timings.output += t.elapsed();
        }
        Ok(())
    })?;

    let summary = writer.finish()?;
    timings.total = start.elapsed();
    Ok(Report {
        predicted: writer.predicted,
        failed: writer.failed,
        summary,
        timings,
    })
}

/// Writes the lines (or files) of each batch and keeps the counts.
struct LineWriter<'s, 'w> {
    settings: &'s Settings,
    out: &'w mut dyn Write,
    diag: &'w mut dyn Write,
    evaluator: Option<Evaluator>,
    used_names: HashSet<PathBuf>,
    predicted: u64,
    failed: u64,
}

impl<'s, 'w> LineWriter<'s, 'w> {
    fn new(settings: &'s Settings, out: &'w mut dyn Write, diag: &'w mut dyn Write) -> Self {
        LineWriter {
            settings,
            out,
            diag,
            evaluator: settings.evaluate.then(|| {
                Evaluator::new(
                    settings.head,
                    settings.num_classes,
                    settings.top_k,
                    settings.class_names.clone(),
                )
            }),
            used_names: HashSet::new(),
            predicted: 0,
            failed: 0,
        }
    }

    fn report(&mut self, key: &ItemKey, msg: &str) {
        // stderr errors are ignored: there is nowhere left to report them.
        let _ = writeln!(self.diag, "{TOOL}: {key}: {msg}");
    }

    fn write_batch(
        &mut self,
        entries: Vec<Decoded>,
        probs: Vec<Vec<f32>>,
    ) -> Result<(), PipelineError> {
        let mut probs = probs.into_iter();
        for entry in entries {
            match entry.result {
                Ok(()) => {
                    let p = probs.next().unwrap_or_default();
                    self.write_one(&entry.key, entry.out_name, entry.labels.as_deref(), &p)?;
                }
                Err(msg) => self.write_failure(&entry.key, &msg)?,
            }
            if self.settings.line_buffered {
                self.out.flush().map_err(PipelineError::Output)?;
            }
        }
        self.out.flush().map_err(PipelineError::Output)
    }

    fn write_failure(&mut self, key: &ItemKey, msg: &str) -> Result<(), PipelineError> {
        // Decoders' messages may end in a newline: one line each, on stderr and in JSON.
        let msg = msg.trim_end();
        self.failed += 1;
        self.report(key, msg);
        if let Some(e) = self.evaluator.as_mut() {
            e.add_error();
        }
        match &self.settings.output {
            OutputMode::JsonLines => output::write_error(self.out, key, msg),
            OutputMode::SageMaker => output::write_sagemaker_error(self.out, msg),
            OutputMode::Dir(_) => Ok(()),
        }
        .map_err(PipelineError::Output)
    }

    fn write_one(
        &mut self,
        key: &ItemKey,
        out_name: Option<PathBuf>,
        labels: Option<&[f32]>,
        probs: &[f32],
    ) -> Result<(), PipelineError> {
        let true_class = labels.and_then(|l| TrueClass::from_labels(l, self.settings.head));
        match &self.settings.output {
            OutputMode::JsonLines => output::write_prediction(
                self.out,
                Some(key),
                probs,
                self.settings.class_names.as_deref(),
                self.settings.top_k,
                true_class.as_ref(),
            )
            .map_err(PipelineError::Output)?,
            OutputMode::SageMaker => {
                output::write_sagemaker(self.out, probs).map_err(PipelineError::Output)?
            }
            OutputMode::Dir(dir) => {
                let name = out_name.unwrap_or_else(|| PathBuf::from("_"));
                if !self.used_names.insert(name.clone()) {
                    let msg = format!(
                        "output name {}.out is already used by an earlier input; not written",
                        name.display()
                    );
                    return self.write_failure(key, &msg);
                }
                write_out_file(dir, &name, probs)?;
            }
        }
        // Each input counts once: an image whose label cannot be evaluated was
        // predicted (its line is out) but counts as failed.
        if let Some(e) = self.evaluator.as_mut() {
            if let Err(msg) = e.add(labels, probs) {
                self.failed += 1;
                self.report(key, &msg);
                return Ok(());
            }
        }
        self.predicted += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<Option<Summary>, PipelineError> {
        let Some(e) = &self.evaluator else {
            return Ok(None);
        };
        let summary = e.summary();
        serde_json::to_writer(&mut *self.out, &summary)
            .map_err(|e| PipelineError::Output(e.into()))?;
        self.out
            .write_all(b"\n")
            .and_then(|()| self.out.flush())
            .map_err(PipelineError::Output)?;
        Ok(Some(summary))
    }
}

/// Write `dir/<name>.out` through a temporary file renamed into place; after a failure
/// (a full disk, a vanished folder) the temporary file is removed and the error names
/// `<name>.out`.
fn write_out_file(dir: &Path, name: &Path, probs: &[f32]) -> Result<(), PipelineError> {
    let mut file_name = name.as_os_str().to_owned();
    file_name.push(".out");
    let path = dir.join(file_name);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let err = |source| PipelineError::OutputFile {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    let mut body = Vec::with_capacity(16 + probs.len() * 12);
    output::write_sagemaker(&mut body, probs).map_err(err)?;
    let written = fs::write(&tmp, &body).and_then(|()| fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputSpec, ItemSource};

    /// "Images" are text files holding a number; "preprocessing" parses it and fills
    /// the buffer; the "model" puts all probability on class (value mod classes).
    struct ModClasses(usize, Vec<usize>);

    impl Classifier for ModClasses {
        fn predict(
            &mut self,
            images: &[f32],
            n: usize,
            shape: [usize; 3],
        ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
            let chw: usize = shape.iter().product();
            assert_eq!(images.len(), n * chw);
            self.1.push(n);
            Ok(images
                .chunks(chw)
                .map(|img| {
                    let mut p = vec![0.0; self.0];
                    p[img[0] as usize % self.0] = 1.0;
                    p
                })
                .collect())
        }
    }

    fn parse_number(bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let v: f32 = text
            .trim()
            .parse()
            .map_err(|_| format!("not an image: {text:?}"))?;
        out.fill(v);
        Ok(())
    }

    fn settings(output: OutputMode) -> Settings {
        Settings {
            shape: [1, 2, 2],
            num_classes: 3,
            class_names: None,
            head: Head::Softmax,
            batch_size: 2,
            workers: 2,
            prefetch_batches: 1,
            output,
            top_k: 1,
            evaluate: false,
            line_buffered: false,
        }
    }

    fn files(dir: &Path, contents: &[&str]) -> Vec<PathBuf> {
        contents
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = dir.join(format!("{i}.png"));
                fs::write(&p, c).unwrap();
                p
            })
            .collect()
    }

    fn run_paths(
        paths: Vec<PathBuf>,
        s: &Settings,
        model: &mut ModClasses,
    ) -> (Report, String, String) {
        let inputs = input::open(&InputSpec::Paths(paths), Box::new(io::empty())).unwrap();
        let (mut out, mut diag) = (Vec::new(), Vec::new());
        let report = run(inputs, &parse_number, model, s, &mut out, &mut diag).unwrap();
        (
            report,
            String::from_utf8(out).unwrap(),
            String::from_utf8(diag).unwrap(),
        )
    }

    #[test]
    fn bad_images_get_error_lines_in_order_and_skip_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let paths = files(dir.path(), &["4", "oops", "2", "0", "9"]);
        let mut model = ModClasses(3, Vec::new());
        let (report, out, diag) = run_paths(paths, &settings(OutputMode::JsonLines), &mut model);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        let classes: Vec<_> = lines.iter().map(|l| l["class"].as_u64()).collect();
        assert_eq!(classes, [Some(1), None, Some(2), Some(0), Some(0)]);
        assert!(lines[1]["error"].as_str().unwrap().contains("not an image"));
        assert!(lines[1].get("prediction").is_none());
        assert_eq!((report.predicted, report.failed), (4, 1));
        // Batches of 2: the failed image is not sent to the model.
        assert_eq!(model.1, vec![1, 2, 1]);
        assert!(diag.contains("1.png: not an image"), "{diag}");
    }

    #[test]
    fn missing_files_are_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = files(dir.path(), &["1"]);
        paths.push(dir.path().join("missing.jpg"));
        let (report, out, _) = run_paths(
            paths,
            &settings(OutputMode::SageMaker),
            &mut ModClasses(3, Vec::new()),
        );
        assert_eq!(report.failed, 1);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "{\"prediction\": [0.0, 1.0, 0.0]}");
        assert!(
            lines[1].starts_with("{\"error\": \"cannot read:"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn output_dir_gets_one_file_per_image_and_no_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let paths = files(dir.path(), &["2", "x"]);
        let outdir = dir.path().join("out");
        let (report, out, _) = run_paths(
            paths,
            &settings(OutputMode::Dir(outdir.clone())),
            &mut ModClasses(3, Vec::new()),
        );
        assert_eq!(out, "");
        assert_eq!(report.failed, 1);
        assert_eq!(
            fs::read_to_string(outdir.join("0.png.out")).unwrap(),
            "{\"prediction\": [0.0, 0.0, 1.0]}\n"
        );
        assert!(!outdir.join("1.png.out").exists());
        let names: Vec<_> = fs::read_dir(&outdir).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn duplicate_output_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = files(dir.path(), &["1"]);
        let (report, _, diag) = run_paths(
            vec![p[0].clone(), p[0].clone()],
            &settings(OutputMode::Dir(dir.path().join("o"))),
            &mut ModClasses(3, Vec::new()),
        );
        assert_eq!((report.predicted, report.failed), (1, 1));
        assert!(diag.contains("already used"), "{diag}");
    }

    #[test]
    fn evaluation_counts_and_summary_is_last() {
        let dir = tempfile::tempdir().unwrap();
        let paths = files(dir.path(), &["0", "1", "5", "bad"]);
        // true classes: 0, 2, 2 (the model says 0, 1, 2) and one unreadable.
        let items: Vec<Item> = paths
            .iter()
            .zip([0.0, 2.0, 2.0, 1.0])
            .map(|(p, l)| Item {
                key: ItemKey::Path(p.clone()),
                out_name: None,
                labels: Some(vec![l]),
                source: ItemSource::File(p.clone()),
                listing_error: None,
            })
            .collect();
        let inputs = Inputs {
            items: Box::new(items.into_iter()),
            rec: None,
        };
        let mut s = settings(OutputMode::JsonLines);
        s.evaluate = true;
        let (mut out, mut diag) = (Vec::new(), Vec::new());
        let mut model = ModClasses(3, Vec::new());
        let report = run(inputs, &parse_number, &mut model, &s, &mut out, &mut diag).unwrap();
        let out = String::from_utf8(out).unwrap();
        let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(last["type"], "summary");
        assert_eq!(last["images"], 3);
        assert_eq!(last["errors"], 1);
        assert_eq!(
            last["confusion_matrix"],
            serde_json::json!([[1, 0, 0], [0, 0, 0], [0, 1, 1]])
        );
        assert_eq!(
            report.summary.unwrap().single().unwrap().accuracy,
            Some(2.0 / 3.0)
        );
        assert_eq!(
            out.lines().next().unwrap(),
            format!(
                "{{\"path\":{},\"prediction\":[1.0,0.0,0.0],\"class\":0,\"label\":null,\
                 \"probability\":1.0,\"top_k\":[{{\"class\":0,\"label\":null,\"probability\":1.0}}],\
                 \"true_class\":0}}",
                serde_json::to_string(paths[0].to_str().unwrap()).unwrap()
            )
        );
    }

    /// A writer that fails like a closed pipe after `left` bytes.
    struct ClosedPipe {
        left: usize,
    }

    impl Write for ClosedPipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_stops_the_run_with_a_broken_pipe_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = files(dir.path(), &["1"; 50]);
        let inputs = input::open(&InputSpec::Paths(paths), Box::new(io::empty())).unwrap();
        let mut model = ModClasses(3, Vec::new());
        let err = run(
            inputs,
            &parse_number,
            &mut model,
            &settings(OutputMode::JsonLines),
            &mut ClosedPipe { left: 10 },
            &mut io::sink(),
        )
        .unwrap_err();
        let PipelineError::Output(io) = err else {
            panic!("{err:?}")
        };
        assert_eq!(io.kind(), io::ErrorKind::BrokenPipe);
        assert!(model.1.len() < 25, "stopped early: {:?}", model.1);
    }
}
