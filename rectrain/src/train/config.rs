//! What a training run is given ([`TrainConfig`], [`DataSource`]) and how it ends
//! ([`TrainOutcome`]).

use std::path::{Path, PathBuf};

use crate::distributed::World;
use crate::hparams::Hyperparameters;
use crate::loader::RecDataset;
use resnet::backend::DeviceSpec;

use super::TrainError;

/// Where a channel's images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A RecordIO file, with its `.idx` when there is one.
    Rec {
        /// The `.rec` file.
        rec: PathBuf,
        /// The `.idx` file, if any.
        idx: Option<PathBuf>,
    },
    /// An image folder and a `.lst` file whose paths are relative to it.
    Lst {
        /// The `.lst` file.
        lst: PathBuf,
        /// The folder the paths are relative to.
        root: PathBuf,
    },
}

impl DataSource {
    /// A `.rec` source, picking up `<stem>.idx` next to it when it exists.
    pub fn rec(rec: PathBuf) -> Self {
        let idx = im2rec::dataset::default_idx(&rec);
        let idx = idx.is_file().then_some(idx);
        DataSource::Rec { rec, idx }
    }

    /// The file that names this source in messages.
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Rec { rec, .. } => rec,
            DataSource::Lst { lst, .. } => lst,
        }
    }

    pub(super) fn open(&self) -> Result<RecDataset, TrainError> {
        let ds = match self {
            DataSource::Rec { rec, idx } => RecDataset::open(rec, idx.as_deref()),
            DataSource::Lst { lst, root } => RecDataset::from_lst(lst, root),
        };
        ds.map_err(|source| TrainError::Open {
            path: self.path().to_path_buf(),
            source: Box::new(source),
        })
    }
}

/// Everything a training run needs, resolved and validated by the caller.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The hyperparameters (num_classes / num_training_samples may still be unset).
    pub hparams: Hyperparameters,
    /// Training images.
    pub train: DataSource,
    /// Validation images.
    pub validation: DataSource,
    /// The artifact directory.
    pub out: PathBuf,
    /// Class names by index, when known.
    pub class_names: Option<Vec<String>>,
    /// The file the class names were read from (for messages).
    pub classes_file: Option<PathBuf>,
    /// Pretrained weights (.pth or .safetensors), used when `use_pretrained_model`.
    pub pretrained: Option<PathBuf>,
    /// Keep the pretrained classifier instead of re-initialising it.
    pub keep_head: bool,
    /// SageMaker's `model` channel: an MXNet checkpoint of SageMaker's ResNet
    /// (`model.tar.gz`, a folder or a prefix) to train further (incremental training).
    pub model: Option<PathBuf>,
    /// Seed of the weight initialisation, the shuffling and the augmentation.
    pub seed: u64,
    /// Which device to train on.
    pub device: DeviceSpec,
    /// A directory holding a resumable state (the artifact directory of an earlier run,
    /// or its `checkpoints/last`).
    pub resume: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Decoding threads of the loader (0 = one per CPU).
    pub workers: usize,
    /// Behave as if interrupted after this many optimizer steps (testing aid).
    pub stop_after_steps: Option<usize>,
    /// This process's place among the training run's processes (one process:
    /// [`World::alone`]).
    pub world: World,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    /// All epochs ran, or early stopping ended the run.
    Finished {
        /// Epochs completed.
        epochs_run: usize,
        /// `(epoch, validation accuracy)` of the best epoch.
        best: Option<(usize, f64)>,
        /// True when early stopping ended the run.
        stopped_early: bool,
    },
    /// Interrupted; the resumable state was saved.
    Interrupted {
        /// Epoch in progress.
        epoch: usize,
        /// Steps of that epoch already done.
        step: usize,
    },
}
