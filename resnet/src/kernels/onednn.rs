//! The CPU's kernels on oneDNN ([`Onednn`]), the library PyTorch itself runs on the
//! CPU: convolution forward, data and weight gradients, on f32 burn-flex tensors
//! (batch norm is [`super::cpu_norm`]'s, with either convolution library).
//!
//! oneDNN is loaded at run time by the [`onednn`] crate (`libdnnl.so.2`, e.g. Debian's
//! `libdnnl2`), so nothing links against it; [`super::cpu_kernels`] decides once per
//! process whether it is used, and where it is missing (or `RECTRAIN_NO_ONEDNN=1`) the
//! CPU keeps burn-flex's kernels ([`super::cpu::CpuKernels`]) and says so once.
//!
//! The tensors are handed over as contiguous NCHW f32 slices; inside, oneDNN runs each
//! pass in the layout that measured fastest for it (blocked `nChw16c` on AVX-512,
//! reorders included; `onednn::Layout::choose`). Other dtypes (the CPU backend's bf16,
//! which the mixed-precision tests use) go to burn-flex's kernels: oneDNN's bf16 needs
//! hardware this build does not assume.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::ops::ConvOptions;
use burn::tensor::DType;
use burn_flex::{Flex, FlexTensor};
use onednn::{ConvGeom, Dnnl, PreparedConv};

use super::autodiff::ConvKernels;
use super::cpu::{contiguous, dims4, tensor, values, CpuKernels};

/// oneDNN's kernels on burn-flex tensors.
#[derive(Debug)]
pub struct Onednn;

/// The loaded library. Only reached after [`super::cpu_kernels`] chose oneDNN, which
/// means it loaded.
fn dnnl() -> &'static Dnnl {
    Dnnl::get().unwrap_or_else(|why| unreachable!("oneDNN was chosen, so it loaded: {why}"))
}

/// Unwraps a oneDNN result inside a kernel (which cannot return errors to burn): the
/// message names the operation and its shape.
fn or_panic<T>(result: Result<T, String>, what: impl std::fmt::Display) -> T {
    result.unwrap_or_else(|e| panic!("oneDNN {what} failed: {e}"))
}

fn geometry(x: &FlexTensor, w: &FlexTensor, options: &ConvOptions<2>) -> ConvGeom {
    ConvGeom {
        x_dims: dims4(x),
        w_dims: dims4(w),
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    }
}

fn is_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

/// Whether [`conv_forward`] takes operands of these dtypes (f32; the caller uses
/// burn's convolution for others).
pub fn conv_takes(x: DType, w: DType, bias: Option<DType>) -> bool {
    x == DType::F32 && w == DType::F32 && bias.is_none_or(|b| b == DType::F32)
}

/// `conv(x, w) + bias` (inference, bias optional) on oneDNN, for operands
/// [`conv_takes`], with the weights prepared once in oneDNN's own layout and reused by
/// later calls (the module's `PREPARED` cache).
pub fn conv_forward(
    x: FlexTensor,
    w: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let (x, w) = (contiguous(x), contiguous(w));
    let bias = bias.map(contiguous);
    let geom = geometry(&x, &w, options);
    let y_dims = or_panic(geom.y_dims(), format_args!("convolution {geom:?}"));
    // Outputs come from the crate without a zero-fill pass (oneDNN writes every element).
    let y = or_panic(
        prepared_forward(&geom, &x, &w, bias.as_ref()),
        format_args!("convolution {geom:?}"),
    );
    tensor(y, &y_dims)
}

/// Inference weights reordered once into the layout oneDNN's primitive wants, by the
/// address of the weights' values: a network that predicts batch after batch no longer
/// reorders every convolution's weights on every call (at ResNet-18 28² batch 64 that
/// reorder was as much memory traffic as the convolutions themselves).
///
/// Sound because each entry holds the weights' storage (and the bias's): while it is
/// held, burn-flex copies before writing to it (its storage is shared) and it cannot be
/// freed, so the address names the same values for the entry's whole life. Entries whose
/// storage only this cache still holds (the network was dropped; a training run's
/// weights moved on) are dropped when the next weights come in.
static PREPARED: Mutex<Option<HashMap<(usize, usize), Prepared>>> = Mutex::new(None);

/// At most this many geometries (batch or image sizes that want their own weights
/// layout) per weights; the oldest goes first.
const GEOMETRIES_PER_WEIGHTS: usize = 4;

/// Storage held by [`PREPARED`] (burn-flex's `Arc<Bytes>`).
type Storage = Arc<dyn Any + Send + Sync>;

struct Prepared {
    /// The weights' storage, held (see [`PREPARED`]).
    weights: Storage,
    /// The bias's storage and the address of its values, if any.
    bias: Option<(Storage, usize)>,
    /// The weights prepared for the geometries met so far, newest last.
    convs: Vec<PreparedConv>,
}

/// Whether `p` was prepared for `geom`'s convolution (any batch or image size).
fn same_kernel(p: &PreparedConv, geom: &ConvGeom) -> bool {
    let q = p.geom();
    q.w_dims == geom.w_dims
        && q.stride == geom.stride
        && q.padding == geom.padding
        && q.dilation == geom.dilation
}

/// `conv(x, w) + bias` through [`PREPARED`]: the weights prepared for a geometry whose
/// primitive wants the same layout, else prepared now for this one.
fn prepared_forward(
    geom: &ConvGeom,
    x: &FlexTensor,
    w: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> Result<Vec<f32>, String> {
    let d = dnnl();
    let (wv, bv) = (values(w), bias.map(values));
    let key = (wv.as_ptr() as usize, wv.len());
    let bias_at = bv.map(|b| b.as_ptr() as usize);
    let mut guard = PREPARED.lock().unwrap_or_else(PoisonError::into_inner);
    let cache = guard.get_or_insert_with(HashMap::new);
    let same_bias = |e: &Prepared| e.bias.as_ref().map(|b| b.1) == bias_at;
    if let Some(entry) = cache.get(&key).filter(|e| same_bias(e)) {
        for p in entry.convs.iter().rev().filter(|p| same_kernel(p, geom)) {
            if let Some(y) = d.conv_forward_prepared_at(p, geom.x_dims, values(x))? {
                return Ok(y);
            }
        }
    }
    let prepared = d.prepare_conv(geom, wv, bv)?;
    let y = d
        .conv_forward_prepared_at(&prepared, geom.x_dims, values(x))?
        .ok_or("weights prepared for this geometry do not fit its primitive")?;
    let storage = |t: &FlexTensor| -> Storage { t.data_arc() };
    match cache.get_mut(&key).filter(|e| same_bias(e)) {
        Some(entry) => {
            if entry.convs.len() >= GEOMETRIES_PER_WEIGHTS {
                entry.convs.remove(0);
            }
            entry.convs.push(prepared);
        }
        None => {
            cache.retain(|_, e| Arc::strong_count(&e.weights) > 1);
            cache.insert(
                key,
                Prepared {
                    weights: storage(w),
                    bias: bias.map(storage).zip(bias_at),
                    convs: vec![prepared],
                },
            );
        }
    }
    Ok(y)
}

impl ConvKernels for Onednn {
    type B = Flex;

    fn operands(x: FlexTensor, w: FlexTensor) -> (FlexTensor, FlexTensor) {
        if is_f32(&[&x, &w]) {
            (contiguous(x), contiguous(w))
        } else {
            (x, w)
        }
    }

    fn forward(x: FlexTensor, w: FlexTensor, options: &ConvOptions<2>) -> FlexTensor {
        if conv_takes(x.dtype(), w.dtype(), None) {
            conv_forward(x, w, None, options)
        } else {
            <CpuKernels as ConvKernels>::forward(x, w, options)
        }
    }

    fn backward(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        options: &ConvOptions<2>,
        [want_x, want_w]: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        if !is_f32(&[&x, &w, &dy]) {
            return <CpuKernels as ConvKernels>::backward(x, w, dy, options, [want_x, want_w]);
        }
        let (x, w, dy) = (contiguous(x), contiguous(w), contiguous(dy));
        let geom = geometry(&x, &w, options);
        // oneDNN parallelises each call over every core: the two gradients run one
        // after the other.
        let dx = want_x.then(|| {
            let dx = or_panic(
                dnnl().conv_backward_data_vec(&geom, values(&dy), values(&w)),
                format_args!("convolution data gradient {geom:?}"),
            );
            tensor(dx, &geom.x_dims)
        });
        let dw = want_w.then(|| {
            let (dw, _) = or_panic(
                dnnl().conv_backward_weights_vec(&geom, values(&x), values(&dy), false),
                format_args!("convolution weight gradient {geom:?}"),
            );
            tensor(dw, &geom.w_dims)
        });
        [dx, dw]
    }
}

/// Whether oneDNN's kernels can be tested here: it loads, or the test fails when
/// `RECTRAIN_REQUIRE_ONEDNN=1` (CI installs oneDNN and sets that).
#[cfg(test)]
pub(crate) fn onednn_here() -> bool {
    match Dnnl::get() {
        Ok(_) => true,
        Err(why) if std::env::var_os("RECTRAIN_REQUIRE_ONEDNN").is_some_and(|v| v == "1") => {
            panic!("RECTRAIN_REQUIRE_ONEDNN=1 but oneDNN does not load: {why}")
        }
        Err(why) => {
            eprintln!("oneDNN's kernels not tested: {why}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor, TensorPrimitive};

    fn random(dims: [usize; 4]) -> FlexTensor {
        Tensor::<Flex, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
            .into_primitive()
            .tensor()
    }

    fn host(t: FlexTensor) -> Vec<f32> {
        Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(t))
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    }

    /// Largest difference relative to the reference's largest magnitude.
    fn error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
        got.iter()
            .zip(want)
            .map(|(a, b)| {
                let d = (a - b).abs();
                if d.is_finite() {
                    d
                } else {
                    f32::INFINITY
                }
            })
            .fold(0f32, f32::max)
            / scale
    }

    /// Every distinct convolution of ResNet-18 and ResNet-50 (torchvision's: input and
    /// output channels, kernel and stride as in the networks; small odd spatial sizes so
    /// that the test is quick), batch sizes 1 and 3: oneDNN's forward step and both
    /// gradients against burn-flex's kernels (the CPU's kernels before oneDNN).
    #[test]
    fn every_resnet_convolution_matches_burn_flex() {
        if !onednn_here() {
            return;
        }
        #[rustfmt::skip]
        let shapes: [(usize, usize, usize, usize, usize); 29] = [
            // ResNet-18 (and the stem of both).
            (3, 64, 7, 2, 23), (64, 64, 3, 1, 9), (64, 128, 3, 2, 9), (128, 128, 3, 1, 7),
            (64, 128, 1, 2, 9), (128, 256, 3, 2, 7), (256, 256, 3, 1, 5), (128, 256, 1, 2, 7),
            (256, 512, 3, 2, 5), (512, 512, 3, 1, 3), (256, 512, 1, 2, 5),
            // ResNet-50's bottlenecks.
            (64, 64, 1, 1, 9), (64, 256, 1, 1, 9), (256, 64, 1, 1, 9), (256, 128, 1, 1, 9),
            (128, 128, 3, 2, 9), (128, 512, 1, 1, 5), (256, 512, 1, 2, 9), (512, 128, 1, 1, 5),
            (512, 256, 1, 1, 5), (256, 256, 3, 2, 5), (256, 1024, 1, 1, 3), (512, 1024, 1, 2, 5),
            (1024, 256, 1, 1, 3), (1024, 512, 1, 1, 3), (512, 512, 3, 2, 3), (512, 2048, 1, 1, 2),
            (1024, 2048, 1, 2, 3), (2048, 512, 1, 1, 2),
        ];
        for (cin, cout, k, stride, side) in shapes {
            let pad = k / 2;
            let options = ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
            for n in [1, 3] {
                let case = format!("{cin}->{cout} {k}x{k}/{stride} {side}x{side} n={n}");
                let x = random([n, cin, side, side]);
                let w = random([cout, cin, k, k]);
                let want = <CpuKernels as ConvKernels>::forward(x.clone(), w.clone(), &options);
                let got = <Onednn as ConvKernels>::forward(x.clone(), w.clone(), &options);
                assert_eq!(dims4(&got), dims4(&want), "{case}");
                let dy = random(dims4(&want));
                let e = error(&host(got), &host(want));
                assert!(e < 1e-5, "forward {case}: {e:e}");
                let [want_dx, want_dw] = <CpuKernels as ConvKernels>::backward(
                    x.clone(),
                    w.clone(),
                    dy.clone(),
                    &options,
                    [true, true],
                );
                let [dx, dw] = <Onednn as ConvKernels>::backward(x, w, dy, &options, [true, true]);
                let e = error(&host(dx.unwrap()), &host(want_dx.unwrap()));
                assert!(e < 1e-5, "data gradient {case}: {e:e}");
                let e = error(&host(dw.unwrap()), &host(want_dw.unwrap()));
                assert!(e < 1e-5, "weight gradient {case}: {e:e}");
            }
        }
    }

    /// Whether [`PREPARED`] holds weights whose values start at `w`'s.
    fn cached(w: &FlexTensor) -> bool {
        let v = values(w);
        let guard = PREPARED.lock().unwrap();
        guard
            .as_ref()
            .is_some_and(|c| c.contains_key(&(v.as_ptr() as usize, v.len())))
    }

    /// Inference through prepared weights: the same values as burn-flex's convolution at
    /// every batch size, from the first call and from the cache; weights changed in place
    /// after a call (an optimizer step) give the new result, not the prepared old one;
    /// weights no one holds any more leave the cache when the next come in.
    #[test]
    fn prepared_inference_weights_follow_the_tensors() {
        if !onednn_here() {
            return;
        }
        let options = ConvOptions::new([2; 2], [1; 2], [1, 1], 1);
        let mut w = random([32, 16, 3, 3]);
        let bias = random([1, 1, 1, 32]).reshape(burn::tensor::Shape::new([32]));
        let reference = |x: &FlexTensor, w: &FlexTensor| {
            let y = <CpuKernels as ConvKernels>::forward(x.clone(), w.clone(), &options);
            let b = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(bias.clone()))
                .reshape([1, 32, 1, 1]);
            Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(y)) + b
        };
        let run = |x: &FlexTensor, w: &FlexTensor| {
            host(conv_forward(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                &options,
            ))
        };
        for n in [4, 1, 4, 7, 1] {
            let x = random([n, 16, 11, 9]);
            let want = reference(&x, &w).into_data().to_vec::<f32>().unwrap();
            let e = error(&run(&x, &w), &want);
            assert!(e < 1e-5, "batch {n}: {e:e}");
            assert!(cached(&w), "batch {n}: the weights are prepared once");
        }
        // An optimizer's in-place update: burn-flex copies the shared storage first, so
        // the tensor's values move to new memory and are prepared afresh.
        let x = random([3, 16, 11, 9]);
        let before = run(&x, &w);
        w.storage_mut::<f32>().iter_mut().for_each(|v| *v *= 2.0);
        let want = reference(&x, &w).into_data().to_vec::<f32>().unwrap();
        let after = run(&x, &w);
        assert!(error(&after, &want) < 1e-5, "the updated weights are used");
        assert!(error(&after, &before) > 0.1, "and differ from the old ones");
        // Dropped weights go when new ones come in.
        let old = std::sync::Arc::downgrade(&w.data_arc());
        drop(w);
        assert!(old.upgrade().is_some(), "the cache holds the weights");
        let w2 = random([32, 16, 3, 3]);
        run(&x, &w2);
        assert!(
            old.upgrade().is_none(),
            "the dropped weights left the cache"
        );
        assert!(cached(&w2));
    }

    /// Strided (transposed) operands are copied to row-major order before oneDNN reads
    /// them, and other dtypes go to burn-flex's kernels.
    #[test]
    fn strided_and_bf16_operands() {
        if !onednn_here() {
            return;
        }
        let options = ConvOptions::new([1; 2], [1; 2], [1, 1], 1);
        let x = random([2, 4, 6, 5]);
        let w = random([3, 4, 3, 3]);
        let want = host(<CpuKernels as ConvKernels>::forward(
            x.clone(),
            w.clone(),
            &options,
        ));
        // The same values through a transposed view: [2, 4, 5, 6] swapped back.
        let xt = x
            .to_contiguous()
            .transpose(2, 3)
            .to_contiguous()
            .transpose(2, 3);
        assert!(xt.as_slice::<f32>().is_none(), "the view is strided");
        let got = host(<Onednn as ConvKernels>::forward(xt, w.clone(), &options));
        assert!(error(&got, &want) < 1e-5);
        let half = |t: FlexTensor| {
            Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(t))
                .cast(DType::BF16)
                .into_primitive()
                .tensor()
        };
        let y = <Onednn as ConvKernels>::forward(half(x), half(w), &options);
        assert_eq!(y.dtype(), DType::BF16, "bf16 takes burn-flex's kernels");
    }
}
