//! MXNet Module checkpoints — what SageMaker's built-in image classifier saves
//! (`model.tar.gz` with `image-classification-symbol.json`,
//! `image-classification-NNNN.params` and `model-shapes.json`) — read and run in burn.
//! The one home of the MXNet model format, shared by `recpredict`.
//!
//! - [`params`]: the `nd.save` binary format (read and write);
//! - [`symbol`]: the symbol JSON graph;
//! - [`graph`]: the graph checked against the parameters and compiled to a [`graph::Plan`];
//! - [`net`]: the plan run in burn on any backend ([`net::predictor`], an
//!   [`crate::infer::Predictor`]);
//! - [`archive`]: finding the files (tarball, directory, prefix);
//! - [`export`]: rectrain's artifact written as a SageMaker-style `model.tar.gz`;
//! - [`resnet`]: SageMaker's ResNet checkpoint opened for further training.
//!
//! [`MxnetModel::open`] does all of it up to the plan. Its preprocessing
//! ([`MxnetModel::preprocess`]) is SageMaker's endpoint's: the image squashed to
//! `image_shape` (RGB), raw 0–255 values (the ResNet symbol normalises with its own
//! `bn_data` BatchNorm on the input).

pub mod archive;
pub mod export;
pub mod graph;
pub mod net;
pub mod params;
pub mod resnet;
pub mod symbol;

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::preprocess::{Normalization, PreprocessConfig};
use crate::Head;

/// The input shape SageMaker's image classifier uses by default (`image_shape`).
pub const DEFAULT_INPUT_SHAPE: [usize; 3] = [3, 224, 224];

/// The name of the input variable of MXNet's image-classification symbols.
pub const DATA_NAME: &str = "data";

/// Why an MXNet checkpoint cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MxnetError {
    /// A file is missing, unreadable, or not what it should be.
    #[error("{file}: {message}")]
    File {
        /// The file (`archive:member` inside a tarball).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The parameter file is malformed.
    #[error("{file}: {error}")]
    Params {
        /// The file.
        file: String,
        /// What is wrong.
        error: params::ParamsError,
    },
    /// The symbol file is malformed.
    #[error("{file}: {error}")]
    Symbol {
        /// The file.
        file: String,
        /// What is wrong.
        error: symbol::SymbolError,
    },
    /// The graph cannot be run with these parameters.
    #[error("{file}: {error}")]
    Graph {
        /// The symbol file, and the parameter file when a parameter is at fault.
        file: String,
        /// What is wrong.
        error: graph::GraphError,
    },
}

#[derive(Deserialize)]
struct ShapeEntry {
    name: String,
    shape: Vec<usize>,
}

/// A checkpoint compiled for inference.
#[derive(Debug, Clone)]
pub struct MxnetModel {
    /// The compiled network.
    pub plan: graph::Plan,
    /// Where it came from (the symbol file's label), for messages.
    pub source: String,
}

/// The input `[C, H, W]`: `model-shapes.json`'s entry for `data`, the data variable's
/// `__shape__`, or SageMaker's default 3×224×224.
fn input_shape(
    files: &archive::CheckpointFiles,
    sym: &symbol::Symbol,
) -> Result<[usize; 3], MxnetError> {
    if let Some(shapes) = &files.shapes {
        let bad = |message: String| MxnetError::File {
            file: shapes.label.clone(),
            message,
        };
        let entries: Vec<ShapeEntry> = serde_json::from_slice(&shapes.bytes).map_err(|e| {
            bad(format!(
                "not a list of {{\"name\", \"shape\"}} objects: {e}"
            ))
        })?;
        let entry = entries
            .iter()
            .find(|e| e.name == DATA_NAME)
            .ok_or_else(|| bad(format!("no entry named {DATA_NAME:?}")))?;
        return match entry.shape[..] {
            [_, c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
            _ => Err(bad(format!(
                "shape {:?} of {DATA_NAME:?} is not N×C×H×W",
                entry.shape
            ))),
        };
    }
    let declared = sym
        .nodes
        .iter()
        .find(|n| n.op == "null" && n.name == DATA_NAME)
        .and_then(|n| n.attrs.get("__shape__"))
        .and_then(|s| symbol::parse_tuple(s));
    Ok(match declared.as_deref() {
        Some(&[_, c, h, w]) if c > 0 && h > 0 && w > 0 => [c, h, w],
        _ => DEFAULT_INPUT_SHAPE,
    })
}

impl MxnetModel {
    /// Read and compile the checkpoint `path` names (see [`archive`]); `Ok(None)`
    /// when `path` is not an MXNet checkpoint.
    pub fn open(path: &Path) -> Result<Option<Self>, MxnetError> {
        match archive::locate(path)? {
            None => Ok(None),
            Some(files) => Self::from_files(&files).map(Some),
        }
    }

    /// Compile a checkpoint's files.
    pub fn from_files(files: &archive::CheckpointFiles) -> Result<Self, MxnetError> {
        let sym =
            symbol::parse_symbol(&files.symbol.bytes).map_err(|error| MxnetError::Symbol {
                file: files.symbol.label.clone(),
                error,
            })?;
        let arrays =
            params::read_params(&files.params.bytes).map_err(|error| MxnetError::Params {
                file: files.params.label.clone(),
                error,
            })?;
        let table: HashMap<String, params::NdArray> = arrays.into_iter().collect();
        let shape = input_shape(files, &sym)?;
        let plan = graph::compile(&sym, &table, DATA_NAME, shape).map_err(|error| {
            let file = match &error {
                graph::GraphError::Param { .. } => {
                    format!("{} with {}", files.symbol.label, files.params.label)
                }
                _ => files.symbol.label.clone(),
            };
            MxnetError::Graph { file, error }
        })?;
        Ok(MxnetModel {
            plan,
            source: files.symbol.label.clone(),
        })
    }

    /// The input `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.plan.input_shape
    }

    /// Classes (the length of each probability vector).
    pub fn num_classes(&self) -> usize {
        self.plan.num_classes
    }

    /// How the logits become probabilities (softmax, or per-class sigmoids).
    pub fn head(&self) -> Head {
        self.plan.head
    }

    /// The preprocessing the network expects: no shorter-side resize (callers squash
    /// to `image_shape`, as the SageMaker endpoint does) and raw 0–255 pixel values.
    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig {
            image_shape: self.plan.input_shape,
            resize: None,
            normalization: Normalization::raw(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Precision, ResolvedDevice};
    use crate::preprocess::{preprocess_eval, EvalMode};
    use std::path::PathBuf;

    /// The fixtures written by MXNet 1.9.1 (`scripts/fixtures/make_mxnet_fixtures.py`).
    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mxnet")
    }

    #[derive(Deserialize)]
    struct Expected {
        images: Vec<String>,
        probabilities: Vec<Vec<f32>>,
    }

    /// MXNet's own files parse: every array of the `.params` has the shape the symbol
    /// needs, and the imported network gives MXNet's probabilities (≤ 1e-4).
    #[test]
    fn fixtures_match_mxnet_forward() {
        for (name, classes) in [("resnet18", 5), ("resnet50", 4)] {
            let dir = fixtures().join(name);
            let model = MxnetModel::open(&dir.join("model.tar.gz"))
                .unwrap()
                .unwrap();
            assert_eq!(model.image_shape(), [3, 48, 48]);
            assert_eq!(model.num_classes(), classes);
            assert_eq!(model.head(), Head::Softmax);
            let expected: Expected =
                serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
            let cfg = model.preprocess();
            let n = expected.images.len();
            let mut images = vec![0f32; n * cfg.len()];
            for (img, buf) in expected.images.iter().zip(images.chunks_mut(cfg.len())) {
                let bytes = std::fs::read(fixtures().join("images").join(img)).unwrap();
                preprocess_eval(&bytes, &cfg, EvalMode::Squash, buf).unwrap();
            }
            let p = net::predictor(&model.plan, &ResolvedDevice::Cpu, Precision::F32)
                .unwrap()
                .with_batch_size(2);
            let got = p.predict(&images, n, cfg.image_shape).unwrap();
            let mut max = 0f32;
            for (g, e) in got.iter().zip(&expected.probabilities) {
                for (a, b) in g.iter().zip(e) {
                    max = max.max((a - b).abs());
                }
            }
            assert!(max <= 1e-4, "{name}: max abs difference {max}");
        }
    }

    fn resnet18_files() -> archive::CheckpointFiles {
        archive::locate(&fixtures().join("resnet18"))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn params_file_holds_mxnet_names_and_shapes() {
        let f = resnet18_files();
        let arrays = params::read_params(&f.params.bytes).unwrap();
        let names: HashMap<_, _> = arrays.into_iter().collect();
        assert_eq!(names["arg:conv0_weight"].shape, vec![4, 3, 7, 7]);
        assert_eq!(names["arg:fc1_weight"].shape, vec![5, 32]);
        assert_eq!(names["aux:bn_data_moving_var"].shape, vec![3]);
        assert!(names.contains_key("arg:stage4_unit2_conv2_weight"));
        // Our writer gives back MXNet's bytes exactly.
        let again = params::write_params(&params::read_params(&f.params.bytes).unwrap());
        assert_eq!(again, f.params.bytes);
    }

    #[test]
    fn bad_graphs_are_named_errors() {
        let f = resnet18_files();
        let sym = String::from_utf8(f.symbol.bytes.clone()).unwrap();
        let with_symbol = |text: String| {
            let mut g = f.clone();
            g.symbol.bytes = text.into_bytes();
            MxnetModel::from_files(&g).unwrap_err().to_string()
        };
        let e = with_symbol(sym.replacen("\"Flatten\"", "\"SpatialTransformer\"", 1));
        assert!(
            e.contains("image-classification-symbol.json")
                && e.contains("SpatialTransformer is not supported")
                && e.contains("flatten"),
            "{e}"
        );
        let e = with_symbol(sym.replace("\"num_hidden\": \"5\"", "\"num_hidden\": \"6\""));
        assert!(
            e.contains("fc1_weight") && e.contains("[5, 32]") && e.contains("[6, 32]"),
            "{e}"
        );
        let e = with_symbol(sym[..sym.len() / 2].to_string());
        assert!(e.contains("not an MXNet symbol JSON"), "{e}");
        let mut g = f.clone();
        g.params.bytes.truncate(g.params.bytes.len() - 10);
        let e = MxnetModel::from_files(&g).unwrap_err().to_string();
        assert!(e.contains("-0003.params: truncated"), "{e}");
    }
}
