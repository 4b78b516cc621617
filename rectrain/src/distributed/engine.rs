//! The collective engine between rectrain's processes: MPI (Open MPI, MPICH, Intel
//! MPI, a cluster's own), loaded at run time by [`mpi_dyn`]. Its launcher (`mpirun`,
//! `mpiexec`, `srun`) starts the processes, tells each its rank, and ends them all when
//! one dies, so a lost rank never leaves the others waiting.
//!
//! Only the training thread calls MPI.

use mpi_dyn::Mpi;

use super::world::World;
use super::Fnv1a;

/// What went wrong between the processes.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// No MPI library could be loaded.
    #[error(
        "this process was started as rank {rank} of {size} by an MPI launcher, but no MPI \
         library loads ({detail}); install the MPI the launcher belongs to (e.g. Debian's \
         libopenmpi3) or name its libmpi.so in RECTRAIN_MPI_LIB"
    )]
    NoLibrary {
        rank: usize,
        size: usize,
        detail: String,
    },
    /// MPI could not start, or its world is not the one the launcher announced.
    #[error("MPI: {0}")]
    Mpi(String),
    /// Some ranks were not started for the same run as rank 0.
    #[error(
        "rank(s) {} of {size} were started with other hyperparameters, seed or data than rank 0: \
         every rank needs the same command line and the same files",
        list(ranks)
    )]
    Mismatch { ranks: Vec<usize>, size: usize },
}

fn list(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bytes` as four exact 16-bit pieces of a 64-bit FNV-1a hash.
fn digest_pieces(bytes: &[u8]) -> [f32; 4] {
    let mut fnv = Fnv1a::default();
    fnv.write(bytes);
    let h = fnv.finish();
    std::array::from_fn(|i| ((h >> (16 * i)) & 0xffff) as f32)
}

/// The processes of one training run, joined by MPI.
pub struct Collective {
    world: World,
    mpi: Mpi,
}

impl Collective {
    /// Load MPI, initialise it and check that its world is `world` (what the
    /// launcher's environment announced).
    pub fn join(world: &World) -> Result<Self, CollectiveError> {
        let mpi = Mpi::load().map_err(|detail| CollectiveError::NoLibrary {
            rank: world.rank,
            size: world.size,
            detail,
        })?;
        let mpi_err = |e: mpi_dyn::MpiError| CollectiveError::Mpi(e.to_string());
        mpi.init().map_err(mpi_err)?;
        let (rank, size) = (mpi.rank().map_err(mpi_err)?, mpi.size().map_err(mpi_err)?);
        if (rank, size) != (world.rank, world.size) {
            return Err(CollectiveError::Mpi(format!(
                "{} says rank {rank} of {size}, but the launcher's environment said rank {} of {}",
                mpi.describe(),
                world.rank,
                world.size
            )));
        }
        Ok(Collective {
            world: world.clone(),
            mpi,
        })
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// The MPI library in use.
    pub fn describe(&self) -> String {
        self.mpi.describe()
    }

    /// Sum `values` over all ranks, element by element: reduced onto rank 0 in place
    /// (MPI_Reduce), then rank 0's sum on every rank (MPI_Bcast), so that every rank
    /// holds the same bytes whatever order MPI adds them in (about the traffic of one
    /// MPI_Allreduce). MPI's errors end the job (its default error handler).
    pub fn all_reduce_sum(&self, values: &mut [f32]) {
        let result = self.mpi.reduce_sum(values, 0);
        self.fatal_on(result.and_then(|()| self.mpi.broadcast(values, 0)));
    }

    /// Rank 0's `values` on every rank (MPI_Bcast).
    pub fn broadcast_from_leader(&self, values: &mut [f32]) {
        self.fatal_on(self.mpi.broadcast(values, 0));
    }

    /// Rank 0's `bytes` on every rank (the others pass anything, e.g. nothing): the
    /// length, then the bytes (MPI_Bcast).
    pub fn broadcast_bytes_from_leader(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let mut len = (bytes.len() as u64).to_le_bytes();
        self.fatal_on(self.mpi.broadcast_bytes(&mut len, 0));
        bytes.resize(u64::from_le_bytes(len) as usize, 0);
        self.fatal_on(self.mpi.broadcast_bytes(&mut bytes, 0));
        bytes
    }

    /// An MPI call that returned an error (under an error handler that returns) ends
    /// the job: the ranks can no longer agree.
    fn fatal_on(&self, result: Result<(), mpi_dyn::MpiError>) {
        if let Err(e) = result {
            self.abort(&CollectiveError::Mpi(e.to_string()));
        }
    }

    /// Compare `digest` (what defines the run) across the ranks: rank 0's goes to
    /// every rank, and the ranks whose own differs are named on all of them.
    pub fn check_same_run(&self, digest: &[u8]) -> Result<(), CollectiveError> {
        let mine = digest_pieces(digest);
        let mut leaders = mine;
        self.broadcast_from_leader(&mut leaders);
        let mut differs = vec![0f32; self.world.size];
        differs[self.world.rank] = f32::from(u8::from(leaders != mine));
        self.all_reduce_sum(&mut differs);
        let ranks: Vec<usize> = (0..self.world.size).filter(|&r| differs[r] > 0.0).collect();
        if ranks.is_empty() {
            Ok(())
        } else {
            Err(CollectiveError::Mismatch {
                ranks,
                size: self.world.size,
            })
        }
    }

    /// End every rank of the run after `error` on this one (MPI_Abort, code 2): print
    /// it first as the tool prints a fatal error, naming this rank; the launcher then
    /// ends the others, which could otherwise wait for this one forever.
    pub fn abort(&self, error: &(dyn std::error::Error + 'static)) -> ! {
        tool_cli::message(
            "rectrain",
            format_args!(
                "error: rank {} of {}: {}",
                self.world.rank,
                self.world.size,
                tool_cli::error_text(error)
            ),
        );
        self.mpi.abort(2)
    }
}

impl Drop for Collective {
    /// MPI_Finalize, once every rank is done (an error on any rank aborts instead).
    fn drop(&mut self) {
        let _ = self.mpi.finalize();
    }
}
