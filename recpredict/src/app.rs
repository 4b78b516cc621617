//! `recpredict`'s command line: the options, their checks, and the run they start.
//! `main.rs` parses and calls [`run`].

use std::ffi::OsString;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::serve::{self, ServeConfig};
use crate::{Config, InputSpec, OutputMode};
use anyhow::Context;
use clap::Parser;
use resnet::cli::{lst_root, DeviceArgs, WorkersArgs};
use resnet::preprocess::EvalMode;
use tool_cli::{self as cli, Outcome};

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
  recpredict -m model/ --squash --serve 127.0.0.1:8080  SageMaker's endpoint over HTTP
  curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' localhost:8080/invocations
  recpredict serve                                    a SageMaker container's entry: the
                                                      model in /opt/ml/model, port 8080

Exit codes: 0 all predicted (or the server stopped on SIGTERM/SIGINT); 1 some inputs
failed (error lines, named on stderr); 2 usage or fatal error (model missing or
incompatible, unreadable list, address in use).";

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

    /// Serve the model over HTTP by SageMaker's inference contract instead of reading
    /// inputs: GET /ping, POST /invocations with one image (image/jpeg, image/png,
    /// application/x-image); the answer by Accept: application/json (default) a bare
    /// array of probabilities, application/jsonlines {"prediction": [...]},
    /// application/vnd.recpredict+json the JSON line of batch mode. Port 0 picks a free
    /// port; the address is printed on stderr. SIGTERM/SIGINT finish the requests in
    /// flight and exit 0.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = serve::DEFAULT_ADDR,
        conflicts_with_all = ["inputs", "lst", "rec", "output_dir", "evaluate", "sagemaker", "line_buffered", "timings"],
        help = "Serve SageMaker's HTTP endpoint on ADDR [default: 0.0.0.0:8080]"
    )]
    serve: Option<String>,

    /// How long a batch waits for more concurrent requests after its first one
    /// (milliseconds). It waits only while other requests are being decoded, so a
    /// lone request is never delayed.
    #[arg(
        long,
        value_name = "MS",
        requires = "serve",
        value_parser = non_negative,
        help = "Dynamic batching: wait at most MS for more requests [default: 5]"
    )]
    max_batch_delay: Option<f64>,

    /// The largest request body accepted, in MiB (SageMaker's MaxPayloadInMB);
    /// larger bodies get 413.
    #[arg(
        long,
        value_name = "MB",
        requires = "serve",
        value_parser = positive,
        help = "Request body limit in MiB (413 above) [default: 6]"
    )]
    max_payload_mb: Option<f64>,

    /// Requests served at once (being decoded, waiting for the model or in it); one
    /// more is answered 503 at once instead of queueing without bound.
    #[arg(
        long,
        value_name = "N",
        requires = "serve",
        value_parser = clap::value_parser!(u32).range(1..),
        help = "Requests in flight at most (503 above) [default: 256]"
    )]
    queue_size: Option<u32>,

    /// How long a client may take to send a request's headers; a slower one (or one that
    /// stops half-way) has its connection closed.
    #[arg(
        long,
        value_name = "SECS",
        requires = "serve",
        value_parser = positive,
        help = "Close connections whose request headers take longer [default: 10]"
    )]
    header_timeout: Option<f64>,

    /// How long a client may take to send a request's body (a body shorter than its
    /// Content-Length waits at most this); then 408 and the connection is closed.
    #[arg(
        long,
        value_name = "SECS",
        requires = "serve",
        value_parser = positive,
        help = "Answer 408 to bodies that take longer [default: 60]"
    )]
    body_timeout: Option<f64>,

    /// Open connections at most; further clients wait in the listen queue until one
    /// closes.
    #[arg(
        long,
        value_name = "N",
        requires = "serve",
        value_parser = clap::value_parser!(u32).range(1..),
        help = "Open connections at most [default: 1024]"
    )]
    max_connections: Option<u32>,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of 0 or more")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1_048_576.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number above 0 (at most 1048576)")),
    }
}

/// The command line, with SageMaker's container entry: when the first argument is
/// exactly `serve` (SageMaker starts inference containers as `<image> serve`), it is
/// `--serve 0.0.0.0:$SAGEMAKER_BIND_TO_PORT` (default 8080) `--model $SM_MODEL_DIR`
/// (default `/opt/ml/model`) `--squash` (the endpoint's resize), each unless given
/// after it. A file named `serve` is `./serve`.
pub fn args_with_sagemaker_entry(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    sagemaker_entry(args, |name| std::env::var(name).ok())
}

/// [`args_with_sagemaker_entry`] with the environment as a function.
fn sagemaker_entry(
    args: impl IntoIterator<Item = OsString>,
    getenv: impl Fn(&str) -> Option<String>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_none_or(|a| a != "serve") {
        return args;
    }
    let rest = args.split_off(2);
    args.truncate(1);
    let given = |long: &str, short: Option<&str>| {
        rest.iter().filter_map(|a| a.to_str()).any(|a| {
            a == long
                || a.strip_prefix(long).is_some_and(|v| v.starts_with('='))
                || short.is_some_and(|s| a.starts_with(s))
        })
    };
    let env = |name: &str, default: &str| {
        getenv(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    if !given("--model", Some("-m")) {
        args.push("--model".into());
        args.push(env("SM_MODEL_DIR", "/opt/ml/model").into());
    }
    if !given("--serve", None) {
        args.push(format!("--serve=0.0.0.0:{}", env("SAGEMAKER_BIND_TO_PORT", "8080")).into());
    }
    if !given("--squash", None) {
        args.push("--squash".into());
    }
    args.extend(rest);
    args
}

impl Opts {
    /// With `--serve`: the server's [`ServeConfig`].
    pub fn serve_config(&self) -> Option<ServeConfig> {
        let addr = self.serve.clone()?;
        Some(ServeConfig {
            model_dir: self.model.clone(),
            addr,
            eval_mode: self.eval_mode(),
            batch_size: self.batch_size,
            max_delay: Duration::from_secs_f64(
                self.max_batch_delay
                    .unwrap_or(serve::DEFAULT_MAX_BATCH_DELAY_MS)
                    / 1000.0,
            ),
            max_payload: (self.max_payload_mb.unwrap_or(serve::DEFAULT_MAX_PAYLOAD_MB)
                * 1024.0
                * 1024.0) as usize,
            queue_size: self.queue_size.unwrap_or(serve::DEFAULT_QUEUE_SIZE) as usize,
            workers: self.workers.threads(),
            device: self.device.device.clone(),
            precision: self.device.precision(),
            top_k: self.top_k,
            header_timeout: Duration::from_secs_f64(
                self.header_timeout
                    .unwrap_or(serve::DEFAULT_HEADER_TIMEOUT_S),
            ),
            body_timeout: Duration::from_secs_f64(
                self.body_timeout.unwrap_or(serve::DEFAULT_BODY_TIMEOUT_S),
            ),
            max_connections: self
                .max_connections
                .unwrap_or(serve::DEFAULT_MAX_CONNECTIONS) as usize,
        })
    }

    fn eval_mode(&self) -> EvalMode {
        if self.squash {
            EvalMode::Squash
        } else {
            EvalMode::ResizeCrop
        }
    }

    /// Check the options and turn them into the library's [`Config`].
    pub fn into_config(self) -> anyhow::Result<Config> {
        for (given, flag) in [
            (self.max_batch_delay.is_some(), "--max-batch-delay"),
            (self.max_payload_mb.is_some(), "--max-payload-mb"),
            (self.queue_size.is_some(), "--queue-size"),
            (self.header_timeout.is_some(), "--header-timeout"),
            (self.body_timeout.is_some(), "--body-timeout"),
            (self.max_connections.is_some(), "--max-connections"),
        ] {
            if given {
                anyhow::bail!("{flag} is an option of --serve");
            }
        }
        let eval_mode = self.eval_mode();
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
            eval_mode,
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
    opts.device.switch_kernels();
    if let Some(cfg) = opts.serve_config() {
        serve::serve(&cfg)?;
        return Ok(Outcome::Success);
    }
    let cfg = opts.into_config()?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut diag = io::stderr();
    let stdin = Box::new(io::BufReader::new(io::stdin()));
    let report = crate::run(&cfg, stdin, &mut out, &mut diag)?;
    out.flush().context("writing to stdout")?;
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

    #[test]
    fn serve_takes_an_optional_address_and_excludes_batch_inputs() {
        let cfg = |args: &[&str]| -> anyhow::Result<Option<ServeConfig>> {
            let o = Opts::try_parse_from(["recpredict", "-m", "m"].iter().chain(args))?;
            match o.serve_config() {
                Some(c) => Ok(Some(c)),
                None => o.into_config().map(|_| None),
            }
        };
        let c = cfg(&["--serve"]).unwrap().unwrap();
        assert_eq!(c.addr, "0.0.0.0:8080");
        assert_eq!(c.max_payload, 6 * 1024 * 1024);
        assert_eq!(c.max_delay, Duration::from_millis(5));
        assert_eq!(c.queue_size, 256);
        let c = cfg(&[
            "--serve",
            "127.0.0.1:0",
            "--max-batch-delay",
            "0",
            "--max-payload-mb",
            "0.5",
            "--queue-size",
            "3",
            "--squash",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                c.addr.as_str(),
                c.max_delay,
                c.max_payload,
                c.queue_size,
                c.eval_mode
            ),
            (
                "127.0.0.1:0",
                Duration::ZERO,
                512 * 1024,
                3,
                EvalMode::Squash
            )
        );
        assert!(cfg(&["a.jpg"]).unwrap().is_none());
        for bad in [
            &["--serve", "a.jpg"][..],
            &["--serve", "x:1", "--rec", "r.rec"],
            &["--serve", "x:1", "--evaluate"],
            &["--serve", "x:1", "--sagemaker"],
            &["--max-batch-delay", "3", "a.jpg"],
            &["--serve", "x:1", "--max-payload-mb", "0"],
            &["--serve", "x:1", "--queue-size", "0"],
            &["--serve", "x:1", "--max-batch-delay", "-1"],
        ] {
            // `--serve a.jpg` takes a.jpg as the address; the others conflict or are out
            // of range.
            let r = cfg(bad);
            assert!(
                r.is_err() || bad == ["--serve", "a.jpg"],
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn serve_as_first_argument_is_sagemakers_container_entry() {
        let args = |a: &[&str]| -> Vec<String> {
            args_with_sagemaker_entry(a.iter().map(OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        // Not the entry: unchanged.
        assert_eq!(
            args(&["recpredict", "-m", "m", "serve"]),
            ["recpredict", "-m", "m", "serve"]
        );
        let entry = args(&["recpredict", "serve"]);
        assert_eq!(&entry[..2], ["recpredict", "--model"]);
        assert!(entry.contains(&"--squash".to_string()));
        assert!(entry.iter().any(|a| a.starts_with("--serve=0.0.0.0:")));
        // Given options win over the entry's defaults.
        assert_eq!(
            args(&[
                "recpredict",
                "serve",
                "-m",
                "d",
                "--serve",
                "127.0.0.1:9",
                "--squash"
            ]),
            [
                "recpredict",
                "-m",
                "d",
                "--serve",
                "127.0.0.1:9",
                "--squash"
            ]
        );
        // SageMaker's environment.
        let env = |name: &str| match name {
            "SM_MODEL_DIR" => Some("/sm/model".to_string()),
            "SAGEMAKER_BIND_TO_PORT" => Some("9090".to_string()),
            _ => None,
        };
        let entry: Vec<OsString> =
            sagemaker_entry(["recpredict", "serve"].map(OsString::from), env);
        assert_eq!(
            entry,
            [
                "recpredict",
                "--model",
                "/sm/model",
                "--serve=0.0.0.0:9090",
                "--squash"
            ]
        );
        let entry = sagemaker_entry(["recpredict", "serve"].map(OsString::from), |_| None);
        assert_eq!(
            entry,
            [
                "recpredict",
                "--model",
                "/opt/ml/model",
                "--serve=0.0.0.0:8080",
                "--squash"
            ]
        );
        let o = Opts::try_parse_from(args(&["recpredict", "serve", "--model=d"])).unwrap();
        let c = o.serve_config().unwrap();
        assert_eq!(c.model_dir, PathBuf::from("d"));
        assert_eq!(c.eval_mode, EvalMode::Squash);
    }
}
