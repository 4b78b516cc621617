//! The training dataset: [`im2rec::dataset::Dataset`] opened in strict mode, the
//! loader's error type, and the label checks against `num_classes`.
//!
//! Opening reads every record's IRHeader once (ids and labels; the image bytes stay
//! in the map), so corrupt framing is reported before training starts, with its byte
//! offset.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use im2rec::dataset::{Dataset, DatasetError, Labels, ReadMode};

use resnet::preprocess::PreprocessError;

pub use im2rec::dataset::{not_a_directory, Location};

/// Everything that can go wrong reading a dataset or making batches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    /// The dataset could not be read: the `.rec`/`.idx` framing, a record's header, the
    /// `.lst` or one of its image files (the reader's error, unchanged).
    #[error(transparent)]
    Dataset(#[from] DatasetError),
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

/// A labelled image collection: a `.rec` (+ optional `.idx`) or a folder + `.lst`,
/// read strictly ([`ReadMode::Strict`]: any damage is an error when it is opened).
pub struct RecDataset {
    inner: Dataset,
}

impl fmt::Debug for RecDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.inner.rec_path() {
            Some(path) => format!("rec {}", path.display()),
            None => "image files".to_string(),
        };
        f.debug_struct("RecDataset")
            .field("source", &source)
            .field("len", &self.len())
            .field("multi_label", &self.is_multi_label())
            .finish()
    }
}

impl RecDataset {
    /// Map `rec` and read every record header. With `idx`, records are taken in the
    /// index's order (each offset checked); without, the file is scanned from the start.
    pub fn open(rec: &Path, idx: Option<&Path>) -> Result<Self, LoaderError> {
        let inner = Dataset::open_rec(rec, idx, ReadMode::Strict)?;
        Ok(RecDataset { inner })
    }

    /// [`open`](Self::open) with the `.idx` next to `rec` (same name, extension
    /// `idx`: [`im2rec::dataset::default_idx`]) when that file exists, else by
    /// scanning.
    pub fn open_auto(rec: &Path) -> Result<Self, LoaderError> {
        let inner = Dataset::open_rec_auto(rec, ReadMode::Strict)?;
        Ok(RecDataset { inner })
    }

    /// Images under `root` listed by the `.lst` at `lst` (`index<TAB>label…<TAB>path`),
    /// in list order. Every listed file must exist; a row with several labels makes
    /// the dataset multi-label.
    pub fn from_lst(lst: &Path, root: &Path) -> Result<Self, LoaderError> {
        let inner = Dataset::open_lst(lst, root, ReadMode::Strict)?;
        Ok(RecDataset { inner })
    }

    /// The shared dataset this wraps.
    pub fn dataset(&self) -> &Dataset {
        &self.inner
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Record ids (IRHeader `id`, or the `.lst` index), in dataset order.
    pub fn ids(&self) -> &[u64] {
        self.inner.ids()
    }

    /// Each record's labels: one value (a class index) for single-label records
    /// (`flag` 0, or 1 with a one-element vector), the stored vector for multi-label
    /// ones.
    pub fn labels(&self) -> &[Labels] {
        self.inner.labels()
    }

    /// True when any record carries several labels (a `.rec` label vector, or a
    /// `.lst` row with several label columns).
    pub fn is_multi_label(&self) -> bool {
        self.inner.is_multi_label()
    }

    /// The widest label vector (1 for single-label data; 0 for an empty dataset).
    pub fn label_width(&self) -> usize {
        self.labels().iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The class count the labels imply: the label width for multi-label data, else
    /// the largest class index + 1 (labels that are not non-negative integers are
    /// ignored here; [`validate_labels`](Self::validate_labels) reports them).
    pub fn num_classes_inferred(&self) -> usize {
        if self.is_multi_label() {
            return self.label_width();
        }
        self.labels()
            .iter()
            .filter_map(|l| l.first())
            .filter(|l| l.is_finite() && **l >= 0.0 && l.fract() == 0.0 && **l < 1e9)
            .map(|l| *l as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Where record `i` lives (for messages).
    pub fn location(&self, i: usize) -> Location {
        self.inner.location(i)
    }

    /// The encoded image of record `i` (borrowed from the map unless the record was
    /// split at a magic word or comes from a file).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image_bytes(&self, i: usize) -> Result<Cow<'_, [u8]>, LoaderError> {
        Ok(self.inner.image_bytes(i)?)
    }

    /// Check every record's labels against `num_classes`; the error names the first
    /// bad record. Single-label data: each label must be an integer class index in
    /// `0..num_classes`. Multi-label data: each record must carry exactly
    /// `num_classes` values, each in `[0, 1]` (multi-hot).
    pub fn validate_labels(&self, num_classes: usize) -> Result<(), LoaderError> {
        if num_classes == 0 {
            return Err(LoaderError::Config("num_classes must be positive".into()));
        }
        for (i, labels) in self.labels().iter().enumerate() {
            let message = if self.is_multi_label() {
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
                    id: self.ids()[i],
                    location: self.location(i),
                    message,
                });
            }
        }
        Ok(())
    }
}
