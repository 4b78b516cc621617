//! Batched class probabilities from a trained model, on any backend.
//!
//! [`Predictor::load`] builds the network described by a [`ResNetConfig`], loads its
//! weights strictly from a `model.safetensors` and keeps it on the resolved device
//! (CPU, or CUDA in float32/float16/bfloat16). [`Predictor::predict`] takes already
//! preprocessed images (`N×C×H×W` floats, see `preprocess`), runs them in batches of
//! [`Predictor::batch_size`] and returns one probability vector per image: the softmax
//! of the logits, or an independent sigmoid per class for multi-label models (what
//! SageMaker's endpoint returns): the model's [`Head`], computed on the host in f64
//! from the logits, so half-precision backends do not lose the small probabilities.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::backend::{dispatch_infer, BackendError, InferTask, Precision, ResolvedDevice};
use crate::head::Head;
use crate::model::{FoldedResNet, ModelError, ResNetConfig};
use crate::weights::{load_safetensors, WeightsError};

/// Default number of images per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Why prediction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The model configuration is invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The device/precision combination is unusable.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The image buffer does not hold `n` images of `shape`.
    #[error("image buffer holds {got} floats, expected {n} × {shape:?} = {expected}")]
    BadInput {
        /// Images announced.
        n: usize,
        /// `[C, H, W]`.
        shape: [usize; 3],
        /// `n × C × H × W`.
        expected: usize,
        /// Floats given.
        got: usize,
    },
    /// The model takes 3-channel images.
    #[error("images must have 3 channels, got {0}")]
    Channels(usize),
    /// Images with no pixels (a zero height or width).
    #[error("images of {h}×{w} are empty: the network needs at least 1×1")]
    TooSmall {
        /// Height.
        h: usize,
        /// Width.
        w: usize,
    },
}

/// Logits of a network's `forward` (a [`crate::model::ResNet`] or its [`FoldedResNet`]) for `n`
/// images of `shape` (`[N, classes]` row-major, f32).
pub fn logits<B: Backend>(
    forward: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 2>,
    images: &[f32],
    n: usize,
    shape: [usize; 3],
    device: &B::Device,
) -> Vec<f32> {
    let [c, h, w] = shape;
    let x = Tensor::<B, 4>::from_data(TensorData::new(images.to_vec(), [n, c, h, w]), device);
    crate::backend::host_f32(forward(x))
}

/// A network loaded on a device (behind the backend type): logits of a batch.
pub(crate) trait Network: Send {
    /// `[n, classes]` row-major logits of `n` images of `shape`.
    fn logits(&self, images: &[f32], n: usize, shape: [usize; 3]) -> Vec<f32>;
}

/// `network`'s logits of `images` (`n` images of `shape`, the length already checked), in
/// forward passes of at most `batch_size` images: `[n, classes]` row-major.
pub(crate) fn logits_in_passes(
    network: &dyn Network,
    images: &[f32],
    shape: [usize; 3],
    batch_size: usize,
) -> Vec<f32> {
    let per_image = shape.iter().product::<usize>().max(1);
    let mut out = Vec::new();
    for chunk in images.chunks(batch_size.max(1) * per_image) {
        out.extend(network.logits(chunk, chunk.len() / per_image, shape));
    }
    out
}

struct ResNetOnDevice<B: Backend> {
    model: FoldedResNet<B>,
    device: B::Device,
}

impl<B: Backend> Network for ResNetOnDevice<B> {
    fn logits(&self, images: &[f32], n: usize, shape: [usize; 3]) -> Vec<f32> {
        logits(|x| self.model.forward(x), images, n, shape, &self.device)
    }
}

struct LoadTask<'a> {
    weights: &'a Path,
    cfg: &'a ResNetConfig,
}

impl InferTask for LoadTask<'_> {
    type Output = Result<Box<dyn Network>, InferError>;
    fn run<B: Backend>(self, devices: Vec<B::Device>) -> Self::Output {
        // Inference uses one device; data-parallel prediction is not needed at
        // SageMaker's one-image-per-request scale.
        let device = devices.into_iter().next().unwrap_or_default();
        let model = self.cfg.try_init_zeroed::<B>(&device)?;
        let model = load_safetensors(model, self.weights, &device)?.fold_batch_norm();
        Ok(Box::new(ResNetOnDevice { model, device }))
    }
}

/// A network loaded on a device, ready to turn images into probabilities: a rectrain
/// model ([`Predictor::load`]) or an imported MXNet graph
/// ([`crate::mxnet::net::predictor`]), the same type for both.
pub struct Predictor {
    network: Box<dyn Network>,
    /// The one input shape the network takes (an MXNet graph's), or `None` for any
    /// image size with three channels (the ResNet pools adaptively).
    input_shape: Option<[usize; 3]>,
    num_classes: usize,
    head: Head,
    batch_size: usize,
    device: ResolvedDevice,
    precision: Precision,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("input_shape", &self.input_shape)
            .field("num_classes", &self.num_classes)
            .field("head", &self.head)
            .field("batch_size", &self.batch_size)
            .field("device", &self.device)
            .field("precision", &self.precision)
            .finish()
    }
}

impl Predictor {
    /// Loads `weights` (a `model.safetensors` written by rectrain, strict) into the
    /// network `cfg` on `device` with `precision`.
    pub fn load(
        weights: &Path,
        cfg: &ResNetConfig,
        head: Head,
        device: &ResolvedDevice,
        precision: Precision,
    ) -> Result<Self, InferError> {
        cfg.validate()?;
        let network = dispatch_infer(device, precision, LoadTask { weights, cfg })??;
        Ok(Predictor::on_device(
            network,
            None,
            cfg.num_classes,
            head,
            device,
            precision,
        ))
    }

    /// A predictor over a network already on `device`.
    pub(crate) fn on_device(
        network: Box<dyn Network>,
        input_shape: Option<[usize; 3]>,
        num_classes: usize,
        head: Head,
        device: &ResolvedDevice,
        precision: Precision,
    ) -> Self {
        Predictor {
            network,
            input_shape,
            num_classes,
            head,
            batch_size: DEFAULT_BATCH_SIZE,
            device: device.clone(),
            precision,
        }
    }

    /// Sets the number of images per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Images per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Length of each probability vector.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// How the logits become probabilities (softmax, or per-class sigmoids).
    pub fn head(&self) -> Head {
        self.head
    }

    /// The device the model lives on.
    pub fn device(&self) -> &ResolvedDevice {
        &self.device
    }

    /// Raw logits, `n` rows of [`Predictor::num_classes`] values.
    pub fn predict_logits(
        &self,
        images: &[f32],
        n: usize,
        shape: [usize; 3],
    ) -> Result<Vec<Vec<f32>>, InferError> {
        let [c, h, w] = shape;
        // An MXNet graph takes its own input shape only; the ResNet any size.
        let want = self.input_shape.unwrap_or(shape);
        let per_image: usize = want.iter().product();
        if shape != want || images.len() != n * per_image {
            return Err(InferError::BadInput {
                n,
                shape: want,
                expected: n * per_image,
                got: images.len(),
            });
        }
        if self.input_shape.is_none() {
            if c != 3 {
                return Err(InferError::Channels(c));
            }
            // Every stride-2 stage maps a side of 1 to 1 (padding keeps the window
            // over the pixel) and the classifier pools adaptively, so any non-empty
            // image works; Fashion-MNIST's native 28×28 is the usual small case.
            if h == 0 || w == 0 {
                return Err(InferError::TooSmall { h, w });
            }
        }
        let z = logits_in_passes(self.network.as_ref(), images, shape, self.batch_size);
        Ok(z.chunks(self.num_classes).map(<[f32]>::to_vec).collect())
    }

    /// Per-image probabilities: softmax over classes, or per-class sigmoid when the
    /// model is multi-label. `images` holds `n` preprocessed `C×H×W` images.
    pub fn predict(
        &self,
        images: &[f32],
        n: usize,
        shape: [usize; 3],
    ) -> Result<Vec<Vec<f32>>, InferError> {
        let rows = self.predict_logits(images, n, shape)?;
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Ok(self.head.probabilities(&flat, self.num_classes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::weights::save_safetensors;

    #[test]
    fn predictor_matches_the_model_and_batches_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let cfg = ResNetConfig::new(18, 4);
        let device = Default::default();
        let model = cfg.init::<CpuBackend>(&device);
        save_safetensors(&model, &path).unwrap();

        let n = 3;
        let shape = [3, 32, 32];
        let images: Vec<f32> = (0..n * 3 * 32 * 32)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
            .collect();
        let expected = Head::Softmax
            .probabilities(&logits(|x| model.forward(x), &images, n, shape, &device), 4);

        let p = Predictor::load(
            &path,
            &cfg,
            Head::Softmax,
            &ResolvedDevice::Cpu,
            Precision::F32,
        )
        .unwrap()
        .with_batch_size(2); // 2 + 1: batching must not change results
        let got = p.predict(&images, n, shape).unwrap();
        assert_eq!(got.len(), 3);
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.len(), 4);
            assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            for (a, b) in g.iter().zip(e) {
                assert!((a - b).abs() < 1e-5, "{g:?} vs {e:?}");
            }
        }
        let err = p.predict(&images[1..], n, shape).unwrap_err();
        assert!(matches!(err, InferError::BadInput { .. }), "{err}");
        // A config that does not match the file is a weights error, not a panic.
        let e = Predictor::load(
            &path,
            &ResNetConfig::new(18, 5),
            Head::Softmax,
            &ResolvedDevice::Cpu,
            Precision::F32,
        )
        .unwrap_err();
        assert!(e.to_string().contains("fc.weight"), "{e}");
    }

    /// The smallest inputs the network takes: a forward pass at 1×1, at odd sizes
    /// and at Fashion-MNIST's 28×28 gives finite probabilities, identical to the
    /// model's own forward; only an empty image is refused.
    #[test]
    fn small_and_odd_input_sizes_predict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let device = Default::default();
        for layers in [18, 50] {
            let cfg = ResNetConfig::new(layers, 3);
            let model = cfg.init::<CpuBackend>(&device);
            save_safetensors(&model, &path).unwrap();
            let p = Predictor::load(
                &path,
                &cfg,
                Head::Softmax,
                &ResolvedDevice::Cpu,
                Precision::F32,
            )
            .unwrap();
            let sizes: &[[usize; 2]] = if layers == 18 {
                &[[1, 1], [2, 3], [7, 7], [28, 28], [31, 17]]
            } else {
                &[[1, 1], [28, 28]]
            };
            for &[h, w] in sizes {
                let shape = [3, h, w];
                let n = 2;
                let images: Vec<f32> = (0..n * 3 * h * w)
                    .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
                    .collect();
                let got = p.predict(&images, n, shape).unwrap();
                let expected = Head::Softmax
                    .probabilities(&logits(|x| model.forward(x), &images, n, shape, &device), 3);
                assert_eq!(got.len(), n, "{layers} {h}x{w}");
                for (g, e) in got.iter().zip(&expected) {
                    assert!(g.iter().all(|v| v.is_finite()), "{layers} {h}x{w}: {g:?}");
                    assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                    for (a, b) in g.iter().zip(e) {
                        assert!((a - b).abs() < 1e-5, "{layers} {h}x{w}: {g:?} vs {e:?}");
                    }
                }
            }
            let err = p.predict(&[], 1, [3, 0, 28]).unwrap_err();
            assert!(matches!(err, InferError::TooSmall { h: 0, w: 28 }), "{err}");
        }
    }
}
