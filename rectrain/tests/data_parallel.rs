//! rectrain's data-parallel training through the library's real loop. Its own test
//! binary: the check that two runs of one seed agree to the last bit needs a process
//! where no other test draws from burn's global random generator meanwhile.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use im2rec::recordio::{pack_image_record, IndexWriter, RecordWriter};
use rectrain::hparams::{Hyperparameters, OptimizerKind};
use rectrain::train::{self, DataSource, TrainConfig, TrainError, TrainOutcome};
use resnet::artifact::{self, ArtifactConfig};
use resnet::backend::DeviceSpec;
use resnet::metrics::EpochMetrics;

/// `<dir>/<name>.rec` + `.idx`: `n` 16×16 PNGs alternating dark (label 0) and bright
/// (label 1), with a little texture that depends on the index.
fn toy(dir: &Path, name: &str, n: usize) -> PathBuf {
    let rec = dir.join(format!("{name}.rec"));
    let mut w = RecordWriter::new(std::fs::File::create(&rec).unwrap());
    let mut idx = IndexWriter::new(std::fs::File::create(rec.with_extension("idx")).unwrap());
    for i in 0..n {
        let base = if i % 2 == 0 { 20 } else { 190 };
        let image = resnet::testing::png_rgb(16, 16, |x, y| {
            let noise = ((x * 7 + y * 13 + i as u32 * 31) % 40) as u8;
            [base + noise, base + noise / 2, base + (40 - noise) / 2]
        });
        let pos = w.position();
        w.write_record(&pack_image_record(
            i as u64,
            &[(i % 2) as f32],
            false,
            &image,
        ))
        .unwrap();
        idx.write(i as u64, pos).unwrap();
    }
    w.into_inner().unwrap();
    idx.into_inner().unwrap();
    rec
}

/// Data-parallel training through the library's real loop on two replicas of the CPU
/// device (`--device cpu` names one device; on a GPU `--device cuda:0,0` is the same
/// thing): it trains, logs the split, records both devices, is deterministic for a
/// seed, and refuses a mini-batch smaller than the device count.
#[test]
fn data_parallel_training_on_two_cpu_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let train_rec = toy(dir.path(), "train", 12);
    let val_rec = toy(dir.path(), "val", 4);
    let run_once = |out: &Path, mini_batch_size: usize| {
        let hparams = Hyperparameters {
            num_layers: 18,
            image_shape: [3, 16, 16],
            mini_batch_size,
            epochs: 2,
            optimizer: OptimizerKind::Adam,
            learning_rate: 0.001,
            ..Hyperparameters::default()
        };
        let cfg = TrainConfig {
            hparams,
            train: DataSource::rec(train_rec.clone()),
            validation: DataSource::rec(val_rec.clone()),
            out: out.to_path_buf(),
            class_names: None,
            classes_file: None,
            pretrained: None,
            keep_head: false,
            model: None,
            seed: 3,
            device: DeviceSpec::Cpu,
            resume: None,
            progress: false,
            workers: 1,
            stop_after_steps: None,
            world: rectrain::distributed::World::alone(),
        };
        let prepared = train::prepare(cfg, |w| panic!("unexpected warning: {w}")).unwrap();
        let (mut data, mut log) = (Vec::new(), Vec::new());
        let devices = vec![Default::default(); 2];
        let outcome = train::train_on::<Autodiff<Flex>>(
            &prepared,
            None,
            devices,
            &mut data,
            &mut log,
            Arc::new(AtomicBool::new(false)),
        );
        (
            outcome,
            String::from_utf8(data).unwrap(),
            String::from_utf8(log).unwrap(),
        )
    };

    let a = dir.path().join("a");
    let (outcome, data_a, log) = run_once(&a, 6);
    assert!(
        matches!(outcome, Ok(TrainOutcome::Finished { epochs_run: 2, .. })),
        "{outcome:?}\n{log}"
    );
    assert!(
        log.contains("Data-parallel training on 2 devices")
            && log.contains("split into shards of 3+3 images"),
        "{log}"
    );
    let epochs: Vec<EpochMetrics> = data_a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 2, "{data_a}");
    assert!(epochs.iter().all(|m| m.train_loss.is_finite()), "{data_a}");
    let config = ArtifactConfig::load(&a).unwrap();
    let device = config.training["device"].as_str().unwrap().to_string();
    assert_eq!(
        device.matches(", ").count(),
        1,
        "two devices expected: {device}"
    );
    assert!(artifact::weights_path(&a).is_file());

    // Same seed, same devices: the same losses and accuracies to the last bit.
    let (_, data_b, _) = run_once(&dir.path().join("b"), 6);
    let strip = |text: &str| -> Vec<(f64, f64, f64, f64)> {
        text.lines()
            .map(|l| serde_json::from_str::<EpochMetrics>(l).unwrap())
            .map(|m| {
                (
                    m.train_loss,
                    m.train_accuracy,
                    m.validation_loss,
                    m.validation_accuracy,
                )
            })
            .collect()
    };
    assert_eq!(strip(&data_a), strip(&data_b));

    // One image per step cannot be split over two devices.
    let (outcome, _, _) = run_once(&dir.path().join("c"), 1);
    match outcome {
        Err(e @ TrainError::Config(_)) => {
            assert!(
                e.to_string()
                    .contains("mini_batch_size 1 is smaller than the number of devices (2)"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
}
