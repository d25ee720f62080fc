//! `POST /api/chat/stream`: the streaming endpoint. JSON in, Server-Sent Events out.
//!
//! An axum route beside the Leptos routes rather than a server function, because the
//! contract needs what a server function's encodings do not give in Leptos 0.8: a
//! `text/event-stream` response with keep-alive comments, and bad input refused with a
//! 4xx JSON body that names the problem before any streaming starts.

use std::convert::Infallible;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;

use super::auth::Caller;
use super::{billing, AppState};
use crate::protocol::{RejectBody, Rejection};

/// The handler. The request was already checked by the middleware in `routes`: same-site
/// JSON (`security`), a body within the size and time limits and a free stream slot
/// (`limits`).
pub async fn chat_stream(State(state): State<AppState>, request: Request<Body>) -> Response {
    // Set by `auth::require_code`, which guards every `/api/*` route.
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Open);
    // Already read into memory, within the limit, by `limits::limit_body`.
    let Ok(bytes) = to_bytes(request.into_body(), usize::MAX).await else {
        return rejected(
            StatusCode::BAD_REQUEST,
            Rejection {
                code: "body_unreadable".into(),
                field: None,
                message: "无法读取请求体".into(),
            },
        );
    };
    let job = match state.llm.resolve_body(bytes).await {
        Ok(job) => job,
        Err(rejection) => return rejected(StatusCode::BAD_REQUEST, rejection),
    };
    let frames = match billing::start(&state, &caller, job).await {
        Ok(frames) => frames,
        Err(turned) => {
            tracing::info!(code = %turned.rejection.code, "chat refused: {}", turned.rejection.message.escape_debug());
            return turned.into_response();
        }
    };
    let events = frames.map(|frame| {
        let event = Event::default().json_data(&frame);
        Ok::<_, Infallible>(
            event.unwrap_or_else(|_| Event::default().comment("unserialisable frame")),
        )
    });
    let keep_alive = KeepAlive::new()
        .interval(state.llm.config().limits.keep_alive)
        .text("keep-alive");
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn rejected(status: StatusCode, rejection: Rejection) -> Response {
    // The message may quote what the client sent: escaped, it cannot forge a log line.
    tracing::info!(code = %rejection.code, "request refused: {}", rejection.message.escape_debug());
    (status, Json(RejectBody { error: rejection })).into_response()
}
