//! Fused inference convolutions and BN+ReLU against the unfused calls, on ResNet-18.
//! `cargo run --release -p onednn --example fused_bench [-- --runs N]`
use std::time::Instant;

use onednn::{ConvGeom, Dnnl};

/// (geometry, residual, relu) for every convolution of ResNet-18 at input `hw`.
fn resnet18(n: usize, hw: usize) -> Vec<(ConvGeom, bool, bool)> {
    let g = |c, h, k, r, s, p| ConvGeom {
        x_dims: [n, c, h, h],
        w_dims: [k, c, r, r],
        stride: [s, s],
        padding: [p, p],
        dilation: [1, 1],
    };
    let mut v = Vec::new();
    let stem = g(3, hw, 64, 7, 2, 3);
    let h1 = stem.y_dims().unwrap()[2];
    v.push((stem, false, true));
    let mut h = (h1 + 2 - 3) / 2 + 1; // max pool 3/2/1
    let mut c = 64;
    for (stage, k) in [64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let s = if stage > 0 && block == 0 { 2 } else { 1 };
            let a = g(c, h, k, 3, s, 1);
            let ho = a.y_dims().unwrap()[2];
            v.push((a, false, true));
            if s == 2 {
                v.push((g(c, h, k, 1, 2, 0), false, false));
            }
            v.push((g(k, ho, k, 3, 1, 1), true, true));
            c = k;
            h = ho;
        }
    }
    v
}

fn fill(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 7919 % 1000) as f32 - 500.0) / 500.0)
        .collect()
}

/// Minimum over `runs` rounds of each closure, the closures interleaved within a round (so
/// that load from other processes hits them alike), after one warm-up round.
fn time_interleaved(runs: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut best = vec![f64::MAX; fs.len()];
    for round in 0..=runs {
        for (i, f) in fs.iter_mut().enumerate() {
            let s = Instant::now();
            f();
            if round > 0 {
                best[i] = best[i].min(s.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(3, |v| v.parse().unwrap());
    let d = Dnnl::get().expect("oneDNN");
    println!(
        "oneDNN {}; minimum of {runs} after a warm-up; loadavg {}",
        d.version(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("ResNet-18 inference, sum over convolutions, ms: (a) conv_forward_vec + Rust add/relu, (b) conv_forward_fused, (c) conv_forward_fused_prepared");
    for (n, hw) in [(1, 28), (64, 28), (1, 224), (32, 224)] {
        let mut sum = [0.0; 4];
        for (i, (g, res, relu)) in resnet18(n, hw).into_iter().enumerate() {
            let ny: usize = g.y_dims().unwrap().iter().product();
            let x = fill(g.x_dims.iter().product(), i);
            let w: Vec<f32> = fill(g.w_dims.iter().product(), i + 1)
                .iter()
                .map(|v| v * 0.05)
                .collect();
            let bias = fill(g.w_dims[0], i + 2);
            let r = fill(ny, i + 3);
            let residual = res.then_some(&r[..]);
            let post = |y: &mut [f32]| {
                if let Some(r) = residual {
                    for (y, r) in y.iter_mut().zip(r) {
                        *y += r;
                    }
                }
                if relu {
                    for y in y.iter_mut() {
                        *y = y.max(0.0);
                    }
                }
            };
            let p = d.prepare_conv(&g, &w, Some(&bias)).unwrap();
            let t = time_interleaved(
                runs,
                &mut [
                    &mut || {
                        let mut y = d.conv_forward_vec(&g, &x, &w, Some(&bias)).unwrap();
                        post(&mut y);
                        std::hint::black_box(y);
                    },
                    &mut || {
                        std::hint::black_box(
                            d.conv_forward_fused(&g, &x, &w, Some(&bias), residual, relu)
                                .unwrap(),
                        );
                    },
                    &mut || {
                        std::hint::black_box(
                            d.conv_forward_fused_prepared(&p, &x, residual, relu)
                                .unwrap(),
                        );
                    },
                    &mut || {
                        let mut y = vec![0.0; ny];
                        d.conv_forward(&g, &x, &w, Some(&bias), &mut y).unwrap();
                        post(&mut y);
                        std::hint::black_box(y);
                    },
                ],
            );
            for (s, t) in sum.iter_mut().zip(t) {
                *s += t;
            }
        }
        println!(
            "batch {n:>2} {hw:>3}²: (a) {:9.2}  (b) {:9.2}  (c) {:9.2}  | (d) zero-filled vec + conv_forward + Rust add/relu {:9.2}",
            sum[0], sum[1], sum[2], sum[3]
        );
    }
    // BN shapes of ResNet-18 at batch 16, 224² (channels, spatial, count); all followed by
    // ReLU except the second BN of each block (ReLU after the add) and downsample BNs,
    // which are timed here as BN+ReLU anyway to compare the primitives.
    let bns = [
        (64, 112, 1),
        (64, 56, 4),
        (128, 28, 5),
        (256, 14, 5),
        (512, 7, 5),
    ];
    let (mut u, mut f) = (0.0, 0.0);
    for (i, &(c, hw, count)) in bns.iter().enumerate() {
        let dims = [16, c, hw, hw];
        let x = fill(dims.iter().product(), i);
        let dy = fill(x.len(), i + 7);
        let gamma = vec![1.0f32; c];
        let beta = vec![0.1f32; c];
        let eps = 1e-5;
        let t = time_interleaved(
            runs,
            &mut [
                &mut || {
                    let mut fw = d
                        .batch_norm_forward_training(&x, dims, &gamma, &beta, eps)
                        .unwrap();
                    for y in fw.y.iter_mut() {
                        *y = y.max(0.0);
                    }
                    let dyp: Vec<f32> = dy
                        .iter()
                        .zip(&fw.y)
                        .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                        .collect();
                    let b = d
                        .batch_norm_backward(&x, &dyp, dims, &fw.mean, &fw.variance, &gamma, eps)
                        .unwrap();
                    std::hint::black_box((fw, b));
                },
                &mut || {
                    let fw = d
                        .batch_norm_relu_forward_training(&x, dims, &gamma, &beta, eps)
                        .unwrap();
                    let b = d
                        .batch_norm_relu_backward(
                            &x,
                            &dy,
                            dims,
                            &fw.mean,
                            &fw.variance,
                            &gamma,
                            eps,
                            &fw.workspace,
                        )
                        .unwrap();
                    std::hint::black_box((fw, b));
                },
            ],
        );
        u += count as f64 * t[0];
        f += count as f64 * t[1];
    }
    println!("ResNet-18 BN fwd+bwd, batch 16 224², 20 BNs, ms: BN + Rust relu/mask {u:.1}, BN+ReLU fused {f:.1}");
    println!(
        "scratchpads owned by all cached plans: {:.1} MiB",
        d.scratchpad_bytes() as f64 / (1 << 20) as f64
    );
    println!(
        "loadavg at end {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
