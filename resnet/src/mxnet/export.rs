//! rectrain's artifact as a SageMaker-style MXNet model: `model.tar.gz` with
//! `image-classification-symbol.json`, `image-classification-NNNN.params` and
//! `model-shapes.json`, loadable by MXNet 1.9's `mx.mod.Module.load` and by
//! [`super::MxnetModel`].
//!
//! The symbol is OUR network — torchvision's post-activation ResNet, which rectrain
//! trains — written with MXNet operators: `bn_data` (a `fix_gamma` BatchNorm on the raw
//! 0–255 input that performs rectrain's normalisation, `(p/255 − mean)/std`, so the
//! model takes what SageMaker's endpoint feeds), `conv0`/`bn0`/`relu0`/`pool0`, then per
//! residual unit `stageS_unitU_{conv1,bn1,relu1,conv2,bn2[,relu2,conv3,bn3][,sc,sc_bn],plus,relu}`,
//! `pool1` (global average), `flatten0`, `fc1` and `softmax` (`SoftmaxOutput`; a
//! multi-label model ends in `LogisticRegressionOutput`, per-class sigmoids).
//! An artifact of MXNet's own pre-activation network (trained further from SageMaker's
//! `model.tar.gz`, [`Layout::Mxnet`]) is written as the graph MXNet's `resnet.py` builds,
//! with the same node and parameter names, so it goes back to SageMaker as its own.
//! The epoch number NNNN is the artifact's best epoch + 1, as SageMaker numbers it.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::params::{write_params, NdArray};
use crate::artifact::{self, ArtifactConfig};
use crate::model::Layout;
use crate::weights::{read_state_dict, HostData, StateDict};

/// Why an artifact cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The artifact cannot be read.
    #[error("{0}")]
    Artifact(String),
    /// The weights do not describe a ResNet this exporter knows.
    #[error("{path}: {message}")]
    Weights {
        /// The weights file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the archive failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The checkpoint prefix SageMaker's image classifier uses.
pub const PREFIX: &str = "image-classification";

/// The BatchNorm epsilon of rectrain's ResNet (torchvision's).
const BN_EPS: f64 = 1e-5;

struct Builder<'a> {
    nodes: Vec<Value>,
    arg_nodes: Vec<usize>,
    params: Vec<(String, NdArray)>,
    sd: &'a StateDict,
    weights: String,
    /// The state dict holds MXNet's names ([`Layout::Mxnet`]), not torchvision's.
    mxnet_names: bool,
}

impl Builder<'_> {
    /// The state-dict key of layer `key`'s tensor (torchvision's suffix, MXNet's).
    fn key(&self, key: &str, torch: &str, mxnet: &str) -> String {
        if self.mxnet_names {
            format!("{key}_{mxnet}")
        } else {
            format!("{key}.{torch}")
        }
    }

    fn tensor(&self, key: &str) -> Result<NdArray, ExportError> {
        let t = self.sd.get(key).ok_or_else(|| ExportError::Weights {
            path: self.weights.clone(),
            message: format!("tensor {key} is missing"),
        })?;
        match &t.data {
            HostData::F32(v) => Ok(NdArray {
                shape: t.shape.clone(),
                data: v.clone(),
            }),
            HostData::I64(_) => Err(ExportError::Weights {
                path: self.weights.clone(),
                message: format!("tensor {key} is not floating-point"),
            }),
        }
    }

    fn variable(&mut self, name: &str, value: Option<(&str, NdArray)>) -> usize {
        self.nodes
            .push(json!({"op": "null", "name": name, "inputs": []}));
        let id = self.nodes.len() - 1;
        self.arg_nodes.push(id);
        if let Some((kind, array)) = value {
            self.params.push((format!("{kind}:{name}"), array));
        }
        id
    }

    fn op(&mut self, op: &str, name: &str, attrs: Value, inputs: &[usize]) -> usize {
        let inputs: Vec<Value> = inputs.iter().map(|&i| json!([i, 0, 0])).collect();
        let mut node = json!({"op": op, "name": name, "inputs": inputs});
        if attrs.as_object().is_some_and(|o| !o.is_empty()) {
            node["attrs"] = attrs;
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn conv(
        &mut self,
        x: usize,
        name: &str,
        key: &str,
        stride: usize,
    ) -> Result<usize, ExportError> {
        let w = self.tensor(&self.key(key, "weight", "weight"))?;
        let (filters, k) = (w.shape[0], w.shape[2]);
        let pad = k / 2;
        let attrs = json!({
            "kernel": format!("({k}, {k})"),
            "no_bias": "True",
            "num_filter": filters.to_string(),
            "pad": format!("({pad}, {pad})"),
            "stride": format!("({stride}, {stride})"),
        });
        let wv = self.variable(&format!("{name}_weight"), Some(("arg", w)));
        Ok(self.op("Convolution", name, attrs, &[x, wv]))
    }

    fn bn_with(
        &mut self,
        x: usize,
        name: &str,
        fix_gamma: bool,
        eps: f64,
        [gamma, beta, mean, var]: [NdArray; 4],
    ) -> usize {
        let attrs = json!({
            "eps": format!("{eps:e}"),
            "fix_gamma": if fix_gamma { "True" } else { "False" },
            "momentum": "0.9",
        });
        let g = self.variable(&format!("{name}_gamma"), Some(("arg", gamma)));
        let b = self.variable(&format!("{name}_beta"), Some(("arg", beta)));
        let m = self.variable(&format!("{name}_moving_mean"), Some(("aux", mean)));
        let v = self.variable(&format!("{name}_moving_var"), Some(("aux", var)));
        self.op("BatchNorm", name, attrs, &[x, g, b, m, v])
    }

    fn bn(&mut self, x: usize, name: &str, key: &str) -> Result<usize, ExportError> {
        let arrays = [
            self.tensor(&self.key(key, "weight", "gamma"))?,
            self.tensor(&self.key(key, "bias", "beta"))?,
            self.tensor(&self.key(key, "running_mean", "moving_mean"))?,
            self.tensor(&self.key(key, "running_var", "moving_var"))?,
        ];
        let eps = if self.mxnet_names {
            Layout::Mxnet.bn_epsilon()
        } else {
            BN_EPS
        };
        Ok(self.bn_with(x, name, false, eps, arrays))
    }

    /// MXNet's own layer, named as in the state dict.
    fn bn_mxnet(&mut self, x: usize, name: &str) -> Result<usize, ExportError> {
        self.bn(x, name, name)
    }

    fn missing(&self, message: String) -> ExportError {
        ExportError::Weights {
            path: self.weights.clone(),
            message,
        }
    }

    /// `pool1` (global average) and `flatten0`: both networks' features.
    fn global_pool_flatten(&mut self, x: usize) -> usize {
        let x = self.op(
            "Pooling",
            "pool1",
            json!({"global_pool": "True", "kernel": "(7, 7)", "pool_type": "avg"}),
            &[x],
        );
        self.op("Flatten", "flatten0", json!({}), &[x])
    }

    fn relu(&mut self, x: usize, name: &str) -> usize {
        self.op("Activation", name, json!({"act_type": "relu"}), &[x])
    }
}

/// The symbol JSON and the `nd.save` parameter bytes of the artifact in `dir`.
pub fn artifact_to_mxnet(dir: &Path) -> Result<(ArtifactConfig, Vec<u8>, Vec<u8>), ExportError> {
    let art = ArtifactConfig::load(dir).map_err(|e| ExportError::Artifact(e.to_string()))?;
    let wpath = artifact::weights_path(dir);
    let sd = read_state_dict(&wpath).map_err(|e| ExportError::Weights {
        path: wpath.display().to_string(),
        message: e.to_string(),
    })?;
    let mut b = Builder {
        nodes: Vec::new(),
        arg_nodes: Vec::new(),
        params: Vec::new(),
        sd: &sd,
        weights: wpath.display().to_string(),
        mxnet_names: art.layout() == Layout::Mxnet,
    };
    let x = match art.layout() {
        Layout::Torchvision => torchvision_graph(&mut b, &art)?,
        Layout::Mxnet => preact_graph(&mut b)?,
    };
    let fw = b.tensor(&b.key(fc_name(art.layout()), "weight", "weight"))?;
    let fb = b.tensor(&b.key(fc_name(art.layout()), "bias", "bias"))?;
    let hidden = fw.shape[0];
    let wv = b.variable("fc1_weight", Some(("arg", fw)));
    let bv = b.variable("fc1_bias", Some(("arg", fb)));
    let x = b.op(
        "FullyConnected",
        "fc1",
        json!({"num_hidden": hidden.to_string()}),
        &[x, wv, bv],
    );
    let label = b.variable("softmax_label", None);
    let head = if art.head.is_multi_label() {
        b.op(
            "LogisticRegressionOutput",
            "softmax",
            json!({}),
            &[x, label],
        )
    } else {
        b.op("SoftmaxOutput", "softmax", json!({}), &[x, label])
    };
    let symbol = json!({
        "nodes": b.nodes,
        "arg_nodes": b.arg_nodes,
        "heads": [[head, 0, 0]],
        "attrs": {"mxnet_version": ["int", 10901]},
    });
    let symbol = serde_json::to_vec_pretty(&symbol).expect("JSON values serialise");
    Ok((art, symbol, write_params(&b.params)))
}

/// The classifier's name in the state dict.
fn fc_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Torchvision => "fc",
        Layout::Mxnet => "fc1",
    }
}

/// MXNet's `resnet.py` network (SageMaker's), node for node as MXNet builds it
/// (ImageNet stem): `id`, `bn_data`, `conv0`/`bn0`/`relu0`/`pooling0`, pre-activation
/// units `stageS_unitU_{bn1,relu1,conv1,bn2,relu2,conv2[,bn3,relu3,conv3][,sc]}` and
/// their sums, `bn1`/`relu1`/`pool1`/`flatten0`. Returns the flattened features.
fn preact_graph(b: &mut Builder) -> Result<usize, ExportError> {
    let data = b.variable(super::DATA_NAME, None);
    let mut x = b.op("_copy", "id", json!({}), &[data]);
    let arrays = [
        b.tensor("bn_data_gamma")?,
        b.tensor("bn_data_beta")?,
        b.tensor("bn_data_moving_mean")?,
        b.tensor("bn_data_moving_var")?,
    ];
    x = b.bn_with(x, "bn_data", true, Layout::Mxnet.bn_epsilon(), arrays);
    x = b.conv(x, "conv0", "conv0", 2)?;
    x = b.bn_mxnet(x, "bn0")?;
    x = b.relu(x, "relu0");
    x = b.op(
        "Pooling",
        "pooling0",
        json!({"kernel": "(3, 3)", "pad": "(1, 1)", "pool_type": "max", "stride": "(2, 2)"}),
        &[x],
    );
    let bottleneck = b.sd.contains_key("stage1_unit1_conv3_weight");
    let mut plus = 0;
    for stage in 1..=4 {
        let mut unit = 1;
        while b
            .sd
            .contains_key(&format!("stage{stage}_unit{unit}_conv1_weight"))
        {
            let name = format!("stage{stage}_unit{unit}");
            let stride = if stage > 1 && unit == 1 { 2 } else { 1 };
            let input = x;
            let mut y = b.bn_mxnet(input, &format!("{name}_bn1"))?;
            let act1 = b.relu(y, &format!("{name}_relu1"));
            let convs = if bottleneck { 3 } else { 2 };
            y = act1;
            for k in 1..=convs {
                if k > 1 {
                    y = b.bn_mxnet(y, &format!("{name}_bn{k}"))?;
                    y = b.relu(y, &format!("{name}_relu{k}"));
                }
                // The stride sits on the 3×3 convolution: the first of a basic
                // unit, the second of a bottleneck.
                let s = if (bottleneck && k == 2) || (!bottleneck && k == 1) {
                    stride
                } else {
                    1
                };
                let conv = format!("{name}_conv{k}");
                y = b.conv(y, &conv, &conv, s)?;
            }
            let sc = format!("{name}_sc");
            let shortcut = if b.sd.contains_key(&format!("{sc}_weight")) {
                b.conv(act1, &sc, &sc, stride)?
            } else {
                input
            };
            x = b.op(
                "elemwise_add",
                &format!("_plus{plus}"),
                json!({}),
                &[y, shortcut],
            );
            plus += 1;
            unit += 1;
        }
        if unit == 1 {
            return Err(b.missing(format!("no residual units in stage{stage}")));
        }
    }
    x = b.bn_mxnet(x, "bn1")?;
    x = b.relu(x, "relu1");
    Ok(b.global_pool_flatten(x))
}

/// rectrain's torchvision network with MXNet operators (see the module
/// documentation). Returns the flattened features.
fn torchvision_graph(b: &mut Builder, art: &ArtifactConfig) -> Result<usize, ExportError> {
    let c = art.image_shape[0];
    let data = b.variable(super::DATA_NAME, None);
    // bn_data: (x − 255·mean) / sqrt(255²·std² − eps + eps) = (x/255 − mean)/std.
    let eps = 2e-5;
    let n = &art.normalization;
    let ones = NdArray {
        shape: vec![c],
        data: vec![1.0; c],
    };
    let zeros = NdArray {
        shape: vec![c],
        data: vec![0.0; c],
    };
    let mean = NdArray {
        shape: vec![c],
        data: (0..c)
            .map(|i| (255.0 * f64::from(n.mean[i])) as f32)
            .collect(),
    };
    let var = NdArray {
        shape: vec![c],
        data: (0..c)
            .map(|i| ((255.0 * f64::from(n.std[i])).powi(2) - eps) as f32)
            .collect(),
    };
    let mut x = b.bn_with(data, "bn_data", true, eps, [ones, zeros, mean, var]);
    x = b.conv(x, "conv0", "conv1", 2)?;
    x = b.bn(x, "bn0", "bn1")?;
    x = b.relu(x, "relu0");
    x = b.op(
        "Pooling",
        "pool0",
        json!({"kernel": "(3, 3)", "pad": "(1, 1)", "pool_type": "max", "stride": "(2, 2)"}),
        &[x],
    );
    let bottleneck = b.sd.contains_key("layer1.0.conv3.weight");
    for stage in 1..=4 {
        let mut unit = 0;
        while b
            .sd
            .contains_key(&format!("layer{stage}.{unit}.conv1.weight"))
        {
            let key = format!("layer{stage}.{unit}");
            let name = format!("stage{stage}_unit{}", unit + 1);
            let stride = if stage > 1 && unit == 0 { 2 } else { 1 };
            let input = x;
            let shortcut = if b.sd.contains_key(&format!("{key}.downsample.0.weight")) {
                let s = b.conv(
                    input,
                    &format!("{name}_sc"),
                    &format!("{key}.downsample.0"),
                    stride,
                )?;
                b.bn(s, &format!("{name}_sc_bn"), &format!("{key}.downsample.1"))?
            } else {
                input
            };
            // torchvision v1.5: the stride sits on the 3×3 convolution.
            let (s1, s2) = if bottleneck { (1, stride) } else { (stride, 1) };
            let mut y = b.conv(input, &format!("{name}_conv1"), &format!("{key}.conv1"), s1)?;
            y = b.bn(y, &format!("{name}_bn1"), &format!("{key}.bn1"))?;
            y = b.relu(y, &format!("{name}_relu1"));
            y = b.conv(y, &format!("{name}_conv2"), &format!("{key}.conv2"), s2)?;
            y = b.bn(y, &format!("{name}_bn2"), &format!("{key}.bn2"))?;
            if bottleneck {
                y = b.relu(y, &format!("{name}_relu2"));
                y = b.conv(y, &format!("{name}_conv3"), &format!("{key}.conv3"), 1)?;
                y = b.bn(y, &format!("{name}_bn3"), &format!("{key}.bn3"))?;
            }
            let sum = b.op(
                "elemwise_add",
                &format!("{name}_plus"),
                json!({}),
                &[y, shortcut],
            );
            x = b.relu(sum, &format!("{name}_relu"));
            unit += 1;
        }
        if unit == 0 {
            return Err(b.missing(format!("no residual units in layer{stage}")));
        }
    }
    Ok(b.global_pool_flatten(x))
}

/// The checkpoint's epoch number: the artifact's best epoch + 1 (SageMaker's NNNN), or 0.
fn epoch_number(art: &ArtifactConfig) -> u64 {
    art.training
        .get("best_epoch")
        .and_then(Value::as_u64)
        .map_or(0, |e| e + 1)
}

/// Write the artifact in `dir` as a SageMaker-style `model.tar.gz` at `out` (through a
/// temporary name, renamed when complete). Returns the archive's member names.
pub fn export_tarball(dir: &Path, out: &Path) -> Result<Vec<String>, ExportError> {
    let (art, symbol, params) = artifact_to_mxnet(dir)?;
    let [c, h, w] = art.image_shape;
    let shapes = serde_json::to_vec(&json!([{"name": super::DATA_NAME, "shape": [1, c, h, w]}]))
        .expect("JSON values serialise");
    let members = [
        (format!("{PREFIX}-symbol.json"), symbol),
        (format!("{PREFIX}-{:04}.params", epoch_number(&art)), params),
        ("model-shapes.json".to_string(), shapes),
    ];
    let tmp = out.with_extension("tmp");
    let werr = |source| ExportError::Write {
        path: out.display().to_string(),
        source,
    };
    let file = std::fs::File::create(&tmp).map_err(werr)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in &members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, &bytes[..])
            .map_err(werr)?;
    }
    let gz = tar.into_inner().map_err(werr)?;
    let mut file = gz.finish().map_err(werr)?;
    file.flush().map_err(werr)?;
    file.sync_all().map_err(werr)?;
    drop(file);
    std::fs::rename(&tmp, out).map_err(werr)?;
    Ok(members.into_iter().map(|(n, _)| n).collect())
}
