//! `recpredict`: batch prediction with a `rectrain` model artifact, printing one JSON
//! object per image (see [`output`] for the wire format), SageMaker's
//! `{"prediction": [...]}` lines (`--sagemaker`), or one `<name>.out` file per image
//! like a SageMaker batch transform (`--output-dir`).
//!
//! The pieces:
//! - [`input`]: image files, directories, paths on stdin, a `.lst` + root, a `.rec`;
//! - [`pipeline`]: decoding on worker threads ahead of the model, batching, ordered
//!   output, per-image errors;
//! - [`output`]: the JSON Lines wire format and SageMaker's formats;
//! - [`evaluate`]: the `--evaluate` summary (accuracy, top-k, per class, confusion;
//!   per-class and micro/macro precision/recall/F1, exact match and Hamming loss for
//!   multi-label models);
//! - [`model`]: the model (a rectrain artifact or an MXNet checkpoint) behind
//!   [`pipeline::Classifier`];
//! - [`serve`]: the same model and preprocessing behind SageMaker's HTTP inference
//!   contract (`--serve`), with dynamic batching.
//!
//! Preprocessing is `resnet::preprocess::preprocess_eval`, the very function that
//! measured the validation accuracy during training (shorter-side resize and centre
//! crop), or with `--squash` the SageMaker endpoint's resize to exactly H×W.
#![deny(missing_docs)]

pub mod app;
pub mod batch;
pub mod evaluate;
pub mod input;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod serve;

mod error;

pub use batch::{run, Config};
pub use error::Error;
pub use input::InputSpec;
pub use model::DEFAULT_TOP_K;
pub use pipeline::{OutputMode, Report, Timings, TOOL};
