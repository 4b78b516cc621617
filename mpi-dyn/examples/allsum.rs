//! `mpirun -np N allsum LEN`: every rank sums LEN floats of value rank+1 onto rank 0,
//! which broadcasts the result; each rank prints its rank, the time and the first value
//! (N(N+1)/2). A check of an MPI installation with this crate.
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mpi = mpi_dyn::Mpi::load().unwrap_or_else(|e| panic!("{e}"));
    mpi.init().unwrap();
    let (rank, size) = (mpi.rank().unwrap(), mpi.size().unwrap());
    let mut recv = vec![(rank + 1) as f32; n];
    let t = std::time::Instant::now();
    mpi.reduce_sum(&mut recv, 0).unwrap();
    mpi.broadcast(&mut recv, 0).unwrap();
    eprintln!(
        "rank {rank}/{size} ({}): {:?} first={}",
        mpi.describe(),
        t.elapsed(),
        recv[0]
    );
    mpi.finalize().unwrap();
}
