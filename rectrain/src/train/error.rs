//! Why training could not run or stopped with an error.
//!
//! Every error that has a cause keeps it as its [`source`](std::error::Error::source),
//! so `tool_cli::error_text` prints the whole chain once
//! (`training set: data.rec: record 3 at byte offset 96: …`).

use std::path::{Path, PathBuf};

use im2rec::dataset::prefixed;

use crate::hparams;
use crate::loader::LoaderError;
use crate::plot;
use resnet::artifact;
use resnet::backend::BackendError;
use resnet::weights::WeightsError;

/// A cause without an error type of its own (a recorder's or a JSON parser's message).
pub type BoxedCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why training could not run or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A dataset could not be opened (the loader's error says where; the message
    /// names the `.rec`/`.lst` first when the loader's does not).
    #[error("{}", prefixed(path, source))]
    Open {
        /// The `.rec` or `.lst`.
        path: PathBuf,
        /// What the loader found.
        #[source]
        source: Box<LoaderError>,
    },
    /// A record of a dataset is unusable: a bad label, an undecodable image (the
    /// loader's error names the record).
    #[error("{channel}")]
    Dataset {
        /// `training set` or `validation set`.
        channel: &'static str,
        /// What the loader found.
        #[source]
        source: Box<LoaderError>,
    },
    /// Bad data found by the checks before training (sizes, label widths).
    #[error("{0}")]
    Data(String),
    /// A configuration problem found before training.
    #[error("{0}")]
    Config(String),
    /// Hyperparameter problem.
    #[error(transparent)]
    Hparams(#[from] hparams::HparamsError),
    /// The loss (or the weights) became NaN or infinite.
    #[error(
        "the {what} became {loss} at epoch {epoch}, step {step}: training diverged \
         (try a lower learning_rate); the last good state is kept in {kept}"
    )]
    NonFinite {
        /// What: "training loss", "validation loss" or "weights".
        what: &'static str,
        /// The value.
        loss: f64,
        /// Epoch.
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// Where the last good state is.
        kept: String,
    },
    /// Device or backend selection failed.
    #[error("device")]
    Backend(#[source] Box<BackendError>),
    /// No device was given to train on (a library caller's mistake).
    #[error("device: no device to train on")]
    NoDevice,
    /// Reading or writing model weights failed.
    #[error("weights: {}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<WeightsError>,
    },
    /// Saving or loading the resumable state failed, or it does not fit this run.
    #[error("resumable state {}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: BoxedCause,
    },
    /// A file could not be written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The artifact could not be written.
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    /// The plot could not be written.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// Between the processes of a multi-process run.
    #[error(transparent)]
    Distributed(#[from] crate::distributed::CollectiveError),
    /// Writing the per-epoch JSON to the data writer failed.
    #[error("writing metrics")]
    Output(#[source] std::io::Error),
}

/// `TrainError::Io` for `path`, for `map_err`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `TrainError::State` for `path` with any cause (an error or a message).
pub(super) fn state_err(path: &Path, reason: impl Into<BoxedCause>) -> TrainError {
    TrainError::State {
        path: path.to_path_buf(),
        source: reason.into(),
    }
}

/// `TrainError::Weights` for `path`, for `map_err`.
pub(super) fn weights_err(path: &Path) -> impl FnOnce(WeightsError) -> TrainError + '_ {
    move |source| TrainError::Weights {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small enough to be returned by value everywhere (clippy's `result_large_err`
    /// limit is 128 bytes): large causes are boxed.
    #[test]
    fn train_error_is_small() {
        assert!(
            std::mem::size_of::<TrainError>() <= 128,
            "{} bytes",
            std::mem::size_of::<TrainError>()
        );
    }
}
