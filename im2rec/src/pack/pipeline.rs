//! The worker pool of [`pack_list`](super::pack_list): a feeder thread streams the
//! list rows, `threads` workers turn each into an [`Outcome`], and the calling thread
//! hands the outcomes to the writer in list order through a reorder buffer, with the
//! feeder never more than a [`Window`] ahead.
//!
//! A fatal error of the writer stops everything: the window closes (the feeder stops
//! taking rows), the outcome channel closes (each worker stops at its next result),
//! and the job channel's receiver is owned by the workers alone, so that the feeder's
//! pending send fails once the last worker has gone instead of waiting for ever.

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};

use im2list::lst::{read_entries, LstEntry, LstError};

use super::{encode_item, ItemError, PackConfig, PackError, PackStats, Skipped};

/// What a worker hands back for one list row.
pub(super) enum Outcome {
    Record { index: u64, payload: Vec<u8> },
    Skip(Skipped),
    ListError(io::Error),
}

/// A counting semaphore that bounds how far the feeder may run ahead of the writer.
struct Window {
    free: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Window {
    fn new(size: usize) -> Self {
        Window {
            free: Mutex::new((size, false)),
            cv: Condvar::new(),
        }
    }

    /// Take one slot; false once the window is closed.
    fn acquire(&self) -> bool {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while g.0 == 0 && !g.1 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if g.1 {
            return false;
        }
        g.0 -= 1;
        true
    }

    fn release(&self) {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        self.cv.notify_one();
    }

    fn close(&self) {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = true;
        self.cv.notify_all();
    }
}

/// Feed the rows to `config.threads` workers and hand their outcomes to `sink` in
/// list order. `sink` returns whether a record was written, or an error that stops
/// everything.
pub(super) fn run_pipeline<R: BufRead + Send>(
    list: R,
    config: &PackConfig,
    mut sink: impl FnMut(Outcome) -> Result<bool, PackError>,
    progress: &mut dyn FnMut(PackStats),
) -> Result<PackStats, PackError> {
    let threads = config.threads.max(1);
    let window = Window::new(4 * threads + 8);
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = sync_channel::<(u64, Job)>(2 * threads);
    // Only the workers hold the receiver: when the last one stops, a feeder blocked on a
    // full job channel gets an error instead of waiting for ever.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = sync_channel::<(u64, Outcome)>(4 * threads + 8);

    std::thread::scope(|s| {
        // Feeder: streams the list, never more than the window ahead of the writer.
        let window = &window;
        let stop = &stop;
        s.spawn(move || {
            for (seq, row) in (0u64..).zip(read_entries(list)) {
                if !window.acquire() {
                    break;
                }
                let job = match row {
                    Ok(Ok(entry)) => Job::Entry(entry),
                    Ok(Err(e)) => Job::BadRow(e),
                    Err(e) => Job::ListError(e),
                };
                let last = matches!(job, Job::ListError(_));
                if job_tx.send((seq, job)).is_err() || last {
                    break;
                }
            }
        });
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = Arc::clone(&job_rx);
            s.spawn(move || loop {
                let next = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((seq, job)) = next else { break };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if done_tx.send((seq, job.run(config))).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        drop(job_rx);
        let result = write_in_order(&done_rx, &mut sink, window, progress);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        window.close();
        drop(done_rx);
        result
    })
}

fn write_in_order(
    done_rx: &Receiver<(u64, Outcome)>,
    sink: &mut impl FnMut(Outcome) -> Result<bool, PackError>,
    window: &Window,
    progress: &mut dyn FnMut(PackStats),
) -> Result<PackStats, PackError> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut stats = PackStats::default();
    for (seq, outcome) in done_rx.iter() {
        pending.insert(seq, outcome);
        while let Some(outcome) = pending.remove(&next) {
            if sink(outcome)? {
                stats.packed += 1;
            } else {
                stats.skipped += 1;
            }
            next += 1;
            window.release();
            progress(stats);
        }
    }
    Ok(stats)
}

enum Job {
    Entry(LstEntry),
    BadRow(LstError),
    ListError(io::Error),
}

impl Job {
    fn run(self, config: &PackConfig) -> Outcome {
        match self {
            Job::Entry(entry) => match encode_item(&entry, config) {
                Ok(payload) => Outcome::Record {
                    index: entry.index,
                    payload,
                },
                Err(error) => Outcome::Skip(Skipped {
                    path: Some(config.root.join(&entry.path)),
                    error,
                }),
            },
            Job::BadRow(e) => Outcome::Skip(Skipped {
                path: None,
                error: ItemError::Row(e),
            }),
            Job::ListError(e) => Outcome::ListError(e),
        }
    }
}
