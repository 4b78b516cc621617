//! `recpredict --serve`: the model behind SageMaker's inference HTTP contract, so a
//! client written for a SageMaker image-classification endpoint works unchanged.
//!
//! - `GET /ping`: 200 (the port is bound only once the model is loaded);
//! - `POST /invocations`: one image as the raw body (`image/jpeg`, `image/png`,
//!   `application/x-image`); the answer by `Accept`: `application/json` (the default,
//!   also `*/*`) a bare array of probabilities, `application/jsonlines`
//!   `{"prediction": [...]}`, or [`http::RECPREDICT_JSON`], the batch mode's JSON line;
//! - errors as `{"error": "..."}`: 400 an unusable body, 404 another path, 405 another
//!   method, 406 an `Accept` we cannot answer, 413 a body over `--max-payload-mb`,
//!   415 another content type, 503 when `--queue-size` requests are already in.
//!
//! The pieces: [`http`] (routes, negotiation, errors, the request log) runs on tokio;
//! images are decoded on their own threads with the batch mode's preprocessing; one
//! [`batcher`] thread owns the model and runs the waiting images together. SIGTERM or
//! SIGINT stops accepting, finishes the requests in flight, and returns.

pub mod batcher;
pub mod http;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use resnet::backend::{DeviceSpec, Precision};
use resnet::preprocess::EvalMode;

use crate::error::Error;
pub use crate::error::ServeError;
use crate::model::OpenedModel;
use crate::pipeline::TOOL;
use batcher::{Batching, Load};

/// Decode and preprocess one encoded image into C·H·W floats (`Err`: why not).
pub type PreprocessFn = dyn Fn(&[u8], &mut [f32]) -> Result<(), String> + Send + Sync;

/// SageMaker's port, and `--serve`'s default address.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";
/// SageMaker's `MaxPayloadInMB`, `--max-payload-mb`'s default.
pub const DEFAULT_MAX_PAYLOAD_MB: f64 = 6.0;
/// `--max-batch-delay`'s default, in milliseconds.
pub const DEFAULT_MAX_BATCH_DELAY_MS: f64 = 5.0;
/// `--queue-size`'s default.
pub const DEFAULT_QUEUE_SIZE: u32 = 256;
/// `--header-timeout`'s default, in seconds.
pub const DEFAULT_HEADER_TIMEOUT_S: f64 = 10.0;
/// `--body-timeout`'s default, in seconds (SageMaker's invocation timeout is 60 s).
pub const DEFAULT_BODY_TIMEOUT_S: f64 = 60.0;
/// `--max-connections`' default.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model artifact directory.
    pub model_dir: PathBuf,
    /// Where to listen (`host:port`; port 0 picks a free one, printed on stderr).
    pub addr: String,
    /// Centre crop (training's validation path) or squash (SageMaker's endpoint).
    pub eval_mode: EvalMode,
    /// Images per forward pass at most.
    pub batch_size: usize,
    /// How long a batch may wait for more requests after its first.
    pub max_delay: Duration,
    /// The request body limit in bytes.
    pub max_payload: usize,
    /// Requests admitted at once (being decoded, waiting, or in the model); more get 503.
    pub queue_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// The device to run on.
    pub device: DeviceSpec,
    /// The floating-point precision of the model.
    pub precision: Precision,
    /// `top_k` length of [`http::RECPREDICT_JSON`] answers.
    pub top_k: Option<usize>,
    /// How long a client may take to send a request's headers (from its first byte, or
    /// from the connection's start); then the connection is closed.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body; then 408 and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// Open connections at most; more wait in the listen queue until one closes.
    pub max_connections: usize,
}

/// What a server did, reported when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeReport {
    /// Requests answered (any route, any status).
    pub requests: u64,
    /// Images predicted (`/invocations` with 200).
    pub predicted: u64,
    /// Forward passes.
    pub batches: u64,
}

fn start_error(e: std::io::Error) -> Error {
    Error::Serve(ServeError::Start(e))
}

/// Load the model, serve it on `cfg.addr` until SIGTERM or SIGINT, and report.
/// Messages (device notices, the listening address, one line per request, the
/// shutdown) go to stderr; nothing is written on stdout.
pub fn serve(cfg: &ServeConfig) -> Result<ServeReport, Error> {
    let model = OpenedModel::open(&cfg.model_dir, cfg.batch_size, cfg.top_k, cfg.eval_mode)?;
    let shape = model.image_shape();
    let top_k = model.top_k;
    let preprocessor = model.preprocessor.clone();
    let class_names = model.source.class_names();
    let load = Arc::new(Load::default());

    // The batcher thread loads the model (it owns it from then on) and says when it is
    // ready; the port is bound only then, so `/ping` answering means ready.
    let (jobs_tx, jobs_rx) = mpsc::sync_channel(cfg.queue_size.max(1));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Error>>();
    let batching = Batching {
        max_batch: cfg.batch_size,
        max_delay: cfg.max_delay,
        shape,
    };
    let batcher = {
        let (cfg, load) = (cfg.clone(), load.clone());
        std::thread::Builder::new()
            .name("recpredict-model".into())
            .spawn(move || {
                let loaded = model.load(&cfg.device, cfg.precision, &mut |msg| {
                    tool_cli::message(TOOL, msg)
                });
                match loaded {
                    Ok(mut model) => {
                        let _ = ready_tx.send(Ok(()));
                        batcher::run(jobs_rx, &mut model, batching, load);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(start_error)?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ServeError::Batcher.into()),
    }

    let eval_mode = preprocessor.mode;
    let preprocess: Arc<PreprocessFn> =
        Arc::new(move |bytes: &[u8], buf: &mut [f32]| preprocessor.apply(bytes, buf).map(|_| ()));
    let workers = cfg.workers.max(1);
    let decoders = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("recpredict-decode-{i}"))
        .build()
        .map_err(|source| ServeError::Threads { workers, source })?;
    let state = Arc::new(http::AppState {
        preprocess,
        chw: shape.iter().product(),
        decoders,
        jobs: jobs_tx,
        admission: Arc::new(tokio::sync::Semaphore::new(cfg.queue_size.max(1))),
        queue_size: cfg.queue_size,
        max_payload: cfg.max_payload,
        body_timeout: cfg.body_timeout,
        class_names,
        top_k,
        load: load.clone(),
        served: http::Counters::default(),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.clamp(1, 4))
        .thread_name("recpredict-http")
        .enable_all()
        .build()
        .map_err(start_error)?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(start_error)?;
        let shutdown = shutdown_signal().map_err(start_error)?;
        let [c, h, w] = shape;
        tool_cli::message(
            TOOL,
            format_args!(
                "serving {} on http://{local} (GET /ping, POST /invocations): input {c}x{h}x{w} \
                 ({}), batch size {}, max batch delay {} ms, queue {}, payload limit {} bytes, \
                 header timeout {} s, body timeout {} s, {} connections at most",
                cfg.model_dir.display(),
                match eval_mode {
                    EvalMode::Squash => "squash",
                    EvalMode::ResizeCrop => "resize and centre crop",
                },
                cfg.batch_size,
                cfg.max_delay.as_secs_f64() * 1000.0,
                cfg.queue_size,
                cfg.max_payload,
                cfg.header_timeout.as_secs_f64(),
                cfg.body_timeout.as_secs_f64(),
                cfg.max_connections,
            ),
        );
        accept_loop(listener, http::router(state.clone()), cfg, shutdown).await;
        Ok::<_, Error>(())
    });
    // Requests still running on the runtime end with it; the batcher ends when the
    // last sender of its queue (the state) is gone.
    drop(runtime);
    let report = ServeReport {
        requests: state.served.requests.load(Ordering::Relaxed),
        predicted: state.served.predicted.load(Ordering::Relaxed),
        batches: load.batches.load(Ordering::Relaxed),
    };
    drop(state);
    let joined = batcher.join();
    served?;
    joined.map_err(|_| ServeError::Batcher)?;
    let images = load.images.load(Ordering::Relaxed);
    tool_cli::message(
        TOOL,
        format_args!(
            "stopped: {} requests, {} images predicted in {} forward passes ({:.2} images per pass)",
            report.requests,
            report.predicted,
            report.batches,
            if report.batches == 0 {
                0.0
            } else {
                images as f64 / report.batches as f64
            }
        ),
    );
    Ok(report)
}

/// Accept connections until `shutdown`, each served as HTTP/1 with `cfg`'s header-read
/// timeout, at most `cfg.max_connections` at once (the next waits in the listen queue),
/// then let the open ones finish their requests (at most 30 s).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    cfg: &ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout);
    tokio::pin!(shutdown);
    let mut said_full = false;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so, wait, go on.
                    tool_cli::message(TOOL, format_args!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if slots.available_permits() == 0 && !said_full {
            tool_cli::message(
                TOOL,
                format_args!(
                    "{} connections open (--max-connections): new ones wait until one closes",
                    cfg.max_connections
                ),
            );
        }
        said_full = slots.available_permits() == 0;
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {
            tool_cli::message(TOOL, "connections still open 30 s after the signal: closing them");
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT (after saying so on stderr). The handlers
/// are installed before it is returned, so a signal that comes at once is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{TOOL}: {name}: no new connections; finishing the requests in flight"
        );
    })
}
