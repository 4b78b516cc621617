//! Synthetic ResNet throughput probe for the GPU machine (see `scripts/gpu_check.sh`).
//!
//! ```text
//! cargo build -p rectrain --example gpu_probe --features gpu-probe
//! gpu_probe [--device cuda:0] [--precision float32] [--depth 18] [--batch 64]
//!           [--size 224] [--steps 10] [--mode train|infer]
//! ```
//!
//! Builds a randomly initialised ResNet on the device and times training steps
//! (forward, cross-entropy, backward, SGD with momentum) or inference forwards on random
//! data. After every step it synchronises the device and prints one line to stdout:
//! `step=<i> ms=<step time> img_s=<images per second>`, so a run killed by `timeout`
//! still shows how far it got (the first steps include kernel compilation). The last
//! line summarises the steady state over the steps after the first two:
//! `RESULT mode=.. depth=.. batch=.. size=.. precision=.. img_s=.. first_step_s=..`.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor};
use rectrain::backend::{dispatch, resolve, BackendTask, DeviceSpec, Precision};
use rectrain::model::ResNetConfig;

#[derive(Clone, Debug)]
struct Args {
    device: DeviceSpec,
    precision: Precision,
    depth: usize,
    batch: usize,
    size: usize,
    steps: usize,
    train: bool,
    classes: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        device: DeviceSpec::Auto,
        precision: Precision::F32,
        depth: 18,
        batch: 64,
        size: 224,
        steps: 10,
        train: true,
        classes: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => a.device = val()?.parse().map_err(|e| format!("{e}"))?,
            "--precision" => a.precision = val()?.parse().map_err(|e| format!("{e}"))?,
            "--depth" => a.depth = val()?.parse().map_err(|e| format!("--depth: {e}"))?,
            "--batch" => a.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--size" => a.size = val()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--steps" => a.steps = val()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--classes" => a.classes = val()?.parse().map_err(|e| format!("--classes: {e}"))?,
            "--mode" => {
                a.train = match val()?.as_str() {
                    "train" => true,
                    "infer" => false,
                    m => return Err(format!("--mode {m}: expected train or infer")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

struct Probe(Args);

impl BackendTask for Probe {
    type Output = Result<(), String>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let a = self.0;
        let device = devices.into_iter().next().ok_or("no device")?;
        let cfg = ResNetConfig::new(a.depth, a.classes);
        cfg.validate().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut model = cfg.init::<B>(&device);
        B::sync(&device).map_err(|e| format!("{e:?}"))?;
        eprintln!("model built in {:.1}s", t0.elapsed().as_secs_f64());
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init::<B, rectrain::model::ResNet<B>>();
        let loss_fn = CrossEntropyLossConfig::new().init::<B>(&device);
        let shape = [a.batch, 3, a.size, a.size];
        let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let y = Tensor::<B, 1, Int>::from_data(
            burn::tensor::TensorData::new(
                (0..a.batch as i64)
                    .map(|i| i % a.classes as i64)
                    .collect::<Vec<_>>(),
                [a.batch],
            ),
            &device,
        );
        let valid = if a.train { None } else { Some(model.valid()) };
        let x_inner: Tensor<B::InnerBackend, 4> = x.clone().inner();
        let mut times = Vec::new();
        for step in 0..a.steps {
            let t = Instant::now();
            if let Some(m) = &valid {
                let z = m.forward(x_inner.clone());
                // Reading one value forces the whole forward to finish.
                let _ = z.slice([0..1, 0..1]).into_data();
                <B::InnerBackend as Backend>::sync(&device).map_err(|e| format!("{e:?}"))?;
            } else {
                let z = model.forward(x.clone());
                let loss = loss_fn.forward(z, y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(0.01, model, grads);
                B::sync(&device).map_err(|e| format!("{e:?}"))?;
            }
            let s = t.elapsed().as_secs_f64();
            times.push(s);
            println!(
                "step={step} ms={:.1} img_s={:.1}",
                s * 1e3,
                a.batch as f64 / s
            );
        }
        let steady: Vec<f64> = times.iter().skip(2).copied().collect();
        let img_s = if steady.is_empty() {
            f64::NAN
        } else {
            a.batch as f64 * steady.len() as f64 / steady.iter().sum::<f64>()
        };
        println!(
            "RESULT mode={} depth={} batch={} size={} precision={} img_s={:.1} first_step_s={:.2}",
            if a.train { "train" } else { "infer" },
            a.depth,
            a.batch,
            a.size,
            a.precision,
            img_s,
            times.first().copied().unwrap_or(f64::NAN)
        );
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_probe: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let dev = match resolve(&args.device, |n| eprintln!("gpu_probe: {n}")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("gpu_probe: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(dir) = rectrain::backend::cache_dir() {
        eprintln!("gpu_probe: device {dev}, kernel cache {}", dir.display());
    }
    match dispatch(&dev, args.precision, Probe(args)) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("gpu_probe: error: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gpu_probe: error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
