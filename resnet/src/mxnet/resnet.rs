//! SageMaker's own network as a starting point for training (SageMaker's "incremental
//! training"): a checkpoint of MXNet's `resnet.py` ResNet recognised from its
//! parameters, read under rectrain's [`Layout::Mxnet`] names, and checked to compute
//! exactly what the checkpoint's graph computes.
//!
//! The graph interpreter ([`super::net`]) runs any checkpoint for prediction; training
//! needs the network as a burn module, which rectrain has for this one architecture:
//! the pre-activation ResNet of [`crate::model`]. Rather than trusting names alone,
//! [`open_trainable`] runs both on the same input and refuses the checkpoint when the
//! logits differ.

use std::path::Path;

use burn::tensor::{Tensor, TensorData};

use super::{archive, net, params, MxnetError, MxnetModel};
use crate::backend::CpuBackend;
use crate::model::{Layout, ResNetConfig, SUPPORTED_DEPTHS};
use crate::weights::{self, HostData, HostTensor, StateDict};
use crate::Head;

/// A checkpoint of SageMaker's ResNet, ready to be trained further.
#[derive(Debug, Clone)]
pub struct TrainableCheckpoint {
    /// The network: depth, classes and [`Layout::Mxnet`].
    pub network: ResNetConfig,
    /// The input `[C, H, W]` the checkpoint was trained for (`model-shapes.json`).
    pub image_shape: [usize; 3],
    /// Its head: softmax, or per-class sigmoids (SageMaker's `multi_label=1`).
    pub head: Head,
    /// Its weights under MXNet's names without `arg:`/`aux:` ([`crate::weights`]'s
    /// names for [`Layout::Mxnet`]).
    pub weights: StateDict,
    /// The parameter file, as messages name it.
    pub source: String,
}

/// The `nd.save` arrays as a state dict: `arg:`/`aux:` dropped from the names.
pub fn params_to_state_dict(arrays: Vec<(String, params::NdArray)>) -> StateDict {
    arrays
        .into_iter()
        .map(|(key, a)| {
            let name = key
                .strip_prefix("arg:")
                .or_else(|| key.strip_prefix("aux:"))
                .unwrap_or(&key)
                .to_string();
            (
                name,
                HostTensor {
                    shape: a.shape,
                    data: HostData::F32(a.data),
                },
            )
        })
        .collect()
}

/// The depth whose units per stage are `units` (basic or bottleneck units).
fn depth_of(units: &[usize], bottleneck: bool) -> Option<usize> {
    SUPPORTED_DEPTHS.into_iter().find(|&d| {
        ResNetConfig::new(d, 1)
            .stages()
            .is_ok_and(|(kind, blocks)| {
                blocks[..] == *units && (kind.expansion() == 4) == bottleneck
            })
    })
}

/// Read the checkpoint `path` names (a `model.tar.gz`, a folder or a prefix, as
/// [`archive::locate`]) as SageMaker's ResNet to train further. Errors name the file
/// and say what does not fit: not a checkpoint, another architecture, a depth rectrain
/// does not build, a small-image stem (height ≤ 32), a graph that computes something
/// else than the network rectrain would train.
pub fn open_trainable(path: &Path) -> Result<TrainableCheckpoint, MxnetError> {
    let files = archive::locate(path)?.ok_or_else(|| MxnetError::File {
        file: path.display().to_string(),
        message: "not an MXNet checkpoint: give SageMaker's model.tar.gz, or a folder or \
                  prefix with NAME-symbol.json and NAME-NNNN.params"
            .into(),
    })?;
    let model = MxnetModel::from_files(&files)?;
    let source = files.params.label.clone();
    let bad = |message: String| MxnetError::File {
        file: source.clone(),
        message,
    };
    let arrays = params::read_params(&files.params.bytes).map_err(|error| MxnetError::Params {
        file: source.clone(),
        error,
    })?;
    let weights = params_to_state_dict(arrays);
    let not_resnet = "not SageMaker's ResNet (MXNet's resnet.py), the network rectrain can \
                      train further";
    let num_classes = weights
        .get("fc1_weight")
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| bad(format!("no fc1_weight: {not_resnet}")))?;
    let bottleneck = weights.contains_key("stage1_unit1_conv3_weight");
    let units: Vec<usize> = (1..=4)
        .map(|s| {
            (1..)
                .take_while(|u| weights.contains_key(&format!("stage{s}_unit{u}_conv1_weight")))
                .count()
        })
        .collect();
    let num_layers = depth_of(&units, bottleneck).ok_or_else(|| {
        bad(format!(
            "{} units per stage {units:?}: {not_resnet} at 18, 34, 50, 101, 152 or 200 layers",
            if bottleneck { "bottleneck" } else { "basic" }
        ))
    })?;
    let image_shape = model.image_shape();
    let [c, h, w] = image_shape;
    if c != 3 {
        return Err(bad(format!(
            "image_shape {c},{h},{w}: the network takes 3 channels"
        )));
    }
    if h <= 32 {
        return Err(bad(format!(
            "image_shape {c},{h},{w}: for images of at most 32 pixels SageMaker's ResNet starts \
             with a 3×3 convolution and no pooling, a stem rectrain does not build"
        )));
    }
    let network = ResNetConfig::new(num_layers, num_classes).with_layout(Layout::Mxnet);
    let checkpoint = TrainableCheckpoint {
        network,
        image_shape,
        head: model.head(),
        weights,
        source,
    };
    check_same_function(&checkpoint, &model)?;
    Ok(checkpoint)
}

/// Runs rectrain's network with the checkpoint's weights and the checkpoint's own graph
/// on the same two images (deterministic values over 0–255) on the CPU, and refuses
/// the checkpoint when their logits differ by more than rounding.
fn check_same_function(
    checkpoint: &TrainableCheckpoint,
    model: &MxnetModel,
) -> Result<(), MxnetError> {
    let bad = |message: String| MxnetError::File {
        file: checkpoint.source.clone(),
        message,
    };
    let device = Default::default();
    let ours = checkpoint
        .network
        .try_init_zeroed::<CpuBackend>(&device)
        .map_err(|e| bad(e.to_string()))?;
    let ours = weights::load_state_dict(
        ours,
        &checkpoint.weights,
        Path::new(&checkpoint.source),
        &device,
    )
    .map_err(|e| bad(format!("{e} (not SageMaker's ResNet?)")))?;
    let [c, h, w] = checkpoint.image_shape;
    let n = 2;
    let values: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 256) as f32)
        .collect();
    let x = Tensor::<CpuBackend, 4>::from_data(TensorData::new(values, [n, c, h, w]), &device);
    let want: Vec<f32> = net::GraphNet::<CpuBackend>::new(&model.plan, &device)
        .forward(x.clone())
        .into_data()
        .to_vec()
        .expect("f32 logits");
    let got: Vec<f32> = ours
        .fold_batch_norm()
        .forward(x)
        .into_data()
        .to_vec()
        .expect("f32 logits");
    let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
    let diff = want
        .iter()
        .zip(&got)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    if !diff.is_finite() || diff > 1e-3 * scale {
        return Err(bad(format!(
            "the graph of {} is not the ResNet rectrain trains (its logits differ by {diff} \
             from rectrain's network with these weights): {}",
            model.source, "only MXNet's resnet.py network can be trained further"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{ArtifactConfig, FORMAT, FORMAT_VERSION};
    use crate::preprocess::Normalization;

    /// A pre-activation ResNet-18 with random weights and BatchNorm statistics, saved
    /// as a rectrain artifact of MXNet's layout and exported as an MXNet checkpoint
    /// folder (symbol, params, shapes) in `dir`.
    fn exported_checkpoint(dir: &Path) -> std::path::PathBuf {
        let device = Default::default();
        let cfg = ResNetConfig::new(18, 3).with_layout(Layout::Mxnet);
        let model = cfg.init::<CpuBackend>(&device);
        // Running statistics away from 0 and 1, so a misplaced BatchNorm shows.
        let mut sd = weights::to_state_dict(&model);
        let mut k = 0u32;
        for (name, t) in sd.iter_mut() {
            if let HostData::F32(v) = &mut t.data {
                for x in v.iter_mut() {
                    k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let r = (k >> 16) as f32 / 65_536.0;
                    if name.ends_with("_moving_var") {
                        *x = if name.starts_with("bn_data") {
                            3000.0
                        } else {
                            0.5 + r
                        };
                    } else if name.ends_with("_moving_mean") {
                        *x = if name.starts_with("bn_data") {
                            100.0
                        } else {
                            r - 0.5
                        };
                    } else if name.ends_with("_beta") {
                        *x = 0.2 * (r - 0.5);
                    }
                }
            }
        }
        let model = weights::load_state_dict(model, &sd, Path::new("test"), &device).unwrap();
        let art_dir = dir.join("artifact");
        std::fs::create_dir_all(&art_dir).unwrap();
        weights::save_safetensors(&model, &crate::artifact::weights_path(&art_dir)).unwrap();
        ArtifactConfig {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            architecture: Layout::Mxnet.architecture().into(),
            num_layers: 18,
            num_classes: 3,
            image_shape: [3, 40, 40],
            resize: None,
            head: Head::Softmax,
            normalization: Normalization::raw(),
            class_names: None,
            hyperparameters: serde_json::json!({}),
            training: serde_json::json!({}),
        }
        .save(&art_dir)
        .unwrap();
        let (_, symbol, params) = super::super::export::artifact_to_mxnet(&art_dir).unwrap();
        let ck = dir.join("ck");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::write(ck.join("m-symbol.json"), symbol).unwrap();
        std::fs::write(ck.join("m-0001.params"), params).unwrap();
        std::fs::write(
            ck.join("model-shapes.json"),
            r#"[{"name": "data", "shape": [1, 3, 40, 40]}]"#,
        )
        .unwrap();
        ck
    }

    #[test]
    fn sagemakers_network_opens_for_training() {
        let tmp = tempfile::tempdir().unwrap();
        let ck = exported_checkpoint(tmp.path());
        let t = open_trainable(&ck).unwrap();
        assert_eq!(
            t.network,
            ResNetConfig::new(18, 3).with_layout(Layout::Mxnet)
        );
        assert_eq!(t.image_shape, [3, 40, 40]);
        assert_eq!(t.head, Head::Softmax);
        assert!(t.weights.contains_key("stage1_unit1_sc_weight"));
        assert!(t.source.ends_with("m-0001.params"), "{}", t.source);
    }

    #[test]
    fn another_graph_with_the_same_weights_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ck = exported_checkpoint(tmp.path());
        let path = ck.join("m-symbol.json");
        let text = std::fs::read_to_string(&path).unwrap();
        // One ReLU becomes a tanh: every name and shape still fits.
        let changed = text.replacen("\"relu\"", "\"tanh\"", 2);
        assert_ne!(changed, text);
        std::fs::write(&path, changed).unwrap();
        let e = open_trainable(&ck).unwrap_err().to_string();
        assert!(
            e.contains("m-0001.params") && e.contains("is not the ResNet rectrain trains"),
            "{e}"
        );
        // A small-image input (SageMaker's 3×3 stem) is refused before any weight.
        std::fs::write(&path, text).unwrap();
        std::fs::write(
            ck.join("model-shapes.json"),
            r#"[{"name": "data", "shape": [1, 3, 32, 32]}]"#,
        )
        .unwrap();
        let e = open_trainable(&ck).unwrap_err().to_string();
        assert!(e.contains("at most 32 pixels"), "{e}");
    }

    #[test]
    fn mxnets_narrow_fixture_is_not_the_network_rectrain_trains() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/mxnet/resnet18/model.tar.gz");
        let e = open_trainable(&fixture).unwrap_err().to_string();
        assert!(
            e.contains("image-classification-0003.params") && e.contains("conv0_weight"),
            "{e}"
        );
    }
}
