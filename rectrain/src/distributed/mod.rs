//! Training on several processes, on one machine or several: synchronous data
//! parallelism as PyTorch's DDP and MXNet's `dist_sync` do it.
//!
//! | module | what lives there |
//! |---|---|
//! | [`world`] | who this process is: rank and world size from the MPI launcher's environment, checked against torchrun's variables and SageMaker's resource config |
//! | [`engine`] | the collective engine: MPI (cargo feature `mpi`) |
//! | [`grads`] | a model's gradients as one flat buffer and back |
//!
//! Every rank reads the same seeded global order of records; each global batch of
//! `world × mini_batch_size` images is cut into contiguous per-rank shards, each rank's
//! gradient is weighted by its share of the global batch, and one all-reduce per step
//! sums them, so every rank applies the same update. Rank 0 alone validates, logs the
//! epoch lines and writes the model; its BatchNorm running statistics are broadcast
//! before validation.

pub mod engine;
pub mod grads;
pub mod world;

pub use engine::{Collective, CollectiveError};
pub use world::{check_kv_store, detect, device_for_rank, ResourceConfig, World};

/// A 64-bit FNV-1a hash, fed piece by piece: the run digest the ranks compare at the
/// start, and the final weights' digest each rank logs.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}
