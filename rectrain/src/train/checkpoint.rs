//! Checkpoints and the artifact: best and periodic weight files, the resumable
//! state, and `model.safetensors` + `config.json` at the end.

use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;

use crate::plot;
use crate::sagemaker_log::{epoch_log_lines, info};
use resnet::artifact::{self, ArtifactConfig};
use resnet::metrics::{self, EpochMetrics};
use resnet::model::ResNet;
use resnet::weights;

use super::epoch::TrainingRun;
use super::error::{io_err, weights_err};
use super::resume::{self, ResumeState};
use super::TrainError;

impl<B: AutodiffBackend> TrainingRun<'_, B> {
    /// After epoch `m.epoch`'s validation: its log lines and metrics line, the best or
    /// periodic checkpoint (`state`'s best so far follows), `metrics.jsonl` and
    /// `accuracy.svg`.
    pub(super) fn record_epoch(
        &mut self,
        model: &ResNet<B>,
        state: &mut ResumeState,
        m: &EpochMetrics,
    ) -> Result<(), TrainError> {
        let h = &self.p.cfg.hparams;
        let out = &self.p.cfg.out;
        let epoch = m.epoch;
        for line in epoch_log_lines(m, h.top_k) {
            info(self.log, &line);
        }
        self.emit_metrics(&metrics::json_line(m))?;

        let periodic = self.is_periodic_epoch(epoch);
        if state.best.update(epoch, m.validation_accuracy) {
            info(
                self.log,
                &format!(
                    "Storing the best model with validation accuracy: {:.6}",
                    m.validation_accuracy
                ),
            );
            let path = artifact::checkpoint_path(out, epoch);
            self.save_weights(model, &path)?;
            info(
                self.log,
                &format!("Saved checkpoint to \"{}\"", path.display()),
            );
            if let Some(old) = state.best_checkpoint.take() {
                if !self.is_periodic_checkpoint(&old) {
                    let _ = std::fs::remove_file(out.join(old));
                }
            }
            state.best_checkpoint = Some(relative_checkpoint(epoch));
        } else if periodic {
            let path = artifact::checkpoint_path(out, epoch);
            self.save_weights(model, &path)?;
            info(
                self.log,
                &format!("Saved checkpoint to \"{}\"", path.display()),
            );
        }

        state.history.push(m.clone());
        artifact::write_atomic(
            &artifact::metrics_path(out),
            metrics::jsonl(&state.history).as_bytes(),
        )
        .map_err(io_err(&artifact::metrics_path(out)))?;
        plot::write_accuracy_svg(
            &artifact::plot_path(out),
            &state.history,
            &self.plot_title(),
        )?;
        Ok(())
    }

    /// Write the resumable state `checkpoints/last/` (see [`resume::save`]).
    pub(super) fn save_state<O: Optimizer<ResNet<B>, B>>(
        &self,
        model: &ResNet<B>,
        optim: &O,
        state: &ResumeState,
    ) -> Result<PathBuf, TrainError> {
        resume::save(&self.p.cfg.out, model, optim, state)
    }

    /// Whether epoch `epoch` writes a checkpoint every `checkpoint_frequency` epochs.
    fn is_periodic_epoch(&self, epoch: usize) -> bool {
        self.p
            .cfg
            .hparams
            .checkpoint_frequency
            .is_some_and(|f| (epoch + 1).is_multiple_of(f))
    }

    /// Whether the checkpoint file `relative` is one of the periodic ones (kept when a
    /// better model replaces it as the best).
    pub(super) fn is_periodic_checkpoint(&self, relative: &str) -> bool {
        (0..self.p.cfg.hparams.epochs)
            .filter(|&e| self.is_periodic_epoch(e))
            .any(|e| relative_checkpoint(e) == relative)
    }

    /// Write `model`'s weights to `path` (through a temporary sibling renamed into
    /// place: after a failure, a full disk..., the temporary file is removed and `path`
    /// keeps what it held).
    pub(super) fn save_weights(&self, model: &ResNet<B>, path: &Path) -> Result<(), TrainError> {
        weights::save_safetensors(model, path).map_err(weights_err(path))
    }

    pub(super) fn kept_description(&self) -> String {
        let last = artifact::resume_dir(&self.p.cfg.out);
        if last.join("state.json").is_file() {
            last.display().to_string()
        } else {
            "nowhere (no epoch had finished)".to_string()
        }
    }

    pub(super) fn plot_title(&self) -> String {
        format!("ResNet-{} accuracy", self.p.cfg.hparams.num_layers)
    }

    /// Copy the best checkpoint to `model.safetensors` and write `config.json`.
    pub(super) fn finish(
        &mut self,
        state: &ResumeState,
        stopped_early: bool,
    ) -> Result<(), TrainError> {
        let (best, best_checkpoint) = (&state.best, state.best_checkpoint.as_deref());
        let (epochs_run, history) = (state.epoch, &state.history);
        let p = self.p;
        let h = &p.cfg.hparams;
        let out = &p.cfg.out;
        if let Some(rel) = best_checkpoint {
            let src = out.join(rel);
            let dst = artifact::weights_path(out);
            let tmp = artifact::temp_sibling(&dst);
            let copied = std::fs::copy(&src, &tmp)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => io_err(&src)(e),
                    _ => io_err(&dst)(e),
                })
                .and_then(|_| std::fs::rename(&tmp, &dst).map_err(io_err(&dst)));
            if copied.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            copied?;
        }
        let mean_ips = if history.is_empty() {
            0.0
        } else {
            history.iter().map(|m| m.images_per_second).sum::<f64>() / history.len() as f64
        };
        let cfg = ArtifactConfig {
            format: artifact::FORMAT.into(),
            format_version: artifact::FORMAT_VERSION,
            architecture: p.layout.architecture().into(),
            num_layers: h.num_layers,
            num_classes: p.num_classes,
            image_shape: h.image_shape,
            resize: h.resize,
            head: h.head,
            normalization: p.preprocess().normalization,
            class_names: p.cfg.class_names.clone(),
            hyperparameters: h.to_json(),
            training: serde_json::json!({
                "epochs_run": epochs_run,
                "best_epoch": best.best.map(|b| b.0),
                "best_validation_accuracy": best.best.map(|b| b.1),
                "best_checkpoint": best_checkpoint,
                "stopped_early": stopped_early,
                "seed": p.cfg.seed,
                "num_training_samples": p.train.len(),
                "num_validation_samples": p.validation.len(),
                "device": self.device_name(),
                "pretrained": p.cfg.pretrained.as_ref().map(|x| x.display().to_string()),
                "initial_model": p.cfg.model.as_ref().and(p.initial.as_ref()).map(|m| m.checkpoint.source.clone()),
                "mean_images_per_second": mean_ips,
            }),
        };
        cfg.save(out)?;
        Ok(())
    }

    pub(super) fn device_name(&self) -> String {
        self.parallel
            .devices()
            .iter()
            .map(|d| format!("{d:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn relative_checkpoint(epoch: usize) -> String {
    format!(
        "checkpoints/{}-{:04}.safetensors",
        artifact::CHECKPOINT_PREFIX,
        epoch + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_checkpoint_names() {
        assert_eq!(
            relative_checkpoint(0),
            "checkpoints/image-classification-0001.safetensors"
        );
    }
}
