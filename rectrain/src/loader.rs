//! Datasets and the prefetching batch loader.
//!
//! A [`RecDataset`] is either a memory-mapped `.rec` (through its `.idx` when there is
//! one, else found by scanning the file) or an image folder plus a `.lst`. Opening it
//! reads every record's IRHeader once (ids and labels; the image bytes stay in the
//! map), so corrupt framing is reported before training starts, with its byte offset.
//!
//! [`epoch_batches`] turns a dataset into batches of normalised CHW `f32` images:
//! worker threads decode and augment whole batches ahead of the consumer, at most
//! `prefetch_batches + workers` batches ahead (memory stays bounded), and the consumer
//! receives them in order. Every random choice is a function of the seed, the epoch
//! and the record's position in the dataset — the shuffle uses (seed, epoch), each
//! image's augmentation its own RNG from (seed, epoch, record index) — so a run is
//! reproducible whatever the number of workers.
//!
//! Shuffling is a global permutation per epoch (like ImageRecordIter with an index,
//! reference §4.4), with or without a `.idx`. The last short batch is kept unless
//! `drop_last` (ImageRecordIter's `round_batch` padding is not reproduced: a short
//! batch is simply shorter).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use im2list::lst::{read_entries, LstError};
use im2rec::recordio::{unpack_image_record, MmapReader, RecordIoError};
use rand::seq::SliceRandom;
use rand_pcg::Pcg64Mcg;

use crate::augment::{self, AugmentParams, AugmentationType};
use crate::preprocess::{PreprocessConfig, PreprocessError};

/// Where a record lives, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A record of a `.rec`, at this byte offset.
    Rec {
        /// The `.rec` file.
        path: PathBuf,
        /// Byte offset of the record's first part.
        offset: u64,
    },
    /// An image file named by a `.lst`.
    File {
        /// The image file.
        path: PathBuf,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Rec { path, offset } => {
                write!(f, "{} at byte offset {offset}", path.display())
            }
            Location::File { path } => write!(f, "{}", path.display()),
        }
    }
}

/// `Ok` when `path` exists and is not a directory (an image or weights file to read
/// later); the I/O error, or "is a directory", otherwise.
pub fn not_a_directory(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path)?.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    Ok(())
}

/// `path: error`, or just the error when its text names `path` already.
fn prefixed(path: &Path, error: &RecordIoError) -> String {
    let (path, text) = (path.display().to_string(), error.to_string());
    if text.contains(&path) {
        text
    } else {
        format!("{path}: {text}")
    }
}

/// Everything that can go wrong reading a dataset or making batches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    /// The `.rec` or `.idx` could not be opened, or its framing is corrupt.
    #[error("{}", prefixed(path, source))]
    Rec {
        /// The `.rec` file.
        path: PathBuf,
        /// What the RecordIO reader found.
        source: RecordIoError,
    },
    /// A record whose payload is not a valid image record (IRHeader).
    #[error("{}: record #{position} at byte offset {offset}: {source}", path.display())]
    Record {
        /// The `.rec` file.
        path: PathBuf,
        /// 0-based position of the record in the file (or index).
        position: usize,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong with it.
        source: RecordIoError,
    },
    /// An image that cannot be decoded or preprocessed.
    #[error("record id {id} ({location}): {source}")]
    Image {
        /// The record id (IRHeader id or `.lst` index).
        id: u64,
        /// Where the record is.
        location: Location,
        /// The decoding/preprocessing error.
        source: PreprocessError,
    },
    /// An image file named by the `.lst` that cannot be read.
    #[error("record id {id}: cannot read {}: {source}", path.display())]
    ImageFile {
        /// The `.lst` index.
        id: u64,
        /// The image file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The `.lst` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    LstIo {
        /// The `.lst` file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A malformed `.lst` row.
    #[error("{}: {source}", path.display())]
    LstRow {
        /// The `.lst` file.
        path: PathBuf,
        /// The row error (names the line).
        source: LstError,
    },
    /// A label that does not fit `num_classes` / the label layout.
    #[error("record id {id} ({location}): {message}")]
    Label {
        /// The record id.
        id: u64,
        /// Where the record is.
        location: Location,
        /// What is wrong.
        message: String,
    },
    /// Unusable loader settings.
    #[error("invalid loader settings: {0}")]
    Config(String),
    /// A worker thread panicked while making a batch (a bug; the record ids say which
    /// images it was working on).
    #[error("internal error: a loader thread panicked while preparing records {ids:?}")]
    WorkerPanicked {
        /// Ids of the records in the batch being prepared.
        ids: Vec<u64>,
    },
}

enum Source {
    Rec {
        path: PathBuf,
        reader: MmapReader,
        offsets: Vec<u64>,
    },
    Files {
        paths: Vec<PathBuf>,
    },
}

/// A labelled image collection: a `.rec` (+ optional `.idx`) or a folder + `.lst`.
pub struct RecDataset {
    source: Source,
    ids: Vec<u64>,
    labels: Vec<Vec<f32>>,
    multi_label: bool,
}

impl fmt::Debug for RecDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Rec { path, .. } => format!("rec {}", path.display()),
            Source::Files { .. } => "image files".to_string(),
        };
        f.debug_struct("RecDataset")
            .field("source", &source)
            .field("len", &self.len())
            .field("multi_label", &self.multi_label)
            .finish()
    }
}

impl RecDataset {
    /// Map `rec` and read every record header. With `idx`, records are taken in the
    /// index's order (each offset checked); without, the file is scanned from the start.
    pub fn open(rec: &Path, idx: Option<&Path>) -> Result<Self, LoaderError> {
        let rec_err = |source| LoaderError::Rec {
            path: rec.to_path_buf(),
            source,
        };
        let (reader, offsets) = match idx {
            Some(idx) => {
                let reader = MmapReader::open_indexed(rec, idx).map_err(rec_err)?;
                let offsets = reader.index().iter().map(|e| e.offset).collect();
                (reader, offsets)
            }
            None => {
                let reader = MmapReader::open(rec).map_err(rec_err)?;
                let offsets = reader.scan_offsets().map_err(rec_err)?;
                (reader, offsets)
            }
        };
        let mut ids = Vec::with_capacity(offsets.len());
        let mut labels = Vec::with_capacity(offsets.len());
        let mut multi_label = false;
        for (position, &offset) in offsets.iter().enumerate() {
            let record_err = |source| LoaderError::Record {
                path: rec.to_path_buf(),
                position,
                offset,
                source,
            };
            let (payload, _) = reader.read_at(offset).map_err(rec_err)?;
            let record = unpack_image_record(&payload).map_err(record_err)?;
            // A label vector of width 1 (`flag == 1`, what Python's `recordio.pack`
            // writes for a one-element list) is a single label, as ImageRecordIter
            // reads it with label_width 1.
            multi_label |= record.labels.len() > 1;
            ids.push(record.header.id);
            labels.push(record.labels);
        }
        Ok(RecDataset {
            source: Source::Rec {
                path: rec.to_path_buf(),
                reader,
                offsets,
            },
            ids,
            labels,
            multi_label,
        })
    }

    /// [`open`](Self::open) with the `.idx` next to `rec` (same name, extension
    /// `idx`) when that file exists, else by scanning.
    pub fn open_auto(rec: &Path) -> Result<Self, LoaderError> {
        let idx = rec.with_extension("idx");
        if idx.is_file() {
            Self::open(rec, Some(&idx))
        } else {
            Self::open(rec, None)
        }
    }

    /// Images under `root` listed by the `.lst` at `lst` (`index<TAB>label…<TAB>path`),
    /// in list order. Every listed file must exist; a row with several labels makes
    /// the dataset multi-label.
    pub fn from_lst(lst: &Path, root: &Path) -> Result<Self, LoaderError> {
        let file = File::open(lst).map_err(|source| LoaderError::LstIo {
            path: lst.to_path_buf(),
            source,
        })?;
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        let mut paths = Vec::new();
        let mut multi_label = false;
        for row in read_entries(BufReader::new(file)) {
            let row = row.map_err(|source| LoaderError::LstIo {
                path: lst.to_path_buf(),
                source,
            })?;
            let entry = row.map_err(|source| LoaderError::LstRow {
                path: lst.to_path_buf(),
                source,
            })?;
            let path = root.join(&entry.path);
            if let Err(source) = not_a_directory(&path) {
                return Err(LoaderError::ImageFile {
                    id: entry.index,
                    path,
                    source,
                });
            }
            multi_label |= entry.labels.len() > 1;
            ids.push(entry.index);
            labels.push(entry.labels.iter().map(|&l| l as f32).collect());
            paths.push(path);
        }
        Ok(RecDataset {
            source: Source::Files { paths },
            ids,
            labels,
            multi_label,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Record ids (IRHeader `id`, or the `.lst` index), in dataset order.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// Each record's labels: one value (a class index) for single-label records
    /// (`flag` 0, or 1 with a one-element vector), the stored vector for multi-label
    /// ones.
    pub fn labels(&self) -> &[Vec<f32>] {
        &self.labels
    }

    /// True when any record carries several labels (a `.rec` label vector, or a
    /// `.lst` row with several label columns).
    pub fn is_multi_label(&self) -> bool {
        self.multi_label
    }

    /// The widest label vector (1 for single-label data; 0 for an empty dataset).
    pub fn label_width(&self) -> usize {
        self.labels.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The class count the labels imply: the label width for multi-label data, else
    /// the largest class index + 1 (labels that are not non-negative integers are
    /// ignored here; [`validate_labels`](Self::validate_labels) reports them).
    pub fn num_classes_inferred(&self) -> usize {
        if self.multi_label {
            return self.label_width();
        }
        self.labels
            .iter()
            .filter_map(|l| l.first())
            .filter(|l| l.is_finite() && **l >= 0.0 && l.fract() == 0.0 && **l < 1e9)
            .map(|l| *l as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Where record `i` lives (for messages).
    pub fn location(&self, i: usize) -> Location {
        match &self.source {
            Source::Rec { path, offsets, .. } => Location::Rec {
                path: path.clone(),
                offset: offsets[i],
            },
            Source::Files { paths } => Location::File {
                path: paths[i].clone(),
            },
        }
    }

    /// The encoded image of record `i` (borrowed from the map unless the record was
    /// split at a magic word or comes from a file).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image_bytes(&self, i: usize) -> Result<Cow<'_, [u8]>, LoaderError> {
        match &self.source {
            Source::Rec {
                path,
                reader,
                offsets,
            } => {
                let offset = offsets[i];
                let record_err = |source| LoaderError::Record {
                    path: path.clone(),
                    position: i,
                    offset,
                    source,
                };
                let (payload, _) = reader.read_at(offset).map_err(record_err)?;
                match payload {
                    Cow::Borrowed(bytes) => Ok(Cow::Borrowed(
                        unpack_image_record(bytes).map_err(record_err)?.image,
                    )),
                    Cow::Owned(bytes) => Ok(Cow::Owned(
                        unpack_image_record(&bytes)
                            .map_err(record_err)?
                            .image
                            .to_vec(),
                    )),
                }
            }
            Source::Files { paths } => {
                std::fs::read(&paths[i])
                    .map(Cow::Owned)
                    .map_err(|source| LoaderError::ImageFile {
                        id: self.ids[i],
                        path: paths[i].clone(),
                        source,
                    })
            }
        }
    }

    /// Check every record's labels against `num_classes`; the error names the first
    /// bad record. Single-label data: each label must be an integer class index in
    /// `0..num_classes`. Multi-label data: each record must carry exactly
    /// `num_classes` values, each in `[0, 1]` (multi-hot).
    pub fn validate_labels(&self, num_classes: usize) -> Result<(), LoaderError> {
        if num_classes == 0 {
            return Err(LoaderError::Config("num_classes must be positive".into()));
        }
        for (i, labels) in self.labels.iter().enumerate() {
            let message = if self.multi_label {
                if labels.len() != num_classes {
                    Some(format!(
                        "has {} labels, but num_classes is {num_classes} (multi-label \
                         records need one 0/1 value per class)",
                        labels.len()
                    ))
                } else {
                    labels
                        .iter()
                        .position(|l| !(0.0..=1.0).contains(l))
                        .map(|k| {
                            format!(
                                "label {k} is {}, but multi-hot labels must be in [0, 1]",
                                labels[k]
                            )
                        })
                }
            } else {
                let l = labels.first().copied().unwrap_or(f32::NAN);
                let ok = l.is_finite()
                    && l >= 0.0
                    && l.fract() == 0.0
                    && (l as f64) < num_classes as f64;
                (!ok).then(|| {
                    format!(
                        "label {l} is not a class index in 0..{num_classes} (num_classes = {num_classes})"
                    )
                })
            };
            if let Some(message) = message {
                return Err(LoaderError::Label {
                    id: self.ids[i],
                    location: self.location(i),
                    message,
                });
            }
        }
        Ok(())
    }
}

/// How to turn a dataset into batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Permute the records every epoch.
    pub shuffle: bool,
    /// Seed for the shuffle and the augmentation.
    pub seed: u64,
    /// SageMaker augmentation level (`None` for validation).
    pub augmentation: AugmentationType,
    /// Decode/resize/crop/normalise settings.
    pub preprocess: PreprocessConfig,
    /// Decoding threads; 0 decodes on the consumer's thread.
    pub workers: usize,
    /// How many finished batches may wait for the consumer (besides one per worker).
    pub prefetch_batches: usize,
    /// Drop the last batch when it is short.
    pub drop_last: bool,
}

impl LoaderConfig {
    /// Defaults: no shuffle, seed 0, no augmentation, one worker per CPU, 4 batches
    /// of prefetch, keep the last short batch.
    pub fn new(preprocess: PreprocessConfig, batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            seed: 0,
            augmentation: AugmentationType::None,
            preprocess,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch_batches: 4,
            drop_last: false,
        }
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<(), LoaderError> {
        if self.batch_size == 0 {
            return Err(LoaderError::Config("batch_size must be positive".into()));
        }
        if self.workers > 1024 {
            return Err(LoaderError::Config(format!(
                "{} workers is too many (at most 1024)",
                self.workers
            )));
        }
        self.preprocess
            .validate()
            .map_err(|e| LoaderError::Config(e.to_string()))
    }
}

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

/// Number of batches an epoch over `len` records has.
pub fn num_batches(len: usize, batch_size: usize, drop_last: bool) -> usize {
    if batch_size == 0 {
        return 0;
    }
    if drop_last {
        len / batch_size
    } else {
        len.div_ceil(batch_size)
    }
}

const SHUFFLE_STREAM: u64 = u64::MAX;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG for one (seed, epoch, stream): record `index`'s augmentation uses stream
/// `index`; the epoch's shuffle uses a stream no record index reaches.
pub fn record_rng(seed: u64, epoch: usize, index: usize) -> Pcg64Mcg {
    stream_rng(seed, epoch, index as u64)
}

fn stream_rng(seed: u64, epoch: usize, stream: u64) -> Pcg64Mcg {
    let a = splitmix64(seed);
    let b = splitmix64(a ^ splitmix64(epoch as u64 ^ 0x5EED_0000_0000_0000));
    let c = splitmix64(b ^ stream.rotate_left(17));
    let d = splitmix64(c ^ 0xA076_1D64_78BD_642F);
    Pcg64Mcg::new((u128::from(c) << 64) | u128::from(d))
}

/// The record indices of each batch of `epoch`, in order: a permutation of
/// `0..len` from (seed, epoch) when shuffling, else `0..len`, cut into batches.
pub fn batch_order(len: usize, cfg: &LoaderConfig, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    if cfg.shuffle {
        order.shuffle(&mut stream_rng(cfg.seed, epoch, SHUFFLE_STREAM));
    }
    let n = num_batches(len, cfg.batch_size, cfg.drop_last);
    order
        .chunks(cfg.batch_size.max(1))
        .take(n)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Decode and augment the records `indices` into one batch.
pub fn make_batch(
    ds: &RecDataset,
    cfg: &LoaderConfig,
    params: &AugmentParams,
    epoch: usize,
    indices: &[usize],
) -> Result<Batch, LoaderError> {
    let per = cfg.preprocess.len();
    let mut images = vec![0.0f32; per * indices.len()];
    let mut upscaled = Vec::new();
    for (k, &i) in indices.iter().enumerate() {
        let bytes = ds.image_bytes(i)?;
        let mut rng = record_rng(cfg.seed, epoch, i);
        let out = &mut images[k * per..(k + 1) * per];
        let report = augment::augment_train(&bytes, &cfg.preprocess, params, &mut rng, out)
            .map_err(|source| LoaderError::Image {
                id: ds.ids[i],
                location: ds.location(i),
                source,
            })?;
        if report.prepared.upscaled {
            upscaled.push(ds.ids[i]);
        }
    }
    Ok(Batch {
        images,
        labels: indices.iter().map(|&i| ds.labels[i].clone()).collect(),
        indices: indices.to_vec(),
        n: indices.len(),
        ids: indices.iter().map(|&i| ds.ids[i]).collect(),
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
                ids: indices.iter().map(|&i| self.ds.ids[i]).collect(),
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
                            .map(|&i| self.shared.ds.ids[i])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::tests::png_rgb;
    use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter};
    use image::{DynamicImage, ImageFormat, RgbImage};
    use std::collections::HashSet;
    use std::io::{Cursor, Write};

    fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 3 + seed * 17) % 256) as u8,
                ((y * 5 + seed * 29) % 256) as u8,
                ((x + y + seed) % 256) as u8,
            ])
        });
        let mut buf = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut buf, ImageFormat::Jpeg)
            .unwrap();
        buf.into_inner()
    }

    fn image_for(i: u64) -> Vec<u8> {
        // Mixed formats and sizes; a few smaller than the 16x16 target.
        let (w, h) = (12 + (i as u32 * 7) % 30, 10 + (i as u32 * 11) % 25);
        if i.is_multiple_of(2) {
            png_rgb(w, h, move |x, y| {
                [(x * 9 + i as u32) as u8, (y * 13) as u8, (i * 20) as u8]
            })
        } else {
            jpeg(w, h, i as u32)
        }
    }

    /// Write `n` records (id = 100 + i, label = i % 3) as `<dir>/d.rec` + `.idx`.
    fn write_rec(dir: &Path, n: u64, multi: bool) -> (PathBuf, PathBuf) {
        let rec = dir.join("d.rec");
        let idx = dir.join("d.idx");
        let mut w = RecordWriter::new(File::create(&rec).unwrap());
        let mut iw = IndexWriter::new(File::create(&idx).unwrap());
        for i in 0..n {
            let labels: Vec<f32> = if multi {
                (0..3)
                    .map(|k| f32::from(u8::from(k as u64 <= i % 3)))
                    .collect()
            } else {
                vec![(i % 3) as f32]
            };
            let payload = pack_image_record(100 + i, &labels, multi, &image_for(i));
            let offset = w.write_record(&payload).unwrap();
            iw.write(100 + i, offset).unwrap();
        }
        w.into_inner().unwrap().flush().unwrap();
        iw.into_inner().unwrap().flush().unwrap();
        (rec, idx)
    }

    fn cfg(batch_size: usize, workers: usize) -> LoaderConfig {
        let mut c = LoaderConfig::new(PreprocessConfig::new([3, 16, 16], None), batch_size);
        c.workers = workers;
        c.shuffle = true;
        c.seed = 7;
        c.augmentation = AugmentationType::CropColorTransform;
        c
    }

    fn collect(ds: &Arc<RecDataset>, c: &LoaderConfig, epoch: usize) -> Vec<Batch> {
        epoch_batches(Arc::clone(ds), c, epoch)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    #[test]
    fn reads_headers_with_and_without_idx() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, idx) = write_rec(dir.path(), 10, false);
        let a = RecDataset::open(&rec, Some(&idx)).unwrap();
        let b = RecDataset::open(&rec, None).unwrap();
        let c = RecDataset::open_auto(&rec).unwrap();
        assert_eq!(a.len(), 10);
        assert_eq!(a.ids(), (100..110).collect::<Vec<u64>>());
        assert_eq!(a.ids(), b.ids());
        assert_eq!(a.ids(), c.ids());
        assert_eq!(a.labels(), b.labels());
        assert_eq!(a.labels()[4], vec![1.0]);
        assert!(!a.is_multi_label());
        assert_eq!((a.label_width(), a.num_classes_inferred()), (1, 3));
        for i in 0..10 {
            assert_eq!(
                a.image_bytes(i).unwrap().as_ref(),
                image_for(i as u64).as_slice()
            );
        }
        assert!(a.validate_labels(3).is_ok());
        let err = a.validate_labels(2).unwrap_err().to_string();
        assert!(err.starts_with("record id 102 ("), "{err}");
        assert!(
            err.contains("label 2 is not a class index in 0..2"),
            "{err}"
        );
    }

    /// Python's `recordio.pack(IRHeader(0, [2.0], id, 0), img)` stores a one-element
    /// label vector (`flag == 1`): still one class index, as ImageRecordIter reads it.
    #[test]
    fn one_element_label_vectors_are_single_labels() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("f1.rec");
        let mut w = RecordWriter::new(File::create(&rec).unwrap());
        for i in 0..6u64 {
            let payload = pack_image_record(i, &[(i % 3) as f32], true, &image_for(i));
            assert_eq!(u32::from_le_bytes(payload[..4].try_into().unwrap()), 1);
            w.write_record(&payload).unwrap();
        }
        w.into_inner().unwrap().flush().unwrap();
        let ds = RecDataset::open(&rec, None).unwrap();
        assert!(!ds.is_multi_label());
        assert_eq!(ds.labels()[5], vec![2.0]);
        assert_eq!((ds.label_width(), ds.num_classes_inferred()), (1, 3));
        assert!(ds.validate_labels(3).is_ok());
        assert!(ds.validate_labels(5).is_ok());
    }

    #[test]
    fn multi_label_records_give_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, idx) = write_rec(dir.path(), 4, true);
        let ds = RecDataset::open(&rec, Some(&idx)).unwrap();
        assert!(ds.is_multi_label());
        assert_eq!(ds.labels()[1], vec![1.0, 1.0, 0.0]);
        assert_eq!((ds.label_width(), ds.num_classes_inferred()), (3, 3));
        assert!(ds.validate_labels(3).is_ok());
        let err = ds.validate_labels(4).unwrap_err().to_string();
        assert!(
            err.contains("record id 100") && err.contains("has 3 labels"),
            "{err}"
        );
        let ds = Arc::new(ds);
        let batches = collect(&ds, &cfg(4, 2), 0);
        for b in &batches {
            for (k, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.labels[k], ds.labels()[i]);
            }
        }
    }

    #[test]
    fn every_record_once_per_epoch_shapes_and_drop_last() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, idx) = write_rec(dir.path(), 10, false);
        let ds = Arc::new(RecDataset::open(&rec, Some(&idx)).unwrap());
        let c = cfg(4, 2);
        let batches = collect(&ds, &c, 0);
        assert_eq!(
            batches.iter().map(|b| b.n).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        for b in &batches {
            assert_eq!(b.images.len(), b.n * 3 * 16 * 16);
            assert_eq!(b.labels.len(), b.n);
            for (k, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.ids[k], 100 + i as u64);
                assert_eq!(b.labels[k], vec![(i % 3) as f32]);
            }
        }
        // Images 0 (12x10) and others smaller than 16x16 are upscaled and reported.
        let up: HashSet<u64> = batches.iter().flat_map(|b| b.upscaled.clone()).collect();
        assert!(up.contains(&100), "{up:?}");
        let mut notice = UpscaleNotice::default();
        let texts: Vec<String> = batches
            .iter()
            .filter_map(|b| notice.check(b, [3, 16, 16]))
            .collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(texts[0].contains("is smaller than 16x16"), "{}", texts[0]);
        let mut d = c.clone();
        d.drop_last = true;
        let batches = collect(&ds, &d, 0);
        assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), vec![4, 4]);
        assert_eq!(num_batches(10, 4, true), 2);
        assert_eq!(num_batches(10, 4, false), 3);
        assert_eq!(num_batches(3, 4, true), 0);
    }

    #[test]
    fn order_changes_per_epoch_and_repeats_per_seed_whatever_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, _) = write_rec(dir.path(), 24, false);
        let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
        let order = |b: &[Batch]| b.iter().flat_map(|b| b.indices.clone()).collect::<Vec<_>>();
        let one = collect(&ds, &cfg(5, 1), 0);
        let four = collect(&ds, &cfg(5, 4), 0);
        let inline = collect(&ds, &cfg(5, 0), 0);
        assert_eq!(
            one, four,
            "1 vs 4 workers: identical batches, pixels included"
        );
        assert_eq!(one, inline);
        assert_eq!(collect(&ds, &cfg(5, 3), 0), one, "same seed, another run");
        let next = collect(&ds, &cfg(5, 4), 1);
        assert_ne!(order(&one), order(&next), "shuffle differs across epochs");
        let mut other = cfg(5, 2);
        other.seed = 8;
        assert_ne!(order(&collect(&ds, &other, 0)), order(&one));
        // Without shuffle the order is the file order.
        let mut plain = cfg(5, 2);
        plain.shuffle = false;
        assert_eq!(order(&collect(&ds, &plain, 3)), (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn prefetch_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, _) = write_rec(dir.path(), 40, false);
        let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
        let mut c = cfg(1, 3);
        c.prefetch_batches = 2;
        let mut it = epoch_batches(ds, &c, 0);
        assert_eq!(it.len(), 40);
        let mut count = 0;
        for b in it.by_ref() {
            b.unwrap();
            count += 1;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(count, 40);
        assert!(it.peak_buffered() <= 2 + 3, "peak {}", it.peak_buffered());
        assert!(it.peak_buffered() >= 1);
    }

    #[test]
    fn undecodable_image_names_record_id_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("bad.rec");
        let mut w = RecordWriter::new(File::create(&rec).unwrap());
        w.write_record(&pack_image_record(5, &[0.0], false, &image_for(0)))
            .unwrap();
        let bad_offset = w
            .write_record(&pack_image_record(6, &[1.0], false, b"\xff\xd8\xffgarbage"))
            .unwrap();
        w.into_inner().unwrap().flush().unwrap();
        let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
        let mut c = cfg(1, 2);
        c.shuffle = false;
        let results: Vec<_> = epoch_batches(ds, &c, 0).collect();
        assert_eq!(results.len(), 2, "the iterator ends after the error");
        assert!(results[0].is_ok());
        let err = results[1].as_ref().unwrap_err();
        assert!(matches!(err, LoaderError::Image { id: 6, .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "record id 6 ({} at byte offset {bad_offset})",
                rec.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn corrupt_framing_and_headers_are_errors_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, idx) = write_rec(dir.path(), 3, false);
        let mut bytes = std::fs::read(&rec).unwrap();
        let len = bytes.len();
        bytes.truncate(len - 6);
        let cut = dir.path().join("cut.rec");
        std::fs::write(&cut, &bytes).unwrap();
        let err = RecDataset::open(&cut, None).unwrap_err();
        assert!(matches!(err, LoaderError::Rec { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.rec"), "{err}");
        let err = RecDataset::open(&cut, Some(&idx)).unwrap_err();
        assert!(matches!(err, LoaderError::Rec { .. }), "{err:?}");
        // A record too short for an IRHeader.
        let short = dir.path().join("short.rec");
        let mut w = RecordWriter::new(File::create(&short).unwrap());
        w.write_record(&pack_image_record(1, &[0.0], false, &image_for(0)))
            .unwrap();
        let off = w.write_record(b"tiny").unwrap();
        w.into_inner().unwrap().flush().unwrap();
        let err = RecDataset::open(&short, None).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, LoaderError::Record { position: 1, offset, .. } if offset == off),
            "{text}"
        );
        assert!(
            text.contains(&format!("record #1 at byte offset {off}")),
            "{text}"
        );
    }

    #[test]
    fn lst_dataset_matches_rec_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, _) = write_rec(dir.path(), 6, false);
        let root = dir.path().join("imgs");
        std::fs::create_dir(&root).unwrap();
        let mut lst = String::new();
        for i in 0..6u64 {
            let name = format!("{i}.img");
            std::fs::write(root.join(&name), image_for(i)).unwrap();
            lst.push_str(&im2list::lst::LstEntry::new(100 + i, (i % 3) as f64, name).to_line());
        }
        let lst_path = dir.path().join("d.lst");
        std::fs::write(&lst_path, lst).unwrap();
        let from_lst = Arc::new(RecDataset::from_lst(&lst_path, &root).unwrap());
        let from_rec = Arc::new(RecDataset::open(&rec, None).unwrap());
        assert_eq!(from_lst.ids(), from_rec.ids());
        assert_eq!(from_lst.labels(), from_rec.labels());
        let c = cfg(4, 2);
        assert_eq!(collect(&from_lst, &c, 2), collect(&from_rec, &c, 2));
        // A missing file is reported at open, with its id.
        std::fs::remove_file(root.join("3.img")).unwrap();
        let err = RecDataset::from_lst(&lst_path, &root).unwrap_err();
        assert!(
            matches!(err, LoaderError::ImageFile { id: 103, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bad_settings_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, _) = write_rec(dir.path(), 2, false);
        let ds = Arc::new(RecDataset::open(&rec, None).unwrap());
        let mut c = cfg(0, 1);
        let r: Vec<_> = epoch_batches(Arc::clone(&ds), &c, 0).collect();
        assert!(matches!(r.as_slice(), [Err(LoaderError::Config(_))]));
        c.batch_size = 1;
        c.preprocess.image_shape = [4, 16, 16];
        assert!(c.validate().is_err());
    }

    #[test]
    fn record_rngs_are_independent_streams() {
        use rand::RngExt;
        let draw = |s, e, i| record_rng(s, e, i).random::<u64>();
        assert_eq!(draw(1, 0, 0), draw(1, 0, 0));
        let all: HashSet<u64> = [
            draw(1, 0, 0),
            draw(1, 0, 1),
            draw(1, 1, 0),
            draw(2, 0, 0),
            draw(0, 0, 0),
        ]
        .into_iter()
        .collect();
        assert_eq!(all.len(), 5);
    }
}
