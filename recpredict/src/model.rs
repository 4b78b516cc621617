//! The rectrain model behind [`Classifier`]: the artifact's ResNet on the chosen
//! device (`rectrain::backend`, the same device rules as training) through
//! `rectrain::infer::Predictor`, which returns softmax probabilities, or independent
//! sigmoids for a multi-label model.

use std::path::Path;

use rectrain::artifact::ArtifactConfig;
use rectrain::backend::{self, DeviceSpec, Precision};
use rectrain::infer::Predictor;

use crate::pipeline::Classifier;
use crate::Error;

/// A loaded model, ready to predict batches.
pub struct Model {
    predictor: Predictor,
}

/// Resolve `device` (notices such as "no GPU, using the CPU" go to `notice`) and load
/// the artifact's weights into its network there, to run `batch_size` images per
/// forward pass. A weights file that does not match the network (missing tensors,
/// other shapes) is an error. A half precision asked for on the CPU falls back to
/// float32 with a notice.
pub fn load(
    weights: &Path,
    art: &ArtifactConfig,
    device: &DeviceSpec,
    precision: Precision,
    batch_size: usize,
    notice: &mut dyn FnMut(&str),
) -> Result<Model, Error> {
    let resolved =
        backend::resolve(device, &mut *notice).map_err(|e| Error::Device(Box::new(e)))?;
    let precision = resolved.effective_precision(precision, &mut *notice);
    let predictor = Predictor::load(
        weights,
        &art.resnet(),
        art.multi_label,
        &resolved,
        precision,
    )
    .map_err(|e| Error::Model {
        path: weights.to_path_buf(),
        source: Box::new(e),
    })?
    .with_batch_size(batch_size);
    Ok(Model { predictor })
}

impl Classifier for Model {
    fn predict(
        &mut self,
        images: &[f32],
        n: usize,
        shape: [usize; 3],
    ) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.predictor.predict(images, n, shape)?)
    }
}
