//! Finding an MXNet Module checkpoint's files: a SageMaker `model.tar.gz`, a directory,
//! a prefix, or an explicit `.params` / `-symbol.json` file.
//!
//! | `--model` | symbol | parameters |
//! |---|---|---|
//! | `model.tar.gz` (or `.tgz`, `.tar`) | its `*-symbol.json` | its `<same prefix>-NNNN.params` with the highest NNNN |
//! | a directory without rectrain's `config.json` | its one `*-symbol.json` | as above |
//! | `path/name` (no such file) | `path/name-symbol.json` | `path/name-NNNN.params`, highest NNNN |
//! | `path/name-0010.params` | `path/name-symbol.json` | that file |
//! | `path/name-symbol.json` | that file | highest `path/name-NNNN.params` |
//!
//! `model-shapes.json` (SageMaker's `[{"name": "data", "shape": [N, C, H, W]}]`) is read
//! from the tarball or the symbol's directory when present.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::MxnetError;

/// One file of a checkpoint, read into memory.
#[derive(Debug, Clone)]
pub struct Member {
    /// How messages name it: the path, or `archive.tar.gz:member`.
    pub label: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The files of one checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    /// `*-symbol.json`.
    pub symbol: Member,
    /// `*-NNNN.params`.
    pub params: Member,
    /// `model-shapes.json`, when present.
    pub shapes: Option<Member>,
}

/// `name-NNNN.params` → `(name, NNNN)`.
fn params_epoch(file: &str) -> Option<(&str, u32)> {
    let stem = file.strip_suffix(".params")?;
    let (prefix, epoch) = stem.rsplit_once('-')?;
    if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((prefix, epoch.parse().ok()?))
}

fn io_err(path: &Path, e: std::io::Error) -> MxnetError {
    MxnetError::File {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read(path: &Path) -> Result<Member, MxnetError> {
    Ok(Member {
        label: path.display().to_string(),
        bytes: fs::read(path).map_err(|e| io_err(path, e))?,
    })
}

/// The highest-epoch `prefix-NNNN.params` in `dir`.
fn latest_params(dir: &Path, prefix: &str) -> Result<Option<PathBuf>, MxnetError> {
    let mut best: Option<(u32, PathBuf)> = None;
    let entries = fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .map_err(|e| io_err(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((p, epoch)) = params_epoch(name) {
            if p == prefix && best.as_ref().is_none_or(|(b, _)| epoch > *b) {
                best = Some((epoch, entry.path()));
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

fn shapes_beside(dir: &Path) -> Result<Option<Member>, MxnetError> {
    let p = dir.join("model-shapes.json");
    if p.is_file() {
        Ok(Some(read(&p)?))
    } else {
        Ok(None)
    }
}

fn from_prefix(
    dir: &Path,
    prefix: &str,
    params: Option<PathBuf>,
) -> Result<CheckpointFiles, MxnetError> {
    let symbol_path = dir.join(format!("{prefix}-symbol.json"));
    if !symbol_path.is_file() {
        return Err(MxnetError::File {
            file: symbol_path.display().to_string(),
            message: "the checkpoint's symbol file is missing".into(),
        });
    }
    let params_path = match params {
        Some(p) => p,
        None => latest_params(dir, prefix)?.ok_or_else(|| MxnetError::File {
            file: dir
                .join(format!("{prefix}-NNNN.params"))
                .display()
                .to_string(),
            message: "no parameter file for the symbol".into(),
        })?,
    };
    Ok(CheckpointFiles {
        symbol: read(&symbol_path)?,
        params: read(&params_path)?,
        shapes: shapes_beside(dir)?,
    })
}

fn is_tarball(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar")
}

fn from_tarball(path: &Path) -> Result<CheckpointFiles, MxnetError> {
    let label = path.display().to_string();
    let mut raw = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| io_err(path, e))?;
    let tar_err = |e: std::io::Error| MxnetError::File {
        file: label.clone(),
        message: format!("not a readable tar.gz archive: {e}"),
    };
    let reader: Box<dyn Read + '_> = if raw.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&raw[..]))
    } else {
        Box::new(&raw[..])
    };
    let mut archive = tar::Archive::new(reader);
    let mut symbols: Vec<(String, Vec<u8>)> = Vec::new();
    let mut params: Vec<(String, u32, String, Vec<u8>)> = Vec::new();
    let mut shapes = None;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .into_owned();
        let base = member.rsplit('/').next().unwrap_or(&member).to_string();
        let wanted = base.ends_with("-symbol.json")
            || params_epoch(&base).is_some()
            || base == "model-shapes.json";
        if !wanted {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(tar_err)?;
        if let Some(prefix) = base.strip_suffix("-symbol.json") {
            symbols.push((prefix.to_string(), bytes));
        } else if let Some((prefix, epoch)) = params_epoch(&base) {
            params.push((prefix.to_string(), epoch, member, bytes));
        } else {
            shapes = Some(Member {
                label: format!("{label}:{member}"),
                bytes,
            });
        }
    }
    let (prefix, symbol) = match symbols.len() {
        1 => symbols.remove(0),
        0 => {
            return Err(MxnetError::File {
                file: label,
                message: "the archive holds no *-symbol.json (not an MXNet model archive)".into(),
            })
        }
        _ => {
            return Err(MxnetError::File {
                file: label,
                message: format!(
                    "the archive holds several symbols ({}); expected one",
                    symbols
                        .iter()
                        .map(|s| format!("{}-symbol.json", s.0))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
    };
    let best = params
        .into_iter()
        .filter(|p| p.0 == prefix)
        .max_by_key(|p| p.1)
        .ok_or_else(|| MxnetError::File {
            file: label.clone(),
            message: format!("the archive holds no {prefix}-NNNN.params for {prefix}-symbol.json"),
        })?;
    Ok(CheckpointFiles {
        symbol: Member {
            label: format!("{label}:{prefix}-symbol.json"),
            bytes: symbol,
        },
        params: Member {
            label: format!("{label}:{}", best.2),
            bytes: best.3,
        },
        shapes,
    })
}

/// The checkpoint `path` names, or `None` when it names none (such as a rectrain
/// artifact directory, which holds `config.json`).
pub fn locate(path: &Path) -> Result<Option<CheckpointFiles>, MxnetError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dir = path.parent().unwrap_or(Path::new(""));
    if path.is_file() {
        if is_tarball(path) {
            return from_tarball(path).map(Some);
        }
        if let Some(prefix) = name.strip_suffix("-symbol.json") {
            return from_prefix(dir, prefix, None).map(Some);
        }
        if let Some((prefix, _)) = params_epoch(name) {
            return from_prefix(dir, prefix, Some(path.to_path_buf())).map(Some);
        }
        return Ok(None);
    }
    if path.is_dir() {
        if path.join("config.json").exists() {
            return Ok(None);
        }
        let mut prefixes = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| io_err(path, e))? {
            let entry = entry.map_err(|e| io_err(path, e))?;
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix("-symbol.json"))
            {
                prefixes.push(p.to_string());
            }
        }
        prefixes.sort();
        return match prefixes.len() {
            0 => Ok(None),
            1 => from_prefix(path, &prefixes[0], None).map(Some),
            _ => Err(MxnetError::File {
                file: path.display().to_string(),
                message: format!(
                    "several MXNet symbols ({}); name one as --model DIR/PREFIX",
                    prefixes.join(", ")
                ),
            }),
        };
    }
    // A prefix: path/name → path/name-symbol.json.
    if !name.is_empty() && dir.join(format!("{name}-symbol.json")).is_file() {
        return from_prefix(dir, name, None).map(Some);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_from_names() {
        assert_eq!(
            params_epoch("image-classification-0010.params"),
            Some(("image-classification", 10))
        );
        assert_eq!(params_epoch("m-0.params"), Some(("m", 0)));
        assert_eq!(params_epoch("m.params"), None);
        assert_eq!(params_epoch("m-x1.params"), None);
    }

    #[test]
    fn prefix_directory_and_explicit_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::write(p.join("net-symbol.json"), b"S").unwrap();
        fs::write(p.join("net-0002.params"), b"P2").unwrap();
        fs::write(p.join("net-0010.params"), b"P10").unwrap();
        fs::write(p.join("other-0099.params"), b"X").unwrap();
        for arg in [p.to_path_buf(), p.join("net"), p.join("net-symbol.json")] {
            let f = locate(&arg).unwrap().unwrap();
            assert_eq!(f.params.bytes, b"P10", "{arg:?}");
            assert_eq!(f.symbol.bytes, b"S");
            assert!(f.shapes.is_none());
        }
        let f = locate(&p.join("net-0002.params")).unwrap().unwrap();
        assert_eq!(f.params.bytes, b"P2");
        // Not a checkpoint: no answer, so the caller can try its own format.
        assert!(locate(&p.join("nothing")).unwrap().is_none());
        // A symbol without parameters names the missing file.
        fs::write(p.join("lone-symbol.json"), b"S").unwrap();
        let e = locate(&p.join("lone")).unwrap_err().to_string();
        assert!(
            e.contains("lone-NNNN.params") && e.contains("no parameter file"),
            "{e}"
        );
        // Two symbols in a directory: ambiguous.
        let e = locate(p).unwrap_err().to_string();
        assert!(e.contains("several MXNet symbols"), "{e}");
    }
}
