//! Dynamic batching: one thread owns the model; requests that arrive while it is busy,
//! or while it waits a moment for them, run together in one forward pass.
//!
//! The batcher takes the first waiting image, then every image already queued (up to
//! the batch size). It waits for more, at most `max_delay` after the first image, while
//! other requests are still being decoded, or while it holds fewer images than the
//! previous batch had (clients under load send again as soon as they are answered, so
//! the last batch's clients are about to come back): a lone request is predicted at
//! once, under load the batches fill up (as with Triton's and TorchServe's batch
//! delay), and a batch that has all of the last batch's clients goes without waiting
//! out the rest of the delay.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::pipeline::Classifier;

/// One decoded image waiting for the model, and where its answer goes.
pub struct Job {
    /// The preprocessed image (C·H·W floats).
    pub image: Vec<f32>,
    /// Receives the probabilities, or the model's error message.
    pub reply: oneshot::Sender<Result<Answer, String>>,
}

/// The model's answer for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The probability of every class.
    pub probabilities: Vec<f32>,
    /// How many images ran in the same forward pass (for the request log).
    pub batch: usize,
}

/// Counters shared by the server and the batcher.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests admitted and still being read or decoded (not yet queued for the model).
    pub decoding: AtomicUsize,
    /// Forward passes run.
    pub batches: AtomicU64,
    /// Images predicted.
    pub images: AtomicU64,
}

/// How the batcher collects a batch.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Images per forward pass at most.
    pub max_batch: usize,
    /// How long a batch may wait for more images after its first one.
    pub max_delay: Duration,
    /// The model's input shape (C, H, W).
    pub shape: [usize; 3],
}

/// How long one wait for a request still being decoded lasts, before the batcher
/// looks again whether any is left.
const POLL: Duration = Duration::from_micros(200);

/// The next batch: blocks for the first job, then takes what is queued, and waits
/// (within `max_delay` of the first job) while more requests are being decoded or
/// while it holds fewer than `expected` jobs (the previous batch's size). Empty when
/// every sender is gone.
fn next_batch(jobs: &Receiver<Job>, batching: &Batching, load: &Load, expected: usize) -> Vec<Job> {
    let mut batch = Vec::new();
    let Ok(first) = jobs.recv() else {
        return batch;
    };
    let deadline = Instant::now() + batching.max_delay;
    batch.push(first);
    while batch.len() < batching.max_batch {
        match jobs.try_recv() {
            Ok(job) => {
                batch.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= deadline
            || (batch.len() >= expected && load.decoding.load(Ordering::Acquire) == 0)
        {
            break;
        }
        match jobs.recv_timeout((deadline - now).min(POLL)) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    batch
}

/// Run batches until every sender of `jobs` is gone. Each job's reply gets its
/// probabilities, or the model's error message when its batch failed; a client that
/// went away meanwhile is skipped.
pub fn run(jobs: Receiver<Job>, model: &mut dyn Classifier, batching: Batching, load: Arc<Load>) {
    let chw: usize = batching.shape.iter().product();
    let mut expected = 1;
    loop {
        let batch = next_batch(&jobs, &batching, &load, expected);
        // Several requests came together: their clients are waiting on their answers
        // and will send again, so the next batch waits (within `max_delay`) for as many.
        expected = batch.len().max(1);
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let mut images = Vec::with_capacity(n * chw);
        for job in &batch {
            images.extend_from_slice(&job.image);
        }
        let result = model.predict(&images, n, batching.shape);
        load.batches.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(rows) if rows.len() == n => {
                load.images.fetch_add(n as u64, Ordering::Relaxed);
                for (job, probabilities) in batch.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(Answer {
                        probabilities,
                        batch: n,
                    }));
                }
            }
            Ok(rows) => {
                let msg = format!("the model returned {} results for {n} images", rows.len());
                for job in batch {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
            Err(e) => {
                let msg = format!(
                    "the model failed on a batch of {n} images: {}",
                    tool_cli::error_text(e.as_ref())
                );
                for job in batch {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Class probabilities that depend only on the image: its first value, and one minus it.
    struct Echo {
        calls: Vec<usize>,
    }

    impl Classifier for Echo {
        fn predict(
            &mut self,
            images: &[f32],
            n: usize,
            shape: [usize; 3],
        ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
            self.calls.push(n);
            let chw: usize = shape.iter().product();
            assert_eq!(images.len(), n * chw);
            Ok(images
                .chunks(chw)
                .map(|im| vec![im[0], 1.0 - im[0]])
                .collect())
        }
    }

    fn job(v: f32) -> (Job, oneshot::Receiver<Result<Answer, String>>) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                image: vec![v; 3],
                reply: tx,
            },
            rx,
        )
    }

    const BATCHING: Batching = Batching {
        max_batch: 4,
        max_delay: Duration::from_secs(60),
        shape: [3, 1, 1],
    };

    #[test]
    fn queued_jobs_run_together_up_to_the_batch_size_and_answers_keep_their_owner() {
        let (tx, rx) = mpsc::sync_channel(16);
        let mut replies = Vec::new();
        for i in 0..6 {
            let (j, r) = job(i as f32 / 10.0);
            tx.send(j).unwrap();
            replies.push(r);
        }
        drop(tx);
        let mut model = Echo { calls: Vec::new() };
        // Nothing is being decoded: the batcher does not wait for more.
        run(rx, &mut model, BATCHING, Arc::new(Load::default()));
        assert_eq!(model.calls, [4, 2]);
        for (i, r) in replies.into_iter().enumerate() {
            let a = r.blocking_recv().unwrap().unwrap();
            let v = i as f32 / 10.0;
            assert_eq!(a.probabilities, [v, 1.0 - v]);
            assert_eq!(a.batch, if i < 4 { 4 } else { 2 });
        }
    }

    #[test]
    fn a_lone_request_does_not_wait_and_a_decoding_one_is_waited_for() {
        let load = Arc::new(Load::default());
        let (tx, rx) = mpsc::sync_channel(16);
        let (j, _r) = job(0.5);
        tx.send(j).unwrap();
        // Nothing else in flight: the batch of one goes at once, far within the minute
        // of `max_delay`.
        let t = Instant::now();
        assert_eq!(next_batch(&rx, &BATCHING, &load, 1).len(), 1);
        assert!(t.elapsed() < Duration::from_secs(30));

        // One request still decoding: the batcher waits for it.
        load.decoding.store(1, Ordering::Release);
        let (j, _r1) = job(0.1);
        tx.send(j).unwrap();
        let late = std::thread::spawn({
            let (tx, load) = (tx.clone(), load.clone());
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let (j, r) = job(0.2);
                tx.send(j).unwrap();
                // Decoded and queued: nothing is being decoded any more.
                load.decoding.store(0, Ordering::Release);
                r
            }
        });
        assert_eq!(next_batch(&rx, &BATCHING, &load, 1).len(), 2);
        drop(late.join().unwrap());

        // Still "decoding" but past max_delay: the batch goes without it.
        load.decoding.store(1, Ordering::Release);
        let quick = Batching {
            max_delay: Duration::from_millis(20),
            ..BATCHING
        };
        let (j, _r2) = job(0.3);
        tx.send(j).unwrap();
        let t = Instant::now();
        assert_eq!(next_batch(&rx, &quick, &load, 1).len(), 1);
        assert!(t.elapsed() >= Duration::from_millis(20));

        // Under load (the last batch had two requests), the batch waits out
        // max_delay for a second one even when none is being decoded...
        load.decoding.store(0, Ordering::Release);
        let (j, _r3) = job(0.4);
        tx.send(j).unwrap();
        let t = Instant::now();
        assert_eq!(next_batch(&rx, &quick, &load, 2).len(), 1);
        assert!(t.elapsed() >= Duration::from_millis(20));

        // ...and goes as soon as it has it, well before max_delay (a minute).
        let (j, _r4) = job(0.5);
        tx.send(j).unwrap();
        let late = std::thread::spawn({
            let tx = tx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let (j, r) = job(0.6);
                tx.send(j).unwrap();
                r
            }
        });
        let t = Instant::now();
        assert_eq!(next_batch(&rx, &BATCHING, &load, 2).len(), 2);
        assert!(t.elapsed() < Duration::from_secs(30));
        drop(late.join().unwrap());
    }

    #[test]
    fn a_failed_batch_answers_every_request_with_the_error() {
        struct Broken;
        impl Classifier for Broken {
            fn predict(
                &mut self,
                _: &[f32],
                _: usize,
                _: [usize; 3],
            ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
                Err("out of memory".into())
            }
        }
        let (tx, rx) = mpsc::sync_channel(4);
        let (a, ra) = job(0.1);
        let (b, rb) = job(0.2);
        tx.send(a).unwrap();
        tx.send(b).unwrap();
        drop(tx);
        run(rx, &mut Broken, BATCHING, Arc::new(Load::default()));
        for r in [ra, rb] {
            assert_eq!(
                r.blocking_recv().unwrap().unwrap_err(),
                "the model failed on a batch of 2 images: out of memory"
            );
        }
    }
}
