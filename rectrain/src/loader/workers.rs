//! The prefetching worker pool: threads decode and augment whole batches ahead of the
//! consumer (at most `prefetch_batches + workers` batches ahead), and the consumer
//! receives them in order.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::augment::{self, AugmentParams};
use resnet::preprocess::{self, EvalMode};

use super::order::{batch_order, record_rng};
use super::{LoaderConfig, LoaderError, RecDataset};

/// One batch: `n` images as `n·C·H·W` floats (NCHW), with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// NCHW, normalised.
    pub images: Vec<f32>,
    /// Each image's labels (see [`RecDataset::labels`]).
    pub labels: Vec<Vec<f32>>,
    /// Each image's position in the dataset.
    pub indices: Vec<usize>,
    /// Number of images.
    pub n: usize,
    /// Each image's record id.
    pub ids: Vec<u64>,
    /// Ids of the images that were smaller than `image_shape` and were upscaled
    /// (print a notice once per run when this is first non-empty).
    pub upscaled: Vec<u64>,
}

/// Builds the "small images were upscaled" notice once per run: keep one per
/// training run and print what [`check`](Self::check) returns on stderr.
#[derive(Debug, Clone, Default)]
pub struct UpscaleNotice {
    shown: bool,
}

impl UpscaleNotice {
    /// The notice text the first time a batch reports an upscaled image, else `None`.
    pub fn check(&mut self, batch: &Batch, image_shape: [usize; 3]) -> Option<String> {
        let first = *batch.upscaled.first()?;
        if self.shown {
            return None;
        }
        self.shown = true;
        let [_, h, w] = image_shape;
        Some(format!(
            "notice: record id {first} is smaller than {w}x{h} (image_shape); such images \
             are upscaled keeping their aspect ratio so each side reaches the target (as \
             MXNet 1.3+ does; SageMaker documents a failure instead). Shown once per run."
        ))
    }
}

/// Decode and augment the records `indices` into one batch. With no augmentation
/// (`params` all off) the images take [`preprocess::preprocess_eval_report`]'s path
/// (`EvalMode::ResizeCrop`), so validation preprocesses as `recpredict` does.
pub fn make_batch(
    ds: &RecDataset,
    cfg: &LoaderConfig,
    params: &AugmentParams,
    epoch: usize,
    indices: &[usize],
) -> Result<Batch, LoaderError> {
    let per = cfg.preprocess.len();
    let evaluation = *params == AugmentParams::default();
    let mut images = vec![0.0f32; per * indices.len()];
    let mut upscaled = Vec::new();
    for (k, &i) in indices.iter().enumerate() {
        let bytes = ds.image_bytes(i)?;
        let mut rng = record_rng(cfg.seed, epoch, i);
        let out = &mut images[k * per..(k + 1) * per];
        // Without augmentation (validation, or augmentation_type unset) an image goes
        // through the evaluation preprocessing, the very function recpredict uses.
        let prepared = if evaluation {
            preprocess::preprocess_eval_report(&bytes, &cfg.preprocess, EvalMode::ResizeCrop, out)
        } else {
            augment::augment_train(&bytes, &cfg.preprocess, params, &mut rng, out)
                .map(|report| report.prepared)
        };
        let prepared = prepared.map_err(|source| LoaderError::Image {
            id: ds.ids()[i],
            location: ds.location(i),
            source,
        })?;
        if prepared.upscaled {
            upscaled.push(ds.ids()[i]);
        }
    }
    Ok(Batch {
        images,
        labels: indices.iter().map(|&i| ds.labels()[i].clone()).collect(),
        indices: indices.to_vec(),
        n: indices.len(),
        ids: indices.iter().map(|&i| ds.ids()[i]).collect(),
        upscaled,
    })
}

struct Shared {
    ds: Arc<RecDataset>,
    cfg: LoaderConfig,
    params: AugmentParams,
    epoch: usize,
    batches: Vec<Vec<usize>>,
    next_job: AtomicUsize,
    /// Batches handed to the consumer so far.
    consumed: Mutex<usize>,
    wake: Condvar,
    cancel: AtomicBool,
    capacity: usize,
}

impl Shared {
    fn produce(&self, j: usize) -> Result<Batch, LoaderError> {
        let indices = &self.batches[j];
        catch_unwind(AssertUnwindSafe(|| {
            make_batch(&self.ds, &self.cfg, &self.params, self.epoch, indices)
        }))
        .unwrap_or_else(|_| {
            Err(LoaderError::WorkerPanicked {
                ids: indices.iter().map(|&i| self.ds.ids()[i]).collect(),
            })
        })
    }
}

type Delivery = (usize, Result<Batch, LoaderError>);

/// The batches of one epoch, in order ([`epoch_batches`]). Dropping it stops the
/// workers (each finishes at most the batch it is on).
pub struct EpochBatches {
    shared: Arc<Shared>,
    rx: Option<Receiver<Delivery>>,
    workers: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Result<Batch, LoaderError>>,
    next_out: usize,
    done: bool,
    peak_buffered: usize,
    early_error: Option<LoaderError>,
}

/// The batches of `epoch` over `ds`, decoded and augmented on `cfg.workers` threads
/// ahead of the consumer (bounded prefetch). The same seed and epoch give identical
/// batches whatever the thread count. After an error the iterator ends.
pub fn epoch_batches(ds: Arc<RecDataset>, cfg: &LoaderConfig, epoch: usize) -> EpochBatches {
    let early_error = cfg.validate().err();
    let batches = if early_error.is_some() {
        Vec::new()
    } else {
        batch_order(ds.len(), cfg, epoch)
    };
    let workers = if early_error.is_some() {
        0
    } else {
        cfg.workers.min(batches.len())
    };
    let shared = Arc::new(Shared {
        params: cfg.augmentation.params(),
        ds,
        cfg: cfg.clone(),
        epoch,
        batches,
        next_job: AtomicUsize::new(0),
        consumed: Mutex::new(0),
        wake: Condvar::new(),
        cancel: AtomicBool::new(false),
        capacity: cfg.prefetch_batches + workers.max(1),
    });
    let mut it = EpochBatches {
        shared: Arc::clone(&shared),
        rx: None,
        workers: Vec::new(),
        pending: BTreeMap::new(),
        next_out: 0,
        done: false,
        peak_buffered: 0,
        early_error,
    };
    if workers > 0 {
        let (tx, rx) = channel::<Delivery>();
        for w in 0..workers {
            let shared = Arc::clone(&shared);
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rectrain-loader-{w}"))
                .spawn(move || worker_loop(&shared, &tx));
            match spawned {
                Ok(handle) => it.workers.push(handle),
                Err(e) => {
                    it.early_error = Some(LoaderError::Config(format!(
                        "cannot start loader thread: {e}"
                    )));
                    break;
                }
            }
        }
        it.rx = Some(rx);
    }
    it
}

fn worker_loop(shared: &Shared, tx: &std::sync::mpsc::Sender<Delivery>) {
    loop {
        if shared.cancel.load(Ordering::Relaxed) {
            return;
        }
        let j = shared.next_job.fetch_add(1, Ordering::Relaxed);
        if j >= shared.batches.len() {
            return;
        }
        {
            let mut consumed = shared.consumed.lock().unwrap_or_else(|e| e.into_inner());
            while j >= *consumed + shared.capacity && !shared.cancel.load(Ordering::Relaxed) {
                consumed = shared
                    .wake
                    .wait(consumed)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.cancel.load(Ordering::Relaxed) {
            return;
        }
        let result = shared.produce(j);
        if tx.send((j, result)).is_err() {
            return;
        }
    }
}

impl EpochBatches {
    /// Number of batches this epoch yields (when nothing fails).
    pub fn len(&self) -> usize {
        self.shared.batches.len()
    }

    /// True when the epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.shared.batches.is_empty()
    }

    /// The most finished batches that waited for the consumer at one time (at most
    /// `prefetch_batches + workers`).
    pub fn peak_buffered(&self) -> usize {
        self.peak_buffered
    }

    fn stop(&mut self) {
        self.done = true;
        self.shared.cancel.store(true, Ordering::Relaxed);
        // Take the lock so no worker is between its check and its wait.
        drop(
            self.shared
                .consumed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        self.shared.wake.notify_all();
    }

    fn advance(&mut self) {
        self.next_out += 1;
        *self
            .shared
            .consumed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.next_out;
        self.shared.wake.notify_all();
    }
}

impl Iterator for EpochBatches {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.early_error.take() {
            self.stop();
            return Some(Err(e));
        }
        if self.done || self.next_out >= self.shared.batches.len() {
            return None;
        }
        let result = match &self.rx {
            None => {
                let r = self.shared.produce(self.next_out);
                self.advance();
                r
            }
            Some(rx) => loop {
                if let Some(r) = self.pending.remove(&self.next_out) {
                    self.advance();
                    break r;
                }
                match rx.recv() {
                    Ok((j, r)) => {
                        self.pending.insert(j, r);
                        self.peak_buffered = self.peak_buffered.max(self.pending.len());
                    }
                    Err(_) => {
                        // Every worker is gone without delivering this batch.
                        let ids = self.shared.batches[self.next_out]
                            .iter()
                            .map(|&i| self.shared.ds.ids()[i])
                            .collect();
                        break Err(LoaderError::WorkerPanicked { ids });
                    }
                }
            },
        };
        if result.is_err() {
            self.stop();
        }
        Some(result)
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.stop();
        self.rx = None;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}
