//! Synthetic ResNet throughput probe for the GPU machine (see `scripts/gpu/gpu_run.sh`).
//!
//! ```text
//! cargo build -p rectrain --example gpu_probe --features gpu-probe
//! gpu_probe [--device cuda:0] [--precision float32] [--depth 18] [--batch 64]
//!           [--size 224] [--steps 10] [--mode train|infer|parity]
//! ```
//!
//! `train` runs rectrain's training step (mixed precision for float16/bfloat16: f32
//! master weights, half-type compute, as `rectrain --precision-dtype`); `infer` runs
//! recpredict's model (BatchNorm folded into the convolutions). `parity` checks the
//! CUDA kernel layer against burn's own CUDA kernels on every distinct convolution of
//! ResNet-`depth` at `size`² (batch `batch`) and on batch norm, in f32 and bf16: one
//! `PARITY` line per check with the largest absolute error and the largest error
//! relative to the reference's largest magnitude, then `RESULT mode=parity ...`.
//!
//! Builds a randomly initialised ResNet on the device and times training steps
//! (forward, cross-entropy, backward, SGD with momentum) or inference forwards on random
//! data. After every step it synchronises the device and prints one line to stdout:
//! `step=<i> ms=<step time> img_s=<images per second> host_waits=<cuDNN host waits>`,
//! so a run killed by `timeout`
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
use rectrain::train::amp::MixedPrecision;
use resnet::backend::{dispatch, resolve, BackendTask, DeviceSpec, Precision};
use resnet::model::ResNetConfig;

#[derive(Clone, Debug)]
struct Args {
    device: DeviceSpec,
    precision: Precision,
    depth: usize,
    batch: usize,
    size: usize,
    steps: usize,
    train: bool,
    parity: bool,
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
        parity: false,
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
                (a.train, a.parity) = match val()?.as_str() {
                    "train" => (true, false),
                    "infer" => (false, false),
                    "parity" => (false, true),
                    m => return Err(format!("--mode {m}: expected train, infer or parity")),
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
        if a.parity {
            return parity::run::<B>(&a, &device);
        }
        let amp = MixedPrecision::new(a.precision);
        let cfg = ResNetConfig::new(a.depth, a.classes);
        cfg.validate().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let mut model = cfg.init::<B>(&device);
        B::sync(&device).map_err(|e| format!("{e:?}"))?;
        eprintln!("model built in {:.1}s", t0.elapsed().as_secs_f64());
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init::<B, resnet::model::ResNet<B>>();
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
        // recpredict's model: BatchNorm folded into the convolutions.
        let valid = if a.train {
            None
        } else {
            Some(model.valid().fold_batch_norm())
        };
        let x_inner: Tensor<B::InnerBackend, 4> = amp.input(x.clone().inner());
        let x = amp.input(x);
        let mut times = Vec::new();
        for step in 0..a.steps {
            let t = Instant::now();
            let waits = resnet::kernels::cudnn::host_waits();
            if let Some(m) = &valid {
                let z = m.forward(x_inner.clone());
                // Reading one value forces the whole forward to finish.
                let _ = z.slice([0..1, 0..1]).into_data();
                <B::InnerBackend as Backend>::sync(&device).map_err(|e| format!("{e:?}"))?;
            } else {
                let z = model.forward(x.clone());
                let loss = loss_fn.forward(z, y.clone());
                let grads = GradientsParams::from_grads(
                    loss.mul_scalar(amp.loss_scale()).backward(),
                    &model,
                );
                model = optim.step(0.01, model, grads);
                B::sync(&device).map_err(|e| format!("{e:?}"))?;
            }
            let s = t.elapsed().as_secs_f64();
            times.push(s);
            // Host waits: cuDNN calls ordered by synchronisation (0 where cuDNN runs on
            // cubecl's stream, or does not run).
            println!(
                "step={step} ms={:.1} img_s={:.1} host_waits={}",
                s * 1e3,
                a.batch as f64 / s,
                resnet::kernels::cudnn::host_waits() - waits
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

mod parity {
    //! cuDNN (the kernel layer) against burn's own CUDA kernels.

    use burn::backend::Autodiff;
    use burn::tensor::backend::{AutodiffBackend, Backend};
    use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
    use burn::tensor::{bf16, Distribution, Tensor, TensorPrimitive};
    use burn_autodiff::checkpoint::strategy::BalancedCheckpointing;
    use resnet::kernels::autodiff::{batch_norm, ConvKernels};
    use resnet::kernels::cudnn::{probe, Cudnn, Inner};
    use resnet::kernels::{batch_norm_ops, cast};

    use super::Args;

    /// A distinct convolution of the network: input channels, output channels, kernel,
    /// stride, input side.
    type Conv = (usize, usize, usize, usize, usize);

    /// Every distinct convolution of torchvision's ResNet-`depth` at `size`².
    pub fn resnet_convs(depth: usize, size: usize) -> Vec<Conv> {
        let (bottleneck, blocks) = match depth {
            18 => (false, [2, 2, 2, 2]),
            34 => (false, [3, 4, 6, 3]),
            50 => (true, [3, 4, 6, 3]),
            101 => (true, [3, 4, 23, 3]),
            152 => (true, [3, 8, 36, 3]),
            _ => (true, [3, 24, 36, 3]),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let mut convs = vec![(3, 64, 7, 2, size)];
        let mut side = size.div_ceil(2).div_ceil(2); // stem stride 2, max pool stride 2
        let mut channels = 64;
        for (stage, &n) in blocks.iter().enumerate() {
            let planes = 64 << stage;
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let out = planes * expansion;
                if stride != 1 || channels != out {
                    convs.push((channels, out, 1, stride, side));
                }
                if bottleneck {
                    convs.push((channels, planes, 1, 1, side));
                    convs.push((planes, planes, 3, stride, side));
                    convs.push((planes, out, 1, 1, side.div_ceil(stride)));
                } else {
                    convs.push((channels, planes, 3, stride, side));
                    convs.push((planes, planes, 3, 1, side.div_ceil(stride)));
                }
                channels = out;
                side = side.div_ceil(stride);
            }
        }
        let mut seen = std::collections::HashSet::new();
        convs.retain(|c| seen.insert(*c));
        convs
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }

    /// Largest absolute error and largest error relative to the reference's largest
    /// magnitude. A NaN or infinite value on either side is an infinite error
    /// (`f32::max` alone would skip NaN, and all-NaN output would read as a pass); so is
    /// a length mismatch.
    fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
        if got.len() != want.len() {
            return (f32::INFINITY, f32::INFINITY);
        }
        let abs = got
            .iter()
            .zip(want)
            .map(|(a, b)| {
                let d = (a - b).abs();
                if d.is_finite() {
                    d
                } else {
                    f32::INFINITY
                }
            })
            .fold(0f32, f32::max);
        let scale = want.iter().map(|b| b.abs()).fold(0f32, f32::max);
        (abs, abs / scale.max(f32::MIN_POSITIVE))
    }

    fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    fn prim<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
        t.into_primitive().tensor()
    }

    /// Checks in float type `F`; returns the worst relative error.
    fn check<F: burn_cubecl::FloatElement>(
        name: &str,
        convs: &[Conv],
        batch: usize,
        device: &burn_cubecl::cubecl::cuda::CudaDevice,
    ) -> f32 {
        type K<F> = Cudnn<F>;
        let mut worst = 0f32;
        let mut report = |what: String, got: &[f32], want: &[f32]| {
            let (abs, rel) = errors(got, want);
            worst = if rel.is_nan() {
                f32::INFINITY
            } else {
                worst.max(rel)
            };
            println!("PARITY {name} {what} abs={abs:.3e} rel={rel:.3e}");
        };
        for &(cin, cout, k, stride, side) in convs {
            let pad = k / 2;
            let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
            let dist = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<Inner<F>, 4>::random([batch, cin, side, side], dist, device);
            let w = Tensor::<Inner<F>, 4>::random([cout, cin, k, k], dist, device)
                .mul_scalar(1.0 / ((cin * k * k) as f64).sqrt());
            let y_ref = Inner::<F>::conv2d(prim(x.clone()), prim(w.clone()), None, options.clone());
            let y = K::<F>::forward(prim(x.clone()), prim(w.clone()), &options);
            let dy = Tensor::<Inner<F>, 4>::random(
                tensor::<Inner<F>, 4>(y_ref.clone()).dims(),
                dist,
                device,
            );
            let case = format!("conv {cin}->{cout} {k}x{k}/{stride} at {side}");
            report(
                format!("{case} forward"),
                &values(tensor::<Inner<F>, 4>(y)),
                &values(tensor::<Inner<F>, 4>(y_ref)),
            );
            let dx_ref = Inner::<F>::conv2d_x_backward(
                prim(x.clone()),
                prim(w.clone()),
                prim(dy.clone()),
                options.clone(),
            );
            let dw_ref = Inner::<F>::conv2d_weight_backward(
                prim(x.clone()),
                prim(w.clone()),
                prim(dy.clone()),
                options.clone(),
            );
            let [dx, dw] = K::<F>::backward(prim(x), prim(w), prim(dy), &options, [true, true]);
            report(
                format!("{case} data-grad"),
                &values(tensor::<Inner<F>, 4>(dx.unwrap())),
                &values(tensor::<Inner<F>, 4>(dx_ref)),
            );
            report(
                format!("{case} weight-grad"),
                &values(tensor::<Inner<F>, 4>(dw.unwrap())),
                &values(tensor::<Inner<F>, 4>(dw_ref)),
            );
        }
        // Batch norm: the cuDNN node against burn's autodiff of burn's operations (a
        // checkpointing autodiff, which the kernel layer leaves to burn).
        type Ad<F> = Autodiff<Inner<F>>;
        type Ref<F> = Autodiff<Inner<F>, BalancedCheckpointing>;
        for &(_, c, _, _, side) in convs.iter().filter(|c| c.4 <= 56) {
            let dist = Distribution::Normal(0.5, 2.0);
            let x0 = Tensor::<Inner<F>, 4>::random([batch, c, side, side], dist, device);
            let g0 = Tensor::<Inner<F>, 1>::random([c], dist, device);
            let b0 = Tensor::<Inner<F>, 1>::random([c], dist, device);
            let up = Tensor::<Inner<F>, 4>::random([batch, c, side, side], dist, device);
            let x = Tensor::<Ref<F>, 4>::from_inner(x0.clone()).require_grad();
            let g = Tensor::<Ref<F>, 1>::from_inner(g0.clone()).require_grad();
            let b = Tensor::<Ref<F>, 1>::from_inner(b0.clone()).require_grad();
            let r = batch_norm_ops(x.clone(), g.clone(), b.clone(), 1e-5);
            let grads = (r.y.clone() * Tensor::from_inner(up.clone()))
                .sum()
                .backward();
            let x2 = Tensor::<Ad<F>, 4>::from_inner(x0).require_grad();
            let g2 = Tensor::<Ad<F>, 1>::from_inner(g0).require_grad();
            let b2 = Tensor::<Ad<F>, 1>::from_inner(b0).require_grad();
            let [y2, mean2, var2] = batch_norm::<K<F>>(
                prim(x2.clone()),
                prim(g2.clone()),
                prim(b2.clone()),
                1e-5,
                false,
            );
            let y2: Tensor<Ad<F>, 4> = tensor(y2);
            let grads2 = (y2.clone() * Tensor::from_inner(up)).sum().backward();
            let case = format!("batchnorm {c}x{side}x{side}");
            report(
                format!("{case} forward"),
                &values(y2.inner()),
                &values(r.y.inner()),
            );
            report(
                format!("{case} mean"),
                &values(tensor::<Ad<F>, 1>(mean2).inner()),
                &values(r.mean.inner()),
            );
            report(
                format!("{case} var"),
                &values(tensor::<Ad<F>, 1>(var2).inner()),
                &values(r.var.inner()),
            );
            report(
                format!("{case} dx"),
                &values(x2.grad(&grads2).unwrap()),
                &values(x.grad(&grads).unwrap()),
            );
            report(
                format!("{case} dgamma"),
                &values(g2.grad(&grads2).unwrap()),
                &values(g.grad(&grads).unwrap()),
            );
            report(
                format!("{case} dbeta"),
                &values(b2.grad(&grads2).unwrap()),
                &values(b.grad(&grads).unwrap()),
            );
        }
        worst
    }

    pub fn run<B: AutodiffBackend>(a: &Args, device: &B::Device) -> Result<(), String> {
        let device = cast::<B::Device, burn_cubecl::cubecl::cuda::CudaDevice>(device.clone())
            .map_err(|_| "parity needs --device cuda".to_string())?;
        let version = probe()?;
        let convs = resnet_convs(a.depth, a.size);
        eprintln!("cuDNN {version}; {} distinct convolutions", convs.len());
        let f32_worst = check::<f32>("f32", &convs, a.batch, &device);
        let bf16_worst = check::<bf16>("bf16", &convs, a.batch, &device);
        println!(
            "RESULT mode=parity depth={} batch={} size={} worst_rel_f32={f32_worst:.3e} worst_rel_bf16={bf16_worst:.3e}",
            a.depth, a.batch, a.size
        );
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    resnet::kernels::cpu::keep_freed_memory();
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
    if let Some(dir) = resnet::backend::cache_dir() {
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
