//! The training loop: SageMaker's image-classification semantics on burn.
//!
//! [`prepare()`] opens the datasets and checks everything that can be checked before a
//! single step runs (sizes, label widths, label ranges, class names, a resumable state
//! that matches). [`train`] then runs the epochs on the chosen device:
//!
//! - optimizer: sgd / nag (momentum without dampening, L2 weight decay), adam,
//!   rmsprop (non-centred, `gamma` as the squared-gradient decay);
//! - learning rate `learning_rate × lr_scheduler_factor^k` where k counts the listed
//!   `lr_scheduler_step` epochs already passed;
//! - loss: softmax cross-entropy, or binary cross-entropy on logits for the multi-label head
//!   (optionally with a per-class positive weight `negatives / positives`);
//! - after each epoch: validation, SageMaker's log lines on the log writer, one JSON
//!   object on the data writer, the best checkpoint (strictly better accuracy only,
//!   numbered epoch + 1), every `checkpoint_frequency` epochs a checkpoint, the
//!   resumable state in `checkpoints/last/`, `metrics.jsonl` and `accuracy.svg`;
//! - early stopping with SageMaker's min-epochs / patience / relative tolerance;
//! - several devices train data-parallel ([`DataParallel`], [`train_on`]);
//! - a NaN or infinite training loss, validation loss or (before an interrupted save)
//!   weights stop the run with [`TrainError::NonFinite`] before anything is written, so
//!   the last good epoch's files stay as they were; resuming may lower the learning
//!   rate (the optimizer's numbers may change on resume, with a warning).
//! - an interrupt (Ctrl-C) finishes the current step, saves the resumable state with
//!   the position inside the epoch, and returns [`TrainOutcome::Interrupted`]. Resuming
//!   replays the same batches (the loader is deterministic for a seed and an epoch), so
//!   an interrupted and resumed run ends with the same weights as an uninterrupted one.
//!
//! At the end the best checkpoint becomes `model.safetensors` and `config.json` is
//! written.
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | [`TrainConfig`], [`DataSource`], [`TrainOutcome`] |
//! | [`error`] | [`TrainError`] |
//! | [`prepare`](mod@prepare) | [`prepare()`]: every check before the first step |
//! | [`resume`] | the resumable state: `state.json`, what may change on resume, save and load |
//! | [`data_parallel`] | [`DataParallel`]: gradients of one mini-batch over several devices |
//! | [`loss`] | softmax cross-entropy and (weighted) binary cross-entropy |
//! | [`optim`] | gradients before the optimizer step (layout, MXNet's weight decay, loss-scale overflow) |
//! | [`amp`] | mixed precision: f32 master weights, half-type compute, float16 loss scaling |
//! | [`epoch`] | the epoch loop and validation |
//! | [`checkpoint`] | weight checkpoints and the final artifact |
//!
//! SageMaker's log text is [`crate::sagemaker_log`]'s.

pub mod amp;
pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod epoch;
pub mod error;
pub mod loss;
pub mod optim;
pub mod prepare;
pub mod resume;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use burn::tensor::backend::AutodiffBackend;

use crate::distributed::Collective;
use crate::hparams::{self, OptimizerKind};
use crate::sagemaker_log::{configuration_lines, info, parameter_lines};
use resnet::artifact;
use resnet::backend::{self, BackendTask, Precision};
use resnet::model::ResNet;
use resnet::weights::{self, HeadPolicy};

pub use config::{DataSource, TrainConfig, TrainOutcome};
pub use data_parallel::{shard_sizes, DataParallel, ParallelStep};
pub use error::TrainError;
pub use optim::all_finite;
pub use prepare::{prepare, InitialModel, TrainingSetup, TOO_FEW_IMAGES};
pub use resume::{
    find_resume_dir, read_resume_state, share_resume_state, ResumeState, SharedState,
};

use epoch::TrainingRun;
use error::{io_err, weights_err};

/// Run a prepared training. `data` receives one JSON line per epoch; `log` receives
/// SageMaker's log lines; setting `interrupt` stops after the current step.
///
/// `collective` joins this process to the other ranks of a multi-process run
/// ([`Collective::join`]); `None` trains alone.
pub fn train(
    prepared: TrainingSetup,
    collective: Option<Arc<Collective>>,
    data: &mut dyn Write,
    log: &mut dyn Write,
    interrupt: Arc<AtomicBool>,
) -> Result<TrainOutcome, TrainError> {
    let h = &prepared.cfg.hparams;
    let mut notices = Vec::new();
    let device = backend::resolve(&prepared.cfg.device, |n: &str| notices.push(n.to_string()))
        .map_err(|e| TrainError::Backend(Box::new(e)))?;
    for n in notices {
        info(log, &n);
    }
    if !device.is_cuda() && h.precision_dtype != Precision::F32 {
        return Err(TrainError::Config(format!(
            "precision_dtype {} needs a CUDA GPU; on the CPU use float32",
            hparams::precision_name(h.precision_dtype)
        )));
    }
    let precision = h.precision_dtype;
    let task = TrainTask {
        prepared: &prepared,
        collective,
        data,
        log,
        interrupt,
    };
    backend::dispatch(&device, precision, task).map_err(|e| TrainError::Backend(Box::new(e)))?
}

/// Run a prepared training on backend `B` and these devices, without resolving
/// `cfg.device` (which [`train`] does before calling this through [`backend::dispatch`]).
///
/// One device trains as usual. Several devices train data-parallel (see
/// [`DataParallel`]): the first holds the model, runs the optimizer, the validation and
/// the checkpoints, and every device (the same one may be listed more than once, which
/// makes several replicas on it) computes the gradients of one contiguous shard of each
/// mini-batch. `mini_batch_size` must be at least the number of devices.
pub fn train_on<B: AutodiffBackend>(
    prepared: &TrainingSetup,
    collective: Option<Arc<Collective>>,
    devices: Vec<B::Device>,
    data: &mut dyn Write,
    log: &mut dyn Write,
    interrupt: Arc<AtomicBool>,
) -> Result<TrainOutcome, TrainError> {
    let h = &prepared.cfg.hparams;
    if devices.is_empty() {
        return Err(TrainError::NoDevice);
    }
    if devices.len() > h.mini_batch_size {
        return Err(TrainError::Config(format!(
            "mini_batch_size {} is smaller than the number of devices ({}): data-parallel \
             training gives each device a part of every mini-batch, so use a mini_batch_size \
             of at least {} or fewer devices",
            h.mini_batch_size,
            devices.len(),
            devices.len()
        )));
    }
    let world = &prepared.cfg.world;
    if world.is_leader() {
        if !prepared.cfg.out.is_dir() {
            std::fs::create_dir_all(&prepared.cfg.out).map_err(io_err(&prepared.cfg.out))?;
        }
        let ckpt = artifact::checkpoints_dir(&prepared.cfg.out);
        std::fs::create_dir_all(&ckpt).map_err(io_err(&ckpt))?;
    }
    if let Some(c) = &collective {
        let world = c.world();
        info(
            log,
            &format!(
                "Distributed training: rank {} of {} (MPI: {}, pid {}); each global batch of {} × {} images \
                 is cut into one contiguous shard per rank, the gradients are summed across the \
                 ranks every step; rank 0 validates and writes {}",
                world.rank,
                world.size,
                c.describe(),
                std::process::id(),
                world.size,
                h.mini_batch_size,
                prepared.cfg.out.display()
            ),
        );
        c.check_same_run(&run_digest(prepared))?;
    }
    for line in configuration_lines(h) {
        info(log, &line);
    }
    if h.use_pretrained_model {
        info(log, "use_pretrained_model: 1");
    }
    info(
        log,
        &format!("multi_label: {}", u8::from(h.head.is_multi_label())),
    );
    if h.use_pretrained_model {
        info(
            log,
            "Using pretrained model for initializing weights and transfer learning.",
        );
    }
    for line in parameter_lines(h) {
        info(log, &line);
    }
    TrainTask {
        prepared,
        collective,
        data,
        log,
        interrupt,
    }
    .run_on::<B>(devices)
}

/// What every rank of one run must agree on: the hyperparameters, the seed, the
/// datasets' sizes and labels, the network (compared across the ranks at the start).
fn run_digest(p: &TrainingSetup) -> Vec<u8> {
    let mut text = serde_json::json!({
        "hyperparameters": p.cfg.hparams.to_json(),
        "seed": p.cfg.seed,
        "train": p.train.len(),
        "validation": p.validation.len(),
        "classes": p.num_classes,
        "resume": p.resume.as_ref().map(|(_, s)| (s.epoch, s.step)),
    })
    .to_string()
    .into_bytes();
    for labels in p.train.labels() {
        for l in labels {
            text.extend_from_slice(&l.to_le_bytes());
        }
    }
    text
}

struct TrainTask<'a> {
    prepared: &'a TrainingSetup,
    collective: Option<Arc<Collective>>,
    data: &'a mut dyn Write,
    log: &'a mut dyn Write,
    interrupt: Arc<AtomicBool>,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<TrainOutcome, TrainError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        train_on::<B>(
            self.prepared,
            self.collective,
            devices,
            self.data,
            self.log,
            self.interrupt,
        )
    }
}

impl TrainTask<'_> {
    fn run_on<B: AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Result<TrainOutcome, TrainError> {
        let p = self.prepared;
        let h = &p.cfg.hparams;
        let Some(device) = devices.first().cloned() else {
            return Err(TrainError::NoDevice);
        };
        let resnet = p.network();
        if devices.len() > 1 {
            let sizes = shard_sizes(h.mini_batch_size, devices.len());
            info(
                self.log,
                &format!(
                    "Data-parallel training on {} devices ({}): each mini-batch of {} is split \
                     into shards of {} images; the gradients are averaged on the first device, \
                     which runs the optimizer and the validation (BatchNorm running statistics \
                     come from its shard)",
                    devices.len(),
                    devices
                        .iter()
                        .map(|d| format!("{d:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    h.mini_batch_size,
                    sizes
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join("+"),
                ),
            );
        }
        B::seed(&device, p.cfg.seed);
        let mut model: ResNet<B> = resnet.init(&device);
        if let Some(initial) = &p.initial {
            let ck = &initial.checkpoint;
            let source = std::path::Path::new(&ck.source);
            let (m, report) = weights::load_state_dict_with_head(
                model,
                &ck.weights,
                source,
                initial.head,
                &device,
            )
            .map_err(weights_err(source))?;
            model = m;
            let what = if p.cfg.model.is_some() {
                format!(
                    "Continuing the training of {} (incremental training",
                    ck.source
                )
            } else {
                format!(
                    "Loaded pretrained weights from {}: {report} (transfer learning",
                    ck.source
                )
            };
            info(
                self.log,
                &format!(
                    "{what} of SageMaker's network: MXNet's pre-activation ResNet-{}, {} classes)",
                    h.num_layers, p.num_classes
                ),
            );
        } else if let (true, Some(path)) = (h.use_pretrained_model, &p.cfg.pretrained) {
            let policy = if p.cfg.keep_head {
                HeadPolicy::Keep
            } else {
                HeadPolicy::Reinit
            };
            let (m, report) = weights::load_pretrained(model, path, policy, &device)
                .map_err(weights_err(path))?;
            model = m;
            info(
                self.log,
                &format!(
                    "Loaded pretrained weights from {}: {report}",
                    path.display()
                ),
            );
        }
        let parallel = DataParallel::new(devices, |d| resnet.init(d));
        let mut run = TrainingRun {
            p,
            device: device.clone(),
            parallel,
            data: Some(self.data),
            log: self.log,
            interrupt: self.interrupt,
            steps_done: 0,
            upscale: Default::default(),
            amp: amp::MixedPrecision::new(h.precision_dtype),
            collective: self.collective,
            sync: Default::default(),
        };
        match h.optimizer {
            OptimizerKind::Sgd | OptimizerKind::Nag => {
                // Weight decay is added to the gradients (`prepare_grads`), for the
                // parameters MXNet decays.
                let c = SgdConfig::new().with_momentum(Some(MomentumConfig {
                    momentum: h.momentum,
                    dampening: 0.0,
                    nesterov: h.optimizer == OptimizerKind::Nag,
                }));
                run.epochs(model, c.init::<B, ResNet<B>>())
            }
            OptimizerKind::Adam => {
                let c = AdamConfig::new()
                    .with_beta_1(h.beta_1 as f32)
                    .with_beta_2(h.beta_2 as f32)
                    .with_epsilon(h.eps as f32);
                run.epochs(model, c.init::<B, ResNet<B>>())
            }
            OptimizerKind::RmsProp => {
                let c = RmsPropConfig::new()
                    .with_alpha(h.gamma as f32)
                    .with_momentum(0.0)
                    .with_epsilon(h.eps as f32);
                run.epochs(model, c.init::<B, ResNet<B>>())
            }
        }
    }
}
