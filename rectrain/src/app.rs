//! `rectrain`'s command line: the options (SageMaker's hyperparameters as flags), their
//! checks, and the run they start. `main.rs` parses and calls [`run`].

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;

use crate::cli::HyperparameterArgs;
use crate::distributed::{self, Collective, ResourceConfig};
use crate::hparams::{self, Hyperparameters, RawHyperparameters};
use crate::train::{self, DataSource, TrainConfig, TrainOutcome};
use resnet::cli::{lst_root, DeviceArgs, WorkersArgs};
use tool_cli::{self as cli, Outcome};

/// The tool's name in messages.
pub const TOOL: &str = "rectrain";

const LONG_ABOUT: &str = "\
Train a ResNet image classifier the way Amazon SageMaker's built-in image
classification algorithm does, from the .rec files im2rec makes (or from an
image folder plus a .lst), on a CUDA GPU or the CPU.

Hyperparameters have SageMaker's names with dashes (num_layers is
--num-layers), SageMaker's defaults and SageMaker's allowed ranges.
--hyperparameters reads SageMaker's hyperparameters.json (every value a
string); flags given on the command line override the file. The
precision_dtype hyperparameter's flag, --precision-dtype, is listed with
--device: recpredict has both with the same meaning.

Output: the artifact directory OUT:
  OUT/model.safetensors   best-validation weights, torchvision key names
  OUT/config.json         architecture, classes, preprocessing, hyperparameters
  OUT/checkpoints/        image-classification-NNNN.safetensors (NNNN = epoch+1),
                          last/ (the resumable state, see --resume)
  OUT/accuracy.svg        train/validation accuracy per epoch
  OUT/metrics.jsonl       one JSON object per epoch
  OUT/model.tar.gz        with --export-mxnet: the model as SageMaker's MXNet
                          artifact (rectrain --export-mxnet --out OUT converts
                          an existing OUT without training)

stdout carries one JSON object per epoch (the same lines as metrics.jsonl);
SageMaker's log lines (`Epoch[0] Train-accuracy=...`,
`Epoch[0] Validation-accuracy=...`) go to stderr.";

const AFTER_LONG_HELP: &str = "\
Exit codes: 0 trained; 2 usage error, bad data or a diverging loss; 130
interrupted by Ctrl-C (the current step finishes and the resumable state is
saved: continue with --resume OUT).

A NaN or infinite loss stops the run before anything is saved, so OUT keeps
the last good epoch; --resume OUT continues from it. A resumed run may change
the optimizer's numbers (e.g. a lower --learning-rate), the epoch count,
checkpointing and early stopping, but not the model, data or optimizer kind.

Examples:
  rectrain --train train.rec --validation val.rec --out model/ \\
      --num-layers 18 --image-shape 3,224,224 --epochs 10 --mini-batch-size 64
  rectrain --train-lst data_train.lst --train-root images/ \\
      --validation-lst data_val.lst --validation-root images/ \\
      --resize 256 --out model/ --hyperparameters hyperparameters.json
  rectrain --train train.rec --validation val.rec --out ft/ --num-layers 18 \\
      --use-pretrained-model 1 --pretrained resnet18-f37072fd.pth
  rectrain --train train.rec --validation val.rec --out model/ --resume model/
  rectrain --train train.rec --validation val.rec --out more/ --num-layers 50 \\
      --num-classes 10 --model sagemaker-output/model.tar.gz";

/// Command-line options. Hyperparameters are taken as text and validated with
/// SageMaker's rules, like the strings of hyperparameters.json. A flag given twice
/// takes its last value, so a script can append overrides.
#[derive(Parser, Debug)]
#[command(
    name = "rectrain",
    version,
    about = "Train a ResNet image classifier from RecordIO with SageMaker's hyperparameters",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    args_override_self = true,
    allow_negative_numbers = true
)]
pub struct Opts {
    /// Training images: a .rec file (its .idx is used when it sits beside it).
    #[arg(
        long,
        value_name = "TRAIN.rec",
        required_unless_present_any = ["train_lst", "export_mxnet"],
        conflicts_with = "train_lst"
    )]
    train: Option<PathBuf>,
    /// Validation images: a .rec file.
    #[arg(
        long,
        value_name = "VAL.rec",
        required_unless_present_any = ["validation_lst", "export_mxnet"],
        conflicts_with = "validation_lst"
    )]
    validation: Option<PathBuf>,
    /// Training images as a .lst file (paths relative to --train-root).
    #[arg(long, value_name = "LST")]
    train_lst: Option<PathBuf>,
    /// Folder the --train-lst paths are relative to (default: the .lst's folder).
    #[arg(long, value_name = "DIR", requires = "train_lst")]
    train_root: Option<PathBuf>,
    /// Validation images as a .lst file (paths relative to --validation-root).
    #[arg(long, value_name = "LST")]
    validation_lst: Option<PathBuf>,
    /// Folder the --validation-lst paths are relative to (default: the .lst's folder).
    #[arg(long, value_name = "DIR", requires = "validation_lst")]
    validation_root: Option<PathBuf>,
    /// The artifact directory (created if needed).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
    /// Class names, one per line, line i naming label i (im2list's PREFIX.classes).
    /// Default: PREFIX.classes beside the training .lst or .rec, when it exists.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// SageMaker's hyperparameters.json (a JSON object of strings).
    #[arg(long, value_name = "FILE")]
    hyperparameters: Option<PathBuf>,

    /// The hyperparameters given as flags (made from `hparams::TABLE`).
    #[command(flatten)]
    hparam_flags: HyperparameterArgs,

    /// Pretrained weights: a torchvision ResNet .pth or .safetensors, or a model
    /// SageMaker trained (model.tar.gz: its network is trained, with a new classifier)
    /// (implies --use-pretrained-model 1). Nothing can be downloaded.
    #[arg(long, value_name = "PATH")]
    pretrained: Option<PathBuf>,
    /// With --pretrained: keep its final fully connected layer (same classes)
    /// instead of re-initialising it.
    #[arg(long, requires = "pretrained")]
    keep_head: bool,
    /// SageMaker's model channel (incremental training): a model.tar.gz of SageMaker's
    /// image classifier, or a folder or prefix with its -symbol.json and -NNNN.params,
    /// to train further. num_layers, image_shape and num_classes must be the model's.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["pretrained", "resume"]
    )]
    model: Option<PathBuf>,
    /// Seed of the initial weights, the shuffling and the augmentation.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// `--device` and `--precision-dtype` (SageMaker's precision_dtype), as recpredict
    /// has them.
    #[command(flatten)]
    device: DeviceArgs,
    /// Also write the artifact as a SageMaker-style MXNet model, OUT/model.tar.gz
    /// (image-classification-symbol.json, -NNNN.params, model-shapes.json; loadable by
    /// MXNet's mx.mod.Module.load and by recpredict -m OUT/model.tar.gz). Without
    /// training data: export the existing artifact in OUT and exit.
    #[arg(long)]
    export_mxnet: bool,
    /// Continue an interrupted run from OUT/checkpoints/last (give OUT or that folder).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// `--workers`, as recpredict has it.
    #[command(flatten)]
    workers: WorkersArgs,
    /// Act as if Ctrl-C came after N optimizer steps (for testing --resume).
    #[arg(long, value_name = "N", hide = true)]
    stop_after_steps: Option<usize>,
}

impl Opts {
    /// The hyperparameters given as flags, by SageMaker name: the hyperparameter flags
    /// and `--precision-dtype`.
    fn hyperparameter_flags(&self) -> RawHyperparameters {
        let mut raw = self.hparam_flags.0.clone();
        if let Some(precision) = self.device.precision_dtype {
            raw.insert(
                "precision_dtype".into(),
                hparams::precision_name(precision).into(),
            );
        }
        raw
    }
}

/// Candidate class-name sidecars for a `.lst`/`.rec` path: `<stem>.classes`, then the
/// prefix without im2list's `_train`/`_val`/`_test` and `_<chunk>` suffixes.
fn classes_candidates(input: &Path) -> Vec<PathBuf> {
    let Some(stem) = input.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let mut stems = vec![stem.clone()];
    let mut s = stem.as_str();
    for suffix in ["_train", "_val", "_test"] {
        if let Some(rest) = s.strip_suffix(suffix) {
            s = rest;
            stems.push(s.to_string());
            break;
        }
    }
    if let Some((head, tail)) = s.rsplit_once('_') {
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            stems.push(head.to_string());
        }
    }
    stems
        .into_iter()
        .map(|st| input.with_file_name(format!("{st}.classes")))
        .collect()
}

/// Read a `.classes` file: one name per line (a trailing empty line is ignored).
fn read_classes(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading class names from {}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    if names.is_empty() {
        bail!("{}: no class names", path.display());
    }
    Ok(names)
}

/// Run `rectrain` with parsed options: train, and say how the run ended.
pub fn run(opts: Opts) -> anyhow::Result<Outcome> {
    opts.device.switch_kernels();
    let training = opts.train.is_some() || opts.train_lst.is_some();
    if opts.export_mxnet && !training {
        if opts.validation.is_some() || opts.validation_lst.is_some() {
            bail!("--export-mxnet with validation data but no training data: give both, or neither to export OUT");
        }
        export_mxnet(&opts.out)?;
        return Ok(Outcome::Success);
    }
    let mut raw = match &opts.hyperparameters {
        Some(path) => hparams::read_hyperparameters_file(path)?,
        None => RawHyperparameters::new(),
    };
    raw.extend(opts.hyperparameter_flags());
    if opts.pretrained.is_some() {
        match raw.get("use_pretrained_model").map(|v| v.trim()) {
            Some(v) if v == "0" || v.eq_ignore_ascii_case("false") => {
                bail!("--pretrained was given but use_pretrained_model is 0: drop one of them")
            }
            _ => {
                raw.insert("use_pretrained_model".into(), "1".into());
            }
        }
    }
    let hparams = Hyperparameters::from_raw(&raw, |w| cli::warn(TOOL, w))?;
    let sagemaker =
        ResourceConfig::read(Path::new(ResourceConfig::PATH)).map_err(anyhow::Error::msg)?;
    let world = distributed::detect(&|name| std::env::var(name).ok(), sagemaker.as_ref())
        .map_err(anyhow::Error::msg)?;
    distributed::check_kv_store(hparams.kv_store.as_deref(), &world).map_err(anyhow::Error::msg)?;

    let train_src = match (&opts.train, &opts.train_lst) {
        (Some(rec), _) => DataSource::rec(rec.clone()),
        (None, Some(lst)) => DataSource::Lst {
            lst: lst.clone(),
            root: lst_root(lst, opts.train_root.clone()),
        },
        (None, None) => bail!("give the training data with --train or --train-lst"),
    };
    let val_src = match (&opts.validation, &opts.validation_lst) {
        (Some(rec), _) => DataSource::rec(rec.clone()),
        (None, Some(lst)) => DataSource::Lst {
            lst: lst.clone(),
            root: lst_root(lst, opts.validation_root.clone()),
        },
        (None, None) => bail!("give the validation data with --validation or --validation-lst"),
    };

    let classes_file = match &opts.classes {
        Some(path) => Some(path.clone()),
        None => {
            let found = classes_candidates(train_src.path())
                .into_iter()
                .find(|p| p.is_file());
            if let Some(path) = &found {
                cli::message(TOOL, format_args!("class names from {}", path.display()));
            }
            found
        }
    };
    let class_names = classes_file.as_deref().map(read_classes).transpose()?;

    let cfg = TrainConfig {
        hparams,
        train: train_src,
        validation: val_src,
        out: opts.out.clone(),
        class_names,
        classes_file,
        pretrained: opts.pretrained.clone(),
        keep_head: opts.keep_head,
        model: opts.model.clone(),
        seed: opts.seed,
        device: distributed::device_for_rank(opts.device.device.clone(), &world),
        resume: opts.resume.clone(),
        progress: io::stderr().is_terminal(),
        workers: opts.workers.threads(),
        stop_after_steps: opts.stop_after_steps,
        world: world.clone(),
    };

    // Several processes: join them now (MPI_Init); from here on an error on any rank
    // ends the whole job (MPI_Abort), so that no rank waits for it forever.
    let collective = if world.is_distributed() {
        Some(Arc::new(Collective::join(&world)?))
    } else {
        None
    };
    match train_and_report(&opts, cfg, collective.clone()) {
        Err(e) if !cli::is_broken_pipe(&e) => match &collective {
            Some(c) => c.abort(e.as_ref()),
            None => Err(e),
        },
        other => other,
    }
}

/// Prepare and run the training of `cfg`; with `--export-mxnet`, export the model (rank
/// 0, or the only process).
fn train_and_report(
    opts: &Opts,
    mut cfg: TrainConfig,
    collective: Option<Arc<Collective>>,
) -> anyhow::Result<Outcome> {
    let world = cfg.world.clone();
    // `--resume` on several ranks: rank 0's state, received by the others (kept here
    // for the run), so that only rank 0's machine needs it.
    let mut _received = None;
    if let (Some(c), Some(given)) = (&collective, &cfg.resume) {
        let shared = train::share_resume_state(c, given)?;
        cfg.resume = Some(shared.dir().to_path_buf());
        _received = Some(shared);
    }
    let prepared = train::prepare(cfg, |w| cli::warn(TOOL, w))?;

    // Ctrl-C: the first one asks the loop to stop after the current step; a second
    // one ends the process at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, interrupt.clone())
            .context("installing the Ctrl-C handler")?;
        signal_hook::flag::register(sig, interrupt.clone())
            .context("installing the Ctrl-C handler")?;
    }

    // Rank 0 (or the only process) prints the epochs on stdout; the other ranks print
    // nothing there, and their log lines say which rank they come from.
    let (mut data, mut log): (Box<dyn Write>, Box<dyn Write>) = if world.is_leader() {
        (Box::new(io::stdout().lock()), Box::new(io::stderr()))
    } else {
        (
            Box::new(io::sink()),
            Box::new(RankPrefixed::new(io::stderr(), world.rank)),
        )
    };
    let outcome = train::train(prepared, collective, &mut data, &mut log, interrupt)?;
    Ok(match outcome {
        TrainOutcome::Finished { .. } => {
            if opts.export_mxnet && world.is_leader() {
                export_mxnet(&opts.out)?;
            }
            Outcome::Success
        }
        TrainOutcome::Interrupted { .. } => Outcome::Interrupted,
    })
}

/// `--export-mxnet`: OUT/model.tar.gz from the artifact in OUT.
fn export_mxnet(out: &Path) -> anyhow::Result<()> {
    let tarball = out.join("model.tar.gz");
    let members = resnet::mxnet::export::export_tarball(out, &tarball)?;
    cli::message(
        TOOL,
        format_args!("wrote {} ({})", tarball.display(), members.join(", ")),
    );
    Ok(())
}

/// A writer that starts every line with `[rank N] ` (the log of a rank other than 0)
/// and hands each whole line to `inner` in one write, so that the lines of the ranks
/// sharing one stderr never cut into each other.
struct RankPrefixed<W: Write> {
    inner: W,
    prefix: String,
    line: Vec<u8>,
}

impl<W: Write> RankPrefixed<W> {
    fn new(inner: W, rank: usize) -> Self {
        RankPrefixed {
            inner,
            prefix: format!("[rank {rank}] "),
            line: Vec::new(),
        }
    }
}

impl<W: Write> Write for RankPrefixed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if self.line.is_empty() {
                self.line.extend_from_slice(self.prefix.as_bytes());
            }
            self.line.push(b);
            if b == b'\n' {
                self.inner.write_all(&self.line)?;
                self.line.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.inner.write_all(&self.line)?;
            self.line.clear();
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for RankPrefixed<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Opts::command().debug_assert();
    }

    #[test]
    fn flags_become_sagemaker_names() {
        let o = Opts::try_parse_from([
            "rectrain",
            "--train",
            "t.rec",
            "--validation",
            "v.rec",
            "--out",
            "o",
            "--num-layers",
            "18",
            "--lr-scheduler-step",
            "10, 20",
            "--early-stopping",
            "True",
        ])
        .unwrap();
        let raw = o.hyperparameter_flags();
        assert_eq!(raw.len(), 3);
        assert_eq!(raw["num_layers"], "18");
        assert_eq!(raw["lr_scheduler_step"], "10, 20");
        assert_eq!(raw["early_stopping"], "True");
    }

    #[test]
    fn every_hyperparameter_has_a_flag() {
        let cmd = Opts::command();
        for name in hparams::KNOWN_NAMES {
            let flag = name.replace('_', "-");
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(flag.as_str())),
                "--{flag} missing"
            );
        }
    }

    #[test]
    fn train_and_train_lst_conflict() {
        let r = Opts::try_parse_from([
            "rectrain",
            "--train",
            "t.rec",
            "--train-lst",
            "t.lst",
            "--validation",
            "v.rec",
            "--out",
            "o",
        ]);
        assert!(r.is_err());
        assert!(Opts::try_parse_from(["rectrain", "--validation", "v.rec", "--out", "o"]).is_err());
    }

    #[test]
    fn classes_sidecar_candidates() {
        let c = classes_candidates(Path::new("/d/cal_train.lst"));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/d/cal_train.classes"),
                PathBuf::from("/d/cal.classes")
            ]
        );
        let c = classes_candidates(Path::new("/d/cal_0_train.lst"));
        assert_eq!(c.last().unwrap(), &PathBuf::from("/d/cal.classes"));
        let c = classes_candidates(Path::new("x.rec"));
        assert_eq!(c, vec![PathBuf::from("x.classes")]);
    }
}
