//! What happens to the gradients between backward and the optimizer step (contiguous
//! layout, MXNet's weight decay), and the finiteness check of the weights.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use resnet::kernels::contiguous;

/// Whether every float tensor of a module (parameters and buffers) is finite. One
/// value is read back: the sum of `x × 0` over all elements, which is 0 exactly when
/// no element is NaN or infinite.
pub fn all_finite<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Zeros<B: Backend>(Option<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Zeros<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let z = param.val().mul_scalar(0.0).sum();
            self.0 = Some(match self.0.take() {
                Some(acc) => acc + z,
                None => z,
            });
        }
    }
    let mut v = Zeros::<B>(None);
    module.visit(&mut v);
    v.0.is_none_or(|t| t.into_scalar().elem::<f64>() == 0.0)
}

/// The gradients as the optimizer takes them:
/// - with a contiguous layout: a copy only of those a backend left strided (burn-flex's
///   convolution weight gradients are transposed views), so that the optimizer's
///   element-wise updates run on contiguous kernels instead of strided index walks (a
///   fifth of a CPU training step at 28×28); the copy itself is [`contiguous`]'s
///   parallel one;
/// - plus `weight_decay × parameter` (L2 decay, coupled as MXNet's `wd` and burn's
///   `WeightDecay`) for the parameters MXNet decays: those named `weight` or `gamma`.
///   MXNet's optimizer gives every other parameter (fc bias, BatchNorm beta) a decay
///   multiplier of 0 (`Optimizer.set_wd_mult`, which Module's `fit`, SageMaker's
///   trainer, uses).
pub(super) fn prepare_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    weight_decay: f64,
    loss_scale: f64,
) -> GradientsParams {
    struct Prepare<'a> {
        grads: &'a mut GradientsParams,
        weight_decay: f64,
        loss_scale: f64,
        /// The field names entered so far; the last one names the parameter.
        path: Vec<String>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Prepare<'_> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let mut g = contiguous(g);
                if self.loss_scale != 1.0 {
                    g = g.div_scalar(self.loss_scale);
                }
                if self.weight_decay > 0.0 && decays(self.path.last().map(String::as_str)) {
                    g = param.val().inner().mul_scalar(self.weight_decay).add(g);
                }
                self.grads.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    model.visit(&mut Prepare {
        grads: &mut grads,
        weight_decay,
        loss_scale,
        path: Vec::new(),
    });
    grads
}

/// Whether MXNet's optimizer applies weight decay to a parameter of this field name.
/// Whether every gradient in `grads` of `model`'s parameters is finite (one value read
/// back from the device): the loss-scale overflow check of float16 training.
pub(super) fn grads_finite<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
) -> bool {
    struct Zeros<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Zeros<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                // 0·x is 0 for finite x and NaN for ±inf or NaN.
                let z = g.mul_scalar(0.0).sum();
                self.sum = Some(match self.sum.take() {
                    Some(acc) => acc + z,
                    None => z,
                });
            }
        }
    }
    let mut v = Zeros::<B> { grads, sum: None };
    model.visit(&mut v);
    v.sum.is_none_or(|t| t.into_scalar().elem::<f64>() == 0.0)
}

fn decays(name: Option<&str>) -> bool {
    matches!(name, Some("weight" | "gamma"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use resnet::model::{ResNet, ResNetConfig};

    type Cpu = burn::backend::Flex;
    type CpuAd = burn::backend::Autodiff<burn::backend::Flex>;

    /// Weight decay is added to the gradients of weights and BatchNorm gammas only, as
    /// MXNet's optimizer does; biases and betas keep their gradients.
    #[test]
    fn weight_decay_only_on_weights_and_gammas() {
        let device = Default::default();
        let model: ResNet<CpuAd> = ResNetConfig::new(18, 3).init(&device);
        let x =
            Tensor::<CpuAd, 4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let grads_of = |wd: f64| {
            let loss = model.forward(x.clone()).powi_scalar(2).sum();
            prepare_grads(
                &model,
                GradientsParams::from_grads(loss.backward(), &model),
                wd,
                1.0,
            )
        };
        let (plain, decayed) = (grads_of(0.0), grads_of(0.5));
        let grad = |g: &GradientsParams, id| -> Vec<f32> {
            g.get::<Cpu, 1>(id).unwrap().into_data().to_vec().unwrap()
        };
        let grad2 = |g: &GradientsParams, id| -> Vec<f32> {
            g.get::<Cpu, 2>(id).unwrap().into_data().to_vec().unwrap()
        };
        let values = |t: Tensor<CpuAd, 1>| -> Vec<f32> { t.into_data().to_vec().unwrap() };
        // Not decayed: fc bias, BatchNorm beta.
        let fc_bias = model.fc.bias.as_ref().unwrap();
        assert_eq!(grad(&plain, fc_bias.id), grad(&decayed, fc_bias.id));
        assert_eq!(
            grad(&plain, model.bn1.beta.id),
            grad(&decayed, model.bn1.beta.id)
        );
        assert!(!grad(&plain, model.bn1.beta.id).is_empty());
        // Decayed: BatchNorm gamma and fc weight, by exactly 0.5 × the parameter.
        let (g0, g1) = (
            grad(&plain, model.bn1.gamma.id),
            grad(&decayed, model.bn1.gamma.id),
        );
        let gamma = values(model.bn1.gamma.val());
        for i in 0..g0.len() {
            assert_eq!(g1[i], gamma[i] * 0.5 + g0[i]);
        }
        let (w0, w1) = (
            grad2(&plain, model.fc.weight.id),
            grad2(&decayed, model.fc.weight.id),
        );
        let w: Vec<f32> = model.fc.weight.val().into_data().to_vec().unwrap();
        assert!(w0
            .iter()
            .zip(&w1)
            .zip(&w)
            .all(|((a, b), p)| *b == p * 0.5 + a));
        assert!(decays(Some("weight")) && decays(Some("gamma")));
        assert!(!decays(Some("bias")) && !decays(Some("beta")) && !decays(None));
    }

    #[test]
    fn non_finite_weights_are_detected() {
        use burn::nn::{Linear, LinearConfig};
        let device = Default::default();
        let m: Linear<Cpu> = LinearConfig::new(3, 2).init(&device);
        assert!(all_finite(&m));
        let bad =
            Tensor::<Cpu, 1>::from_data(TensorData::new(vec![0.0f32, f32::NAN], [2]), &device);
        let mut m2 = m.clone();
        m2.bias = Some(Param::from_tensor(bad));
        assert!(!all_finite(&m2));
        let inf =
            Tensor::<Cpu, 1>::from_data(TensorData::new(vec![f32::INFINITY, 1.0], [2]), &device);
        let mut m3 = m;
        m3.bias = Some(Param::from_tensor(inf));
        assert!(!all_finite(&m3));
    }
}
