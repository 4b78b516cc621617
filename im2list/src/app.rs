//! The `im2list` command line (also `im2rec --list`): make MXNet `.lst` image lists,
//! byte-identical to `im2rec.py --list`.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

use crate::list::{self, Config, Output};
use crate::pypath;
use tool_cli::{self as cli, Outcome};

const TOOL: &str = "im2list";

const LONG_ABOUT: &str = "\
Make MXNet .lst image lists from a folder of images: a drop-in for
`im2rec.py --list PREFIX ROOT` (MXNet 1.9.1) whose lists are byte-identical,
shuffle, splits and chunks included.

Each row is `index<TAB>label<TAB>path`, the path relative to ROOT. Without
--recursive, the images directly in ROOT are listed with label 0. With
--recursive, every folder with images is a class, numbered in sorted walk
order (ROOT itself is `.` when it holds images).

Outputs, beside the absolute PREFIX (so `out/` writes `out.lst`):
  PREFIX.lst                         default (--train-ratio 1.0)
  PREFIX_train.lst, _val, _test      with --train-ratio below 1.0
  PREFIX_0.lst, PREFIX_0_train.lst   with --chunks 2 or more
  PREFIX.classes                     class names, line i = label i (not made
                                     by im2rec.py; see --classes)

Differences from im2rec.py: the `dir label` lines of --recursive go to
stderr, not stdout; ROOT without images is an error instead of empty lists;
a path with a TAB or newline is an error (it would corrupt the list); names
that are not UTF-8, symlink loops and unreadable folders are skipped with a
warning (exit code 1) where im2rec.py crashes, loops or stays silent.";

const AFTER_LONG_HELP: &str = "\
Exit codes: 0 success; 1 lists written but some files were skipped (each
named on stderr); 2 usage or fatal error.

Examples:
  im2list --recursive data/caltech images/
  im2list --recursive --train-ratio 0.8 --test-ratio 0.1 data/cal images/
  im2list --recursive --chunks 4 --no-shuffle data/part images/
  im2list --recursive - images/ | im2rec - images/ -o train.rec";

/// Command-line options, named and defaulted like im2rec.py's list mode.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
    about = "Make MXNet .lst image lists from a folder of images, byte-identical to im2rec.py --list",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    infer_long_args = true,
)]
struct Opts {
    /// Output prefix (`-`: one list to stdout)
    ///
    /// The lists are named PREFIX.lst, PREFIX_train.lst and so on, after
    /// os.path.abspath(PREFIX), as im2rec.py names them. With `-` the single list
    /// goes to stdout (not allowed with --chunks or --train-ratio) and no
    /// class file is written unless --classes names one.
    #[arg(value_name = "PREFIX")]
    prefix: OsString,

    /// Folder holding the images
    #[arg(value_name = "ROOT")]
    root: PathBuf,

    /// Walk subfolders; each folder with images becomes a class
    ///
    /// Folders are walked in sorted order, each folder's files before its
    /// subfolders; a folder takes the next label when its first image is met.
    /// Symlinks are followed. Prints `folder label` lines on stderr.
    #[arg(long)]
    recursive: bool,

    /// Accepted extensions, matched against the lower-cased file suffix
    ///
    /// Takes one or more values; put PREFIX and ROOT first, or end the list with
    /// `--`. The values themselves are not lower-cased: `--exts .JPG` matches nothing.
    #[arg(long, num_args = 1.., value_name = "EXT", default_values = [".jpeg", ".jpg", ".png"])]
    exts: Vec<String>,

    /// Number of chunks, each with its own set of lists
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_chunks)]
    chunks: usize,

    /// Share of each chunk for PREFIX_train.lst (1.0: one PREFIX.lst)
    ///
    /// The rest goes to PREFIX_val.lst when train + test ratios sum below 1.0.
    /// Sizes are int(chunk_size * ratio), as in im2rec.py.
    #[arg(
        long,
        value_name = "RATIO",
        default_value = "1.0",
        value_parser = parse_ratio,
        allow_negative_numbers = true
    )]
    train_ratio: f64,

    /// Share of each chunk for PREFIX_test.lst (ignored when --train-ratio is 1.0)
    #[arg(
        long,
        value_name = "RATIO",
        default_value = "0",
        value_parser = parse_ratio,
        allow_negative_numbers = true
    )]
    test_ratio: f64,

    /// Shuffle the list before splitting (the default)
    #[arg(long, overrides_with = "no_shuffle")]
    shuffle: bool,

    /// Keep the walk order
    #[arg(long, overrides_with = "shuffle")]
    no_shuffle: bool,

    /// Shuffle seed, as Python's random.seed(N); im2rec.py always uses 100
    #[arg(long, value_name = "N", default_value_t = 100)]
    seed: u64,

    /// Write the class names here instead of PREFIX.classes
    ///
    /// One folder name per line, line i for label i (`.` is ROOT itself). With
    /// PREFIX `-` no class file is written unless this is given.
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,

    /// Accepted and ignored, so `im2rec.py --list` command lines work unchanged
    #[arg(long)]
    list: bool,
}

/// Python's `int()` on a command-line string: surrounding whitespace and `_` between
/// digits are allowed.
fn py_number_text(text: &str) -> Result<String, String> {
    let t = text.trim();
    let b = t.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_'
            && !(i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            return Err(format!("invalid number {text:?}"));
        }
    }
    Ok(t.replace('_', ""))
}

fn parse_chunks(text: &str) -> Result<usize, String> {
    let t = py_number_text(text)?;
    let n: i128 = t.parse().map_err(|_| format!("invalid integer {text:?}"))?;
    if n < 1 {
        return Err("must be at least 1".into());
    }
    usize::try_from(n).map_err(|_| format!("{text} is too large"))
}

/// Python's `float()`; non-finite values are refused, since im2rec.py cannot use them
/// either (`int(nan)` raises).
fn parse_ratio(text: &str) -> Result<f64, String> {
    let t = py_number_text(text)?;
    let x: f64 = t.parse().map_err(|_| format!("invalid number {text:?}"))?;
    if !x.is_finite() {
        return Err("must be a finite number".into());
    }
    Ok(x)
}

impl Opts {
    fn into_config(self) -> anyhow::Result<Config> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let to_stdout = self.prefix == "-";
        let output = if to_stdout {
            if self.chunks != 1 || self.train_ratio != 1.0 {
                bail!(
                    "PREFIX `-` writes one list to stdout; it cannot be combined with \
                     --chunks above 1 or --train-ratio other than 1.0"
                );
            }
            Output::Stdout
        } else {
            Output::Files {
                prefix: pypath::abspath_in(self.prefix.as_ref(), &cwd),
            }
        };
        let classes = match (&self.classes, &output) {
            (Some(path), _) if path.as_os_str() == "-" => {
                bail!("--classes cannot be `-`: stdout is for list data only")
            }
            (Some(path), _) => Some(path.clone()),
            (None, Output::Stdout) => None,
            (None, Output::Files { prefix }) => {
                let mut name = prefix.as_os_str().to_owned();
                name.push(".classes");
                Some(PathBuf::from(name))
            }
        };
        Ok(Config {
            root_abs: pypath::abspath_in(&self.root, &cwd),
            root: self.root,
            output,
            classes,
            recursive: self.recursive,
            exts: self.exts,
            chunks: self.chunks,
            train_ratio: self.train_ratio,
            test_ratio: self.test_ratio,
            shuffle_seed: (!self.no_shuffle).then_some(self.seed),
        })
    }
}

fn run(opts: Opts) -> anyhow::Result<Outcome> {
    let config = opts.into_config()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let summary = list::make_lists(&config, &mut out, &mut io::stderr(), &mut |skipped| {
        cli::warn(TOOL, skipped)
    })?;
    if summary.skipped > 0 {
        cli::message(
            TOOL,
            format_args!(
                "{} item(s) skipped; the lists hold the other {} image(s)",
                summary.skipped, summary.images
            ),
        );
    }
    Ok(Outcome::from_failures(summary.skipped))
}

/// Run `im2list` with these arguments (the first is the program name) and return
/// its exit code; `--help`, `--version` and usage errors exit the process as clap does.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let opts = Opts::parse_from(args);
    cli::run(TOOL, || run(opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Opts, clap::Error> {
        Opts::try_parse_from(std::iter::once("im2list").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_valid() {
        Opts::command().debug_assert();
    }

    #[test]
    fn defaults_match_im2rec_py() {
        let o = parse(&["p", "r"]).unwrap();
        assert_eq!(o.exts, [".jpeg", ".jpg", ".png"]);
        assert_eq!((o.chunks, o.train_ratio, o.test_ratio), (1, 1.0, 0.0));
        assert!(!o.recursive && !o.no_shuffle && o.seed == 100);
    }

    #[test]
    fn im2rec_py_command_lines_parse() {
        let o = parse(&[
            "--list",
            "--recursive",
            "--no-shuffle",
            "--train-ratio",
            "0.8",
            "--test-ratio",
            "-0.1",
            "p",
            "r",
            "--exts",
            ".png",
            ".JPG",
        ])
        .unwrap();
        assert!(o.list && o.recursive && o.no_shuffle);
        assert_eq!((o.train_ratio, o.test_ratio), (0.8, -0.1));
        assert_eq!(o.exts, [".png", ".JPG"]);
        // argparse accepts unique prefixes of long options; so do we.
        let o = parse(&["--rec", "--train", "0.5", "--no-sh", "p", "r"]).unwrap();
        assert!(o.recursive && o.no_shuffle && o.train_ratio == 0.5);
        // The last of --shuffle / --no-shuffle wins.
        assert!(
            !parse(&["--no-shuffle", "--shuffle", "p", "r"])
                .unwrap()
                .no_shuffle
        );
        assert!(
            parse(&["--shuffle", "--no-shuffle", "p", "r"])
                .unwrap()
                .no_shuffle
        );
    }

    #[test]
    fn numbers_parse_like_python() {
        assert_eq!(parse_ratio(" 0.5 "), Ok(0.5));
        assert_eq!(parse_ratio("1_0.2_5"), Ok(10.25));
        assert_eq!(parse_ratio("1e-1"), Ok(0.1));
        assert!(parse_ratio("nan").is_err());
        assert!(parse_ratio("inf").is_err());
        assert!(parse_ratio("_1").is_err());
        assert!(parse_ratio("1__0").is_err());
        assert_eq!(parse_chunks("1_0"), Ok(10));
        assert_eq!(parse_chunks("+3"), Ok(3));
        assert!(parse_chunks("0").is_err());
        assert!(parse_chunks("-2").is_err());
        assert!(parse_chunks("2.0").is_err());
    }

    #[test]
    fn stdout_prefix_refuses_splits() {
        let err = parse(&["--chunks", "2", "-", "r"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("PREFIX `-`"), "{err}");
        let err = parse(&["--train-ratio", "0.5", "-", "r"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("PREFIX `-`"), "{err}");
        // te alone is ignored by im2rec.py when tr == 1.0, so it is fine here.
        let c = parse(&["--test-ratio", "0.5", "-", "r"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!((c.output, c.classes), (Output::Stdout, None));
    }

    #[test]
    fn classes_sidecar_sits_beside_the_absolute_prefix() {
        let c = parse(&["/tmp/x/out/", "r"]).unwrap().into_config().unwrap();
        assert_eq!(c.classes, Some(PathBuf::from("/tmp/x/out.classes")));
        let c = parse(&["--classes", "names.txt", "/tmp/p", "r"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.classes, Some(PathBuf::from("names.txt")));
        assert!(parse(&["--classes", "-", "p", "r"])
            .unwrap()
            .into_config()
            .is_err());
    }
}
