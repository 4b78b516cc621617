//! Packing: the images of one `.lst` into a `.rec` + `.idx` pair, like im2rec.py's
//! pack mode, but in parallel and without losing anything silently.
//!
//! - Records are written **in list order** whatever the thread count: worker threads
//!   decode, resize and encode; the calling thread writes through a reorder buffer
//!   bounded by a window of `4 × threads + 8` items, so memory stays bounded for lists
//!   of any length (the list itself is streamed, never loaded whole).
//! - Each record: IRHeader `id` = the list's index column, `id2` = 0; without
//!   `pack_label` (or with a single label) `flag = 0` and `label` = the first label;
//!   with `pack_label` and more than one label `flag = count`, header `label = 0.0`
//!   and the labels follow as float32 (im2rec.py's behaviour). `.idx` lines are
//!   `index<TAB>offset`.
//! - An item that fails (missing or unreadable file, not an image, corrupt, truncated,
//!   too large to decode or resize, a record of 2^29 bytes or more, bad `.lst` row) is
//!   reported through the caller's callback, counted and
//!   skipped: no record, no `.idx` line. With `strict`, the first failure stops the run.
//! - Output goes to temporary files beside the final names, unique to the run
//!   (`.<name>.XXXXXX.tmp`, see [`temp_output`]), synced and renamed when complete.
//!   After a fatal error (a full disk, a vanished folder, `strict`...) they are
//!   removed: a failed run leaves nothing behind and never a final name. A process
//!   killed outright (SIGKILL) cannot clean up: its temporary files stay, hidden, but
//!   the final names still never hold a partial file.
//! - The finished pair is published under an exclusive [`PairLock`] on the `.rec`'s
//!   folder, the `.idx` first: two runs writing the same output at once each write
//!   their own temporary files, and the last to finish replaces both files, so the
//!   result is one run's whole output, never a mix; readers that open the pair under
//!   the shared lock (`Dataset::open_rec`) never see one file of each. A `.rec` whose
//!   rename fails takes its just-renamed `.idx` away again.
//! - `pass_through` packs the file's bytes unchanged, like im2rec.py: such files are
//!   not checked, so only a missing or unreadable file is skipped.

mod pipeline;

use std::fs;
use std::io::{self, BufRead, BufWriter};
use std::path::{Path, PathBuf};

use im2list::lst::{LstEntry, LstError};

use crate::imageops::{self, ColorMode, Encoding, ImageOpError, Interpolation};
use crate::recordio::{
    pack_image_record, IndexWriter, PairLock, RecordIoError, RecordWriter, MAX_RECORD_LEN,
};

use pipeline::{run_pipeline, Outcome};

/// How to turn each image into a record (im2rec.py's pack options).
#[derive(Debug, Clone)]
pub struct PackConfig {
    /// Image paths in the list are relative to this folder.
    pub root: PathBuf,
    /// `--resize N`: shorter side becomes N (None: keep the size).
    pub resize: Option<u32>,
    /// `--center-crop`: crop the centred square before resizing.
    pub center_crop: bool,
    /// `--quality`: JPEG quality 1–100, or PNG zlib level (clamped to 0–9).
    pub quality: u8,
    /// `--encoding`.
    pub encoding: Encoding,
    /// `--color`.
    pub color: ColorMode,
    /// `--pass-through`: store the file's bytes unchanged.
    pub pass_through: bool,
    /// `--pack-label`: store every label when there are several.
    pub pack_label: bool,
    /// `--inter-method`; `None` is im2rec.cc's auto choice (9).
    pub interpolation: Option<Interpolation>,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Stop at the first failed item instead of skipping it.
    pub strict: bool,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig {
            root: PathBuf::from("."),
            resize: None,
            center_crop: false,
            quality: 95,
            encoding: Encoding::Jpg,
            color: ColorMode::Color,
            pass_through: false,
            pack_label: false,
            interpolation: Some(Interpolation::Bilinear),
            threads: 1,
            strict: false,
        }
    }
}

/// Why one item of the list was skipped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// A malformed `.lst` row.
    #[error(transparent)]
    Row(#[from] LstError),
    /// The image file could not be read.
    #[error("{}", io_reason(.0))]
    Read(io::Error),
    /// The image could not be decoded or encoded.
    #[error(transparent)]
    Image(#[from] ImageOpError),
    /// The record would be too large for RecordIO (2^29 bytes or more).
    #[error(transparent)]
    Record(#[from] RecordIoError),
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => format!("cannot read: {e}"),
    }
}

/// One skipped item, as handed to the caller's reporter.
#[derive(Debug)]
pub struct Skipped {
    /// The full image path, or `None` for a malformed row.
    pub path: Option<PathBuf>,
    /// What went wrong (a row error names its line).
    pub error: ItemError,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// Counts at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Records written.
    pub packed: u64,
    /// Items skipped (each one reported).
    pub skipped: u64,
}

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// Reading the `.lst` failed.
    #[error("reading the list: {0}")]
    List(#[source] io::Error),
    /// Creating, writing or renaming an output file failed.
    #[error("{}: {source}", .path.display())]
    Output {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The record writer refused a record.
    #[error("{}: {source}", .path.display())]
    Record {
        /// The `.rec` being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: RecordIoError,
    },
    /// `strict` and an item failed.
    #[error("{0} (--strict)")]
    Strict(Skipped),
}

/// Build the record payload for one list entry: read the file, transform and
/// re-encode it (or keep its bytes with `pass_through`), and prepend the IRHeader.
/// A record that RecordIO cannot hold (2^29 bytes or more) is an
/// [`ItemError::Record`]: for `pass_through` the file's size is checked before it is
/// read.
pub fn encode_item(entry: &LstEntry, config: &PackConfig) -> Result<Vec<u8>, ItemError> {
    let path = config.root.join(&entry.path);
    let header_len = record_payload(entry, config.pack_label, b"").len();
    let too_large = |image_len: u64| {
        let length = usize::try_from(image_len)
            .unwrap_or(usize::MAX)
            .saturating_add(header_len);
        (length > MAX_RECORD_LEN).then_some(ItemError::Record(RecordIoError::TooLarge { length }))
    };
    if config.pass_through {
        let len = fs::metadata(&path).map_err(ItemError::Read)?.len();
        if let Some(e) = too_large(len) {
            return Err(e);
        }
    }
    let bytes = fs::read(&path).map_err(ItemError::Read)?;
    let image = if config.pass_through {
        bytes
    } else {
        let decoded = imageops::decode_scaled(&bytes, config.color, config.resize)?;
        let (w, h) = imageops::prepared_size(&decoded, config.center_crop, config.resize);
        imageops::check_output_size(w, h, config.encoding)?;
        let img = imageops::prepare(
            &decoded,
            config.center_crop,
            config.resize,
            config.interpolation,
        );
        imageops::encode(&img, config.encoding, config.quality)?
    };
    if let Some(e) = too_large(image.len() as u64) {
        return Err(e);
    }
    Ok(record_payload(entry, config.pack_label, &image))
}

/// The IRHeader + labels + image bytes for `entry` (im2rec.py's label rules).
pub fn record_payload(entry: &LstEntry, pack_label: bool, image: &[u8]) -> Vec<u8> {
    let labels: Vec<f32> = entry.labels.iter().map(|&l| l as f32).collect();
    let multi = pack_label && labels.len() > 1;
    pack_image_record(entry.index, &labels, multi, image)
}

/// Pack the list read from `list` into `rec` and `idx` (written as unique temporary
/// files and renamed at the end; removed after any failure). `report` is called, in
/// list order, for every skipped item; `progress` after every item handled.
pub fn pack_list<R: BufRead + Send>(
    list: R,
    rec: &Path,
    idx: &Path,
    config: &PackConfig,
    report: &mut dyn FnMut(&Skipped),
    progress: &mut dyn FnMut(PackStats),
) -> Result<PackStats, PackError> {
    check_outputs(rec, idx)?;
    // Each temporary file is deleted when its `TempPath` is dropped: on every error
    // return below, and on a panic.
    let (rec_file, rec_tmp) = temp_output(rec)?.into_parts();
    let (idx_file, idx_tmp) = temp_output(idx)?.into_parts();
    let rec_err = |source| PackError::Record {
        path: rec.to_path_buf(),
        source,
    };
    let idx_err = |source| PackError::Output {
        path: idx.to_path_buf(),
        source,
    };
    let mut records = RecordWriter::new(BufWriter::with_capacity(1 << 20, rec_file));
    let mut index = IndexWriter::new(BufWriter::with_capacity(1 << 16, idx_file));

    let stats = run_pipeline(
        list,
        config,
        |outcome| match outcome {
            Outcome::Record {
                index: key,
                payload,
            } => {
                let offset = records.write_record(&payload).map_err(rec_err)?;
                index.write(key, offset).map_err(idx_err)?;
                Ok(true)
            }
            Outcome::Skip(skipped) => {
                if config.strict {
                    return Err(PackError::Strict(skipped));
                }
                report(&skipped);
                Ok(false)
            }
            Outcome::ListError(e) => Err(PackError::List(e)),
        },
        progress,
    )?;

    let rec_file = records.into_inner().map_err(rec_err)?;
    let idx_file = index.into_inner().map_err(idx_err)?;
    for (file, path) in [(rec_file, rec), (idx_file, idx)] {
        let output_err = |source| PackError::Output {
            path: path.to_path_buf(),
            source,
        };
        let file = file.into_inner().map_err(|e| output_err(e.into_error()))?;
        file.sync_all().map_err(output_err)?;
    }
    publish(rec_tmp, rec, idx_tmp, idx)?;
    Ok(stats)
}

/// Rename the finished temporary files to `rec` and `idx` under the folder's exclusive
/// [`PairLock`], the index first; if the `.rec` cannot be renamed, the new `.idx` is
/// removed again, so that no final `.idx` appears without its `.rec`.
fn publish(
    rec_tmp: tempfile::TempPath,
    rec: &Path,
    idx_tmp: tempfile::TempPath,
    idx: &Path,
) -> Result<(), PackError> {
    let rename_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: tempfile::PathPersistError| PackError::Output {
            path,
            // Dropping the returned `TempPath` removes the temporary file.
            source: e.error,
        }
    };
    let _lock = PairLock::exclusive(rec);
    idx_tmp.persist(idx).map_err(rename_err(idx))?;
    if let Err(e) = rec_tmp.persist(rec) {
        let _ = fs::remove_file(idx);
        return Err(rename_err(rec)(e));
    }
    Ok(())
}

/// Refuse output names that cannot work, before anything is written: the `.rec` and
/// the `.idx` must be two different paths, and neither may be an existing folder.
/// [`pack_list`] checks this first; callers may check earlier.
pub fn check_outputs(rec: &Path, idx: &Path) -> Result<(), PackError> {
    let refuse = |path: &Path, why: &str| PackError::Output {
        path: path.to_path_buf(),
        source: io::Error::other(why.to_string()),
    };
    if rec == idx {
        return Err(refuse(rec, "the .rec and the .idx would be the same file"));
    }
    for path in [rec, idx] {
        if path.is_dir() {
            return Err(refuse(path, "is a folder (an output file was expected)"));
        }
    }
    Ok(())
}

/// One `.lst` found by [`find_lists`] and the outputs it packs into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListJob {
    /// The `.lst` file.
    pub list: PathBuf,
    /// `<working dir>/<list stem>.rec`.
    pub rec: PathBuf,
    /// `<working dir>/<list stem>.idx`.
    pub idx: PathBuf,
}

/// im2rec.py's choice of lists for `PREFIX`: `prefix` (already absolute and
/// normalised, like `os.path.abspath`) is the working directory if it is a folder,
/// else its parent; every regular file there whose full path starts with `prefix`
/// and ends in `.lst` is packed, into `<stem>.rec` / `<stem>.idx` in the working
/// directory. Sorted by name (im2rec.py uses `os.listdir` order, which is arbitrary).
pub fn find_lists(prefix: &Path) -> io::Result<Vec<ListJob>> {
    use std::os::unix::ffi::OsStrExt;
    let working_dir = if prefix.is_dir() {
        prefix.to_path_buf()
    } else {
        prefix.parent().unwrap_or(Path::new("/")).to_path_buf()
    };
    let want = prefix.as_os_str().as_bytes();
    let mut jobs = Vec::new();
    for entry in fs::read_dir(&working_dir)? {
        let entry = entry?;
        let path = working_dir.join(entry.file_name());
        let full = path.as_os_str().as_bytes();
        if !full.starts_with(want) || !full.ends_with(b".lst") || !path.is_file() {
            continue;
        }
        let name = entry.file_name();
        let name = name.as_bytes();
        let ext = im2list::pypath::splitext_suffix(name);
        let stem = std::ffi::OsStr::from_bytes(&name[..name.len() - ext.len()]);
        let out = |suffix: &str| {
            let mut n = stem.to_owned();
            n.push(suffix);
            working_dir.join(n)
        };
        jobs.push(ListJob {
            rec: out(".rec"),
            idx: out(".idx"),
            list: path,
        });
    }
    jobs.sort_by(|a, b| a.list.cmp(&b.list));
    Ok(jobs)
}

/// A new temporary file beside `path`, named `.<file name>.XXXXXX.tmp` (unique to
/// this run: two runs writing the same output never share one), with the permissions
/// `File::create` gives (0666 minus the umask). It is removed when the returned value
/// (or the `TempPath` split from it) is dropped unless it is persisted.
pub fn temp_output(path: &Path) -> Result<tempfile::NamedTempFile, PackError> {
    use std::os::unix::fs::PermissionsExt;
    let folder = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(folder)
        .map_err(|source| PackError::Output {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordio::{unpack_image_record, RecordReader};
    use std::fs::File;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn label_layout_with_and_without_pack_label() {
        let e = LstEntry {
            index: 7,
            labels: vec![1.0, 0.0, 2.0],
            path: "x.jpg".into(),
        };
        let single = record_payload(&e, false, b"IMG");
        let r = unpack_image_record(&single).unwrap();
        assert_eq!(
            (r.header.flag, r.header.label, r.header.id, r.header.id2),
            (0, 1.0, 7, 0)
        );
        assert_eq!(r.image, b"IMG");
        let multi = record_payload(&e, true, b"IMG");
        assert_eq!(
            multi[..24],
            [3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let r = unpack_image_record(&multi).unwrap();
        assert_eq!((r.header.flag, r.header.label), (3, 0.0));
        assert_eq!(r.labels, vec![1.0, 0.0, 2.0]);
        // One label with --pack-label stays flag 0 (im2rec.py checks len(item) > 3).
        let one = LstEntry::new(9, 4.0, "y.jpg");
        let r = record_payload(&one, true, b"");
        let r = unpack_image_record(&r).unwrap();
        assert_eq!((r.header.flag, r.header.label, r.header.id), (0, 4.0, 9));
    }

    fn pass_through_config(root: &Path, threads: usize) -> PackConfig {
        PackConfig {
            root: root.to_path_buf(),
            pass_through: true,
            threads,
            ..PackConfig::default()
        }
    }

    /// `pack_list` of `list` with --pass-through: the counts and the skip messages.
    fn pass_through(
        root: &Path,
        list: &str,
        rec: &Path,
        idx: &Path,
        threads: usize,
    ) -> (PackStats, Vec<String>) {
        let mut skipped = Vec::new();
        let stats = pack_list(
            list.as_bytes(),
            rec,
            idx,
            &pass_through_config(root, threads),
            &mut |s| skipped.push(s.to_string()),
            &mut |_| {},
        )
        .unwrap();
        (stats, skipped)
    }

    #[test]
    fn pass_through_keeps_bytes_and_order_is_kept_with_threads() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = String::new();
        for i in 0..40u64 {
            let name = format!("f{i}.bin");
            // Any bytes at all: pass-through never decodes.
            let body: Vec<u8> = (0..(i * 37 % 101)).map(|b| (b * i) as u8).collect();
            fs::write(dir.path().join(&name), &body).unwrap();
            list.push_str(&LstEntry::new(100 + i, (i % 3) as f64, name).to_line());
        }
        list.push_str("oops\n");
        list.push_str(&LstEntry::new(999, 0.0, "missing.bin").to_line());
        let mut outputs = Vec::new();
        for threads in [1, 4] {
            let rec = dir.path().join(format!("t{threads}.rec"));
            let idx = dir.path().join(format!("t{threads}.idx"));
            let (stats, skipped) = pass_through(dir.path(), &list, &rec, &idx, threads);
            assert_eq!(
                stats,
                PackStats {
                    packed: 40,
                    skipped: 2
                }
            );
            assert_eq!(skipped.len(), 2);
            assert!(skipped[0].starts_with("line 41:"), "{}", skipped[0]);
            assert!(
                skipped[1].ends_with("missing.bin: no such file"),
                "{}",
                skipped[1]
            );
            let bytes = fs::read(&rec).unwrap();
            let mut reader = RecordReader::new(&bytes[..]);
            let mut offsets = Vec::new();
            for i in 0..40u64 {
                let r = reader.next_record().unwrap().unwrap();
                let img = unpack_image_record(&r.payload).unwrap();
                assert_eq!(img.header.id, 100 + i);
                let body: Vec<u8> = (0..(i * 37 % 101)).map(|b| (b * i) as u8).collect();
                assert_eq!(img.image, &body[..]);
                offsets.push(format!("{}\t{}\n", 100 + i, r.offset));
            }
            assert!(reader.next_record().unwrap().is_none());
            assert_eq!(fs::read_to_string(&idx).unwrap(), offsets.concat());
            assert!(!names(dir.path()).iter().any(|n| n.ends_with(".tmp")));
            outputs.push(bytes);
        }
        assert_eq!(outputs[0], outputs[1]);
    }

    #[test]
    fn a_record_too_large_for_recordio_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        // A sparse file: 2^29 bytes on paper, nothing on disk, never read.
        let huge = File::create(dir.path().join("huge.bin")).unwrap();
        huge.set_len(1 << 29).unwrap();
        // Exactly the largest payload that fits: header (24) + image = 2^29 - 1.
        let edge = File::create(dir.path().join("edge.bin")).unwrap();
        edge.set_len((1 << 29) - 1 - 24).unwrap();
        let list = [
            LstEntry::new(0, 0.0, "a.bin"),
            LstEntry::new(1, 0.0, "huge.bin"),
            LstEntry::new(2, 0.0, "a.bin"),
        ]
        .map(|e| e.to_line())
        .concat();
        let rec = dir.path().join("h.rec");
        let idx = dir.path().join("h.idx");
        let (stats, skipped) = pass_through(dir.path(), &list, &rec, &idx, 2);
        let config = pass_through_config(dir.path(), 2);
        assert_eq!(
            stats,
            PackStats {
                packed: 2,
                skipped: 1
            }
        );
        assert_eq!(
            skipped,
            [format!(
                "{}: record of 536870936 bytes is too large: RecordIO records must be smaller \
                 than 2^29 = 536870912 bytes",
                dir.path().join("huge.bin").display()
            )]
        );
        assert_eq!(fs::read_to_string(&idx).unwrap(), "0\t0\n2\t36\n");
        let edge = LstEntry::new(3, 0.0, "edge.bin");
        let err = encode_item(&LstEntry::new(3, 0.0, "huge.bin"), &config).unwrap_err();
        assert!(matches!(
            err,
            ItemError::Record(RecordIoError::TooLarge { .. })
        ));
        // With --pack-label the header grows by 4 bytes per label.
        let config_multi = PackConfig {
            pack_label: true,
            ..config.clone()
        };
        let two = LstEntry {
            labels: vec![1.0, 2.0],
            ..edge.clone()
        };
        assert!(matches!(
            encode_item(&two, &config_multi).unwrap_err(),
            ItemError::Record(RecordIoError::TooLarge {
                length: 536_870_919
            })
        ));
    }

    #[test]
    fn output_names_are_checked_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("x.rec")).unwrap();
        let config = PackConfig {
            root: d.to_path_buf(),
            pass_through: true,
            ..PackConfig::default()
        };
        for (rec, idx) in [
            (d.join("x.rec"), d.join("x.idx")),
            (d.join("y.rec"), d.join("x.rec")),
            (d.join("same"), d.join("same")),
        ] {
            let err =
                pack_list(&b""[..], &rec, &idx, &config, &mut |_| {}, &mut |_| {}).unwrap_err();
            assert!(matches!(err, PackError::Output { .. }), "{err}");
        }
        // Nothing was created: no temporary files, no final names.
        assert_eq!(names(d), ["x.rec"]);
    }

    #[test]
    fn finds_lists_like_im2rec_py() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "cal.lst",
            "cal_train.lst",
            "cal-256.lst",
            "other.lst",
            "cal.txt",
            ".lst",
        ] {
            fs::write(d.join(name), "").unwrap();
        }
        fs::create_dir(d.join("calx.lst")).unwrap(); // not a regular file
        let names = |jobs: Vec<ListJob>| -> Vec<(String, String)> {
            jobs.iter()
                .map(|j| {
                    let f = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
                    (f(&j.list), f(&j.rec))
                })
                .collect()
        };
        assert_eq!(
            names(find_lists(&d.join("cal")).unwrap()),
            [
                ("cal-256.lst".to_string(), "cal-256.rec".to_string()),
                ("cal.lst".into(), "cal.rec".into()),
                ("cal_train.lst".into(), "cal_train.rec".into()),
            ]
        );
        // A folder prefix packs every list inside it; `.lst` alone keeps its name.
        let all = find_lists(d).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].rec, d.join(".lst.rec"));
        assert_eq!(all[0].idx, d.join(".lst.idx"));
        assert!(find_lists(&d.join("zzz")).unwrap().is_empty());
    }

    #[test]
    fn strict_stops_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        let list = format!(
            "{}{}",
            LstEntry::new(0, 0.0, "a.bin").to_line(),
            LstEntry::new(1, 0.0, "nope.bin").to_line()
        );
        let rec = dir.path().join("s.rec");
        let idx = dir.path().join("s.idx");
        let config = PackConfig {
            root: dir.path().to_path_buf(),
            pass_through: true,
            strict: true,
            threads: 2,
            ..PackConfig::default()
        };
        let err = pack_list(
            list.as_bytes(),
            &rec,
            &idx,
            &config,
            &mut |_| {},
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, PackError::Strict(_)), "{err}");
        // No final names, and the temporary files are gone.
        assert_eq!(names(dir.path()), ["a.bin"]);
    }

    #[test]
    fn temporary_outputs_are_unique_hidden_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("x.rec");
        let a = temp_output(&rec).unwrap();
        let b = temp_output(&rec).unwrap();
        assert_ne!(a.path(), b.path());
        for t in [&a, &b] {
            let name = t.path().file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with(".x.rec.") && name.ends_with(".tmp"),
                "{name}"
            );
            assert_eq!(t.path().parent(), Some(dir.path()));
        }
        drop((a, b));
        assert!(names(dir.path()).is_empty());
        // A folder that does not exist: an error naming the output.
        let err = temp_output(&dir.path().join("gone/y.rec")).unwrap_err();
        assert!(err.to_string().contains("gone/y.rec: "), "{err}");
    }

    /// A writer whose sink fails (as on a full disk) must stop the feeder and the workers
    /// whatever their timing: the run returns the error, never hangs. Slow items (a 4 MB
    /// file read each time) and an instant writer keep the feeder ahead, blocked on a
    /// full job channel while the workers are busy: the state that used to hang.
    #[test]
    fn a_failing_writer_stops_the_pipeline_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big.bin"), vec![7u8; 4 << 20]).unwrap();
        let list = (0..60u64)
            .map(|i| LstEntry::new(i, 0.0, "big.bin").to_line())
            .collect::<String>();
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for round in 0..24usize {
                let threads = 1 + round % 3;
                let fail_at = 1 + (round * 7) % 40;
                let config = pass_through_config(&root, threads);
                let mut written = 0;
                let result = pipeline::run_pipeline(
                    list.as_bytes(),
                    &config,
                    |_| {
                        written += 1;
                        if written > fail_at {
                            Err(PackError::List(io::Error::other("disk full")))
                        } else {
                            Ok(true)
                        }
                    },
                    &mut |_| {},
                );
                assert!(result.is_err());
            }
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("the pipeline hung after a writer error");
    }
}
