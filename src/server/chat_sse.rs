//! The streaming endpoints. JSON in, Server-Sent Events out:
//! - `POST /api/chat/stream` starts an answer and reads it from its start;
//! - `GET /api/chat/stream/{id}?after=N` (or `Last-Event-ID: N`) reads it again from the
//!   frame after N: a reload, a dropped network, a second tab;
//! - `POST /api/chat/stream/{id}/stop` stops it, from any tab.
//!
//! The answer runs detached from these connections (`streams`). Each event's SSE `id` is
//! the frame's index in the answer.
//!
//! Axum routes beside the Leptos routes rather than server functions, because the
//! contract needs what a server function's encodings do not give in Leptos 0.8: a
//! `text/event-stream` response with keep-alive comments, and bad input refused with a
//! 4xx JSON body that names the problem before any streaming starts.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::watch;

use super::auth::Caller;
use super::limits::StreamSlot;
use super::streams::{Logged, Reader, StreamsError};
use super::{billing, AppState};
use crate::llm::idle::IdleTimer;
use crate::llm::{chat_id, Control};
use crate::protocol::{RejectBody, Rejection};

/// `POST /api/chat/stream`. The request was already checked by the middleware in
/// `routes`: same-site JSON (`security`), a body within the size and time limits and a
/// free stream slot (`limits`, handed over in [`StreamSlot`]).
pub async fn chat_stream(State(state): State<AppState>, request: Request<Body>) -> Response {
    let caller = caller(request.extensions());
    let slot = request
        .extensions()
        .get::<StreamSlot>()
        .and_then(StreamSlot::take);
    // Already read into memory, within the limit, by `limits::limit_body`.
    let Ok(bytes) = to_bytes(request.into_body(), usize::MAX).await else {
        return rejected(
            StatusCode::BAD_REQUEST,
            rejection("body_unreadable", "无法读取请求体".into()),
        );
    };
    let job = match state.llm.resolve_body(bytes).await {
        Ok(job) => job,
        Err(rejection) => return rejected(StatusCode::BAD_REQUEST, rejection),
    };
    let id = chat_id();
    let (stop, stopped) = watch::channel(false);
    let control = Control {
        id: id.clone(),
        shutdown: state.shutdown_signal(),
        stop: stopped,
    };
    let chat = match billing::start(&state, &caller, job, control).await {
        Ok(chat) => chat,
        Err(turned) => {
            tracing::info!(code = %turned.rejection.code, "chat refused: {}", turned.rejection.message.escape_debug());
            return turned.into_response();
        }
    };
    let owner = caller.code_id();
    let started = state.streams.run(id.clone(), owner, chat, stop, slot);
    // A log that cannot be written: the answer (already dropped) is billed as stopped.
    if let Err(err) = started.await {
        return refused(&err);
    }
    match state.streams.read(&id, owner, None).await {
        Ok(reader) => events(&state, reader),
        Err(err) => refused(&err),
    }
}

/// `GET /api/chat/stream/{id}`: the frames after `?after=N` or `Last-Event-ID: N` (all of
/// them without either), then live to the end.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let caller = caller(request.extensions());
    let after = match after(request.uri().query(), request.headers()) {
        Ok(after) => after,
        Err(rejection) => return rejected(StatusCode::BAD_REQUEST, rejection),
    };
    match state.streams.read(&id, caller.code_id(), after).await {
        Ok(reader) => events(&state, reader),
        Err(err) => refused(&err),
    }
}

/// `POST /api/chat/stream/{id}/stop`: the answer ends with a `done` frame whose
/// `finish_reason` is `stopped`, for every reader, billed for what was generated.
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let caller = caller(request.extensions());
    match state.streams.stop(&id, caller.code_id()).await {
        Ok(()) => Json(serde_json::json!({ "stopping": true })).into_response(),
        Err(err) => refused(&err),
    }
}

/// Set by `auth::require_code`, which guards every `/api/*` route.
fn caller(extensions: &axum::http::Extensions) -> Caller {
    extensions.get::<Caller>().cloned().unwrap_or(Caller::Open)
}

/// The frame to resume after: `?after=N`, else the `Last-Event-ID` header.
fn after(query: Option<&str>, headers: &HeaderMap) -> Result<Option<u64>, Rejection> {
    let from_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("after="));
    let from_header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let Some(text) = from_query.or(from_header) else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| Rejection {
        code: "invalid_after".into(),
        field: Some("after".into()),
        message: format!("after 必须是帧序号（非负整数），收到 {:?}", truncate(text)),
    })
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The SSE response of a reader: each frame with its index as the event id, and a
/// keep-alive comment after every `keep_alive` without one.
fn events(state: &AppState, reader: Reader) -> Response {
    let keep_alive = state.llm.config().limits.keep_alive;
    let events = kept_alive(reader, keep_alive).map(Ok::<_, Infallible>);
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The comment sent when nothing else has been for a while.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The reader's events (rendered when logged), with a `: keep-alive` comment whenever
/// `interval` passes without one, on one timer per response ([`IdleTimer`]: axum's own
/// keep-alive re-arms its timer on every event).
fn kept_alive(reader: Reader, interval: Duration) -> impl Stream<Item = Bytes> + Send {
    KeptAlive {
        reader: reader.fuse(),
        waiting: Vec::new().into_iter(),
        quiet: IdleTimer::new(interval),
        interval,
    }
}

/// What [`kept_alive`] returns: written out by hand, as a chunk passes through it on
/// every answer (an `unfold` made a new future, moving its state, for each).
struct KeptAlive {
    /// Fused: a body may be polled again after its end.
    reader: futures::stream::Fuse<Reader>,
    waiting: std::vec::IntoIter<Logged>,
    quiet: IdleTimer,
    interval: Duration,
}

impl Stream for KeptAlive {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.waiting.next() {
                return Poll::Ready(Some(frame.event()));
            }
            match this.reader.poll_next_unpin(cx) {
                Poll::Ready(Some(batch)) => {
                    this.waiting = batch.into_iter();
                    this.quiet.active();
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    ready!(this.quiet.poll_idle(cx, this.interval));
                    this.quiet.active();
                    return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE)));
                }
            }
        }
    }
}

fn refused(err: &StreamsError) -> Response {
    let (status, code) = match err {
        StreamsError::NotFound => (StatusCode::NOT_FOUND, "stream_not_found"),
        StreamsError::Trimmed => (StatusCode::GONE, "stream_trimmed"),
        StreamsError::Unavailable(reason) => {
            tracing::error!("answer log unavailable: {reason}");
            (StatusCode::SERVICE_UNAVAILABLE, "stream_unavailable")
        }
    };
    let message = match err {
        StreamsError::Unavailable(_) => "暂时无法读取回答，请稍后重试".to_owned(),
        other => other.to_string(),
    };
    rejected(status, rejection(code, message))
}

fn rejection(code: &str, message: String) -> Rejection {
    Rejection {
        code: code.into(),
        field: None,
        message,
    }
}

fn rejected(status: StatusCode, rejection: Rejection) -> Response {
    // The message may quote what the client sent: escaped, it cannot forge a log line.
    tracing::info!(code = %rejection.code, "request refused: {}", rejection.message.escape_debug());
    (status, Json(RejectBody { error: rejection })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_comes_from_the_query_or_the_last_event_id() {
        let mut headers = HeaderMap::new();
        assert_eq!(after(None, &headers), Ok(None));
        assert_eq!(after(Some("x=1&after=7"), &headers), Ok(Some(7)));
        headers.insert("last-event-id", HeaderValue::from_static("12"));
        assert_eq!(after(None, &headers), Ok(Some(12)));
        assert_eq!(after(Some("after=3"), &headers), Ok(Some(3)));
        let bad = after(Some("after=-1"), &headers).unwrap_err();
        assert_eq!(bad.code, "invalid_after");
    }
}
