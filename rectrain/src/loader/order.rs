//! The order of an epoch's records and the random streams: one global permutation
//! per (seed, epoch) for the shuffle, and an independent RNG per (seed, epoch, record)
//! for augmentation, so a run is reproducible whatever the number of workers.

use rand::seq::SliceRandom;
use rand_pcg::Pcg64Mcg;

use super::LoaderConfig;

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
/// `0..len` from (seed, epoch) when shuffling, else `0..len`, cut into global batches
/// of `batch_size × shard.count`, of which this shard keeps its contiguous part (every
/// shard has the same number of batches; a short last one may leave a shard empty).
pub fn batch_order(len: usize, cfg: &LoaderConfig, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    if cfg.shuffle {
        order.shuffle(&mut stream_rng(cfg.seed, epoch, SHUFFLE_STREAM));
    }
    let size = cfg.batch_size.max(1);
    let global = size * cfg.shard.count.max(1);
    let n = num_batches(len, global, cfg.drop_last);
    order
        .chunks(global)
        .take(n)
        .map(|chunk| {
            let start = (cfg.shard.index * size).min(chunk.len());
            let end = (start + size).min(chunk.len());
            chunk[start..end].to_vec()
        })
        .collect()
}
