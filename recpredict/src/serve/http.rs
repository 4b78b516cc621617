//! The HTTP side of `--serve`: SageMaker's routes (`GET /ping`, `POST /invocations`),
//! content negotiation, the JSON error bodies, and one stderr log line per request.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use tokio::sync::{oneshot, Semaphore};

use super::batcher::{Job, Load};
use crate::output;
use crate::pipeline::TOOL;

/// The media types `POST /invocations` takes: one encoded image as the raw body.
pub const IMAGE_TYPES: [&str; 3] = ["image/jpeg", "image/png", "application/x-image"];

/// The tool's own response type: the JSON line of batch mode (classes, labels, top-k),
/// without the input fields.
pub const RECPREDICT_JSON: &str = "application/vnd.recpredict+json";

/// The shape of a successful `/invocations` response, chosen by `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: a bare array of probabilities (SageMaker's default).
    Json,
    /// `application/jsonlines`: `{"prediction": [...]}` and a newline.
    JsonLines,
    /// [`RECPREDICT_JSON`]: the batch mode's JSON line.
    Recpredict,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/jsonlines",
            Format::Recpredict => RECPREDICT_JSON,
        }
    }

    fn of_media_type(media: &str) -> Option<Self> {
        match media {
            "*/*" | "application/*" | "application/json" => Some(Format::Json),
            "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => {
                Some(Format::JsonLines)
            }
            RECPREDICT_JSON => Some(Format::Recpredict),
            _ => None,
        }
    }
}

/// The response format for an `Accept` header (RFC 9110 §12.5.1): the acceptable
/// media range with the highest `q` that we produce, the first listed on a tie. No
/// header, or an empty one, means `application/json`; `None` when nothing listed is
/// produced here (406).
pub fn negotiate(accept: Option<&str>) -> Option<Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Format::Json);
    };
    let mut best: Option<(f32, Format)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim().eq_ignore_ascii_case("q")).then(|| v.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        if let Some(f) = Format::of_media_type(&media) {
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, f));
            }
        }
    }
    best.map(|(_, f)| f)
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
fn media_type(value: &HeaderValue) -> String {
    value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// What the handlers share.
pub struct AppState {
    /// Decodes and preprocesses one image (the batch mode's function).
    pub preprocess: Arc<super::PreprocessFn>,
    /// C·H·W of the model input.
    pub chw: usize,
    /// The decoding threads.
    pub decoders: rayon::ThreadPool,
    /// The batcher's queue.
    pub jobs: SyncSender<Job>,
    /// Admission: one permit per request being served; none left → 503.
    pub admission: Arc<Semaphore>,
    /// `--queue-size` (for the 503 message).
    pub queue_size: usize,
    /// The body size limit in bytes.
    pub max_payload: usize,
    /// How long a request's body may take to arrive (`--body-timeout`).
    pub body_timeout: std::time::Duration,
    /// The model's class names.
    pub class_names: Option<Vec<String>>,
    /// Length of the `top_k` list of [`RECPREDICT_JSON`] answers.
    pub top_k: usize,
    /// Shared counters.
    pub load: Arc<Load>,
    /// Requests answered, by outcome.
    pub served: Counters,
}

/// Requests answered, counted for the shutdown line.
#[derive(Debug, Default)]
pub struct Counters {
    /// Every request.
    pub requests: std::sync::atomic::AtomicU64,
    /// `/invocations` answered with 200.
    pub predicted: std::sync::atomic::AtomicU64,
}

/// The router: `/ping`, `/invocations`, JSON errors for any other path or method,
/// and the request log.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

/// A JSON error answer: `{"error": "..."}` with `status`.
fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": msg.to_string() }).to_string();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn ping() -> Response {
    // The model is loaded before the server binds its port, so being here means ready.
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        "{\"status\": \"ok\"}\n",
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format_args!(
            "no route {method} {}: use GET /ping or POST /invocations",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    let allowed = if uri.path() == "/ping" { "GET" } else { "POST" };
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format_args!("{method} is not allowed on {}: use {allowed}", uri.path()),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

/// How much of a body over the limit is read and dropped before the 413 answer, so
/// that a client which sends its whole body before reading the answer (most do) gets
/// the 413 instead of a broken connection. A body declared larger is refused unread.
fn drain_limit(max_payload: usize) -> u64 {
    (max_payload as u64).saturating_add(64 << 20)
}

/// How reading a request body ended badly.
enum BodyError {
    /// Over `max_payload` (up to [`drain_limit`] of it was read and dropped).
    TooLarge,
    /// Not all there within `--body-timeout`.
    TimedOut,
    /// The connection failed.
    Read(axum::Error),
}

/// The request body, read within `timeout`.
async fn read_body_within(
    body: Body,
    max_payload: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, BodyError> {
    match tokio::time::timeout(timeout, read_body(body, max_payload)).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Err(e)) => Err(BodyError::Read(e)),
        Ok(Ok(None)) => Err(BodyError::TooLarge),
        Ok(Ok(Some(bytes))) => Ok(bytes),
    }
}

/// The request body, or `None` when it is over `max_payload` bytes (then up to
/// [`drain_limit`] of it has been read and dropped).
async fn read_body(mut body: Body, max_payload: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut bytes = Vec::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        seen += data.len() as u64;
        if seen > drain_limit(max_payload) {
            return Ok(None);
        }
        if seen <= max_payload as u64 {
            bytes.extend_from_slice(&data);
        }
    }
    Ok((seen <= max_payload as u64).then_some(bytes))
}

/// How many images ran in the forward pass that answered a request (the log shows it).
#[derive(Debug, Clone, Copy)]
struct BatchSize(usize);

/// Releases the request's "decoding" count however the handler ends.
struct Decoding<'a>(&'a Load);

impl Drop for Decoding<'_> {
    fn drop(&mut self) {
        self.0.decoding.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn invocations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format_args!("no Content-Type: send one of {}", IMAGE_TYPES.join(", ")),
        );
    };
    let media = media_type(content_type);
    if !IMAGE_TYPES.contains(&media.as_str()) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format_args!(
                "unsupported Content-Type {:?}: send one of {}",
                content_type.to_str().unwrap_or("(not text)"),
                IMAGE_TYPES.join(", ")
            ),
        );
    }
    let accept = headers
        .get(header::ACCEPT)
        .map(|a| a.to_str().unwrap_or(""));
    let Some(format) = negotiate(accept) else {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            format_args!(
                "cannot answer Accept {:?}: the answers are application/json, \
                 application/jsonlines or {RECPREDICT_JSON}",
                accept.unwrap_or("")
            ),
        );
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format_args!(
                "the request body is over the limit of {} bytes (--max-payload-mb)",
                state.max_payload
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain_limit(state.max_payload)) {
        return too_large();
    }
    let Ok(_permit) = state.admission.clone().try_acquire_owned() else {
        // The body is read (and dropped, up to `drain_limit`) before the answer, as for
        // 413: answering first closed the connection while the client was still sending,
        // and the client saw the connection end instead of the 503 (seen in
        // `tests/serve.rs`' full-queue test once the model got fast).
        let _ = read_body_within(body, 0, state.body_timeout).await;
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format_args!(
                "busy: {} requests are already being served (--queue-size); retry later",
                state.queue_size
            ),
        );
    };
    state.load.decoding.fetch_add(1, Ordering::AcqRel);
    let decoding = Decoding(&state.load);
    let bytes = match read_body_within(body, state.max_payload, state.body_timeout).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::TimedOut) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format_args!(
                    "the request body did not arrive within {} s (--body-timeout)",
                    state.body_timeout.as_secs_f64()
                ),
            );
            // The rest of the body may still come: end the connection after this answer.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Err(BodyError::Read(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format_args!("reading the request body: {e}"),
            )
        }
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body is empty: send one image",
        );
    }

    // Decode on the decoding threads; the answer comes back on a oneshot channel.
    let (tx, rx) = oneshot::channel();
    let preprocess = state.preprocess.clone();
    let chw = state.chw;
    state.decoders.spawn(move || {
        let mut image = vec![0f32; chw];
        let result = preprocess(&bytes, &mut image).map(|()| image);
        let _ = tx.send(result);
    });
    let image = match rx.await {
        Ok(Ok(image)) => image,
        Ok(Err(msg)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format_args!("cannot use the image: {msg}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the decoding thread stopped",
            )
        }
    };

    let (reply, answer) = oneshot::channel();
    let sent = state.jobs.try_send(Job { image, reply });
    drop(decoding);
    match sent {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: the model's queue is full; retry later",
            )
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
        }
    }
    let answer = match answer.await {
        Ok(Ok(answer)) => answer,
        Ok(Err(msg)) => return error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    let mut body = Vec::with_capacity(answer.probabilities.len() * 12 + 32);
    let written = match format {
        Format::Json => output::write_python_list(&mut body, &answer.probabilities),
        Format::JsonLines => output::write_sagemaker(&mut body, &answer.probabilities),
        Format::Recpredict => output::write_prediction(
            &mut body,
            None,
            &answer.probabilities,
            state.class_names.as_deref(),
            state.top_k,
            None,
        ),
    };
    if let Err(e) = written {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    state.served.predicted.fetch_add(1, Ordering::Relaxed);
    let mut r = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response();
    r.extensions_mut().insert(BatchSize(answer.batch));
    r
}

/// One stderr line per request: method, path, status, latency (and the batch size of
/// a prediction).
async fn log_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    state.served.requests.fetch_add(1, Ordering::Relaxed);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let batch = response
        .extensions()
        .get::<BatchSize>()
        .map(|b| format!(" batch={}", b.0))
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stderr().lock(),
        "{TOOL}: {method} {path} {} {ms:.1} ms{batch}",
        response.status().as_u16()
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        use Format::*;
        for (accept, want) in [
            (None, Some(Json)),
            (Some(""), Some(Json)),
            (Some("*/*"), Some(Json)),
            (Some("application/json"), Some(Json)),
            (Some("application/jsonlines"), Some(JsonLines)),
            (
                Some("Application/JSONLines; charset=utf-8"),
                Some(JsonLines),
            ),
            (Some(RECPREDICT_JSON), Some(Recpredict)),
            (Some("text/html, application/jsonlines"), Some(JsonLines)),
            // The highest q wins; the first listed on a tie.
            (
                Some("application/json;q=0.5, application/jsonlines"),
                Some(JsonLines),
            ),
            (
                Some("application/jsonlines, application/json"),
                Some(JsonLines),
            ),
            (Some("application/jsonlines;q=0, */*;q=0.1"), Some(Json)),
            (Some("text/html"), None),
            (Some("application/json;q=0"), None),
            (Some("image/png, text/csv"), None),
        ] {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn content_types_are_compared_without_parameters_or_case() {
        assert_eq!(
            media_type(&HeaderValue::from_static("Image/JPEG; foo=bar")),
            "image/jpeg"
        );
        assert_eq!(media_type(&HeaderValue::from_static("")), "");
    }
}
