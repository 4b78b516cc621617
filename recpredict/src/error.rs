//! [`Error`]: what stops a run of either mode, and [`ServeError`], what stops the
//! server (kept here so that `serve` imports its errors and nothing imports `serve` back).

use std::path::PathBuf;

use crate::{input, pipeline};

/// A fatal error: nothing (more) can be predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The artifact's `config.json` is missing or unusable, or the MXNet checkpoint
    /// `--model` names is (its symbol, parameters or archive).
    #[error("cannot use the model in {dir}: {message}")]
    Artifact {
        /// The artifact directory.
        dir: PathBuf,
        /// What is wrong (the [`resnet::artifact::ArtifactError`] or
        /// [`resnet::mxnet::MxnetError`] message, which already names its file and
        /// cause; kept as text so the cause is not printed twice).
        message: String,
    },
    /// The artifact has no weights file.
    #[error("{path}: model weights not found (is {dir} a rectrain --out directory?)")]
    MissingWeights {
        /// The expected weights file.
        path: PathBuf,
        /// The artifact directory.
        dir: PathBuf,
    },
    /// The weights cannot be loaded into the network the config describes.
    #[error("cannot load the model weights {path}")]
    Model {
        /// The weights file.
        path: PathBuf,
        /// What failed (format, missing tensor, shape mismatch...).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The device cannot be used.
    #[error("cannot use the device")]
    Device(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An option does not fit this model or input.
    #[error("{0}")]
    Usage(String),
    /// The input list or record file is unusable.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// The prediction loop failed.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// The server (`--serve`) could not start or stopped on an error.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A fatal server error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address does not parse or cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime, the signal handlers or a thread could not be started.
    #[error("starting the server")]
    Start(#[source] std::io::Error),
    /// The decoding threads could not be started.
    #[error("starting {workers} decoding threads")]
    Threads {
        /// Threads asked for.
        workers: usize,
        /// What failed.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// The batcher thread died (the model panicked).
    #[error("the model thread stopped unexpectedly")]
    Batcher,
}
