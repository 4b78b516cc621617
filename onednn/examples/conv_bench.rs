//! Times oneDNN's convolutions on every distinct convolution of ResNet-18 (batch 16, 224²)
//! or ResNet-50 (`--resnet50`, batch 8), per layout and pass, reorders to and from the
//! caller's NCHW included; then the network's sum per training step with the chosen
//! layouts, and calls from two threads at once.
//!
//! `cargo run --release -p onednn --example conv_bench [-- --resnet50] [--runs N] [--min]`

use std::time::Instant;

use onednn::{ConvGeom, Dnnl, Layout, Pass};

/// (input [c, h, w], output channels, kernel, stride, padding, times in the network)
type Shape = ([usize; 3], usize, usize, usize, usize, usize);

fn resnet18() -> Vec<Shape> {
    vec![
        ([3, 224, 224], 64, 7, 2, 3, 1),
        ([64, 56, 56], 64, 3, 1, 1, 4),
        ([64, 56, 56], 128, 3, 2, 1, 1),
        ([128, 28, 28], 128, 3, 1, 1, 3),
        ([64, 56, 56], 128, 1, 2, 0, 1),
        ([128, 28, 28], 256, 3, 2, 1, 1),
        ([256, 14, 14], 256, 3, 1, 1, 3),
        ([128, 28, 28], 256, 1, 2, 0, 1),
        ([256, 14, 14], 512, 3, 2, 1, 1),
        ([512, 7, 7], 512, 3, 1, 1, 3),
        ([256, 14, 14], 512, 1, 2, 0, 1),
    ]
}

fn resnet50() -> Vec<Shape> {
    vec![
        ([3, 224, 224], 64, 7, 2, 3, 1),
        ([64, 56, 56], 64, 1, 1, 0, 1),
        ([64, 56, 56], 64, 3, 1, 1, 3),
        ([64, 56, 56], 256, 1, 1, 0, 4),
        ([256, 56, 56], 64, 1, 1, 0, 2),
        ([256, 56, 56], 128, 1, 1, 0, 1),
        ([128, 56, 56], 128, 3, 2, 1, 1),
        ([128, 28, 28], 512, 1, 1, 0, 4),
        ([256, 56, 56], 512, 1, 2, 0, 1),
        ([512, 28, 28], 128, 1, 1, 0, 3),
        ([128, 28, 28], 128, 3, 1, 1, 3),
        ([512, 28, 28], 256, 1, 1, 0, 1),
        ([256, 28, 28], 256, 3, 2, 1, 1),
        ([256, 14, 14], 1024, 1, 1, 0, 6),
        ([512, 28, 28], 1024, 1, 2, 0, 1),
        ([1024, 14, 14], 256, 1, 1, 0, 5),
        ([256, 14, 14], 256, 3, 1, 1, 5),
        ([1024, 14, 14], 512, 1, 1, 0, 1),
        ([512, 14, 14], 512, 3, 2, 1, 1),
        ([512, 7, 7], 2048, 1, 1, 0, 3),
        ([1024, 14, 14], 2048, 1, 2, 0, 1),
        ([2048, 7, 7], 512, 1, 1, 0, 2),
        ([512, 7, 7], 512, 3, 1, 1, 2),
    ]
}

struct Bufs {
    x: Vec<f32>,
    w: Vec<f32>,
    y: Vec<f32>,
}

fn bufs(g: &ConvGeom) -> Bufs {
    let fill = |n: usize| {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect()
    };
    Bufs {
        x: fill(g.x_dims.iter().product()),
        w: fill(g.w_dims.iter().product()),
        y: fill(g.y_dims().unwrap().iter().product()),
    }
}

fn run_once(d: &Dnnl, layout: Layout, pass: Pass, g: &ConvGeom, b: &mut Bufs) {
    let r = match pass {
        Pass::Forward => d.conv_forward_with(layout, g, &b.x, &b.w, None, &mut b.y),
        Pass::BackwardData => d.conv_backward_data_with(layout, g, &b.y, &b.w, &mut b.x),
        Pass::BackwardWeights => {
            d.conv_backward_weights_with(layout, g, &b.x, &b.y, &mut b.w, None)
        }
    };
    r.unwrap();
}

/// Median (or, with `min`, the fastest) of `runs` timed calls after one warm-up call.
fn time_ms(runs: usize, min: bool, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: creates the plan, touches the buffers
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if min {
        t[0]
    } else {
        t[runs / 2]
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r50 = args.iter().any(|a| a == "--resnet50");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(5, |v| v.parse().unwrap());
    // On a machine shared with other work the minimum is the steadier estimate.
    let min = args.iter().any(|a| a == "--min");
    let (name, batch, shapes) = if r50 {
        ("ResNet-50", 8, resnet50())
    } else {
        ("ResNet-18", 16, resnet18())
    };
    let d = match Dnnl::get() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("oneDNN unavailable: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "oneDNN {} ({}), {name} batch {batch} 224², {} of {runs} after a warm-up; load average at start: {}",
        d.version(),
        d.cpu_runtime(),
        if min { "minimum" } else { "median" },
        load()
    );
    let passes = [Pass::Forward, Pass::BackwardData, Pass::BackwardWeights];
    let layouts = [Layout::Plain, Layout::Nhwc, Layout::Blocked];
    // ms[shape][pass][layout]
    let mut ms = vec![[[0f64; 3]; 3]; shapes.len()];
    println!(
        "{:<28} {:>4} {:>7} | {:^26} | {:^26} | {:^26} | blocked impl (fwd)",
        "shape (c,h,w → k, r/s)",
        "×",
        "GFLOP",
        "fwd ms plain/nhwc/blocked",
        "bwd-data ms",
        "bwd-weights ms"
    );
    let mut flops = Vec::new();
    let mut geoms = Vec::new();
    for (si, &([c, h, w], k, r, s, p, count)) in shapes.iter().enumerate() {
        let g = ConvGeom {
            x_dims: [batch, c, h, w],
            w_dims: [k, c, r, r],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
        };
        let yd = g.y_dims().unwrap();
        let f = 2.0 * (yd.iter().product::<usize>() * c * r * r) as f64;
        flops.push(f);
        geoms.push(g);
        let mut b = bufs(&g);
        for (pi, &pass) in passes.iter().enumerate() {
            for (li, &layout) in layouts.iter().enumerate() {
                ms[si][pi][li] = time_ms(runs, min, || run_once(d, layout, pass, &g, &mut b));
            }
        }
        let cell = |pi: usize| {
            let m = ms[si][pi];
            format!("{:7.2} {:7.2} {:7.2}", m[0], m[1], m[2])
        };
        println!(
            "{:<28} {:>4} {:>7.2} | {:>26} | {:>26} | {:>26} | {}",
            format!("{c}x{h}x{w} → {k}, {r}x{r}/{s}"),
            count,
            f / 1e9,
            cell(0),
            cell(1),
            cell(2),
            d.conv_impl_name(Pass::Forward, Layout::Blocked, &g)
                .unwrap_or_default()
        );
    }
    println!("\nGFLOP/s of the best layout per shape and pass (fwd / bwd-data / bwd-weights):");
    for (si, &([c, h, w], k, r, s, _, _)) in shapes.iter().enumerate() {
        let best: Vec<String> = (0..3)
            .map(|pi| {
                let (li, m) = ms[si][pi]
                    .iter()
                    .enumerate()
                    .fold((0, f64::MAX), |a, (i, &v)| if v < a.1 { (i, v) } else { a });
                format!("{:6.1} ({:?})", flops[si] / m / 1e6, layouts[li])
            })
            .collect();
        println!(
            "{:<28} {}",
            format!("{c}x{h}x{w} → {k}, {r}x{r}/{s}"),
            best.join("  ")
        );
    }
    println!("\nNetwork sum per training step (each shape × its count), ms:");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "layout", "fwd", "bwd-data", "bwd-wts", "total"
    );
    let stem_bwd_data: Vec<f64> = (0..3).map(|li| ms[0][1][li]).collect();
    let mut per_pass_best = [f64::MAX; 3];
    for (li, layout) in layouts.iter().enumerate() {
        let mut sum = [0f64; 3];
        for (si, sh) in shapes.iter().enumerate() {
            for (pi, s) in sum.iter_mut().enumerate() {
                *s += ms[si][pi][li] * sh.5 as f64;
            }
        }
        for pi in 0..3 {
            per_pass_best[pi] = per_pass_best[pi].min(sum[pi]);
        }
        println!(
            "{:<10} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            format!("{layout:?}"),
            sum[0],
            sum[1],
            sum[2],
            sum.iter().sum::<f64>()
        );
    }
    let mut best_shape = [0f64; 3];
    for (si, sh) in shapes.iter().enumerate() {
        for (pi, b) in best_shape.iter_mut().enumerate() {
            *b += ms[si][pi].iter().cloned().fold(f64::MAX, f64::min) * sh.5 as f64;
        }
    }
    println!(
        "{:<10} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  (best layout per pass)",
        "per-pass",
        per_pass_best[0],
        per_pass_best[1],
        per_pass_best[2],
        per_pass_best.iter().sum::<f64>()
    );
    println!(
        "{:<10} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  (best layout per shape and pass)",
        "per-shape",
        best_shape[0],
        best_shape[1],
        best_shape[2],
        best_shape.iter().sum::<f64>()
    );
    println!(
        "(the stem's backward-data, which training does not need, is included above: {:.1} / {:.1} / {:.1} ms plain/nhwc/blocked)",
        stem_bwd_data[0], stem_bwd_data[1], stem_bwd_data[2]
    );
    let total_flop: f64 = flops.iter().zip(&shapes).map(|(f, s)| f * s.5 as f64).sum();
    println!(
        "network conv GFLOP per pass: {:.1}; default layouts' total step {:.1} ms = {:.1} GFLOP/s",
        total_flop / 1e9,
        {
            let mut t = 0.0;
            for (si, sh) in shapes.iter().enumerate() {
                for (pi, &pass) in passes.iter().enumerate() {
                    let li = layouts
                        .iter()
                        .position(|&l| l == Layout::choose(pass, &geoms[si]))
                        .unwrap();
                    t += ms[si][pi][li] * sh.5 as f64;
                }
            }
            t
        },
        {
            let mut t = 0.0;
            for (si, sh) in shapes.iter().enumerate() {
                for (pi, &pass) in passes.iter().enumerate() {
                    let li = layouts
                        .iter()
                        .position(|&l| l == Layout::choose(pass, &geoms[si]))
                        .unwrap();
                    t += ms[si][pi][li] * sh.5 as f64;
                }
            }
            3.0 * total_flop / t / 1e6
        }
    );

    // Inference: weights reordered on every call against weights prepared once.
    println!("\nInference forward (blocked), ms: weights reordered per call / prepared once");
    for batch in [1, 16] {
        let (mut a, mut p) = (0.0, 0.0);
        for &([c, h, w], k, r, s, pad, count) in &shapes {
            let g = ConvGeom {
                x_dims: [batch, c, h, w],
                w_dims: [k, c, r, r],
                stride: [s, s],
                padding: [pad, pad],
                dilation: [1, 1],
            };
            let mut b = bufs(&g);
            let prepared = d.prepare_conv(&g, &b.w, None).unwrap();
            a += count as f64
                * time_ms(runs, min, || {
                    run_once(d, Layout::Blocked, Pass::Forward, &g, &mut b)
                });
            p += count as f64
                * time_ms(runs, min, || {
                    d.conv_forward_prepared(&prepared, &b.x, &mut b.y).unwrap()
                });
        }
        println!("batch {batch:>2}: network {a:8.2} / {p:8.2}");
    }

    // Two threads calling at once (as from a rayon pool): the crate serialises calls, each
    // using all cores through OpenMP. Compare with the same calls from one thread.
    let g = ConvGeom {
        x_dims: [batch, 128, 28, 28],
        w_dims: [128, 128, 3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
    };
    let n = 8 * runs;
    let mut b = bufs(&g);
    run_once(
        d,
        Layout::choose(Pass::Forward, &g),
        Pass::Forward,
        &g,
        &mut b,
    );
    let s = Instant::now();
    for _ in 0..n {
        run_once(
            d,
            Layout::choose(Pass::Forward, &g),
            Pass::Forward,
            &g,
            &mut b,
        );
    }
    let one = s.elapsed().as_secs_f64() * 1e3 / n as f64;
    let s = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                let mut b = bufs(&g);
                for _ in 0..n / 2 {
                    run_once(
                        d,
                        Layout::choose(Pass::Forward, &g),
                        Pass::Forward,
                        &g,
                        &mut b,
                    );
                }
            });
        }
    });
    let two = s.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!(
        "\n128x28x28 3x3 fwd, {n} calls: {one:.2} ms/call from one thread, {two:.2} ms/call from two threads at once"
    );
    println!("load average at end: {}", load());
}
