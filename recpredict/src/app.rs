//! `recpredict`'s command line: the options, their checks, and the run they start.
//! `main.rs` parses and calls [`run`].

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use crate::{Config, InputSpec, OutputMode};
use anyhow::Context;
use clap::Parser;
use im2list::cli::{self, Outcome};
use rectrain::cli::{lst_root, DeviceArgs, WorkersArgs};
use rectrain::preprocess::EvalMode;

/// The tool's name in messages.
pub const TOOL: &str = "recpredict";

const EXAMPLES: &str = "\
Examples:
  recpredict -m model/ photo.jpg photos/            files and directories (recursive)
  find . -name '*.jpg' | recpredict -m model/ -       paths on stdin
  recpredict -m model/ --rec val.rec --evaluate       records; summary line last
  recpredict -m model/ --lst val.lst --root imgs/ --evaluate | jq 'select(.type)'
  recpredict -m model/ --lst imgs/val.lst            .lst paths relative to imgs/
  recpredict -m model/ --sagemaker imgs/              {\"prediction\": [...]} lines
  recpredict -m model/ --output-dir out/ imgs/        out/<name>.out like batch transform

Exit codes: 0 all predicted; 1 some inputs failed (error lines, named on stderr);
2 usage or fatal error (model missing or incompatible, unreadable list).";

/// Predict the class of images with a model trained by `rectrain`, printing one
/// JSON object per image on stdout (input order).
///
/// Output fields: "path" (or "id" for records), "prediction" (every class's
/// probability), "class", "label", "probability", "top_k", and "true_class" for
/// .lst/.rec input. An image that cannot be read gets a line with "error" instead
/// of probabilities. With --evaluate, a last line {"type":"summary",...} follows.
#[derive(Debug, Parser)]
#[command(name = "recpredict", version, after_help = EXAMPLES)]
pub struct Opts {
    /// The model: the directory written by `rectrain --out` (config.json and
    /// model.safetensors), or an MXNet checkpoint such as SageMaker's model.tar.gz: the
    /// tarball, a directory or prefix of NAME-symbol.json + NAME-NNNN.params (the
    /// highest NNNN), or one NAME-NNNN.params file. MXNet models are fed the SageMaker
    /// endpoint's preprocessing (squashed to H×W, raw 0–255 RGB).
    #[arg(
        short,
        long,
        value_name = "PATH",
        help = "Model artifact directory, or MXNet model.tar.gz / checkpoint prefix"
    )]
    model: PathBuf,

    /// Image files, directories (walked recursively in sorted order, taking .jpg,
    /// .jpeg and .png files) and `-` (read one path per line from stdin).
    #[arg(value_name = "INPUT", conflicts_with_all = ["lst", "rec"])]
    inputs: Vec<PathBuf>,

    /// A .lst file (index, label(s), path); the labels become "true_class".
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "rec",
        help = "Predict the images of a .lst"
    )]
    lst: Option<PathBuf>,

    /// The directory the .lst paths are relative to (default: the .lst's folder).
    #[arg(
        long,
        value_name = "DIR",
        requires = "lst",
        help = "Image root of --lst (default: the .lst's folder)"
    )]
    root: Option<PathBuf>,

    /// A RecordIO file written by im2rec; its .idx is used when given or found next
    /// to it (`<stem>.idx`), else the records are found by scanning.
    #[arg(long, value_name = "FILE", help = "Predict the records of a .rec")]
    rec: Option<PathBuf>,

    /// The .idx of --rec (default: `<stem>.idx` when it exists).
    #[arg(long, value_name = "FILE", requires = "rec", help = "Index of --rec")]
    idx: Option<PathBuf>,

    /// How many of the most probable classes each line lists in "top_k" (and the k
    /// of the summary's top_k_accuracy). Default: 5, or the class count if smaller.
    #[arg(long, value_name = "N", help = "Length of the top_k list")]
    top_k: Option<usize>,

    /// Print exactly SageMaker's JSON Lines response, {"prediction": [...]}, per
    /// image (a failed image prints {"error": "..."}, keeping one line per input).
    #[arg(
        long,
        conflicts_with_all = ["output_dir", "evaluate"],
        help = "Print {\"prediction\": [...]} lines like a SageMaker endpoint"
    )]
    sagemaker: bool,

    /// Write one file per image, `DIR/<input file name>.out`, holding
    /// {"prediction": [...]} like a SageMaker batch transform; print nothing on
    /// stdout (except the --evaluate summary). Records are named `<id>.out`; files
    /// under a directory argument, and .lst rows, keep their relative path.
    #[arg(
        long,
        value_name = "DIR",
        help = "Write <name>.out files instead of stdout"
    )]
    output_dir: Option<PathBuf>,

    /// Resize every image to exactly the model's H×W, ignoring its aspect ratio, as
    /// the SageMaker endpoint does. The default repeats training's validation
    /// preprocessing: shorter side to `resize`, then the centred H×W crop.
    #[arg(long, help = "Resize to H×W ignoring aspect (SageMaker endpoint)")]
    squash: bool,

    /// Add a summary line (accuracy, top-k accuracy, per-class precision/recall,
    /// confusion matrix) after the predictions; needs --lst or --rec. For a
    /// multi-label model: per-class and micro/macro precision/recall/F1 at
    /// probability > 0.5, exact-match accuracy and Hamming loss (labels: one 0/1
    /// column per class). When stderr is a terminal the summary is also printed
    /// there as a table.
    #[arg(long, help = "Print an accuracy summary line (needs --lst or --rec)")]
    evaluate: bool,

    /// Images per model call.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        help = "Images per batch"
    )]
    batch_size: usize,

    /// `--device` and `--precision-dtype`, as rectrain has them.
    #[command(flatten)]
    device: DeviceArgs,

    /// `--workers`, as rectrain has it.
    #[command(flatten)]
    workers: WorkersArgs,

    /// Flush stdout after every line, not only after every batch (it is always
    /// line-buffered on a terminal).
    #[arg(long, help = "Flush after every line")]
    line_buffered: bool,

    /// Print on stderr where the time went: model load, decode+preprocess, model,
    /// output, and images per second.
    #[arg(long, help = "Print a timing breakdown on stderr")]
    timings: bool,
}

impl Opts {
    /// Check the options and turn them into the library's [`Config`].
    pub fn into_config(self) -> anyhow::Result<Config> {
        let input = if let Some(lst) = self.lst {
            InputSpec::Lst {
                root: lst_root(&lst, self.root),
                lst,
            }
        } else if let Some(rec) = self.rec {
            let idx = self.idx.or_else(|| {
                let idx = crate::input::default_idx(&rec);
                idx.is_file().then_some(idx)
            });
            InputSpec::Rec { rec, idx }
        } else if self.inputs.is_empty() {
            anyhow::bail!(
                "no input: give image files or directories, `-` for stdin, --lst or --rec"
            );
        } else {
            if self.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
                anyhow::bail!("`-` (stdin) may be given only once");
            }
            InputSpec::Paths(self.inputs)
        };
        let output = match (self.sagemaker, self.output_dir) {
            (true, _) => OutputMode::SageMaker,
            (false, Some(dir)) => OutputMode::Dir(dir),
            (false, None) => OutputMode::JsonLines,
        };
        Ok(Config {
            model_dir: self.model,
            input,
            output,
            eval_mode: if self.squash {
                EvalMode::Squash
            } else {
                EvalMode::ResizeCrop
            },
            batch_size: self.batch_size,
            workers: self.workers.threads(),
            prefetch_batches: 2,
            precision: self.device.precision(),
            device: self.device.device,
            top_k: self.top_k,
            evaluate: self.evaluate,
            table: self.evaluate && io::stderr().is_terminal(),
            timings: self.timings,
            line_buffered: self.line_buffered || io::stdout().is_terminal(),
        })
    }
}

/// Run `recpredict` with parsed options: predict every input, print the lines, and say
/// whether some inputs failed.
pub fn run(opts: Opts) -> anyhow::Result<Outcome> {
    let cfg = opts.into_config()?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut diag = io::stderr();
    let stdin = Box::new(io::BufReader::new(io::stdin()));
    let report = crate::run(&cfg, stdin, &mut out, &mut diag)?;
    out.flush().context("writing the output")?;
    if report.failed > 0 {
        cli::message(
            TOOL,
            format_args!(
                "{} of {} inputs failed",
                report.failed,
                report.predicted + report.failed
            ),
        );
    }
    Ok(Outcome::from_failures(report.failed as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Opts::command().debug_assert();
    }

    #[test]
    fn inputs_are_exclusive() {
        assert!(
            Opts::try_parse_from(["recpredict", "-m", "m", "a.jpg", "--rec", "x.rec"]).is_err()
        );
        assert!(Opts::try_parse_from(["recpredict", "-m", "m", "--root", "r"]).is_err());
        assert!(Opts::try_parse_from([
            "recpredict",
            "-m",
            "m",
            "--sagemaker",
            "--output-dir",
            "o",
            "a"
        ])
        .is_err());
        let o = Opts::try_parse_from(["recpredict", "-m", "m", "--rec", "/nonexistent/x.rec"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            o.input,
            InputSpec::Rec {
                rec: "/nonexistent/x.rec".into(),
                idx: None
            }
        );
        // Without --root, a .lst's paths are relative to its folder.
        for (args, root) in [
            (&["--lst", "d/x.lst"][..], "d"),
            (&["--lst", "x.lst"][..], "."),
            (&["--lst", "d/x.lst", "--root", "r"][..], "r"),
        ] {
            let o = Opts::try_parse_from(["recpredict", "-m", "m"].iter().chain(args))
                .unwrap()
                .into_config()
                .unwrap();
            assert_eq!(
                o.input,
                InputSpec::Lst {
                    lst: args[1].into(),
                    root: root.into()
                }
            );
        }
        let err = Opts::try_parse_from(["recpredict", "-m", "m"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("no input"), "{err}");
    }
}
