//! Training-mode batch normalisation, optionally followed by ReLU, on contiguous NCHW
//! `f32` data: the CPU's own kernel for the step that oneDNN 2 runs slowest in the
//! plain layout, and that burn's element-wise operations run in many passes.
//!
//! Each channel is one task (rayon): its `N` planes of `H·W` values are read twice
//! forward (the mean, then the centred variance, which stays exact when the mean is
//! large against the spread) and written once (`y = max(x·s + t, 0)`), and read twice
//! backward (the two sums, then `dx`). A channel's planes of a ResNet layer fit in the
//! core's L2 cache, so the second read is cheap. Inner loops run on 16 lanes and are
//! compiled for AVX2 + FMA where the CPU has them (checked at run time).
//!
//! Sums of one plane are taken in `f32` over 16 lanes and added up across planes in
//! `f64`, so the statistics agree with a pairwise `f64` reference to about `1e-6`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// The shape of an NCHW tensor as this crate sees it: `n` images of `c` channels of
/// `hw = H·W` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Values per channel plane (`H·W`).
    pub hw: usize,
}

impl Shape {
    /// `[N, C, H, W]` as a shape.
    pub fn nchw([n, c, h, w]: [usize; 4]) -> Self {
        Self { n, c, hw: h * w }
    }

    /// Values in the whole tensor.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// Whether the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel (what the statistics average over).
    fn per_channel(&self) -> usize {
        self.n * self.hw
    }
}

/// What [`forward`] returns.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The output, NCHW.
    pub y: Vec<f32>,
    /// The batch's per-channel mean.
    pub mean: Vec<f32>,
    /// The batch's per-channel biased variance.
    pub var: Vec<f32>,
    /// `1/√(var + ε)` per channel (what [`backward`] takes).
    pub inv_std: Vec<f32>,
}

/// What [`backward`] returns.
#[derive(Debug, Clone)]
pub struct Backward {
    /// The input's gradient, NCHW.
    pub dx: Vec<f32>,
    /// γ's gradient.
    pub dgamma: Vec<f32>,
    /// β's gradient.
    pub dbeta: Vec<f32>,
}

/// A pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes only its own channel's planes (disjoint ranges).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Checks the operand lengths against `shape` (a mismatch is a caller's bug).
fn check(shape: Shape, tensors: &[(&str, usize)], channels: &[(&str, usize)]) {
    for (name, len) in tensors {
        assert_eq!(
            *len,
            shape.len(),
            "cpu-norm: {name} has {len} values, {shape:?} needs {}",
            shape.len()
        );
    }
    for (name, len) in channels {
        assert_eq!(
            *len, shape.c,
            "cpu-norm: {name} has {len} values, one per channel needs {}",
            shape.c
        );
    }
}

/// The planes of channel `ch`: `(offset, len)` of each image's plane.
fn planes(shape: Shape, ch: usize) -> impl Iterator<Item = usize> {
    (0..shape.n).map(move |i| (i * shape.c + ch) * shape.hw)
}

/// Channels that one task takes: enough for about 16k values, so that small layers
/// (a 7×7 plane) are not split into more tasks than is worth it.
fn channels_per_task(shape: Shape) -> usize {
    (16 * 1024 / shape.per_channel().max(1)).max(1)
}

/// The plane at `offset`.
fn plane(t: &[f32], offset: usize, shape: Shape) -> &[f32] {
    &t[offset..offset + shape.hw]
}

/// A buffer of `len` values that the caller writes completely (through [`Out`])
/// before [`written`] turns it into values.
fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { v.set_len(len) };
    v
}

/// The values of a buffer from [`uninit`] once every value has been written.
///
/// # Safety
/// Every element of `v` has been written.
unsafe fn written(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the caller vouches that all
    // `len` values are initialised; the allocation moves to the new vector.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// Training batch norm: the batch's mean and biased variance per channel, then
/// `y = γ·(x − μ)/√(σ² + ε) + β`, and `max(y, 0)` when `relu`.
///
/// # Panics
/// When a slice's length does not fit `shape`.
pub fn forward(
    x: &[f32],
    shape: Shape,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    relu: bool,
) -> Forward {
    check(
        shape,
        &[("x", x.len())],
        &[("gamma", gamma.len()), ("beta", beta.len())],
    );
    let mut y = uninit(x.len());
    let out = Out(y.as_mut_ptr().cast::<f32>());
    let stats: Vec<(f32, f32, f32)> = (0..shape.c)
        .into_par_iter()
        .with_min_len(channels_per_task(shape))
        .map(|ch| simd::forward_channel(x, shape, ch, [gamma[ch], beta[ch], epsilon], relu, out))
        .collect();
    let (mut mean, mut var, mut inv_std) = (vec![], vec![], vec![]);
    for (m, v, i) in stats {
        mean.push(m);
        var.push(v);
        inv_std.push(i);
    }
    // SAFETY: each channel's task wrote all of its planes, and the channels cover `y`.
    let y = unsafe { written(y) };
    Forward {
        y,
        mean,
        var,
        inv_std,
    }
}

/// The gradients of [`forward`] from the output's `dy`, with the batch's `mean` and
/// `inv_std` that [`forward`] returned. With `relu`, `y` is [`forward`]'s output (its
/// positive values say where the gradient passes); without, it is not read.
///
/// # Panics
/// When a slice's length does not fit `shape`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy: &[f32],
    y: Option<&[f32]>,
    shape: Shape,
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
) -> Backward {
    let mut tensors = vec![("x", x.len()), ("dy", dy.len())];
    if let Some(y) = y {
        tensors.push(("y", y.len()));
    }
    check(
        shape,
        &tensors,
        &[
            ("gamma", gamma.len()),
            ("mean", mean.len()),
            ("inv_std", inv_std.len()),
        ],
    );
    let mut dx = uninit(x.len());
    let out = Out(dx.as_mut_ptr().cast::<f32>());
    let sums: Vec<(f32, f32)> = (0..shape.c)
        .into_par_iter()
        .with_min_len(channels_per_task(shape))
        .map(|ch| {
            simd::backward_channel(x, dy, y, shape, ch, [gamma[ch], mean[ch], inv_std[ch]], out)
        })
        .collect();
    let (dgamma, dbeta) = sums.into_iter().unzip();
    // SAFETY: as in `forward`.
    let dx = unsafe { written(dx) };
    Backward { dx, dgamma, dbeta }
}

/// The inner loops: portable bodies, compiled again with AVX2 + FMA and chosen at run
/// time.
mod simd {
    const LANES: usize = 16;

    /// Runs `$body` (a generic `#[inline(always)]` function's call) in a copy compiled
    /// for AVX2 + FMA when the CPU has them.
    macro_rules! dispatch {
        ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $generic:ident) => {
            pub fn $name($($arg: $ty),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn wide($($arg: $ty),*) -> $ret {
                        $generic($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the CPU has the features `wide` was compiled for.
                        return unsafe { wide($($arg),*) };
                    }
                }
                $generic($($arg),*)
            }
        };
    }

    /// A channel's running sum: 16 `f32` lanes (plus one for plane tails) that carry
    /// across planes, so that a 7×7 plane costs three vector adds and no reduction, and
    /// are moved into an `f64` total every [`Sum::FLUSH`] values per lane.
    struct Sum {
        lanes: [f32; LANES],
        tail: f32,
        pending: usize,
        total: f64,
    }

    impl Sum {
        /// Values per lane between two moves into the `f64` total (`f32` sums of a few
        /// thousand terms keep about six digits).
        const FLUSH: usize = 2048;

        #[inline(always)]
        fn new() -> Self {
            Self {
                lanes: [0.0; LANES],
                tail: 0.0,
                pending: 0,
                total: 0.0,
            }
        }

        /// Counts `values` more values per lane, flushing when due.
        #[inline(always)]
        fn counted(&mut self, values: usize) {
            self.pending += values;
            if self.pending >= Self::FLUSH * LANES {
                self.flush();
            }
        }

        #[inline(always)]
        fn flush(&mut self) {
            self.total += self.lanes.iter().map(|&v| v as f64).sum::<f64>() + self.tail as f64;
            self.lanes = [0.0; LANES];
            self.tail = 0.0;
            self.pending = 0;
        }

        #[inline(always)]
        fn value(mut self) -> f64 {
            self.flush();
            self.total
        }
    }

    /// Adds `f(i)` for each `i` of a plane of `len` values to `sum` (lanes of 16, then
    /// the tail).
    #[inline(always)]
    fn add_plane(sum: &mut Sum, len: usize, f: impl Fn(usize) -> f32) {
        let body = len / LANES * LANES;
        for i in (0..body).step_by(LANES) {
            let mut v = [0f32; LANES];
            for (l, v) in v.iter_mut().enumerate() {
                *v = f(i + l);
            }
            for (lane, v) in sum.lanes.iter_mut().zip(v) {
                *lane += v;
            }
        }
        for i in body..len {
            sum.tail += f(i);
        }
        sum.counted(len);
    }

    /// `dy` where `gate > 0` (the ReLU's output), branch-free.
    #[inline(always)]
    fn gated(dy: f32, gate: f32) -> f32 {
        if gate > 0.0 {
            dy
        } else {
            0.0
        }
    }

    #[inline(always)]
    fn affine_body(x: &[f32], s: f32, t: f32, relu: bool, y: &mut [f32]) {
        let floor = if relu { 0.0 } else { f32::NEG_INFINITY };
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x * s + t).max(floor);
        }
    }

    /// `dx = a·dy' + b·x + c`.
    #[inline(always)]
    fn input_gradient_body(
        x: &[f32],
        dy: &[f32],
        y: Option<&[f32]>,
        [a, b, c]: [f32; 3],
        dx: &mut [f32],
    ) {
        match y {
            Some(y) => {
                for (((dx, &x), &dy), &y) in dx.iter_mut().zip(x).zip(dy).zip(y) {
                    *dx = a * gated(dy, y) + b * x + c;
                }
            }
            None => {
                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = a * dy + b * x + c;
                }
            }
        }
    }

    use super::{plane, planes, Out, Shape};

    /// One channel of [`super::forward`]: its statistics, then its output planes;
    /// returns `(mean, var, inv_std)`.
    #[inline(always)]
    fn forward_channel_body(
        x: &[f32],
        shape: Shape,
        ch: usize,
        [gamma, beta, epsilon]: [f32; 3],
        relu: bool,
        out: Out,
    ) -> (f32, f32, f32) {
        let count = shape.per_channel().max(1) as f64;
        let mut sum = Sum::new();
        for o in planes(shape, ch) {
            let x = plane(x, o, shape);
            add_plane(&mut sum, x.len(), |i| x[i]);
        }
        let mean = (sum.value() / count) as f32;
        let mut squares = Sum::new();
        for o in planes(shape, ch) {
            let x = plane(x, o, shape);
            add_plane(&mut squares, x.len(), |i| (x[i] - mean) * (x[i] - mean));
        }
        let var = (squares.value() / count) as f32;
        let inv_std = 1.0 / (var + epsilon).sqrt();
        let s = gamma * inv_std;
        let t = beta - mean * s;
        for o in planes(shape, ch) {
            // SAFETY: this channel's planes, which no other task writes; in bounds
            // because the output has `x`'s length.
            let y = unsafe { std::slice::from_raw_parts_mut(out.0.add(o), shape.hw) };
            affine_body(plane(x, o, shape), s, t, relu, y);
        }
        (mean, var, inv_std)
    }
    dispatch!(forward_channel(x: &[f32], shape: Shape, ch: usize, p: [f32; 3], relu: bool, out: Out) -> (f32, f32, f32) = forward_channel_body);

    /// One channel of [`super::backward`]: its two sums, then its `dx` planes; returns
    /// `(dgamma, dbeta)`.
    #[inline(always)]
    fn backward_channel_body(
        x: &[f32],
        dy: &[f32],
        y: Option<&[f32]>,
        shape: Shape,
        ch: usize,
        [gamma, m, is]: [f32; 3],
        out: Out,
    ) -> (f32, f32) {
        let count = shape.per_channel().max(1) as f64;
        let (mut dys, mut dy_xcs) = (Sum::new(), Sum::new());
        for o in planes(shape, ch) {
            let (x, dy) = (plane(x, o, shape), plane(dy, o, shape));
            match y {
                Some(y) => {
                    let y = plane(y, o, shape);
                    add_plane(&mut dys, x.len(), |i| gated(dy[i], y[i]));
                    add_plane(&mut dy_xcs, x.len(), |i| gated(dy[i], y[i]) * (x[i] - m));
                }
                None => {
                    add_plane(&mut dys, x.len(), |i| dy[i]);
                    add_plane(&mut dy_xcs, x.len(), |i| dy[i] * (x[i] - m));
                }
            }
        }
        let (sum_dy, sum_dy_xc) = (dys.value(), dy_xcs.value());
        // dx = γ·is·(dy' − Σdy'/M − x̂·Σdy'x̂/M), x̂ = (x − μ)·is, written as
        // dx = a·dy' + b·x + c.
        let a = gamma * is;
        let mean_dy = (sum_dy / count) as f32;
        let mean_dy_xhat = (sum_dy_xc / count) as f32 * is;
        let b = -a * is * mean_dy_xhat;
        let c = -a * mean_dy - b * m;
        for o in planes(shape, ch) {
            // SAFETY: as in `forward_channel_body`: this channel's planes only.
            let dx = unsafe { std::slice::from_raw_parts_mut(out.0.add(o), shape.hw) };
            let y = y.map(|y| plane(y, o, shape));
            input_gradient_body(plane(x, o, shape), plane(dy, o, shape), y, [a, b, c], dx);
        }
        ((sum_dy_xc * is as f64) as f32, sum_dy as f32)
    }
    dispatch!(backward_channel(x: &[f32], dy: &[f32], y: Option<&[f32]>, shape: Shape, ch: usize, p: [f32; 3], out: Out) -> (f32, f32) = backward_channel_body);
}
