//! Contiguous copies of strided tensors, fast on the CPU backend.
//!
//! burn-flex copies a strided view that does not collapse to two dimensions (such as a
//! convolution's weight gradient, `[C_out, C_in, k, k]` viewed through a swap of its
//! first two dimensions) with a scalar index walk on one thread: about a sixth of a CPU
//! training step at 28×28. `contiguous` copies such a float32 view as runs of its
//! contiguous innermost dimensions, split over rayon's threads. Every other tensor, and
//! every other backend, takes the backend's own copy.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::cast;

/// `t` with a contiguous layout, on burn-flex (the backend [`super::contiguous`]
/// selected).
pub(super) fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    let flex = cast::<FloatTensor<B>, FlexTensor>(t.into_primitive().tensor())
        .unwrap_or_else(|_| unreachable!("selected for Flex only"));
    let copy = cast::<FlexTensor, FloatTensor<B>>(flex_contiguous(flex))
        .unwrap_or_else(|_| unreachable!("B is burn-flex"));
    Tensor::from_primitive(TensorPrimitive::Float(copy))
}

/// burn-flex: float32 views with positive strides and a contiguous innermost run are
/// copied here; everything else by `FlexTensor::to_contiguous`.
fn flex_contiguous(t: FlexTensor) -> FlexTensor {
    if t.dtype() != burn::tensor::DType::F32 || t.layout().is_contiguous() {
        return t.to_contiguous();
    }
    let layout = t.layout();
    let (shape, strides) = (layout.shape().to_vec(), layout.strides().to_vec());
    let Some(plan) = BlockPlan::new(&shape, &strides) else {
        return t.to_contiguous();
    };
    let src: &[f32] = t.storage();
    let mut dst = vec![0f32; plan.total];
    plan.copy(src, layout.start_offset(), &mut dst);
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(dst),
        Layout::contiguous(layout.shape().clone()),
        t.dtype(),
    )
}

/// How to copy a strided view as blocks: `outer` dimensions (size, stride) walked in
/// row-major order, each position a contiguous run of `block` elements.
#[derive(Debug, PartialEq)]
struct BlockPlan {
    outer: Vec<(usize, usize)>,
    block: usize,
    total: usize,
}

impl BlockPlan {
    /// `None` for shapes this copy does not speed up: negative strides, an innermost
    /// stride other than 1, or a run shorter than 4 elements.
    fn new(shape: &[usize], strides: &[isize]) -> Option<Self> {
        if strides.iter().any(|&s| s < 0) || shape.is_empty() {
            return None;
        }
        let total = shape.iter().product::<usize>();
        // Drop size-1 dimensions: their stride never matters.
        let dims: Vec<(usize, usize)> = shape
            .iter()
            .zip(strides)
            .filter(|(&n, _)| n != 1)
            .map(|(&n, &s)| (n, s as usize))
            .collect();
        let mut block = 1;
        let mut inner = dims.len();
        while inner > 0 && dims[inner - 1].1 == block {
            block *= dims[inner - 1].0;
            inner -= 1;
        }
        if block < 4 || total == 0 {
            return None;
        }
        Some(Self {
            outer: dims[..inner].to_vec(),
            block,
            total,
        })
    }

    /// Copies the view of `src` starting at `offset` into `dst` (`total` elements).
    fn copy(&self, src: &[f32], offset: usize, dst: &mut [f32]) {
        let block = self.block;
        let Some((&(n0, s0), rest)) = self.outer.split_first() else {
            dst.copy_from_slice(&src[offset..offset + block]);
            return;
        };
        let per_first = self.total / n0;
        dst.par_chunks_mut(per_first)
            .enumerate()
            .for_each(|(i0, out)| {
                let base = offset + i0 * s0;
                for (j, run) in out.chunks_exact_mut(block).enumerate() {
                    // Row-major index j over the remaining outer dimensions.
                    let mut rem = j;
                    let mut at = base;
                    for &(n, s) in rest.iter().rev() {
                        at += (rem % n) * s;
                        rem /= n;
                    }
                    run.copy_from_slice(&src[at..at + block]);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use burn::tensor::{Distribution, TensorData};

    type B = CpuBackend;

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn plan_of_a_swapped_weight_gradient() {
        // [C_in=3, C_out=2, 3, 3] contiguous, viewed as [C_out, C_in, 3, 3].
        let plan = BlockPlan::new(&[2, 3, 3, 3], &[27, 9, 3, 1]).unwrap();
        assert_eq!(
            (plan.outer.len(), plan.block),
            (0, 54),
            "contiguous already: one run"
        );
        let plan = BlockPlan::new(&[2, 3, 3, 3], &[9, 18, 3, 1]).unwrap();
        assert_eq!(
            plan,
            BlockPlan {
                outer: vec![(2, 9), (3, 18)],
                block: 9,
                total: 54
            }
        );
        // A 1×1 kernel: runs of one element are left to burn-flex.
        assert_eq!(BlockPlan::new(&[2, 3, 1, 1], &[1, 2, 1, 1]), None);
        assert_eq!(BlockPlan::new(&[4, 4], &[-4, 1]), None);
    }

    /// Every view a convolution's weight gradient can be (swapped, swapped and sliced,
    /// permuted) copies to exactly the values burn's own copy gives.
    #[test]
    fn copies_equal_burns_own_copy() {
        let device = Default::default();
        let base = Tensor::<B, 4>::random([6, 5, 4, 7], Distribution::Default, &device);
        let views: Vec<Tensor<B, 4>> = vec![
            base.clone().swap_dims(0, 1),
            base.clone().swap_dims(0, 1).slice([0..4, 1..5, 0..3, 0..7]),
            base.clone().swap_dims(0, 1).slice([0..5, 0..6, 1..4, 2..7]),
            base.clone().permute([2, 0, 1, 3]),
            base.clone().swap_dims(2, 3),
            base.clone(),
        ];
        for (i, view) in views.into_iter().enumerate() {
            let expected = values(view.clone());
            let dims = view.dims();
            let copied = contiguous(view);
            assert_eq!(copied.dims(), dims, "view {i}");
            let prim = copied.clone().into_primitive().tensor();
            assert!(prim.layout().is_contiguous(), "view {i} is contiguous");
            assert_eq!(values(copied), expected, "view {i}");
        }
        // Other dtypes and small runs go through burn-flex's copy, with the same result.
        let ints = TensorData::new((0..24).map(|v| v as f32).collect(), [2, 3, 4]);
        let t = Tensor::<B, 3>::from_data(ints, &device).swap_dims(0, 2);
        assert_eq!(values(contiguous(t.clone())), values(t));
    }
}
