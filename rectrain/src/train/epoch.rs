//! The epoch loop: batches through the model and the optimizer, validation, the
//! per-epoch metrics and log lines, interruption and early stopping.

use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};

use crate::augment::AugmentationType;
use crate::hparams::OptimizerKind;
use crate::loader::{self, Batch, LoaderConfig, Shard};
use crate::sagemaker_log::{info, Speedometer};
use resnet::artifact;
use resnet::backend::host_f32;
use resnet::metrics::{Accumulator, EpochMetrics};
use resnet::model::ResNet;

use super::data_parallel::DataParallel;
use super::loss::batch_loss;
use super::optim::{all_finite, grads_finite, prepare_grads};
use super::resume::{self, ResumeState};
use super::{TrainError, TrainOutcome, TrainingSetup};
use crate::distributed::{grads as flat, Collective, Fnv1a};

pub(super) struct TrainingRun<'a, B: AutodiffBackend> {
    pub(super) p: &'a TrainingSetup,
    pub(super) device: B::Device,
    pub(super) parallel: DataParallel<B, ResNet<B>>,
    /// stdout for the metrics; `None` once its reader has gone (training goes on).
    pub(super) data: Option<&'a mut dyn Write>,
    pub(super) log: &'a mut dyn Write,
    pub(super) interrupt: Arc<AtomicBool>,
    pub(super) steps_done: usize,
    /// The "small images are upscaled" notice, shown once per run.
    pub(super) upscale: loader::UpscaleNotice,
    /// Mixed precision (float16/bfloat16 on CUDA).
    pub(super) amp: super::amp::MixedPrecision,
    /// The other processes of a multi-process run (`None`: this one alone).
    pub(super) collective: Option<std::sync::Arc<Collective>>,
    /// Time and bytes of the gradient sums of the current pass (multi-process).
    pub(super) sync: SyncTime,
}

/// What the gradient sums of one training pass cost.
#[derive(Debug, Default)]
pub(super) struct SyncTime {
    steps: usize,
    seconds: f64,
    /// Bytes each rank sends (the buffer, once).
    bytes: usize,
}

/// How an epoch's training pass ended.
enum PassEnd<B: AutodiffBackend> {
    /// Every batch trained: the updated model.
    Done(Box<ResNet<B>>),
    /// Interrupted; the resumable state is saved.
    Interrupted(TrainOutcome),
}

/// Images of a batch as a `[n, C, H, W]` tensor.
pub(super) fn images_tensor<B: Backend>(
    batch: &Batch,
    shape: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let [c, h, w] = shape;
    Tensor::from_data(
        TensorData::new(batch.images.clone(), [batch.n, c, h, w]),
        device,
    )
}

/// Images `shard` of a batch as a `[shard.len(), C, H, W]` tensor on `device`.
pub(super) fn shard_images<B: Backend>(
    batch: &Batch,
    shard: Range<usize>,
    shape: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let [c, h, w] = shape;
    let len = c * h * w;
    let pixels = batch.images[shard.start * len..shard.end * len].to_vec();
    Tensor::from_data(TensorData::new(pixels, [shard.len(), c, h, w]), device)
}

impl<B: AutodiffBackend> TrainingRun<'_, B> {
    /// This process's part of each training batch.
    fn shard(&self) -> Shard {
        self.collective.as_ref().map_or(Shard::WHOLE, |c| Shard {
            index: c.world().rank,
            count: c.world().size,
        })
    }

    /// Processes in the run.
    fn world_size(&self) -> usize {
        self.collective.as_ref().map_or(1, |c| c.world().size)
    }

    /// Rank 0 (or the only process) validates and writes.
    fn is_leader(&self) -> bool {
        self.collective
            .as_ref()
            .is_none_or(|c| c.world().is_leader())
    }

    /// Multi-process: sum this rank's gradients (weighted by its share of the global
    /// batch of `n_global` images), its step metrics and its interrupt flag with the
    /// other ranks'. Returns the summed gradients, the step's metrics over the global
    /// batch, and whether any rank was interrupted (what every rank acts on, so that
    /// all stop at the same step).
    fn sync_step(
        &mut self,
        c: &Collective,
        model: &ResNet<B>,
        grads: &burn::optim::GradientsParams,
        step: &Accumulator,
        n_global: usize,
    ) -> Result<(burn::optim::GradientsParams, Accumulator, bool), TrainError> {
        let share = step.samples as f32 / n_global.max(1) as f32;
        let mut buf = flat::flatten::<B, _>(model, grads, share);
        let params = buf.len();
        let interrupted = self.interrupt.load(Ordering::SeqCst);
        buf.extend([
            step.loss_sum as f32,
            step.samples as f32,
            step.correct as f32,
            step.top_k_correct as f32,
            f32::from(u8::from(interrupted)),
        ]);
        let t = Instant::now();
        c.all_reduce_sum(&mut buf);
        self.sync.seconds += t.elapsed().as_secs_f64();
        self.sync.steps += 1;
        self.sync.bytes += buf.len() * std::mem::size_of::<f32>();
        let tail = &buf[params..];
        let any_interrupted = tail[4] > 0.0;
        let summed = Accumulator {
            loss_sum: f64::from(tail[0]),
            samples: tail[1].round() as usize,
            correct: f64::from(tail[2]),
            top_k_correct: f64::from(tail[3]),
        };
        let grads = flat::unflatten::<B, _>(model, &buf[..params]).ok_or_else(|| {
            TrainError::Config("the summed gradients do not fit the model".into())
        })?;
        Ok((grads, summed, any_interrupted))
    }

    /// Multi-process, at an epoch's end: rank 0's BatchNorm running statistics on
    /// every rank (each rank's come from its own shards), as DDP's broadcast_buffers.
    fn sync_running_stats(&self, model: ResNet<B>) -> Result<ResNet<B>, TrainError> {
        let Some(c) = &self.collective else {
            return Ok(model);
        };
        let mut stats = resnet::weights::running_stats(&model);
        c.broadcast_from_leader(&mut stats);
        resnet::weights::with_running_stats(model, &stats)
            .map_err(|e| TrainError::Config(e.to_string()))
    }

    /// Rank 0's early-stopping decision, and whether any rank was interrupted, agreed
    /// by all (one process: its own).
    fn agree_on_stopping(&self, stop: bool) -> (bool, bool) {
        let Some(c) = &self.collective else {
            return (stop, self.interrupt.load(Ordering::SeqCst));
        };
        let mut flags = [
            f32::from(u8::from(stop && c.world().is_leader())),
            f32::from(u8::from(self.interrupt.load(Ordering::SeqCst))),
        ];
        c.all_reduce_sum(&mut flags);
        (flags[0] > 0.0, flags[1] > 0.0)
    }

    /// One epoch's JSON line on stdout. When stdout's reader has gone (`rectrain … |
    /// head -1`), training goes on without it: the model is the output that matters,
    /// and the same lines are in `OUT/metrics.jsonl`.
    pub(super) fn emit_metrics(&mut self, line: &str) -> Result<(), TrainError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(());
        };
        match writeln!(data, "{line}").and_then(|()| data.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.data = None;
                info(
                    self.log,
                    "stdout was closed: training goes on, the metrics are in metrics.jsonl",
                );
                Ok(())
            }
            Err(e) => Err(TrainError::Output(e)),
        }
    }

    fn loader_config(&self, training: bool) -> LoaderConfig {
        let h = &self.p.cfg.hparams;
        LoaderConfig {
            batch_size: h.mini_batch_size,
            shuffle: training,
            seed: self.p.cfg.seed,
            augmentation: if training {
                h.augmentation_type
            } else {
                AugmentationType::None
            },
            preprocess: self.p.preprocess(),
            workers: match self.p.cfg.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            prefetch_batches: 4,
            drop_last: false,
            shard: if training { self.shard() } else { Shard::WHOLE },
        }
    }

    /// Train from the first epoch (or where the resumable state left off) to the last:
    /// each epoch a training pass, validation, the epoch's log lines, metrics and
    /// checkpoints, then the resumable state; at the end, the artifact.
    pub(super) fn epochs<O: Optimizer<ResNet<B>, B>>(
        &mut self,
        mut model: ResNet<B>,
        mut optim: O,
    ) -> Result<TrainOutcome, TrainError> {
        let p = self.p;
        let h = &p.cfg.hparams;
        let mut state = ResumeState::start(h, p.cfg.seed, p.layout, self.world_size());
        if let Some((dir, saved)) = &p.resume {
            (model, optim) = resume::load(dir, model, optim, &self.device)?;
            state = saved.continued(h, self.world_size());
            info(
                self.log,
                &format!(
                    "Resuming from {} at epoch {}, step {}",
                    dir.display(),
                    state.epoch,
                    state.step
                ),
            );
        }
        let global_batch = h.mini_batch_size * self.world_size();
        let mut speedometer = Speedometer::new(global_batch, Speedometer::FREQUENT);
        let mut stopped_early = false;
        while state.epoch < h.epochs {
            let epoch = state.epoch;
            model = match self.train_pass(model, &mut optim, &mut state, &mut speedometer)? {
                PassEnd::Done(model) => *model,
                PassEnd::Interrupted(outcome) => return Ok(outcome),
            };
            model = self.sync_running_stats(model)?;
            // Rank 0 (or the only process) validates and records the epoch.
            let mut validated = None;
            if self.is_leader() {
                let m = self.epoch_metrics(&model, &state)?;
                self.record_epoch(&model, &mut state, &m)?;
                validated = Some(m.validation_accuracy);
            }
            let stop = validated.is_some_and(|accuracy| {
                h.early_stopping && state.early_stopping.should_stop(epoch, accuracy)
            });
            if let (true, Some(accuracy)) = (stop, validated) {
                let (be, ba) = state.best.best.unwrap_or((epoch, accuracy));
                info(
                    self.log,
                    &format!(
                        "Early stopping criterion met at epoch {epoch}: validation accuracy did not \
                         improve by a relative {} for {} epochs (best {ba:.6} at epoch {be}); \
                         stopping training",
                        h.early_stopping_tolerance, h.early_stopping_patience
                    ),
                );
            }
            state.next_epoch(h);
            if self.is_leader() {
                self.save_state(&model, &optim, &state)?;
            }
            let (stop, interrupted) = self.agree_on_stopping(stop);
            if stop {
                stopped_early = true;
                break;
            }
            if interrupted && state.epoch < h.epochs {
                let saved = if self.is_leader() {
                    format!(
                        ": saved the resumable state to \"{}\"",
                        artifact::resume_dir(&p.cfg.out).display()
                    )
                } else {
                    " (rank 0 saved the resumable state)".into()
                };
                info(self.log, &format!("Interrupted after epoch {epoch}{saved}"));
                return Ok(TrainOutcome::Interrupted {
                    epoch: state.epoch,
                    step: 0,
                });
            }
        }
        if self.is_leader() {
            self.finish(&state, stopped_early)?;
        }
        if let Some(c) = &self.collective {
            // Every rank holds the same weights: each says their digest.
            info(
                self.log,
                &format!(
                    "Rank {} final weights digest: {:016x}",
                    c.world().rank,
                    weights_digest(&model)
                ),
            );
        }
        Ok(TrainOutcome::Finished {
            epochs_run: state.epoch,
            best: state.best.best,
            stopped_early,
        })
    }

    /// Epoch `state.epoch`'s training pass, from batch `state.step` on (a resumed run
    /// replays the same batches); `state`'s step, accumulator and seconds follow it. An
    /// interrupt saves the resumable state with the position inside the epoch.
    fn train_pass<O: Optimizer<ResNet<B>, B>>(
        &mut self,
        mut model: ResNet<B>,
        optim: &mut O,
        state: &mut ResumeState,
        speedometer: &mut Speedometer,
    ) -> Result<PassEnd<B>, TrainError> {
        let p = self.p;
        let h = &p.cfg.hparams;
        let epoch = state.epoch;
        let lr = h.learning_rate_at(epoch);
        state.learning_rate = lr;
        let (skip, prior_seconds) = (state.step, state.seconds);
        // SageMaker's weight_decay is an sgd/nag hyperparameter.
        let weight_decay = match h.optimizer {
            OptimizerKind::Sgd | OptimizerKind::Nag => h.weight_decay,
            OptimizerKind::Adam | OptimizerKind::RmsProp => 0.0,
        };
        let global_batch = h.mini_batch_size * self.world_size();
        let steps_in_epoch = p.train.len().div_ceil(global_batch);
        let bar = self.progress_bar(epoch, steps_in_epoch, skip);
        let clear = |bar: &Option<indicatif::ProgressBar>| {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        };
        speedometer.start_epoch();
        let t0 = Instant::now();
        let batches = loader::epoch_batches(p.train.clone(), &self.loader_config(true), epoch);
        for (step, batch) in batches.enumerate().skip(skip) {
            let batch = batch.map_err(|source| TrainError::Dataset {
                channel: "training set",
                source: Box::new(source),
            })?;
            if let Some(notice) = self.upscale.check(&batch, h.image_shape) {
                info(self.log, &notice);
            }
            let loss_scale = self.amp.loss_scale();
            self.parallel.set_loss_scale(loss_scale);
            let amp = &self.amp;
            let out = self.parallel.step(&model, batch.n, |m, shard, device| {
                let x = shard_images::<B>(&batch, shard.clone(), h.image_shape, device);
                let x = amp.input(x);
                let logits = m.forward(x);
                let loss = batch_loss(
                    logits.clone(),
                    &batch.labels[shard],
                    p.num_classes,
                    h.head,
                    p.pos_weights.as_deref(),
                    device,
                );
                (loss, logits)
            });
            // Several processes: the gradients, loss and metrics of the global batch.
            let mut out = out;
            let mut global_metrics = None;
            let mut agreed_interrupt = None;
            if let Some(c) = self.collective.clone() {
                let probabilities = h.head.probabilities(&out.outputs, p.num_classes);
                let mut mine = Accumulator::default();
                mine.add_probabilities(&probabilities, &batch.labels, out.loss, h.head, h.top_k);
                let n_global = global_batch.min(p.train.len() - step * global_batch);
                let (grads, summed, interrupted) =
                    self.sync_step(&c, &model, &out.grads, &mine, n_global)?;
                agreed_interrupt = Some(interrupted);
                out.grads = grads;
                out.loss = summed.loss();
                global_metrics = Some(summed);
            }
            if !out.loss.is_finite() {
                clear(&bar);
                return Err(TrainError::NonFinite {
                    what: "training loss",
                    loss: out.loss,
                    epoch,
                    step,
                    kept: self.kept_description(),
                });
            }
            let finite = !self.amp.checks_overflow() || grads_finite(&model, &out.grads);
            if self.amp.update(finite) {
                let grads = prepare_grads(&model, out.grads, weight_decay, loss_scale);
                model = optim.step(lr, model, grads);
            } else {
                info(
                    self.log,
                    &format!(
                        "Epoch[{epoch}] Batch[{step}] float16 gradients overflowed: \
                         step skipped, loss scale now {}",
                        self.amp.loss_scale()
                    ),
                );
            }
            match &global_metrics {
                Some(g) => {
                    for a in [&mut state.accumulator, &mut speedometer.window] {
                        a.merge(g);
                    }
                }
                None => {
                    let probabilities = h.head.probabilities(&out.outputs, p.num_classes);
                    for a in [&mut state.accumulator, &mut speedometer.window] {
                        a.add_probabilities(
                            &probabilities,
                            &batch.labels,
                            out.loss,
                            h.head,
                            h.top_k,
                        );
                    }
                }
            }
            if let Some(line) = speedometer.after_batch(epoch, step, h.top_k, Instant::now()) {
                match &bar {
                    Some(b) => b.suspend(|| info(self.log, &line)),
                    None => info(self.log, &line),
                }
            }
            state.step = step + 1;
            self.steps_done += 1;
            if let Some(b) = &bar {
                b.inc(1);
            }
            if p.cfg.stop_after_steps.is_some_and(|n| self.steps_done >= n) {
                self.interrupt.store(true, Ordering::SeqCst);
            }
            let interrupted =
                agreed_interrupt.unwrap_or_else(|| self.interrupt.load(Ordering::SeqCst));
            if interrupted && state.step < steps_in_epoch {
                clear(&bar);
                // The last update's loss is not known yet: never replace the last
                // good state with weights that are already broken.
                if !all_finite(&model.valid()) {
                    return Err(TrainError::NonFinite {
                        what: "weights",
                        loss: f64::NAN,
                        epoch,
                        step: state.step,
                        kept: self.kept_description(),
                    });
                }
                state.seconds = prior_seconds + t0.elapsed().as_secs_f64();
                let saved = if self.is_leader() {
                    let dir = self.save_state(&model, optim, state)?;
                    format!(": saved the resumable state to \"{}\"", dir.display())
                } else {
                    " (rank 0 saved the resumable state)".into()
                };
                info(
                    self.log,
                    &format!("Interrupted at epoch {epoch}, step {}{saved}", state.step),
                );
                return Ok(PassEnd::Interrupted(TrainOutcome::Interrupted {
                    epoch,
                    step: state.step,
                }));
            }
        }
        clear(&bar);
        state.seconds = prior_seconds + t0.elapsed().as_secs_f64();
        if let Some(c) = &self.collective {
            let (steps, seconds, bytes) = (self.sync.steps, self.sync.seconds, self.sync.bytes);
            let pass = t0.elapsed().as_secs_f64();
            info(
                self.log,
                &format!(
                    "Rank {} epoch {epoch}: {steps} steps in {pass:.2} s, of which summing the \
                     gradients across the ranks {seconds:.2} s ({:.0}%), {:.1} MB per step",
                    c.world().rank,
                    100.0 * seconds / pass.max(1e-9),
                    bytes as f64 / steps.max(1) as f64 / 1e6
                ),
            );
            self.sync = SyncTime::default();
        }
        Ok(PassEnd::Done(Box::new(model)))
    }

    /// Validate the model after epoch `state.epoch`'s training pass and put both into
    /// the epoch's metrics. Weights that give NaN/inf outputs stop the run here, before
    /// anything of the epoch is saved.
    fn epoch_metrics(
        &mut self,
        model: &ResNet<B>,
        state: &ResumeState,
    ) -> Result<EpochMetrics, TrainError> {
        let h = &self.p.cfg.hparams;
        let vacc = self.validate(&model.valid(), &self.loader_config(false))?;
        if !vacc.loss().is_finite() {
            return Err(TrainError::NonFinite {
                what: "validation loss",
                loss: vacc.loss(),
                epoch: state.epoch,
                step: self.p.train.len().div_ceil(h.mini_batch_size),
                kept: self.kept_description(),
            });
        }
        let (acc, seconds) = (&state.accumulator, state.seconds);
        Ok(EpochMetrics {
            epoch: state.epoch,
            train_loss: acc.loss(),
            train_accuracy: acc.accuracy(),
            train_top_k_accuracy: h.top_k.map(|_| acc.top_k_accuracy()),
            validation_loss: vacc.loss(),
            validation_accuracy: vacc.accuracy(),
            validation_top_k_accuracy: h.top_k.map(|_| vacc.top_k_accuracy()),
            learning_rate: state.learning_rate,
            images_per_second: if seconds > 0.0 {
                acc.samples as f64 / seconds
            } else {
                0.0
            },
            seconds,
        })
    }

    fn progress_bar(
        &self,
        epoch: usize,
        steps: usize,
        done: usize,
    ) -> Option<indicatif::ProgressBar> {
        if !self.p.cfg.progress {
            return None;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(steps as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "epoch {msg} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(epoch.to_string());
        bar.set_position(done as u64);
        Some(bar)
    }

    fn validate(
        &mut self,
        model: &ResNet<B::InnerBackend>,
        cfg: &LoaderConfig,
    ) -> Result<Accumulator, TrainError> {
        let p = self.p;
        let h = &p.cfg.hparams;
        // The inference form (BatchNorm folded into the convolutions), as recpredict.
        let model = model.fold_batch_norm();
        let mut acc = Accumulator::default();
        for batch in loader::epoch_batches(p.validation.clone(), cfg, 0) {
            let batch = batch.map_err(|source| TrainError::Dataset {
                channel: "validation set",
                source: Box::new(source),
            })?;
            if let Some(notice) = self.upscale.check(&batch, h.image_shape) {
                info(self.log, &notice);
            }
            let x = images_tensor::<B::InnerBackend>(&batch, h.image_shape, &self.device);
            let logits = model.forward(x);
            let loss = batch_loss(
                logits.clone(),
                &batch.labels,
                p.num_classes,
                h.head,
                p.pos_weights.as_deref(),
                &self.device,
            );
            let loss_value: f64 = loss.into_scalar().elem();
            let host = host_f32(logits);
            acc.add_batch(
                &host,
                p.num_classes,
                &batch.labels,
                loss_value,
                h.head,
                h.top_k,
            );
        }
        Ok(acc)
    }
}

/// A 64-bit FNV-1a hash of every tensor of `model` (weights and BatchNorm statistics,
/// by name), for comparing the ranks' models in the log.
fn weights_digest<B: Backend>(model: &ResNet<B>) -> u64 {
    let mut h = Fnv1a::default();
    for (name, t) in resnet::weights::to_state_dict(model) {
        h.write(name.as_bytes());
        if let resnet::weights::HostData::F32(v) = &t.data {
            for x in v {
                h.write(&x.to_le_bytes());
            }
        }
    }
    h.finish()
}
