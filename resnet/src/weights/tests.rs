//! Unit tests of the weights module: round trips, key names, import policy.

use super::*;
use crate::model::ResNetConfig;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

type B = Flex;

fn model(classes: usize) -> ResNet<B> {
    ResNetConfig::new(18, classes).init::<B>(&Default::default())
}

fn logits(m: &ResNet<B>) -> Vec<f32> {
    let device = Default::default();
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(
            (0..2 * 3 * 32 * 32)
                .map(|i| ((i % 97) as f32 / 97.0) - 0.5)
                .collect::<Vec<_>>(),
            [2, 3, 32, 32],
        ),
        &device,
    );
    m.forward(x).into_data().to_vec::<f32>().unwrap()
}

/// Perturbs BatchNorm statistics so that a loader that skipped them would be caught.
fn with_random_stats(m: ResNet<B>) -> ResNet<B> {
    let mut sd = to_state_dict(&m);
    for (k, t) in sd.iter_mut() {
        if let HostData::F32(v) = &mut t.data {
            if k.ends_with("running_var") {
                v.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = 0.5 + (i % 7) as f32 / 7.0);
            } else if k.ends_with("running_mean") || k.ends_with("bn1.bias") {
                v.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = ((i % 5) as f32 - 2.0) / 10.0);
            }
        }
    }
    load_state_dict(m, &sd, Path::new("test"), &Default::default()).unwrap()
}

#[test]
fn save_then_load_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let a = with_random_stats(model(5));
    save_safetensors(&a, &path).unwrap();
    let b = load_safetensors(model(5), &path, &Default::default()).unwrap();
    assert_eq!(to_state_dict(&a), to_state_dict(&b));
    assert_eq!(logits(&a), logits(&b));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn saved_keys_are_torchvisions() {
    let m = model(10);
    let keys = state_dict_keys(&m);
    assert_eq!(keys.len(), 122); // torchvision resnet18().state_dict() has 122 entries
    assert_eq!(keys[0], "conv1.weight");
    assert!(keys.contains(&"layer2.0.downsample.0.weight".to_string()));
    assert!(keys.contains(&"layer4.1.bn2.num_batches_tracked".to_string()));
    assert_eq!(keys.last().unwrap(), "fc.bias");
    let sd = to_state_dict(&m);
    assert_eq!(sd["fc.weight"].shape, vec![10, 512]);
    assert_eq!(sd["bn1.num_batches_tracked"].data, HostData::I64(vec![0]));
}

fn prefixed(sd: &StateDict, prefix: &str) -> StateDict {
    sd.iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect()
}

#[test]
fn prefix_is_stripped_and_extras_reported() {
    let src = with_random_stats(model(10));
    let mut sd = prefixed(&to_state_dict(&src), "backbone.");
    sd.insert(
        "head2.weight".into(),
        HostTensor {
            shape: vec![1],
            data: HostData::F32(vec![1.0]),
        },
    );
    let (m, report) = apply_state_dict(
        model(10),
        &sd,
        Path::new("x.pth"),
        HeadPolicy::Keep,
        false,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.stripped_prefix.as_deref(), Some("backbone."));
    assert_eq!(report.unexpected, vec!["head2.weight".to_string()]);
    assert!(report.missing.is_empty());
    assert!(!report.reinitialised_head);
    // resnet18 has 122 entries, 20 of them num_batches_tracked.
    assert_eq!(report.loaded, 102);
    assert_eq!(logits(&m), logits(&src));
}

#[test]
fn head_is_reinitialised_or_kept() {
    let src = with_random_stats(model(1000));
    let sd = to_state_dict(&src);
    // Reinit: a 1000-class file into a 10-class model.
    let fresh = model(10);
    let fresh_fc = to_state_dict(&fresh)["fc.weight"].clone();
    let (m, report) = apply_state_dict(
        fresh,
        &sd,
        Path::new("x.pth"),
        HeadPolicy::Reinit,
        false,
        &Default::default(),
    )
    .unwrap();
    assert!(report.reinitialised_head);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let out = to_state_dict(&m);
    assert_eq!(out["fc.weight"], fresh_fc);
    assert_eq!(out["conv1.weight"], sd["conv1.weight"]);
    assert_eq!(
        out["layer3.1.bn2.running_var"],
        sd["layer3.1.bn2.running_var"]
    );
    // Keep with a different class count: an error naming fc.weight.
    let e = apply_state_dict(
        model(10),
        &sd,
        Path::new("x.pth"),
        HeadPolicy::Keep,
        false,
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, WeightsError::ShapeMismatch { ref key, .. } if key == "fc.weight"),
        "{e}"
    );
    // Keep with the same count: identical network.
    let (m, _) = apply_state_dict(
        model(1000),
        &sd,
        Path::new("x.pth"),
        HeadPolicy::Keep,
        false,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(to_state_dict(&m), sd);
}

#[test]
fn missing_backbone_tensors_are_an_error_listing_them() {
    let mut sd = to_state_dict(&model(10));
    sd.remove("layer1.0.conv1.weight");
    sd.remove("bn1.running_var");
    let e = apply_state_dict(
        model(10),
        &sd,
        Path::new("w.safetensors"),
        HeadPolicy::Reinit,
        false,
        &Default::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("w.safetensors"), "{msg}");
    assert!(msg.contains("2 tensor(s) missing"), "{msg}");
    assert!(msg.contains("layer1.0.conv1.weight") && msg.contains("bn1.running_var"));
}

#[test]
fn a_file_for_another_depth_is_rejected() {
    let sd = to_state_dict(&ResNetConfig::new(34, 10).init::<B>(&Default::default()));
    let e = apply_state_dict(
        model(10),
        &sd,
        Path::new("r34.pth"),
        HeadPolicy::Reinit,
        false,
        &Default::default(),
    );
    // resnet34 has every resnet18 key (with the same shapes) plus more blocks: the
    // extra blocks are unexpected, so a non-strict load succeeds but reports them.
    let (_, report) = e.unwrap();
    assert!(report.unexpected.iter().any(|k| k.starts_with("layer1.2.")));
    // The other way round, resnet18 weights into resnet34 miss blocks.
    let sd18 = to_state_dict(&model(10));
    let e = apply_state_dict(
        ResNetConfig::new(34, 10).init::<B>(&Default::default()),
        &sd18,
        Path::new("r18.pth"),
        HeadPolicy::Reinit,
        false,
        &Default::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("layer1.2.conv1.weight"), "{e}");
}

#[test]
fn strict_load_rejects_extra_tensors() {
    let mut sd = to_state_dict(&model(3));
    sd.insert(
        "extra".into(),
        HostTensor {
            shape: vec![],
            data: HostData::F32(vec![0.0]),
        },
    );
    let e = load_state_dict(
        model(3),
        &sd,
        Path::new("m.safetensors"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(e, WeightsError::UnexpectedKeys { .. }), "{e}");
}

#[test]
fn unknown_bytes_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.pth");
    std::fs::write(&p, b"hello world, not weights").unwrap();
    let e = read_state_dict(&p).unwrap_err();
    assert!(e.to_string().contains("not a PyTorch"), "{e}");
    let e = read_state_dict(&dir.path().join("absent.pth")).unwrap_err();
    assert!(matches!(e, WeightsError::Io { .. }));
}

#[test]
fn transposed_linear_round_trips() {
    let m = model(4);
    let w = m.fc.weight.val();
    let sd = to_state_dict(&m);
    // torch's fc.weight[o][i] is burn's weight[i][o].
    let burn_w = w.clone().into_data().to_vec::<f32>().unwrap();
    let HostData::F32(torch_w) = &sd["fc.weight"].data else {
        panic!()
    };
    assert_eq!(torch_w[512 + 7], burn_w[7 * 4 + 1]);
}
