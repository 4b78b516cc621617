//! `resnet`: ResNet image classifiers on burn (CUDA or CPU) and their files, the library
//! that `rectrain` (training) and `recpredict` (prediction) both stand on, so that the
//! two tools can never build, load or preprocess a model differently.

// The network and how it runs: the model (torchvision's and MXNet's layouts), the
// kernel layer under it (cuDNN on CUDA; oneDNN and cpu-norm on the CPU), device
// selection, inference.
pub mod backend;
pub mod head;
pub mod infer;
pub mod kernels;
pub mod model;

// Its files: torchvision weights (.pth, .safetensors), MXNet checkpoints (SageMaker's
// model.tar.gz, read, run and written), the model artifact a training run writes.
pub mod artifact;
pub mod mxnet;
pub mod weights;

// Around it: the evaluation preprocessing, accuracy metrics, and the command-line
// flags both tools share.
pub mod cli;
pub mod metrics;
pub mod preprocess;

// Generated images for the tests of this crate and the crates above it.
#[doc(hidden)]
pub mod testing;

pub use head::Head;
