//! The kernels against an `f64` reference written from the definitions, on shapes of
//! ResNet layers and odd ones (planes that are not a multiple of 16, one image, one
//! value per plane), with and without ReLU; the reference's gradient is itself checked
//! against finite differences.

use cpu_norm::{backward, forward, Shape};

/// Deterministic values in about [−2, 2) plus an offset (a large mean tests the
/// centred variance).
fn values(len: usize, seed: u64, offset: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 + offset
        })
        .collect()
}

struct Reference {
    y: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn index(s: Shape, i: usize, ch: usize, p: usize) -> usize {
    (i * s.c + ch) * s.hw + p
}

/// Forward and backward in f64 from the definitions.
fn reference(
    x: &[f32],
    dy: &[f32],
    s: Shape,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    relu: bool,
) -> Reference {
    let m = (s.n * s.hw) as f64;
    let mut r = Reference {
        y: vec![0.0; x.len()],
        mean: vec![0.0; s.c],
        var: vec![0.0; s.c],
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; s.c],
        dbeta: vec![0.0; s.c],
    };
    for ch in 0..s.c {
        let at = |i, p| index(s, i, ch, p);
        let all = || (0..s.n).flat_map(move |i| (0..s.hw).map(move |p| (i, p)));
        let mean = all().map(|(i, p)| x[at(i, p)] as f64).sum::<f64>() / m;
        let var = all()
            .map(|(i, p)| (x[at(i, p)] as f64 - mean).powi(2))
            .sum::<f64>()
            / m;
        let is = 1.0 / (var + eps).sqrt();
        let (g, b) = (gamma[ch] as f64, beta[ch] as f64);
        let xhat = |i, p| (x[at(i, p)] as f64 - mean) * is;
        let mut gated = vec![0.0; s.n * s.hw];
        for (k, (i, p)) in all().enumerate() {
            let pre = g * xhat(i, p) + b;
            r.y[at(i, p)] = if relu { pre.max(0.0) } else { pre };
            gated[k] = if relu && pre <= 0.0 {
                0.0
            } else {
                dy[at(i, p)] as f64
            };
        }
        let sum_dy: f64 = gated.iter().sum();
        let sum_dy_xhat: f64 = all()
            .enumerate()
            .map(|(k, (i, p))| gated[k] * xhat(i, p))
            .sum();
        for (k, (i, p)) in all().enumerate() {
            r.dx[at(i, p)] = g * is * (gated[k] - sum_dy / m - xhat(i, p) * sum_dy_xhat / m);
        }
        r.mean[ch] = mean;
        r.var[ch] = var;
        r.dgamma[ch] = sum_dy_xhat;
        r.dbeta[ch] = sum_dy;
    }
    r
}

/// The largest |a − b| / (1 + |b|).
fn worst(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&a, &b)| (a as f64 - b).abs() / (1.0 + b.abs()))
        .fold(0.0, f64::max)
}

fn check(shape: Shape, relu: bool, offset: f32) {
    let x = values(shape.len(), 1, offset);
    let dy = values(shape.len(), 2, 0.0);
    let gamma = values(shape.c, 3, 1.0);
    let beta = values(shape.c, 4, 0.0);
    let eps = 1e-5;
    let r = reference(&x, &dy, shape, &gamma, &beta, eps, relu);
    let f = forward(&x, shape, &gamma, &beta, eps as f32, relu);
    let b = backward(
        &x,
        &dy,
        relu.then_some(&f.y[..]),
        shape,
        &gamma,
        &f.mean,
        &f.inv_std,
    );
    let what = format!("{shape:?} relu={relu} offset={offset}");
    for (name, got, want, tol) in [
        ("y", &f.y, &r.y, 1e-4),
        ("mean", &f.mean, &r.mean, 1e-5),
        ("var", &f.var, &r.var, 1e-4),
        ("dx", &b.dx, &r.dx, 1e-3),
        ("dgamma", &b.dgamma, &r.dgamma, 1e-3),
        ("dbeta", &b.dbeta, &r.dbeta, 1e-4),
    ] {
        let e = worst(got, want);
        assert!(
            e < tol,
            "{what}: {name} is off by {e:e} (tolerance {tol:e})"
        );
    }
    for (ch, (&v, &is)) in f.var.iter().zip(&f.inv_std).enumerate() {
        let want = 1.0 / (v as f64 + eps).sqrt();
        assert!(
            (is as f64 - want).abs() / want < 1e-6,
            "{what}: inv_std[{ch}]"
        );
    }
}

#[test]
fn kernels_match_the_f64_definition_on_resnet_and_odd_shapes() {
    for (n, c, h, w) in [
        (2, 64, 56, 56),
        (3, 128, 28, 28),
        (1, 512, 7, 7),
        (5, 3, 5, 3),
        (1, 4, 1, 1),
        (3, 16, 17, 1),
    ] {
        for relu in [false, true] {
            check(Shape::nchw([n, c, h, w]), relu, 0.0);
        }
    }
}

#[test]
fn variance_stays_exact_when_the_mean_is_large_against_the_spread() {
    check(Shape::nchw([4, 8, 14, 14]), false, 300.0);
}

#[test]
fn the_reference_gradient_agrees_with_finite_differences() {
    let shape = Shape::nchw([2, 2, 3, 3]);
    let x = values(shape.len(), 5, 0.5);
    let dy = values(shape.len(), 6, 0.0);
    let (gamma, beta) = (vec![1.5f32, -0.7], vec![0.3f32, 0.1]);
    for relu in [false, true] {
        let loss = |x: &[f32]| -> f64 {
            let r = reference(x, &dy, shape, &gamma, &beta, 1e-5, relu);
            r.y.iter().zip(&dy).map(|(y, &d)| y * d as f64).sum()
        };
        let r = reference(&x, &dy, shape, &gamma, &beta, 1e-5, relu);
        for k in 0..x.len() {
            let h = 1e-3;
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (loss(&up) - loss(&down)) / (2.0 * h as f64);
            assert!(
                (fd - r.dx[k]).abs() < 2e-2 * (1.0 + fd.abs()),
                "relu={relu} dx[{k}]: {fd} vs {}",
                r.dx[k]
            );
        }
    }
}

#[test]
#[should_panic(expected = "gamma has 3 values")]
fn a_parameter_of_the_wrong_length_is_named() {
    let shape = Shape::nchw([1, 4, 2, 2]);
    forward(
        &vec![0.0; shape.len()],
        shape,
        &[1.0; 3],
        &[0.0; 4],
        1e-5,
        false,
    );
}
