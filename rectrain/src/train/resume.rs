//! The resumable state (`checkpoints/last/`): its bookkeeping file, which
//! hyperparameters may change on resume, and saving/loading it.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::distributed::Collective;
use crate::hparams::{self, Hyperparameters, RawHyperparameters};
use resnet::artifact;
use resnet::metrics::{Accumulator, BestTracker, EarlyStopping, EpochMetrics};
use resnet::model::{Layout, ResNet};

use super::error::{io_err, state_err};
use super::{TrainConfig, TrainError};

/// The resumable state's bookkeeping, `checkpoints/last/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    /// Always `"rectrain-state"`.
    pub format: String,
    /// Epoch to continue with.
    pub epoch: usize,
    /// Steps of that epoch already done (0 at an epoch boundary).
    pub step: usize,
    /// The run's seed.
    pub seed: u64,
    /// The learning rate in force.
    pub learning_rate: f64,
    /// The epoch's running sums so far.
    pub accumulator: Accumulator,
    /// Training seconds of the epoch so far.
    pub seconds: f64,
    /// Best epoch so far.
    pub best: BestTracker,
    /// Early-stopping counters.
    pub early_stopping: EarlyStopping,
    /// Metrics of the finished epochs.
    pub history: Vec<EpochMetrics>,
    /// The run's resolved hyperparameters.
    pub hyperparameters: RawHyperparameters,
    /// The best checkpoint file, relative to the artifact directory.
    pub best_checkpoint: Option<String>,
    /// The network trained (absent in states written before MXNet's layout existed).
    #[serde(default)]
    pub layout: Layout,
    /// How many processes trained (absent in states written before multi-process
    /// training: one).
    #[serde(default = "one_process")]
    pub processes: usize,
}

fn one_process() -> usize {
    1
}

pub(super) const STATE_FORMAT: &str = "rectrain-state";

/// Hyperparameters that may change between an interrupted run and its resumption.
const RESUMABLE_CHANGES: &[&str] = &[
    "epochs",
    "checkpoint_frequency",
    "early_stopping",
    "early_stopping_min_epochs",
    "early_stopping_patience",
    "early_stopping_tolerance",
    "num_training_samples",
];

/// Optimizer settings that may change when a run is resumed (e.g. a lower
/// learning_rate after the loss diverged): plain numbers that leave the optimizer's
/// saved state valid. A warning lists the changes.
const TUNABLE_ON_RESUME: &[&str] = &[
    "learning_rate",
    "lr_scheduler_factor",
    "lr_scheduler_step",
    "momentum",
    "weight_decay",
    "beta_1",
    "beta_2",
    "eps",
    "gamma",
];

/// The state directory inside `dir` (accepts the artifact directory or `last` itself).
pub fn find_resume_dir(dir: &Path) -> PathBuf {
    if dir.join("state.json").is_file() {
        dir.to_path_buf()
    } else {
        artifact::resume_dir(dir)
    }
}

/// Read `state.json` from a resumable state directory.
pub fn read_resume_state(dir: &Path) -> Result<ResumeState, TrainError> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| state_err(&path, e))?;
    let state: ResumeState = serde_json::from_str(&text).map_err(|e| state_err(&path, e))?;
    if state.format != STATE_FORMAT {
        return Err(state_err(
            &path,
            format!("format {:?} is not {STATE_FORMAT:?}", state.format),
        ));
    }
    Ok(state)
}

const KNOWN_FOR_RESUME: &[&str] = hparams::KNOWN_NAMES;

pub(super) type StateRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// The resumable state a run continues from: none for a fresh run (refused when `out`
/// already holds one), else the state of `cfg.resume`, checked against the run's
/// hyperparameters. Changed optimizer numbers and a different seed are warnings (the
/// state's seed wins); any other difference is an error.
pub(super) fn check(
    cfg: &mut TrainConfig,
    warn: &mut impl FnMut(String),
) -> Result<Option<(PathBuf, ResumeState)>, TrainError> {
    Ok(match &cfg.resume {
        // Only rank 0 writes OUT: the others may find its fresh files there.
        None if cfg.world.is_leader()
            && artifact::resume_dir(&cfg.out).join("state.json").is_file() =>
        {
            return Err(TrainError::Config(format!(
                "{} already holds a training run: continue it with --resume {} or choose another --out",
                cfg.out.display(),
                cfg.out.display()
            )));
        }
        None => None,
        Some(dir) => {
            let dir = find_resume_dir(dir);
            let state = read_resume_state(&dir)?;
            let now = cfg.hparams.to_raw();
            let differing: Vec<&str> = KNOWN_FOR_RESUME
                .iter()
                .copied()
                .filter(|k| !RESUMABLE_CHANGES.contains(k) && !TUNABLE_ON_RESUME.contains(k))
                .filter(|k| state.hyperparameters.get(*k) != now.get(*k))
                .collect();
            let tuned: Vec<String> = TUNABLE_ON_RESUME
                .iter()
                .filter(|k| state.hyperparameters.get(**k) != now.get(**k))
                .map(|k| {
                    let show = |v: Option<&String>| v.map_or("unset".to_string(), |v| v.clone());
                    format!(
                        "{k} {} -> {}",
                        show(state.hyperparameters.get(*k)),
                        show(now.get(*k))
                    )
                })
                .collect();
            if !differing.is_empty() {
                return Err(state_err(
                    &dir,
                    format!(
                        "it was written with different hyperparameters: {}",
                        differing.join(", ")
                    ),
                ));
            }
            if state.step > 0 && state.processes != cfg.world.size {
                return Err(state_err(
                    &dir,
                    format!(
                        "it stopped inside epoch {} (after {} steps) of a run on {} process(es): \
                         resume it on {} (another count cuts the epoch's batches differently)",
                        state.epoch, state.step, state.processes, state.processes
                    ),
                ));
            }
            if !tuned.is_empty() {
                warn(format!(
                    "resuming with changed optimizer settings: {}",
                    tuned.join(", ")
                ));
            }
            if state.seed != cfg.seed {
                warn(format!(
                    "resuming with seed {} (the state's); --seed {} is ignored",
                    state.seed, cfg.seed
                ));
                cfg.seed = state.seed;
            }
            Some((dir, state))
        }
    })
}

impl ResumeState {
    /// The state of a run before its first step: epoch 0, nothing recorded yet.
    pub(super) fn start(h: &Hyperparameters, seed: u64, layout: Layout, processes: usize) -> Self {
        ResumeState {
            format: STATE_FORMAT.into(),
            epoch: 0,
            step: 0,
            seed,
            learning_rate: h.learning_rate_at(0),
            accumulator: Accumulator::default(),
            seconds: 0.0,
            best: BestTracker::default(),
            early_stopping: EarlyStopping::new(
                h.early_stopping_min_epochs,
                h.early_stopping_patience,
                h.early_stopping_tolerance,
            ),
            history: Vec::new(),
            hyperparameters: h.to_raw(),
            best_checkpoint: None,
            layout,
            processes,
        }
    }

    /// This saved state, continued with the resumed run's hyperparameters (which may
    /// change the early-stopping settings and the optimizer's numbers, see
    /// [`check`]) on `processes` processes; the early-stopping counters are kept.
    pub(super) fn continued(&self, h: &Hyperparameters, processes: usize) -> Self {
        ResumeState {
            early_stopping: EarlyStopping {
                min_epochs: h.early_stopping_min_epochs,
                patience: h.early_stopping_patience,
                tolerance: h.early_stopping_tolerance,
                ..self.early_stopping
            },
            hyperparameters: h.to_raw(),
            processes,
            ..self.clone()
        }
    }

    /// Move to the start of the next epoch (after its validation and checkpoints).
    pub(super) fn next_epoch(&mut self, h: &Hyperparameters) {
        self.epoch += 1;
        self.step = 0;
        self.learning_rate = h.learning_rate_at(self.epoch);
        self.accumulator = Accumulator::default();
        self.seconds = 0.0;
    }
}

/// The model and optimizer state saved in the resumable state directory `dir`.
pub(super) fn load<B: AutodiffBackend, O: Optimizer<ResNet<B>, B>>(
    dir: &Path,
    model: ResNet<B>,
    optim: O,
    device: &B::Device,
) -> Result<(ResNet<B>, O), TrainError> {
    let recorder = StateRecorder::new();
    let model = model
        .load_file(dir.join("model"), &recorder, device)
        .map_err(|e| state_err(dir, e))?;
    let record = <StateRecorder as Recorder<B>>::load(&recorder, dir.join("optimizer.mpk"), device)
        .map_err(|e| state_err(dir, e))?;
    Ok((model, optim.load_record(record)))
}

/// Write the resumable state `out/checkpoints/last/` (model, optimizer, `state.json`)
/// into a temporary directory, then put it in place of the old one with one atomic
/// exchange of the two directories (Linux's `renameat2(RENAME_EXCHANGE)`; elsewhere,
/// or on a filesystem without it, two renames), so that a process killed at any moment
/// leaves `last/` holding either the old state or the new one, whole. A failure (a
/// full disk...) removes the temporary directory and leaves the old state as it was;
/// the error names the file of `last/` that could not be written. Returns the state
/// directory.
pub(super) fn save<B: AutodiffBackend, O: Optimizer<ResNet<B>, B>>(
    out: &Path,
    model: &ResNet<B>,
    optim: &O,
    state: &ResumeState,
) -> Result<PathBuf, TrainError> {
    let last = artifact::resume_dir(out);
    let tmp = artifact::temp_sibling(&last);
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| {
        std::fs::create_dir_all(&tmp).map_err(io_err(&last))?;
        let recorder = StateRecorder::new();
        model
            .clone()
            .save_file(tmp.join("model"), &recorder)
            .map_err(|e| state_err(&last.join("model.mpk"), e))?;
        <StateRecorder as Recorder<B>>::record(
            &recorder,
            optim.to_record(),
            tmp.join("optimizer.mpk"),
        )
        .map_err(|e| state_err(&last.join("optimizer.mpk"), e))?;
        let json = serde_json::to_string_pretty(state).map_err(|e| state_err(&last, e))?;
        // state.json last: a directory holding it is complete.
        artifact::write_atomic(&tmp.join("state.json"), json.as_bytes())
            .map_err(io_err(&last.join("state.json")))?;
        replace_dir(&tmp, &last).map_err(io_err(&last))
    })();
    // After the exchange `tmp` holds the previous state; after a failure, the partial
    // new one. Either way it goes.
    let _ = std::fs::remove_dir_all(&tmp);
    written.map(|()| last)
}

/// Put the complete directory `new` at `dst`. When `dst` exists the two are exchanged
/// atomically where the system can (afterwards `new` holds the old directory), else
/// `dst` is moved aside and `new` renamed (a crash between the two renames leaves the
/// old state beside, not in, `dst`).
fn replace_dir(new: &Path, dst: &Path) -> std::io::Result<()> {
    if !dst.exists() {
        return std::fs::rename(new, dst);
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        use rustix::io::Errno;
        match renameat_with(CWD, new, CWD, dst, RenameFlags::EXCHANGE) {
            Ok(()) => return Ok(()),
            // A filesystem (or kernel) without RENAME_EXCHANGE: the portable way.
            Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {}
            Err(e) => return Err(e.into()),
        }
    }
    let old = dst.with_file_name(format!(".last.old{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(dst, &old)?;
    std::fs::rename(new, dst)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// A resumable state folder as one rank sees it: rank 0's own, or a temporary copy of
/// it received from rank 0 (deleted when this is dropped).
pub struct SharedState {
    dir: PathBuf,
    _copy: Option<tempfile::TempDir>,
}

impl SharedState {
    /// The folder to resume from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `--resume` on several processes: rank 0 sends the files of its resumable state
/// folder (`find_resume_dir(given)`) to every rank, which resume from their copy, so
/// that only rank 0's machine needs the state. When rank 0 has none, every rank keeps
/// `given` (and the usual error follows on rank 0).
pub fn share_resume_state(c: &Collective, given: &Path) -> Result<SharedState, TrainError> {
    if c.world().is_leader() {
        let dir = find_resume_dir(given);
        let mut payload = Vec::new();
        if dir.join("state.json").is_file() {
            let entries = std::fs::read_dir(&dir).map_err(io_err(&dir))?;
            let mut files = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let path = entry.path();
                if path.is_file() {
                    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
                    files.push((entry.file_name().to_string_lossy().into_owned(), bytes));
                }
            }
            for (name, bytes) in files {
                for part in [name.as_bytes(), &bytes[..]] {
                    payload.extend_from_slice(&(part.len() as u64).to_le_bytes());
                    payload.extend_from_slice(part);
                }
            }
        }
        c.broadcast_bytes_from_leader(payload);
        return Ok(SharedState { dir, _copy: None });
    }
    let payload = c.broadcast_bytes_from_leader(Vec::new());
    if payload.is_empty() {
        return Ok(SharedState {
            dir: given.to_path_buf(),
            _copy: None,
        });
    }
    let bad = || TrainError::Config("the resumable state received from rank 0 is cut short".into());
    let copy = tempfile::Builder::new()
        .prefix("rectrain-resume-")
        .tempdir()
        .map_err(io_err(&std::env::temp_dir()))?;
    let mut rest = &payload[..];
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, TrainError> {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let len = u64::from_le_bytes(*len) as usize;
        let part = tail.get(..len).ok_or_else(bad)?.to_vec();
        *rest = &tail[len..];
        Ok(part)
    };
    while !rest.is_empty() {
        let name = String::from_utf8(take(&mut rest)?).map_err(|_| bad())?;
        let bytes = take(&mut rest)?;
        // Names from rank 0's folder listing: plain file names only.
        let name = Path::new(&name).file_name().ok_or_else(bad)?.to_owned();
        let path = copy.path().join(name);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    Ok(SharedState {
        dir: copy.path().to_path_buf(),
        _copy: Some(copy),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_dir_swaps_whole_directories() {
        let d = tempfile::tempdir().unwrap();
        let (new, dst) = (d.path().join(".new"), d.path().join("last"));
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("state.json"), "1").unwrap();
        replace_dir(&new, &dst).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("state.json")).unwrap(),
            "1"
        );
        assert!(!new.exists());
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("state.json"), "2").unwrap();
        replace_dir(&new, &dst).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.join("state.json")).unwrap(),
            "2"
        );
        // The old state is now at `new` (exchanged) or gone (renamed aside and removed).
        if new.exists() {
            assert_eq!(
                std::fs::read_to_string(new.join("state.json")).unwrap(),
                "1"
            );
        }
    }
}
