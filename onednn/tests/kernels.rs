//! oneDNN's kernels against naive f64 references. Where the library cannot be loaded the
//! tests print why and pass, unless `RECTRAIN_REQUIRE_ONEDNN=1`, when they fail.

use onednn::{ConvGeom, Dnnl, Layout};

fn dnnl() -> Option<&'static Dnnl> {
    match Dnnl::get() {
        Ok(d) => Some(d),
        Err(e) if std::env::var("RECTRAIN_REQUIRE_ONEDNN").as_deref() == Ok("1") => {
            panic!("RECTRAIN_REQUIRE_ONEDNN=1 but oneDNN is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipping: oneDNN unavailable: {e}");
            None
        }
    }
}

/// Deterministic values in [-1, 1).
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Largest error relative to the largest reference magnitude.
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .enumerate()
        .fold((0, 0f64), |a, (i, e)| if e > a.1 { (i, e) } else { a });
    assert!(
        err / scale <= tol,
        "{what}: element {i} is {} but should be {} (error {:.3e} of max {scale:.3e})",
        got[i],
        want[i],
        err / scale
    );
}

/// Visits every (n, k, oh, ow, c, r, s) with the input index it reads, for the references.
fn for_each_tap(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize, usize)) {
    let [n, c, h, w] = g.x_dims;
    let [k, _, r, s] = g.w_dims;
    let [_, _, oh, ow] = g.y_dims().unwrap();
    for ni in 0..n {
        for ki in 0..k {
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((ni * k + ki) * oh + oy) * ow + ox;
                    for ci in 0..c {
                        for ry in 0..r {
                            let iy = (oy * g.stride[0] + ry * g.dilation[0]) as isize
                                - g.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for sx in 0..s {
                                let ix = (ox * g.stride[1] + sx * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let xi = ((ni * c + ci) * h + iy as usize) * w + ix as usize;
                                let wi = ((ki * c + ci) * r + ry) * s + sx;
                                f(yi, xi, wi, ki);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn geom(x: [usize; 4], w: [usize; 4], stride: usize, pad: usize, dil: usize) -> ConvGeom {
    ConvGeom {
        x_dims: x,
        w_dims: w,
        stride: [stride; 2],
        padding: [pad; 2],
        dilation: [dil; 2],
    }
}

/// Every ResNet convolution kind, batch 1, 2 and 3, non-square inputs, channel counts
/// below, at and off oneDNN's 16-channel blocks.
fn cases() -> Vec<ConvGeom> {
    vec![
        geom([1, 3, 19, 17], [8, 3, 7, 7], 2, 3, 1), // stem 7x7/2 pad 3
        geom([3, 3, 16, 22], [16, 3, 7, 7], 2, 3, 1), // stem, odd batch
        geom([2, 5, 9, 7], [6, 5, 3, 3], 1, 1, 1),   // 3x3/1 pad 1
        geom([3, 16, 8, 11], [16, 16, 3, 3], 1, 1, 1), // 3x3/1, full blocks
        geom([3, 17, 10, 9], [20, 17, 3, 3], 2, 1, 1), // 3x3/2 pad 1
        geom([1, 32, 7, 6], [64, 32, 3, 3], 2, 1, 1), // 3x3/2, blocks
        geom([3, 16, 6, 5], [24, 16, 1, 1], 1, 0, 1), // 1x1/1
        geom([2, 8, 9, 8], [16, 8, 1, 1], 2, 0, 1),  // 1x1/2 (downsample)
        geom([2, 32, 7, 9], [64, 32, 1, 1], 2, 0, 1), // 1x1/2, blocks
        geom([2, 4, 11, 10], [5, 4, 3, 3], 1, 2, 2), // dilation 2
    ]
}

const LAYOUTS: [Layout; 3] = [Layout::Plain, Layout::Nhwc, Layout::Blocked];
const TOL: f64 = 1e-4;

#[test]
fn conv_forward_matches_reference() {
    let Some(d) = dnnl() else { return };
    for (i, g) in cases().iter().enumerate() {
        let yd = g.y_dims().unwrap();
        let x = rand(g.x_dims.iter().product(), 1 + i as u64);
        let w = rand(g.w_dims.iter().product(), 100 + i as u64);
        let b = rand(g.w_dims[0], 200 + i as u64);
        let mut want = vec![0f64; yd.iter().product()];
        for_each_tap(g, |yi, xi, wi, _| want[yi] += x[xi] as f64 * w[wi] as f64);
        let ohw = yd[2] * yd[3];
        let want_b: Vec<f64> = want
            .iter()
            .enumerate()
            .map(|(j, v)| v + b[(j / ohw) % yd[1]] as f64)
            .collect();
        for layout in LAYOUTS {
            let mut y = vec![f32::NAN; want.len()];
            d.conv_forward_with(layout, g, &x, &w, None, &mut y)
                .unwrap();
            assert_close(&format!("fwd {layout:?} {g:?}"), &y, &want, TOL);
            d.conv_forward_with(layout, g, &x, &w, Some(&b), &mut y)
                .unwrap();
            assert_close(&format!("fwd+bias {layout:?} {g:?}"), &y, &want_b, TOL);
        }
        let mut y = vec![f32::NAN; want.len()];
        d.conv_forward(g, &x, &w, Some(&b), &mut y).unwrap();
        assert_close(&format!("fwd default {g:?}"), &y, &want_b, TOL);
        let prepared = d.prepare_conv(g, &w, Some(&b)).unwrap();
        let mut y = vec![f32::NAN; want.len()];
        d.conv_forward_prepared(&prepared, &x, &mut y).unwrap();
        assert_close(&format!("fwd prepared+bias {g:?}"), &y, &want_b, TOL);
        let prepared = d.prepare_conv(g, &w, None).unwrap();
        let mut y = vec![f32::NAN; want.len()];
        d.conv_forward_prepared(&prepared, &x, &mut y).unwrap();
        assert_close(&format!("fwd prepared {g:?}"), &y, &want, TOL);
    }
}

#[test]
fn conv_backward_data_matches_reference() {
    let Some(d) = dnnl() else { return };
    for (i, g) in cases().iter().enumerate() {
        let yd = g.y_dims().unwrap();
        let dy = rand(yd.iter().product(), 300 + i as u64);
        let w = rand(g.w_dims.iter().product(), 400 + i as u64);
        let mut want = vec![0f64; g.x_dims.iter().product()];
        for_each_tap(g, |yi, xi, wi, _| want[xi] += dy[yi] as f64 * w[wi] as f64);
        for layout in LAYOUTS {
            let mut dx = vec![f32::NAN; want.len()];
            d.conv_backward_data_with(layout, g, &dy, &w, &mut dx)
                .unwrap();
            assert_close(&format!("bwd data {layout:?} {g:?}"), &dx, &want, TOL);
        }
        let mut dx = vec![f32::NAN; want.len()];
        d.conv_backward_data(g, &dy, &w, &mut dx).unwrap();
        assert_close(&format!("bwd data default {g:?}"), &dx, &want, TOL);
    }
}

#[test]
fn conv_backward_weights_matches_reference() {
    let Some(d) = dnnl() else { return };
    for (i, g) in cases().iter().enumerate() {
        let yd = g.y_dims().unwrap();
        let x = rand(g.x_dims.iter().product(), 500 + i as u64);
        let dy = rand(yd.iter().product(), 600 + i as u64);
        let mut want = vec![0f64; g.w_dims.iter().product()];
        for_each_tap(g, |yi, xi, wi, _| want[wi] += dy[yi] as f64 * x[xi] as f64);
        let ohw = yd[2] * yd[3];
        let mut want_db = vec![0f64; yd[1]];
        for (j, v) in dy.iter().enumerate() {
            want_db[(j / ohw) % yd[1]] += *v as f64;
        }
        for layout in LAYOUTS {
            let mut dw = vec![f32::NAN; want.len()];
            d.conv_backward_weights_with(layout, g, &x, &dy, &mut dw, None)
                .unwrap();
            assert_close(&format!("bwd weights {layout:?} {g:?}"), &dw, &want, TOL);
            let mut dw = vec![f32::NAN; want.len()];
            let mut db = vec![f32::NAN; yd[1]];
            d.conv_backward_weights_with(layout, g, &x, &dy, &mut dw, Some(&mut db))
                .unwrap();
            assert_close(
                &format!("bwd weights+bias {layout:?} {g:?}"),
                &dw,
                &want,
                TOL,
            );
            assert_close(&format!("bwd bias {layout:?} {g:?}"), &db, &want_db, TOL);
        }
        let mut dw = vec![f32::NAN; want.len()];
        d.conv_backward_weights(g, &x, &dy, &mut dw, None).unwrap();
        assert_close(&format!("bwd weights default {g:?}"), &dw, &want, TOL);
    }
}

#[test]
fn conv_rejects_wrong_lengths() {
    let Some(d) = dnnl() else { return };
    let g = geom([1, 2, 5, 5], [3, 2, 3, 3], 1, 1, 1);
    let mut y = vec![0.0; 3 * 25];
    assert!(d
        .conv_forward(&g, &[0.0; 49], &[0.0; 54], None, &mut y)
        .is_err());
    assert!(d
        .conv_forward(&g, &[0.0; 50], &[0.0; 54], Some(&[0.0; 2]), &mut y)
        .is_err());
    assert!(d
        .conv_forward(&g, &[0.0; 50], &[0.0; 54], None, &mut y[..74])
        .is_err());
    assert!(d
        .conv_forward(&g, &[0.0; 50], &[0.0; 54], None, &mut y)
        .is_ok());
}

/// Per-channel statistics and `x̂` in f64.
fn bn_reference(x: &[f32], dims: [usize; 4], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = dims;
    let m = (n * h * w) as f64;
    let hw = h * w;
    let ch = |j: usize| (j / hw) % c;
    let mut mean = vec![0f64; c];
    for (j, v) in x.iter().enumerate() {
        mean[ch(j)] += *v as f64 / m;
    }
    let mut var = vec![0f64; c];
    for (j, v) in x.iter().enumerate() {
        var[ch(j)] += (*v as f64 - mean[ch(j)]).powi(2) / m;
    }
    let xhat = x
        .iter()
        .enumerate()
        .map(|(j, v)| (*v as f64 - mean[ch(j)]) / (var[ch(j)] + eps).sqrt())
        .collect();
    (mean, var, xhat)
}

#[test]
fn batch_norm_matches_closed_form() {
    let Some(d) = dnnl() else { return };
    for (i, dims) in [[3, 5, 4, 3], [2, 17, 5, 7], [1, 16, 6, 6], [3, 64, 7, 5]]
        .into_iter()
        .enumerate()
    {
        let [_, c, h, w] = dims;
        let hw = h * w;
        let ch = |j: usize| (j / hw) % c;
        let count: usize = dims.iter().product();
        let m = (count / c) as f64;
        // An offset and scale per channel, so the statistics are not trivially 0 and 1/3.
        let x: Vec<f32> = rand(count, 700 + i as u64)
            .iter()
            .enumerate()
            .map(|(j, v)| v * (1.0 + ch(j) as f32 * 0.5) + ch(j) as f32 - 2.0)
            .collect();
        let gamma = rand(c, 800 + i as u64);
        let beta = rand(c, 900 + i as u64);
        let dy = rand(count, 1000 + i as u64);
        let eps = 1e-5f32;
        let (mean, var, xhat) = bn_reference(&x, dims, eps as f64);

        let f = d
            .batch_norm_forward_training(&x, dims, &gamma, &beta, eps)
            .unwrap();
        let want_y: Vec<f64> = xhat
            .iter()
            .enumerate()
            .map(|(j, v)| gamma[ch(j)] as f64 * v + beta[ch(j)] as f64)
            .collect();
        assert_close(&format!("bn y {dims:?}"), &f.y, &want_y, TOL);
        assert_close(&format!("bn mean {dims:?}"), &f.mean, &mean, TOL);
        assert_close(
            &format!("bn biased variance {dims:?}"),
            &f.variance,
            &var,
            TOL,
        );

        let mut dbeta = vec![0f64; c];
        let mut dgamma = vec![0f64; c];
        for j in 0..count {
            dbeta[ch(j)] += dy[j] as f64;
            dgamma[ch(j)] += dy[j] as f64 * xhat[j];
        }
        // dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))
        let want_dx: Vec<f64> = (0..count)
            .map(|j| {
                let k = ch(j);
                gamma[k] as f64 / (var[k] + eps as f64).sqrt()
                    * (dy[j] as f64 - dbeta[k] / m - xhat[j] * dgamma[k] / m)
            })
            .collect();
        let b = d
            .batch_norm_backward(&x, &dy, dims, &f.mean, &f.variance, &gamma, eps)
            .unwrap();
        assert_close(&format!("bn dx {dims:?}"), &b.dx, &want_dx, TOL);
        assert_close(&format!("bn dgamma {dims:?}"), &b.dgamma, &dgamma, TOL);
        assert_close(&format!("bn dbeta {dims:?}"), &b.dbeta, &dbeta, TOL);
    }
}

#[test]
fn reports_version_and_runtime() {
    let Some(d) = dnnl() else { return };
    let v: Vec<u32> = d.version().split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0], 2);
    assert_ne!(d.cpu_runtime(), "unknown");
    eprintln!("oneDNN {} ({})", d.version(), d.cpu_runtime());
}

/// The `_vec` variants run the same primitives into fresh vectors: bit-identical results.
#[test]
fn vec_variants_equal_slice_variants() {
    let Some(d) = dnnl() else { return };
    let same = |what: &str, a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "{what}: element {i}: {x} vs {y}");
        }
    };
    for (i, g) in cases().iter().enumerate() {
        let yd = g.y_dims().unwrap();
        let ny: usize = yd.iter().product();
        let x = rand(g.x_dims.iter().product(), 1100 + i as u64);
        let w = rand(g.w_dims.iter().product(), 1200 + i as u64);
        let b = rand(g.w_dims[0], 1300 + i as u64);
        let dy = rand(ny, 1400 + i as u64);
        for bias in [None, Some(&b[..])] {
            let mut y = vec![f32::NAN; ny];
            d.conv_forward(g, &x, &w, bias, &mut y).unwrap();
            same(
                &format!("fwd {g:?}"),
                &d.conv_forward_vec(g, &x, &w, bias).unwrap(),
                &y,
            );
            let p = d.prepare_conv(g, &w, bias).unwrap();
            d.conv_forward_prepared(&p, &x, &mut y).unwrap();
            same(
                &format!("fwd prepared {g:?}"),
                &d.conv_forward_prepared_vec(&p, &x).unwrap(),
                &y,
            );
        }
        let mut dx = vec![f32::NAN; x.len()];
        d.conv_backward_data(g, &dy, &w, &mut dx).unwrap();
        same(
            &format!("bwd data {g:?}"),
            &d.conv_backward_data_vec(g, &dy, &w).unwrap(),
            &dx,
        );
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; yd[1]];
        d.conv_backward_weights(g, &x, &dy, &mut dw, Some(&mut db))
            .unwrap();
        let (vw, vb) = d.conv_backward_weights_vec(g, &x, &dy, true).unwrap();
        same(&format!("bwd weights {g:?}"), &vw, &dw);
        same(&format!("bwd bias {g:?}"), &vb.unwrap(), &db);
        d.conv_backward_weights(g, &x, &dy, &mut dw, None).unwrap();
        let (vw, vb) = d.conv_backward_weights_vec(g, &x, &dy, false).unwrap();
        same(&format!("bwd weights no bias {g:?}"), &vw, &dw);
        assert!(vb.is_none());
    }
}

/// Every ResNet convolution kind at batches 1 and 3 (channel counts on and off the
/// 16-channel blocks), fused conv + bias (+ residual) (+ ReLU), plain and prepared.
#[test]
fn fused_inference_conv_matches_reference() {
    let Some(d) = dnnl() else { return };
    let kinds = [
        ([3, 19, 17], 16, 7, 2, 3), // stem 7x7/2
        ([16, 9, 10], 16, 3, 1, 1), // 3x3/1
        ([20, 11, 9], 24, 3, 2, 1), // 3x3/2, off blocks
        ([32, 7, 6], 64, 3, 2, 1),  // 3x3/2
        ([16, 6, 5], 32, 1, 1, 0),  // 1x1/1
        ([8, 9, 8], 12, 1, 1, 0),   // 1x1/1, off blocks
        ([32, 7, 9], 64, 1, 2, 0),  // 1x1/2 (downsample)
    ];
    let mut case = 0u64;
    for ([c, h, w_], k, r, s, p) in kinds {
        for n in [1, 3] {
            case += 1;
            let g = geom([n, c, h, w_], [k, c, r, r], s, p, 1);
            let yd = g.y_dims().unwrap();
            let ny: usize = yd.iter().product();
            let ohw = yd[2] * yd[3];
            let x = rand(g.x_dims.iter().product(), 1500 + case);
            let w = rand(g.w_dims.iter().product(), 1600 + case);
            let b = rand(k, 1700 + case);
            let res = rand(ny, 1800 + case);
            let mut conv = vec![0f64; ny];
            for_each_tap(&g, |yi, xi, wi, _| conv[yi] += x[xi] as f64 * w[wi] as f64);
            for bias in [None, Some(&b[..])] {
                let prepared = d.prepare_conv(&g, &w, bias).unwrap();
                for residual in [None, Some(&res[..])] {
                    for relu in [false, true] {
                        let want: Vec<f64> = (0..ny)
                            .map(|j| {
                                let mut v = conv[j];
                                if let Some(b) = bias {
                                    v += b[(j / ohw) % k] as f64;
                                }
                                if let Some(r) = residual {
                                    v += r[j] as f64;
                                }
                                if relu {
                                    v = v.max(0.0);
                                }
                                v
                            })
                            .collect();
                        let what = format!(
                            "{g:?} bias {} residual {} relu {relu}",
                            bias.is_some(),
                            residual.is_some()
                        );
                        let y = d
                            .conv_forward_fused(&g, &x, &w, bias, residual, relu)
                            .unwrap();
                        assert_close(&format!("fused {what}"), &y, &want, TOL);
                        let y = d
                            .conv_forward_fused_prepared(&prepared, &x, residual, relu)
                            .unwrap();
                        assert_close(&format!("fused prepared {what}"), &y, &want, TOL);
                        if relu {
                            assert!(y.iter().all(|v| *v >= 0.0), "relu {what}");
                        }
                    }
                }
            }
            // A wrong residual length is an error, not a read past the end.
            assert!(d
                .conv_forward_fused(&g, &x, &w, None, Some(&res[1..]), true)
                .is_err());
        }
    }
}

/// `relu(bn(x))` and its gradients against the closed form, masked where `y ≤ 0`.
#[test]
fn batch_norm_relu_matches_closed_form() {
    let Some(d) = dnnl() else { return };
    for (i, dims) in [[3, 5, 4, 3], [2, 17, 5, 7], [1, 16, 6, 6], [3, 64, 7, 5]]
        .into_iter()
        .enumerate()
    {
        let [_, c, h, w] = dims;
        let hw = h * w;
        let ch = |j: usize| (j / hw) % c;
        let count: usize = dims.iter().product();
        let m = (count / c) as f64;
        let x: Vec<f32> = rand(count, 1900 + i as u64)
            .iter()
            .enumerate()
            .map(|(j, v)| v * (1.0 + ch(j) as f32 * 0.5) + ch(j) as f32 - 2.0)
            .collect();
        let gamma = rand(c, 2000 + i as u64);
        let beta = rand(c, 2100 + i as u64);
        let dy = rand(count, 2200 + i as u64);
        let eps = 1e-5f32;
        let (mean, var, xhat) = bn_reference(&x, dims, eps as f64);
        let f = match d.batch_norm_relu_forward_training(&x, dims, &gamma, &beta, eps) {
            Ok(f) => f,
            Err(e) if std::env::var("RECTRAIN_REQUIRE_ONEDNN").as_deref() != Ok("1") => {
                eprintln!("skipping: batch norm + relu unavailable: {e}");
                return;
            }
            Err(e) => panic!("batch norm + relu: {e}"),
        };
        let pre: Vec<f64> = xhat
            .iter()
            .enumerate()
            .map(|(j, v)| gamma[ch(j)] as f64 * v + beta[ch(j)] as f64)
            .collect();
        let want_y: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
        assert_close(&format!("bn+relu y {dims:?}"), &f.y, &want_y, TOL);
        assert_close(&format!("bn+relu mean {dims:?}"), &f.mean, &mean, TOL);
        assert_close(
            &format!("bn+relu variance {dims:?}"),
            &f.variance,
            &var,
            TOL,
        );
        assert!(!f.workspace.is_empty());
        // dy' = dy·[y > 0] (oneDNN's mask is its own y > 0; pre-activations within rounding
        // of 0 could disagree, so the mask is taken from oneDNN's y)
        let dyp: Vec<f64> = (0..count)
            .map(|j| if f.y[j] > 0.0 { dy[j] as f64 } else { 0.0 })
            .collect();
        let mut dbeta = vec![0f64; c];
        let mut dgamma = vec![0f64; c];
        for j in 0..count {
            dbeta[ch(j)] += dyp[j];
            dgamma[ch(j)] += dyp[j] * xhat[j];
        }
        let want_dx: Vec<f64> = (0..count)
            .map(|j| {
                let k = ch(j);
                gamma[k] as f64 / (var[k] + eps as f64).sqrt()
                    * (dyp[j] - dbeta[k] / m - xhat[j] * dgamma[k] / m)
            })
            .collect();
        let b = d
            .batch_norm_relu_backward(
                &x,
                &dy,
                dims,
                &f.mean,
                &f.variance,
                &gamma,
                eps,
                &f.workspace,
            )
            .unwrap();
        assert_close(&format!("bn+relu dx {dims:?}"), &b.dx, &want_dx, TOL);
        assert_close(&format!("bn+relu dgamma {dims:?}"), &b.dgamma, &dgamma, TOL);
        assert_close(&format!("bn+relu dbeta {dims:?}"), &b.dbeta, &dbeta, TOL);
        assert!(d
            .batch_norm_relu_backward(
                &x,
                &dy,
                dims,
                &f.mean,
                &f.variance,
                &gamma,
                eps,
                &f.workspace[1..]
            )
            .is_err());
    }
}

/// Cached primitives run on threads other than the one that created them (a rayon pool
/// does this). With oneDNN's default thread-local library scratchpad the stem's gemm
/// backward-data failed with `invalid_arguments` on any other thread; plans now own
/// user-mode scratchpads.
#[test]
fn plans_run_on_other_threads() {
    let Some(d) = dnnl() else { return };
    for (i, g) in cases().iter().enumerate() {
        let yd = g.y_dims().unwrap();
        let dy = rand(yd.iter().product(), 2300 + i as u64);
        let w = rand(g.w_dims.iter().product(), 2400 + i as u64);
        let x = rand(g.x_dims.iter().product(), 2500 + i as u64);
        let mut want = vec![0f64; x.len()];
        for_each_tap(g, |yi, xi, wi, _| want[xi] += dy[yi] as f64 * w[wi] as f64);
        let all = |tag: &str| {
            for layout in LAYOUTS {
                let mut dx = vec![f32::NAN; x.len()];
                d.conv_backward_data_with(layout, g, &dy, &w, &mut dx)
                    .unwrap_or_else(|e| panic!("{tag} bwd data {layout:?} {g:?}: {e}"));
                assert_close(&format!("{tag} {layout:?} {g:?}"), &dx, &want, TOL);
                let mut y = vec![f32::NAN; dy.len()];
                d.conv_forward_with(layout, g, &x, &w, None, &mut y)
                    .unwrap_or_else(|e| panic!("{tag} fwd {layout:?} {g:?}: {e}"));
                let mut dw = vec![f32::NAN; w.len()];
                d.conv_backward_weights_with(layout, g, &x, &dy, &mut dw, None)
                    .unwrap_or_else(|e| panic!("{tag} bwd weights {layout:?} {g:?}: {e}"));
            }
            d.conv_forward_fused(g, &x, &w, None, Some(&dy), true)
                .unwrap_or_else(|e| panic!("{tag} fused {g:?}: {e}"));
        };
        std::thread::scope(|s| s.spawn(|| all("creating thread")).join().unwrap());
        all("test thread");
        std::thread::scope(|s| s.spawn(|| all("third thread")).join().unwrap());
    }
}

/// Weights prepared once serve other batch and image sizes of the same convolution:
/// against the per-call reordering path at each size. A size whose primitive wants another
/// weights layout says so (`None`) rather than computing garbage; the prepared size itself
/// and most others share the layout.
#[test]
fn prepared_weights_serve_other_batch_and_image_sizes() {
    let Some(d) = dnnl() else { return };
    let (mut shared, mut other) = (0, 0);
    for (i, g) in cases().iter().enumerate() {
        let w = rand(g.w_dims.iter().product(), 700 + i as u64);
        let b = rand(g.w_dims[0], 800 + i as u64);
        let prepared = d.prepare_conv(g, &w, Some(&b)).unwrap();
        let [n, c, h, wd] = g.x_dims;
        for x_dims in [g.x_dims, [1, c, h, wd], [n + 2, c, h + 3, wd + 1]] {
            let at = ConvGeom { x_dims, ..*g };
            let x = rand(x_dims.iter().product(), 900 + i as u64);
            let want = d.conv_forward_vec(&at, &x, &w, Some(&b)).unwrap();
            let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
            match d.conv_forward_prepared_at(&prepared, x_dims, &x).unwrap() {
                Some(y) => {
                    assert_close(&format!("prepared {g:?} at {x_dims:?}"), &y, &want, TOL);
                    shared += usize::from(x_dims != g.x_dims);
                }
                None => {
                    assert_ne!(x_dims, g.x_dims, "the prepared size always fits: {g:?}");
                    other += 1;
                }
            }
        }
    }
    assert!(
        shared > other,
        "{shared} sizes shared the prepared weights, {other} did not"
    );
    let g = &cases()[0];
    let prepared = d
        .prepare_conv(g, &rand(g.w_dims.iter().product(), 1), None)
        .unwrap();
    let [n, c, h, w] = g.x_dims;
    let wrong = [n, c + 1, h, w];
    let x = rand(wrong.iter().product(), 2);
    let e = d
        .conv_forward_prepared_at(&prepared, wrong, &x)
        .unwrap_err();
    assert!(e.contains("channels"), "{e}");
}
