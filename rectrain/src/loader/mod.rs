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
//!
//! Where things are: [`RecDataset`] and [`LoaderError`] in `dataset` (the strict
//! reader of [`im2rec::dataset`] plus label checks), the batch order and the RNG
//! streams in `order`, the prefetching worker pool in `workers`.

mod dataset;
mod order;
mod workers;

pub use dataset::{not_a_directory, LoaderError, Location, RecDataset};
pub use order::{batch_order, num_batches, record_rng};
pub use workers::{epoch_batches, make_batch, Batch, EpochBatches, UpscaleNotice};

use crate::augment::AugmentationType;
use resnet::preprocess::PreprocessConfig;

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
    /// This process's part of each global batch (multi-process training).
    pub shard: Shard,
}

/// Process `index` of `count` reads its part of every global batch of
/// `count × batch_size` records: the contiguous records `index × batch_size` up to
/// `(index + 1) × batch_size` (fewer, or none, in a short last batch). `count` 1 is
/// the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole of every batch (one process).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
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
            shard: Shard::WHOLE,
        }
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<(), LoaderError> {
        if self.batch_size == 0 {
            return Err(LoaderError::Config("batch_size must be positive".into()));
        }
        if self.shard.count == 0 || self.shard.index >= self.shard.count {
            return Err(LoaderError::Config(format!(
                "shard {} of {} does not exist",
                self.shard.index, self.shard.count
            )));
        }
        if self.workers > resnet::cli::MAX_WORKERS {
            return Err(LoaderError::Config(format!(
                "{} workers is too many (at most {})",
                self.workers,
                resnet::cli::MAX_WORKERS
            )));
        }
        self.preprocess
            .validate()
            .map_err(|e| LoaderError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
