//! Mixed precision, as users know it from PyTorch's AMP: SageMaker's
//! `precision_dtype=float16|bfloat16` on CUDA trains with **f32 master weights** (the
//! backend is `Autodiff<Cuda<f32>>`, and the optimizer, the checkpoints and the artifact
//! see f32), while the network computes in the half type: the images are cast on the
//! way in, and the kernel layer casts each weight to its input's dtype inside autodiff's
//! graph ([`resnet::kernels::conv2d`]), so the gradients reach the master weights in f32.
//! Batch norm's statistics and parameters stay f32 (cuDNN's rule); the pooled features
//! go back to f32 before the classifier and the loss.
//!
//! float16's narrow range needs **loss scaling**: the loss is multiplied by a scale
//! before the backward pass and the gradients divided by it after; a step whose
//! gradients overflowed is skipped and the scale halved, and after
//! [`GROWTH_INTERVAL`] good steps in a row it doubles (PyTorch's `GradScaler`
//! defaults). bfloat16 has f32's range and needs none. Validation runs in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use resnet::backend::Precision;

/// Loss scale at the start (PyTorch's `GradScaler` default, 2^16).
pub const INITIAL_SCALE: f64 = 65_536.0;
/// Good steps in a row before the scale doubles.
pub const GROWTH_INTERVAL: u32 = 2_000;

/// The mixed-precision policy of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPrecision {
    compute: Option<DType>,
    scaler: Option<LossScaler>,
}

impl MixedPrecision {
    /// The policy for `precision` on a GPU (float32: none).
    pub fn new(precision: Precision) -> Self {
        match precision {
            Precision::F32 => MixedPrecision {
                compute: None,
                scaler: None,
            },
            Precision::Bf16 => MixedPrecision {
                compute: Some(DType::BF16),
                scaler: None,
            },
            Precision::F16 => MixedPrecision {
                compute: Some(DType::F16),
                scaler: Some(LossScaler::default()),
            },
        }
    }

    /// A training batch's images in the compute dtype.
    pub fn input<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.compute {
            Some(dtype) => resnet::kernels::in_dtype(x, dtype),
            None => x,
        }
    }

    /// The factor the loss is multiplied by before the backward pass (1 without loss
    /// scaling).
    pub fn loss_scale(&self) -> f64 {
        self.scaler.as_ref().map_or(1.0, |s| s.scale)
    }

    /// Whether gradients must be checked for overflow before the step.
    pub fn checks_overflow(&self) -> bool {
        self.scaler.is_some()
    }

    /// Records whether this step's gradients were finite; `false` means skip the step.
    pub fn update(&mut self, finite: bool) -> bool {
        match &mut self.scaler {
            Some(s) => s.update(finite),
            None => true,
        }
    }
}

/// Dynamic loss scaling for float16.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    /// The current scale.
    pub scale: f64,
    good_steps: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: INITIAL_SCALE,
            good_steps: 0,
        }
    }
}

impl LossScaler {
    /// After a step: finite gradients count towards growth (doubling after
    /// [`GROWTH_INTERVAL`]), an overflow halves the scale (down to 1) and says to skip
    /// the step.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(MixedPrecision::new(Precision::F32).loss_scale(), 1.0);
        assert!(!MixedPrecision::new(Precision::Bf16).checks_overflow());
        assert_eq!(
            MixedPrecision::new(Precision::F16).loss_scale(),
            INITIAL_SCALE
        );
    }

    #[test]
    fn scale_halves_on_overflow_and_doubles_after_good_steps() {
        let mut s = LossScaler::default();
        assert!(!s.update(false));
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        assert!(s.update(true));
        assert_eq!(s.scale, INITIAL_SCALE);
        // An overflow resets the count.
        for _ in 0..10 {
            s.update(true);
        }
        s.update(false);
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        // Never below 1.
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale, 1.0);
    }

    /// The CPU backend computes in bfloat16 too: a training step under the bf16
    /// policy gives f32 gradients on the f32 master weights, close to float32's.
    #[test]
    fn bf16_step_gives_f32_gradients_close_to_f32s() {
        use burn::backend::Autodiff;
        use burn::tensor::Distribution;
        use resnet::model::{ResNet, ResNetConfig};
        type A = Autodiff<burn::backend::Flex>;
        let device = Default::default();
        let model: ResNet<A> = ResNetConfig::new(18, 3).init(&device);
        let x = Tensor::<A, 4>::random([8, 3, 64, 64], Distribution::Default, &device);
        let grads_of = |policy: MixedPrecision| {
            let logits = model.forward(policy.input(x.clone()));
            assert_eq!(logits.dtype(), DType::F32);
            let g = logits.powi_scalar(2).sum().backward();
            let w = model.layer3[0].conv1.weight.grad(&g).unwrap();
            assert_eq!(w.dtype(), DType::F32);
            w.into_data().to_vec::<f32>().unwrap()
        };
        let full = grads_of(MixedPrecision::new(Precision::F32));
        let half = grads_of(MixedPrecision::new(Precision::Bf16));
        // Agreement as the cosine of the two gradients: 0.92 measured on burn-flex
        // (bf16 keeps 8 bits of mantissa, and every element-wise step of a random
        // ResNet rounds); a cast that lost the gradient's path would give ~0.
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let cosine = dot(&full, &half) / (dot(&full, &full) * dot(&half, &half)).sqrt();
        assert!(cosine > 0.85, "bf16 gradient's cosine with f32's: {cosine}");
        assert!(full != half, "the bf16 step computed in f32");
    }
}
