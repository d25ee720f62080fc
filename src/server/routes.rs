//! The router: the streaming endpoint, Leptos pages and server functions, static files,
//! request limits (body size and time, concurrent answers), and tracing. No compression
//! layer: it would buffer the event stream.

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::trace::TraceLayer;

use super::limits::{cap_streams, limit_body, BodyLimit, StreamSlots, STREAM_PATH};
use super::{chat_sse, telemetry, AppState};
use crate::app::{shell, App};

/// Every route of the app. Tests drive this directly, without a socket.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    let limits = state.llm.config().limits.clone();
    Router::new()
        .route(STREAM_PATH, post(chat_sse::chat_stream))
        .route(&format!("{STREAM_PATH}/{{id}}"), get(chat_sse::resume))
        .route(&format!("{STREAM_PATH}/{{id}}/stop"), post(chat_sse::stop))
        .leptos_routes_with_context(&state, routes, || (), move || shell((*options).clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(from_fn_with_state(StreamSlots::new(&limits), cap_streams))
        .layer(from_fn_with_state(BodyLimit::from(&limits), limit_body))
        .layer(from_fn_with_state(state.clone(), super::auth::require_code))
        .layer(from_fn_with_state(state.clone(), super::security::guard))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .with_state(state)
}
