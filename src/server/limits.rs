//! Request limits, as middleware on every route (the streaming endpoint, server functions,
//! pages and files alike):
//!
//! - [`limit_body`]: a declared `Content-Length` above `max_body_bytes` is refused `413`
//!   before the body is touched (so hyper never says `100 Continue`); otherwise the body
//!   is read here, whole, under the same cap (a chunked body that grows past it gets
//!   `413`) and within `body_read_timeout` (`408`), and handed on in memory.
//! - [`cap_streams`]: at most `max_streams` answers at once (the SSE endpoint and the
//!   `chat` server function); an SSE answer's slot goes with the answer ([`StreamSlot`]:
//!   it runs detached from the connection), the server function's is held until its
//!   response body ends or is dropped; a request beyond the cap gets `503` with
//!   `Retry-After`.
//!
//! Every refusal is the contract's `RejectBody` JSON with a Chinese message naming the limit.
//! The body is read before a stream slot is taken, so slow uploads cannot hold slots.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hyper::body::{Frame, SizeHint};
use leptos::server_fn::ServerFn;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::llm::config::Limits;
use crate::protocol::{RejectBody, Rejection};

/// The streaming endpoint's path.
pub(crate) const STREAM_PATH: &str = "/api/chat/stream";
/// What a request refused for the stream cap is told to wait, in seconds.
const STREAMS_RETRY_AFTER_SECS: u64 = 2;

/// The body settings of [`limit_body`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimit {
    max_bytes: usize,
    read_timeout: Duration,
}

impl From<&Limits> for BodyLimit {
    fn from(limits: &Limits) -> Self {
        BodyLimit {
            max_bytes: limits.max_body_bytes,
            read_timeout: limits.body_read_timeout,
        }
    }
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("请求体超过上限 {}", size_words(*limit))]
    TooLarge { limit: usize },
    #[error("请求体须在 {} 秒内传完，已超时", after.as_secs())]
    TimedOut { after: Duration },
    #[error("请求体读取失败（连接中断或分块编码有误）")]
    Unreadable(#[source] axum::Error),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
            BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::TimedOut { .. } => "body_timeout",
            BodyError::Unreadable(_) => "body_unreadable",
        }
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        if let BodyError::Unreadable(err) = &self {
            tracing::debug!("request body unreadable: {err}");
        }
        reject(self.status(), self.code(), self.to_string())
    }
}

/// Middleware: refuses an oversized declared body at once, else reads the body under the
/// cap and the deadline and passes it on in memory.
pub(crate) async fn limit_body(
    State(limit): State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    match read_body(limit, request).await {
        Ok(request) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

async fn read_body(limit: BodyLimit, request: Request) -> Result<Request, BodyError> {
    let too_large = BodyError::TooLarge {
        limit: limit.max_bytes,
    };
    if declared_length(&request).is_some_and(|len| len > limit.max_bytes as u64) {
        return Err(too_large);
    }
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return Ok(Request::from_parts(parts, body));
    }
    let bytes = tokio::time::timeout(limit.read_timeout, collect(body, limit.max_bytes))
        .await
        .map_err(|_| BodyError::TimedOut {
            after: limit.read_timeout,
        })??;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn declared_length(request: &Request) -> Option<u64> {
    let value = request.headers().get(header::CONTENT_LENGTH)?;
    value.to_str().ok()?.trim().parse().ok()
}

/// The whole body, or `TooLarge` as soon as it grows past `max`.
async fn collect(body: Body, max: usize) -> Result<Bytes, BodyError> {
    let hint = body.size_hint().lower().min(max as u64) as usize;
    let mut buffer = BytesMut::with_capacity(hint);
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(BodyError::Unreadable)?;
        if buffer.len() + chunk.len() > max {
            return Err(BodyError::TooLarge { limit: max });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// "1 MiB（1048576 字节）", "512 KiB（524288 字节）", or "1000 字节".
fn size_words(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    match bytes {
        0 => "0 字节".to_owned(),
        n if n % MIB == 0 => format!("{} MiB（{n} 字节）", n / MIB),
        n if n % KIB == 0 => format!("{} KiB（{n} 字节）", n / KIB),
        n => format!("{n} 字节"),
    }
}

/// The concurrent-answer slots of [`cap_streams`].
#[derive(Clone, Debug)]
pub(crate) struct StreamSlots {
    slots: Arc<Semaphore>,
    max: usize,
}

impl StreamSlots {
    pub(crate) fn new(limits: &Limits) -> StreamSlots {
        StreamSlots {
            slots: Arc::new(Semaphore::new(limits.max_streams)),
            max: limits.max_streams,
        }
    }
}

/// Every slot is taken.
#[derive(Debug, thiserror::Error)]
#[error("同时进行的回答已达上限（{max} 个），请 {STREAMS_RETRY_AFTER_SECS} 秒后重试")]
pub(crate) struct StreamsFull {
    max: usize,
}

impl IntoResponse for StreamsFull {
    fn into_response(self) -> Response {
        let mut response = reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            self.to_string(),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(STREAMS_RETRY_AFTER_SECS),
        );
        response
    }
}

/// An SSE answer's slot, handed to the handler in the request's extensions: the answer
/// holds it until it ends, whatever happens to the connection.
#[derive(Clone)]
pub(crate) struct StreamSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl StreamSlot {
    pub(crate) fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().ok()?.take()
    }
}

/// Middleware: answers need a slot, held by the answer (SSE) or until the response body
/// is done (the server function).
pub(crate) async fn cap_streams(
    State(slots): State<StreamSlots>,
    mut request: Request,
    next: Next,
) -> Response {
    if !is_answer(&request) {
        return next.run(request).await;
    }
    let Ok(slot) = slots.slots.clone().try_acquire_owned() else {
        tracing::warn!(max = slots.max, "stream cap reached: 503");
        return StreamsFull { max: slots.max }.into_response();
    };
    if request.uri().path() == STREAM_PATH {
        let slot = StreamSlot(Arc::new(std::sync::Mutex::new(Some(slot))));
        request.extensions_mut().insert(slot);
        return next.run(request).await;
    }
    next.run(request).await.map(|body| {
        Body::new(Holding {
            body,
            slot: Some(slot),
        })
    })
}

/// Requests that start an answer: the SSE endpoint and the one-shot `chat` server function.
fn is_answer(request: &Request) -> bool {
    let path = request.uri().path();
    request.method() == Method::POST && (path == STREAM_PATH || path == crate::api::Chat::PATH)
}

/// A response body that holds a stream slot until it ends or is dropped.
struct Holding {
    body: Body,
    slot: Option<OwnedSemaphorePermit>,
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.slot = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The contract's JSON refusal.
fn reject(status: StatusCode, code: &str, message: String) -> Response {
    tracing::info!(%code, "request refused: {message}");
    let body = RejectBody {
        error: Rejection {
            code: code.to_owned(),
            field: None,
            message,
        },
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::size_words;

    #[test]
    fn sizes_are_named_in_round_units_and_bytes() {
        let check = |bytes, words: &str| assert_eq!(size_words(bytes), words);
        check(1_048_576, "1 MiB（1048576 字节）");
        check(65_536, "64 KiB（65536 字节）");
        check(1000, "1000 字节");
    }
}
