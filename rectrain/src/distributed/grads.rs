//! A model's gradients as one flat buffer and back, so that one all-reduce per step
//! carries them all (rather than one call per parameter).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use resnet::backend::host_f32;

struct Flatten<'a> {
    grads: &'a GradientsParams,
    scale: f32,
    out: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.val().is_require_grad() {
            return; // BatchNorm's running statistics
        }
        let n = param.lazy_shape().num_elements();
        match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => self
                .out
                .extend(host_f32(g).into_iter().map(|v| v * self.scale)),
            // No gradient here (an empty shard): zeros join the sum.
            None => self.out.resize(self.out.len() + n, 0.0),
        }
    }
}

/// Every trainable parameter's gradient in `grads`, times `scale`, in `model`'s
/// visiting order (zeros for a parameter without one).
pub fn flatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
    scale: f32,
) -> Vec<f32> {
    let mut f = Flatten {
        grads,
        scale,
        out: Vec::new(),
    };
    model.visit(&mut f);
    f.out
}

struct Unflatten<'a> {
    values: &'a [f32],
    grads: GradientsParams,
    /// The values ended before the model's parameters did.
    short: bool,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let shape = param.lazy_shape();
        let n = shape.num_elements();
        let (head, rest) = self.values.split_at(n.min(self.values.len()));
        self.values = rest;
        if head.len() < n {
            self.short = true;
            return;
        }
        let device = value.device();
        let g =
            Tensor::<B::InnerBackend, D>::from_data(TensorData::new(head.to_vec(), shape), &device);
        self.grads.register::<B::InnerBackend, D>(param.id, g);
    }
}

/// The gradients of [`flatten`]'s layout: every trainable parameter gets its slice of
/// `values`. Returns `None` when `values` does not have the model's length.
pub fn unflatten<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    values: &[f32],
) -> Option<GradientsParams> {
    let mut u = Unflatten {
        values,
        grads: GradientsParams::new(),
        short: false,
    };
    model.visit(&mut u);
    (!u.short && u.values.is_empty()).then_some(u.grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::tensor::backend::Backend;
    use resnet::model::ResNetConfig;

    type B = Autodiff<Flex>;

    struct Count(usize);

    impl<A: AutodiffBackend> ModuleVisitor<A> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
            if param.val().is_require_grad() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }

    /// How many floats [`flatten`] gives for `model`.
    fn parameter_count<A: AutodiffBackend, M: AutodiffModule<A>>(model: &M) -> usize {
        let mut c = Count(0);
        model.visit(&mut c);
        c.0
    }

    /// The all-reduce's contract on the host side: flattening two shards' gradients
    /// and adding the buffers gives the sum of the gradients, parameter by parameter
    /// (to 1e-6), and unflatten puts every value back under its parameter.
    #[test]
    fn summed_buffers_are_the_sum_of_the_shards_gradients() {
        let device = Default::default();
        B::seed(&device, 5);
        let model = ResNetConfig::new(18, 3).init::<B>(&device);
        let x = |seed: u64| {
            B::seed(&device, seed);
            Tensor::<B, 4>::random([2, 3, 16, 16], burn::tensor::Distribution::Default, &device)
        };
        let grads_of = |input: Tensor<B, 4>| {
            let loss = model.forward(input).powi_scalar(2).mean();
            GradientsParams::from_grads::<B, _>(loss.backward(), &model)
        };
        let (ga, gb) = (grads_of(x(1)), grads_of(x(2)));
        let (fa, fb) = (
            flatten::<B, _>(&model, &ga, 1.0),
            flatten::<B, _>(&model, &gb, 0.5),
        );
        assert_eq!(fa.len(), parameter_count::<B, _>(&model));
        // torchvision's ResNet-18 has 11,689,512 parameters with 1,000 classes; with 3,
        // 512 × 997 + 997 fewer (BatchNorm's running statistics are not parameters).
        assert_eq!(
            fa.len(),
            11_689_512 - 512 * 997 - 997,
            "ResNet-18 with 3 classes"
        );
        let sum: Vec<f32> = fa.iter().zip(&fb).map(|(a, b)| a + b).collect();
        let mut summed = unflatten::<B, _>(&model, &sum).expect("the model's length");
        assert!(unflatten::<B, _>(&model, &sum[1..]).is_none());

        // Every parameter: the unflattened sum is ga + 0.5 gb.
        struct Check<'a> {
            ga: &'a GradientsParams,
            gb: &'a GradientsParams,
            summed: &'a mut GradientsParams,
            checked: usize,
        }
        impl ModuleVisitor<B> for Check<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if !param.val().is_require_grad() {
                    return;
                }
                let a = host_f32(self.ga.get::<Flex, D>(param.id).unwrap());
                let b = host_f32(self.gb.get::<Flex, D>(param.id).unwrap());
                let s = host_f32(self.summed.remove::<Flex, D>(param.id).unwrap());
                for ((a, b), s) in a.iter().zip(&b).zip(&s) {
                    assert!(
                        (a + 0.5 * b - s).abs() <= 1e-6 * (1.0 + s.abs()),
                        "{a} {b} {s}"
                    );
                }
                self.checked += 1;
            }
        }
        let mut check = Check {
            ga: &ga,
            gb: &gb,
            summed: &mut summed,
            checked: 0,
        };
        model.visit(&mut check);
        assert!(check.checked > 60, "{}", check.checked);

        // A shard without gradients (an empty last shard) contributes zeros.
        let none = flatten::<B, _>(&model, &GradientsParams::new(), 1.0);
        assert_eq!(none.len(), fa.len());
        assert!(none.iter().all(|v| *v == 0.0));
    }
}
