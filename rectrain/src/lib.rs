//! `rectrain`: train ResNet image classifiers from MXNet RecordIO on burn (CUDA or CPU),
//! with SageMaker's hyperparameters. The network, its files, preprocessing and
//! inference are the [`resnet`] library's, shared with `recpredict`; this crate holds
//! what only training needs.

// Data: training augmentation, the prefetching batch loader.
pub mod augment;
pub mod loader;

// Training: hyperparameters and their flags, logs, plots, the loop, the tool.
pub mod app;
pub mod cli;
pub mod distributed;
pub mod hparams;
pub mod plot;
pub mod sagemaker_log;
pub mod train;
