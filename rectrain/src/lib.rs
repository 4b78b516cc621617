//! `rectrain`: train ResNet image classifiers from MXNet RecordIO on burn (CUDA or CPU),
//! with SageMaker's hyperparameters. The model, the preprocessing and the artifact
//! format live here and are shared with `recpredict`, so training and prediction can
//! never preprocess differently.

// Model and weights (torchvision layout and names), device selection, inference;
// MXNet checkpoints (SageMaker's model.tar.gz) read and run.
pub mod backend;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod mxnet;
pub mod weights;

// Data: shared preprocessing, training augmentation, the prefetching batch loader.
pub mod augment;
pub mod loader;
pub mod preprocess;

// Training: hyperparameters, artifact format, metrics, logs, plots, the loop.
pub mod app;
pub mod artifact;
pub mod cli;
pub mod hparams;
pub mod metrics;
pub mod plot;
pub mod sagemaker_log;
pub mod train;
