//! The router: the streaming endpoint, Leptos pages and server functions, static files,
//! and tracing. No compression layer: it would buffer the event stream.

use axum::routing::post;
use axum::Router;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::trace::TraceLayer;

use super::{chat_sse, telemetry, AppState};
use crate::app::{shell, App};

/// Every route of the app. Tests drive this directly, without a socket.
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    Router::new()
        .route("/api/chat/stream", post(chat_sse::chat_stream))
        .leptos_routes_with_context(&state, routes, || (), move || shell(options.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .with_state(state)
}
