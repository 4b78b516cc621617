//! The training loss: softmax cross-entropy, or binary cross-entropy on logits for
//! multi-label data (optionally with per-class positive weights).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use resnet::Head;

/// Mean loss of a batch (a one-element tensor).
pub(super) fn batch_loss<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[Vec<f32>],
    num_classes: usize,
    head: Head,
    pos_weights: Option<&[f32]>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let n = labels.len();
    match head {
        Head::Sigmoid => {
            let flat: Vec<f32> = labels.iter().flat_map(|l| l.iter().copied()).collect();
            let y = Tensor::<B, 2>::from_data(TensorData::new(flat, [n, num_classes]), device);
            // Stable BCE on logits: (1−y)·x + (1 + (w−1)·y)·(log(1+e^{−|x|}) + max(−x, 0)).
            let x = logits;
            let softplus_neg = x.clone().abs().neg().exp().log1p() + x.clone().neg().clamp_min(0.0);
            let coef = match pos_weights {
                Some(w) => {
                    let w = Tensor::<B, 1>::from_data(
                        TensorData::new(w.to_vec(), [num_classes]),
                        device,
                    )
                    .reshape([1, num_classes]);
                    y.clone().mul(w.sub_scalar(1.0)).add_scalar(1.0)
                }
                None => y.ones_like(),
            };
            let loss = y.neg().add_scalar(1.0).mul(x) + coef.mul(softplus_neg);
            loss.mean()
        }
        Head::Softmax => {
            let targets: Vec<i64> = labels.iter().map(|l| l[0] as i64).collect();
            let t = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), device);
            burn::nn::loss::CrossEntropyLossConfig::new()
                .init(device)
                .forward(logits, t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, Optimizer, SgdConfig};
    use burn::tensor::ElementConversion;

    use resnet::model::{ResNet, ResNetConfig};

    type Cpu = burn::backend::Flex;
    type CpuAd = burn::backend::Autodiff<burn::backend::Flex>;

    #[test]
    fn cross_entropy_and_bce_values() {
        let device = Default::default();
        let logits = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 2.0, 0.0], [2, 2]),
            &device,
        );
        let l: f64 = batch_loss(
            logits.clone(),
            &[vec![0.0], vec![0.0]],
            2,
            Head::Softmax,
            None,
            &device,
        )
        .into_scalar()
        .elem();
        // mean(ln 2, ln(1 + e^-2))
        let want = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");

        let labels = [vec![1.0, 0.0], vec![0.0, 1.0]];
        let l: f64 = batch_loss(logits.clone(), &labels, 2, Head::Sigmoid, None, &device)
            .into_scalar()
            .elem();
        let sp = |x: f64| (1.0 + x.exp()).ln(); // softplus
                                                // BCE(x, y) = softplus(x) - x*y
        let want = (sp(0.0) + sp(0.0) + (sp(2.0) - 0.0) + (sp(0.0) - 0.0)) / 4.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");

        // A positive weight of 3 on class 0 triples the y=1 term of class 0 only.
        let l: f64 = batch_loss(
            logits,
            &labels,
            2,
            Head::Sigmoid,
            Some(&[3.0, 1.0]),
            &device,
        )
        .into_scalar()
        .elem();
        let want = (3.0 * sp(0.0) + sp(0.0) + sp(2.0) + sp(0.0)) / 4.0;
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
    }

    #[test]
    fn loss_decreases_on_a_fixed_batch() {
        let device = Default::default();
        CpuAd::seed(&device, 7);
        let mut model: ResNet<CpuAd> = ResNetConfig::new(18, 2).init(&device);
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            }))
            .init::<CpuAd, ResNet<CpuAd>>();
        // Four 3×16×16 images: two dark, two bright, labelled 0 and 1.
        let n = 4;
        let len = 3 * 16 * 16;
        let mut pixels = Vec::with_capacity(n * len);
        for i in 0..n {
            let v = if i % 2 == 0 { -1.5f32 } else { 1.5 };
            pixels.extend((0..len).map(|k| v + (k % 7) as f32 * 0.05));
        }
        let labels: Vec<Vec<f32>> = (0..n).map(|i| vec![(i % 2) as f32]).collect();
        let x = Tensor::<CpuAd, 4>::from_data(TensorData::new(pixels, [n, 3, 16, 16]), &device);
        let mut losses = Vec::new();
        for _ in 0..6 {
            let logits = model.forward(x.clone());
            let loss = batch_loss(logits, &labels, 2, Head::Softmax, None, &device);
            losses.push(loss.clone().into_scalar().elem::<f64>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(
            losses[5] < losses[0] * 0.5,
            "loss did not decrease enough: {losses:?}"
        );
    }
}
