//! `im2rec`'s command line and run: pack the images of MXNet `.lst` files into
//! RecordIO `.rec` + `.idx`, a drop-in for `im2rec.py PREFIX ROOT` (pack mode), in
//! parallel; `--list` hands over to im2list's, `--inspect` prints a `.rec` as JSON lines.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::builder::TypedValueParser;
use clap::Parser;

use crate::imageops::{ColorMode, Encoding, Interpolation};
use crate::inspect;
use crate::pack::{self, PackConfig, PackError, PackStats};
use im2list::pypath;
use tool_cli::{self as cli, Outcome};

const TOOL: &str = "im2rec";

const LONG_ABOUT: &str = "\
Pack the images listed in MXNet .lst files into RecordIO (.rec + .idx): a
drop-in for `im2rec.py PREFIX ROOT` (MXNet 1.9.1, pack mode), records
readable by mx.recordio, ImageRecordIter and SageMaker.

Which lists: PREFIX is made absolute; if it is a folder, that folder is the
working folder, else its parent is. Every regular file there whose path
starts with PREFIX and ends in .lst is packed (`data/cal` packs cal.lst,
cal_train.lst, cal_val.lst...), each into <list name>.rec and <list
name>.idx in the working folder. PREFIX `-` reads one list from stdin and
writes to --output.

Each record is an IRHeader (flag, label, id = the list's index column,
id2 = 0), the labels when --pack-label, and the image: re-encoded after the
optional --center-crop and --resize, or the file's own bytes with
--pass-through. Records are in list order whatever --num-thread is; the
.idx holds `index<TAB>offset` lines.

Images: JPEG (arithmetic-coded, CMYK and RGB-colourspace included), PNG,
WebP, BMP, TIFF and PPM/PGM/PBM, recognised by content whatever the name;
GIF is refused, as by im2rec.py. EXIF orientation is applied to JPEGs and
PNGs with --color 1 and 0, as OpenCV does. im2rec.py's list-mode options
(--recursive, --no-shuffle, --exts, --chunks, --train-ratio, --test-ratio)
are accepted and ignored, with a note; unambiguous prefixes of long options
work (--res 256), as with argparse.

Differences from im2rec.py: images that cannot be read or decoded are
skipped with one line on stderr each and a final count (im2rec.py crashes
with one thread); a truncated JPEG is skipped, where OpenCV pads it with
grey and im2rec.py packs it (a JPEG missing only its final EOI marker is
packed); records of 2^29 bytes or more (too large for RecordIO) and resizes
beyond 2^28 pixels are skipped; malformed list rows, and rows that are not
UTF-8, are reported with their line number; --num-thread defaults to the
number of CPUs and uses threads, not processes; outputs are written to
unique hidden temporary files and renamed when complete (removed after any
failure; two runs writing the same output leave one run's whole .rec + .idx); a PREFIX that matches no list is an error;
nothing is printed on stdout. Pixels are close to, not identical with,
OpenCV's: resizing is anti-aliased and big JPEGs are decoded at 1/2-1/8
scale when --resize allows it; sizes, crop offsets, labels and ids are
exactly im2rec.py's.";

const AFTER_LONG_HELP: &str = "\
Exit codes: 0 success; 1 finished but some images or rows were skipped (each
named on stderr); 2 usage or fatal error (with --strict: the first bad image; a
full disk, an unwritable or vanished folder...): the list being packed gets
no output at all, its temporary files are removed, and an existing OUT.rec /
OUT.idx pair is left as it was.

Examples:
  im2rec --resize 256 --quality 95 data/caltech images/
  im2list --recursive - images/ | im2rec - images/ -o train.rec
  im2rec --pass-through --pack-label data/multi images/
  im2rec --inspect train.rec | jq -c '[.id, .labels, .width, .height]'";

/// Command-line options, named and defaulted like im2rec.py's pack mode.
#[derive(Debug, Parser)]
#[command(
    name = TOOL,
    version,
    about = "Pack the images of MXNet .lst files into RecordIO .rec + .idx (a drop-in for im2rec.py)",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    infer_long_args = true,
)]
struct Opts {
    /// List prefix (`-`: read one list from stdin, write to --output)
    #[arg(value_name = "PREFIX", required_unless_present = "inspect")]
    prefix: Option<OsString>,

    /// Folder the list's image paths are relative to
    #[arg(value_name = "ROOT", required_unless_present = "inspect")]
    root: Option<PathBuf>,

    /// Output .rec when PREFIX is `-` (the index goes beside it, as .idx)
    #[arg(short, long, value_name = "OUT.rec")]
    output: Option<PathBuf>,

    /// Resize so the shorter side is N (0: keep the size)
    ///
    /// im2rec.py's formula: taller than wide gives (N, h*N/w), otherwise
    /// (w*N/h, N), with integer division; images are enlarged as needed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    resize: u32,

    /// Crop the centred square before resizing
    #[arg(long)]
    center_crop: bool,

    /// JPEG quality 1-100; for --encoding .png the zlib level
    ///
    /// Clamped like OpenCV clamps it: for JPEG into 1-100 (with a warning), for
    /// PNG into 0-9, so the default 95 means 9 (a warning only below 0).
    #[arg(
        long,
        value_name = "Q",
        default_value_t = 95,
        allow_negative_numbers = true
    )]
    quality: i64,

    /// Codec for the re-encoded images
    #[arg(long, value_name = "EXT", default_value = ".jpg", value_parser = [".jpg", ".png"])]
    encoding: String,

    /// Colour mode: 1 colour (3 channels), 0 grey, -1 unchanged (alpha kept)
    #[arg(long, value_name = "FLAG", default_value_t = 1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1..=1))]
    color: i32,

    /// Store each file's bytes unchanged (no decode, resize or re-encode)
    #[arg(long, visible_alias = "unchanged")]
    pass_through: bool,

    /// Store every label of multi-label rows (flag = count)
    ///
    /// Without it, only the first label is kept, as im2rec.py does.
    #[arg(long)]
    pack_label: bool,

    /// Worker threads [default: number of CPUs]
    ///
    /// 1 or less (0, -1) means one thread, as im2rec.py takes its
    /// single-process path for them; at most 1024. The output is the same for
    /// any value.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    num_thread: Option<i64>,

    /// Resampling filter: 0 nearest, 1 bilinear, 2 cubic, 3 area, 4 Lanczos, 9 auto
    ///
    /// Auto (im2rec.cc's 9) picks cubic when enlarging both sides, area when
    /// shrinking both, bilinear otherwise.
    #[arg(long, value_name = "CODE", default_value_t = 1,
          value_parser = clap::builder::PossibleValuesParser::new(["0", "1", "2", "3", "4", "9"])
              .map(|s| s.parse::<u8>().expect("digits")))]
    inter_method: u8,

    /// Stop at the first image or row that fails (exit code 2)
    #[arg(long)]
    strict: bool,

    /// Print one JSON object per record of FILE.rec (`-`: stdin) and exit
    #[arg(long, value_name = "FILE.rec", conflicts_with_all = ["prefix", "root"])]
    inspect: Option<PathBuf>,

    /// Never draw a progress bar
    #[arg(long)]
    no_progress: bool,

    /// im2rec.py's list mode: the arguments go to `im2list` (same options, same lists)
    #[arg(long)]
    list: bool,

    /// Ignored when packing (im2rec.py list mode; see im2list)
    #[arg(long, help_heading = LIST_HEADING)]
    recursive: bool,

    /// Ignored when packing (im2rec.py list mode; see im2list)
    #[arg(long, help_heading = LIST_HEADING)]
    no_shuffle: bool,

    /// Ignored when packing (im2rec.py list mode; see im2list)
    ///
    /// Takes one or more values, like im2rec.py's: put PREFIX and ROOT first, or
    /// end the values with `--`.
    #[arg(long, num_args = 1.., value_name = "EXT", help_heading = LIST_HEADING)]
    exts: Option<Vec<String>>,

    /// Ignored when packing (im2rec.py list mode; see im2list)
    #[arg(long, value_name = "N", allow_negative_numbers = true, help_heading = LIST_HEADING)]
    chunks: Option<i64>,

    /// Ignored when packing (im2rec.py list mode; see im2list)
    #[arg(long, value_name = "RATIO", allow_negative_numbers = true, help_heading = LIST_HEADING)]
    train_ratio: Option<f64>,

    /// Ignored when packing (im2rec.py list mode; see im2list)
    #[arg(long, value_name = "RATIO", allow_negative_numbers = true, help_heading = LIST_HEADING)]
    test_ratio: Option<f64>,
}

/// The most worker threads `--num-thread` starts.
const MAX_THREADS: i64 = 1024;

const LIST_HEADING: &str = "im2rec.py's list-mode options (with --list; ignored when packing)";

/// Packing options that take a value, and those that do not.
const PACK_VALUE_OPTIONS: &[&str] = &[
    "--resize",
    "--quality",
    "--num-thread",
    "--color",
    "--encoding",
    "--inter-method",
    "--output",
];
const PACK_FLAGS: &[&str] = &[
    "--center-crop",
    "--pack-label",
    "--pass-through",
    "--no-progress",
];

/// im2rec.py's list mode takes (and ignores) its packing options: the arguments for
/// im2list without `--list` and those options, and the options dropped.
fn list_mode_args(args: &[std::ffi::OsString]) -> (Vec<std::ffi::OsString>, Vec<String>) {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        if text == "--list" {
            continue;
        } else if PACK_FLAGS.contains(&name) {
            dropped.push(text.into_owned());
        } else if PACK_VALUE_OPTIONS.contains(&name) || text == "-o" {
            dropped.push(text.clone().into_owned());
            if !text.contains('=') {
                if let Some(value) = it.next() {
                    dropped.push(value.to_string_lossy().into_owned());
                }
            }
        } else {
            kept.push(arg.clone());
        }
    }
    (kept, dropped)
}

impl Opts {
    /// The list-mode options given, as written on the command line.
    fn list_mode_options(&self) -> Vec<&'static str> {
        [
            (self.recursive, "--recursive"),
            (self.no_shuffle, "--no-shuffle"),
            (self.exts.is_some(), "--exts"),
            (self.chunks.is_some(), "--chunks"),
            (self.train_ratio.is_some(), "--train-ratio"),
            (self.test_ratio.is_some(), "--test-ratio"),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect()
    }
}

/// Runs `im2rec` with `args` (the program name first, as `std::env::args_os()` gives
/// them) and returns its exit code (`tool_cli`'s policy).
pub fn main_from(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    // `im2rec --list ...` is im2rec.py's list mode: im2list's command line, the same
    // options (--recursive, --exts, --chunks, --train-ratio, ...) and the same lists.
    let args: Vec<OsString> = args.into_iter().collect();
    if args.iter().skip(1).any(|a| a == "--list") {
        let (list_args, dropped) = list_mode_args(&args[1..]);
        if !dropped.is_empty() {
            cli::message(
                TOOL,
                format_args!(
                    "note: {}: packing options, ignored with --list (as by im2rec.py)",
                    dropped.join(" ")
                ),
            );
        }
        return im2list::app::main_from(std::iter::once("im2list".into()).chain(list_args));
    }
    cli::run(TOOL, || {
        let opts = Opts::parse_from(args);
        if opts.list {
            bail!("for im2rec.py's list mode, give --list in full (or run `im2list PREFIX ROOT`)");
        }
        if let Some(rec) = &opts.inspect {
            return run_inspect(rec);
        }
        let ignored = opts.list_mode_options();
        if !ignored.is_empty() {
            cli::message(
                TOOL,
                format_args!(
                    "note: {}: list-making options (im2rec.py --list; here: im2list), \
                     ignored when packing",
                    ignored.join(", ")
                ),
            );
        }
        run_pack(opts)
    })
}

fn run_inspect(rec: &Path) -> anyhow::Result<Outcome> {
    let input: Box<dyn Read> = if rec.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(rec).with_context(|| format!("{}", rec.display()))?)
    };
    let stdout = io::stdout().lock();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout);
    let (_, failures) = inspect::inspect(io::BufReader::with_capacity(1 << 20, input), &mut out)
        .with_context(|| format!("{}", rec.display()))?;
    Ok(Outcome::from_failures(failures as usize))
}

/// The quality actually used for `encoding`, clamped as OpenCV clamps
/// `IMWRITE_JPEG_QUALITY` (a JPEG quality of 0 or less behaves as 1) and
/// `IMWRITE_PNG_COMPRESSION` (0-9), with a warning when the value is out of range
/// (PNG values above 9, such as the default 95, are normal and not warned about).
fn effective_quality(encoding: Encoding, quality: i64) -> (u8, Option<String>) {
    let (lo, hi, name) = match encoding {
        Encoding::Jpg => (1, 100, "JPEG quality is 1-100"),
        Encoding::Png => (0, 9, "PNG compression is 0-9"),
    };
    let q = quality.clamp(lo, hi);
    let warn = (quality < lo || (encoding == Encoding::Jpg && quality > hi))
        .then(|| format!("--quality {quality} is out of range ({name}): using {q}"));
    (q as u8, warn)
}

fn config_from(opts: &Opts, root: PathBuf) -> anyhow::Result<PackConfig> {
    let encoding = match opts.encoding.as_str() {
        ".png" => Encoding::Png,
        _ => Encoding::Jpg,
    };
    let (quality, warning) = effective_quality(encoding, opts.quality);
    if let Some(w) = warning {
        if !opts.pass_through {
            cli::warn(TOOL, w);
        }
    }
    let threads = match opts.num_thread {
        Some(n) => usize::try_from(n.clamp(1, MAX_THREADS)).expect("1..=1024 fits"),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(PackConfig {
        root,
        resize: (opts.resize > 0).then_some(opts.resize),
        center_crop: opts.center_crop,
        quality,
        encoding,
        color: ColorMode::from_flag(opts.color).expect("clap checked the range"),
        pass_through: opts.pass_through,
        pack_label: opts.pack_label,
        interpolation: Interpolation::from_cv2_code(opts.inter_method),
        threads,
        strict: opts.strict,
    })
}

fn run_pack(opts: Opts) -> anyhow::Result<Outcome> {
    let (Some(prefix), Some(root)) = (&opts.prefix, &opts.root) else {
        bail!("PREFIX and ROOT are required");
    };
    let root = pypath::abspath(root).context("current directory")?;
    if !root.is_dir() {
        bail!("{}: image root is not a folder", root.display());
    }
    let config = config_from(&opts, root)?;
    let show_progress = !opts.no_progress && io::stderr().is_terminal();

    let mut failed = false;
    if prefix == "-" {
        let Some(rec) = &opts.output else {
            bail!("PREFIX `-` reads the list from stdin: name the output with -o OUT.rec");
        };
        let idx = output_index(rec)?;
        let job = PackJob {
            name: "<stdin>",
            list: BufReader::with_capacity(1 << 16, io::stdin()),
            rows: None,
            rec,
            idx: &idx,
        };
        let stats = job.pack(&config, show_progress)?;
        failed |= stats.skipped > 0;
    } else {
        if opts.output.is_some() {
            bail!(
                "-o/--output is only for PREFIX `-`; lists found from PREFIX are packed beside it"
            );
        }
        let prefix = pypath::abspath(Path::new(prefix)).context("current directory")?;
        let jobs = pack::find_lists(&prefix)
            .with_context(|| format!("looking for lists with prefix {}", prefix.display()))?;
        if jobs.is_empty() {
            bail!("no .lst file found with prefix {}", prefix.display());
        }
        for job in &jobs {
            pack::check_outputs(&job.rec, &job.idx)?;
        }
        for job in &jobs {
            let file = File::open(&job.list).with_context(|| format!("{}", job.list.display()))?;
            let total = count_rows(&job.list)?;
            let name = job.list.display().to_string();
            let job = PackJob {
                name: &name,
                list: BufReader::with_capacity(1 << 16, file),
                rows: Some(total),
                rec: &job.rec,
                idx: &job.idx,
            };
            let stats = job.pack(&config, show_progress)?;
            failed |= stats.skipped > 0;
        }
    }
    Ok(if failed {
        Outcome::SomeFailed
    } else {
        Outcome::Success
    })
}

/// The `.idx` that goes beside `-o OUT.rec` (`OUT.idx`), after checking that the name
/// can work: a file name (not a folder, not ending in `/`) that does not itself end
/// in `.idx`.
fn output_index(rec: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let shown = rec.display();
    if rec.as_os_str().as_bytes().ends_with(b"/") || rec.file_name().is_none() || rec.is_dir() {
        bail!("-o {shown}: a folder name; -o takes the output file name (OUT.rec)");
    }
    if rec.extension().is_some_and(|e| e == "idx") {
        bail!("-o {shown}: name the .rec; the index is written beside it as .idx");
    }
    Ok(crate::dataset::default_idx(rec))
}

/// Number of non-blank rows, for the progress bar.
fn count_rows(list: &Path) -> anyhow::Result<u64> {
    let file = File::open(list).with_context(|| format!("{}", list.display()))?;
    let mut n = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("{}", list.display()))?;
        n += u64::from(!line.trim_ascii().is_empty());
    }
    Ok(n)
}

/// One list to pack: its rows and where its records go.
struct PackJob<'a, R> {
    /// The list as messages name it (its path, or `<stdin>`).
    name: &'a str,
    /// The list's rows.
    list: R,
    /// How many rows it has, when known (for the progress bar).
    rows: Option<u64>,
    /// The record file written.
    rec: &'a Path,
    /// Its index.
    idx: &'a Path,
}

impl<R: BufRead + Send> PackJob<'_, R> {
    /// Packs the list with `config` (a progress bar on stderr when `show_progress`),
    /// naming each skipped image on stderr, and says what was packed.
    fn pack(self, config: &PackConfig, show_progress: bool) -> anyhow::Result<PackStats> {
        let PackJob {
            name,
            list,
            rows: total,
            rec,
            idx,
        } = self;
        pack::check_outputs(rec, idx)?;
        let bar = show_progress.then(|| {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::new_spinner().with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {spinner} {pos} images {per_sec}",
                    )
                    .expect("valid template"),
                ),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_message(
                rec.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into()),
            );
            bar
        });
        let mut report = |skipped: &pack::Skipped| {
            let line = match &skipped.path {
                Some(_) => skipped.to_string(),
                None => format!("{name}: {skipped}"),
            };
            match &bar {
                Some(bar) => bar.suspend(|| cli::message(TOOL, &line)),
                None => cli::message(TOOL, &line),
            }
        };
        let mut progress = |stats: PackStats| {
            if let Some(bar) = &bar {
                bar.set_position(stats.packed + stats.skipped);
            }
        };
        let result = pack::pack_list(list, rec, idx, config, &mut report, &mut progress);
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let stats = match result {
            Ok(stats) => stats,
            Err(PackError::Strict(skipped)) => {
                let what = match &skipped.path {
                    Some(_) => skipped.to_string(),
                    None => format!("{name}: {skipped}"),
                };
                bail!("{what} (--strict; nothing was written)")
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("packing {name} (nothing was written for it)")))
            }
        };
        let _ = writeln!(
            io::stderr().lock(),
            "{TOOL}: packed {}, skipped {} -> {}",
            stats.packed,
            stats.skipped,
            rec.display()
        );
        Ok(stats)
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
    fn parses_im2rec_py_flags() {
        let o = Opts::try_parse_from([
            "im2rec",
            "--resize",
            "256",
            "--center-crop",
            "--quality",
            "90",
            "--color",
            "-1",
            "--encoding",
            ".png",
            "--num-thread",
            "4",
            "--pack-label",
            "p",
            "r",
        ])
        .unwrap();
        assert_eq!(
            (o.resize, o.center_crop, o.quality, o.color),
            (256, true, 90, -1)
        );
        let c = config_from(&o, PathBuf::from("/r")).unwrap();
        assert_eq!((c.encoding, c.quality, c.threads), (Encoding::Png, 9, 4));
        assert_eq!(c.color, ColorMode::Unchanged);
        let o = Opts::try_parse_from(["im2rec", "--unchanged", "--inter-method", "9", "p", "r"])
            .unwrap();
        assert!(o.pass_through);
        assert_eq!(config_from(&o, PathBuf::new()).unwrap().interpolation, None);
        assert!(Opts::try_parse_from(["im2rec", "--inter-method", "5", "p", "r"]).is_err());
        assert!(Opts::try_parse_from(["im2rec", "--color", "2", "p", "r"]).is_err());
        assert!(Opts::try_parse_from(["im2rec", "--encoding", ".gif", "p", "r"]).is_err());
        assert!(Opts::try_parse_from(["im2rec", "p"]).is_err());
        assert!(Opts::try_parse_from(["im2rec", "--inspect", "x.rec"]).is_ok());
    }

    #[test]
    fn accepts_what_im2rec_py_accepts() {
        // List-mode options are accepted (and ignored) in pack mode, as argparse does.
        let o = Opts::try_parse_from([
            "im2rec",
            "--recursive",
            "--no-shuffle",
            "--chunks",
            "2",
            "--train-ratio",
            "0.8",
            "--test-ratio",
            "-0.1",
            "p",
            "r",
            "--exts",
            ".jpg",
            ".png",
        ])
        .unwrap();
        assert_eq!(
            o.exts.as_deref(),
            Some(&[".jpg".to_string(), ".png".into()][..])
        );
        assert_eq!(
            o.list_mode_options(),
            [
                "--recursive",
                "--no-shuffle",
                "--exts",
                "--chunks",
                "--train-ratio",
                "--test-ratio"
            ]
        );
        assert!(Opts::try_parse_from(["im2rec", "p", "r"])
            .unwrap()
            .list_mode_options()
            .is_empty());
        assert!(Opts::try_parse_from(["im2rec", "--chunks", "x", "p", "r"]).is_err());
        // Unambiguous prefixes of long options, like argparse.
        let o = Opts::try_parse_from(["im2rec", "--res", "32", "--pass", "--col", "0", "p", "r"])
            .unwrap();
        assert_eq!((o.resize, o.pass_through, o.color), (32, true, 0));
        assert!(Opts::try_parse_from(["im2rec", "--re", "3", "p", "r"]).is_err()); // resize? recursive?
                                                                                   // Negative numbers parse; the thread count is at least 1, as in im2rec.py.
        let o = Opts::try_parse_from(["im2rec", "--num-thread", "-1", "--quality", "-1", "p", "r"])
            .unwrap();
        let c = config_from(&o, PathBuf::new()).unwrap();
        assert_eq!((c.threads, c.quality), (1, 1));
        let o = Opts::try_parse_from(["im2rec", "--num-thread", "99999999", "p", "r"]).unwrap();
        assert_eq!(config_from(&o, PathBuf::new()).unwrap().threads, 1024);
    }

    #[test]
    fn quality_is_clamped_like_opencv() {
        let warned = |e, q| effective_quality(e, q).1.is_some();
        assert_eq!(effective_quality(Encoding::Jpg, 0).0, 1);
        assert_eq!(effective_quality(Encoding::Jpg, -5).0, 1);
        assert_eq!(effective_quality(Encoding::Jpg, 101).0, 100);
        assert_eq!(effective_quality(Encoding::Jpg, 95), (95, None));
        assert!(warned(Encoding::Jpg, 0) && warned(Encoding::Jpg, 101));
        assert_eq!(
            effective_quality(Encoding::Jpg, 0).1.unwrap(),
            "--quality 0 is out of range (JPEG quality is 1-100): using 1"
        );
        assert_eq!(effective_quality(Encoding::Png, 95), (9, None));
        assert_eq!(effective_quality(Encoding::Png, 3), (3, None));
        assert_eq!(effective_quality(Encoding::Png, -1).0, 0);
        assert!(warned(Encoding::Png, -1));
    }
}
