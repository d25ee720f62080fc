//! The browser side: `fetch` POST (with the access code as `Authorization: Bearer`), the
//! body read as a `ReadableStream`, bytes fed to the shared SSE parser (which decodes UTF-8
//! only on whole events), `AbortController` for stop; `localStorage`; the clipboard.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, ReadableStreamDefaultReader};

use super::StreamEnd;
use crate::protocol::{ChatRequest, Frame, RejectBody};
use crate::sse::Parser;

/// Where a [`StreamHandle`] may be kept: it holds a JS object, so only on this thread.
pub(crate) type HandleStorage = leptos::prelude::LocalStorage;

/// A running request. Dropping it does not stop it; [`StreamHandle::abort`] does.
pub(crate) struct StreamHandle {
    controller: Option<AbortController>,
}

impl StreamHandle {
    /// Aborts the fetch: the body read fails, the server sees the disconnect and drops
    /// the upstream request.
    pub fn abort(&self) {
        if let Some(controller) = &self.controller {
            controller.abort();
        }
    }
}

/// POSTs `request` to `/api/chat/stream`; calls `on_frames` with the frames of each
/// network read (a batch, so the page updates once per read), then `on_end` once.
pub(crate) fn start_stream(
    request: &ChatRequest,
    mut on_frames: impl FnMut(Vec<Frame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    let controller = AbortController::new().ok();
    let signal = controller.as_ref().map(|c| c.signal());
    let body = serde_json::to_string(request).unwrap_or_default();
    leptos::task::spawn_local(async move {
        let end = run(body, signal, &mut on_frames).await;
        on_end(end);
    });
    StreamHandle { controller }
}

async fn run(
    body: String,
    signal: Option<web_sys::AbortSignal>,
    on_frames: &mut impl FnMut(Vec<Frame>),
) -> StreamEnd {
    let mut request = gloo_net::http::Request::post("/api/chat/stream")
        .header("content-type", "application/json")
        .header("accept", "text/event-stream");
    if let Some(bearer) = crate::app::access::bearer() {
        request = request.header("authorization", &bearer);
    }
    let request = request.abort_signal(signal.as_ref()).body(body);
    let request = match request {
        Ok(request) => request,
        Err(err) => return StreamEnd::Network(err.to_string()),
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) if signal.as_ref().is_some_and(|s| s.aborted()) => return StreamEnd::Aborted,
        Err(_) => return StreamEnd::Network("无法连接到服务器".into()),
    };
    if response.status() == 401 {
        let text = response.text().await.unwrap_or_default();
        return StreamEnd::Unauthorized(crate::app::access::refusal_message(&text));
    }
    if !response.ok() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<RejectBody>(&text)
            .map(|body| body.error.message)
            .unwrap_or_else(|_| format!("服务器返回 HTTP {status}"));
        return StreamEnd::Rejected(message);
    }
    let Some(stream) = response.body() else {
        return StreamEnd::Network("服务器没有返回内容".into());
    };
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut parser = Parser::unlimited(); // our own server: it bounds what it relays
    loop {
        let result = match JsFuture::from(reader.read()).await {
            Ok(result) => result,
            Err(_) if signal.as_ref().is_some_and(|s| s.aborted()) => return StreamEnd::Aborted,
            Err(err) => return StreamEnd::Network(describe(&err)),
        };
        let done = Reflect::get(&result, &JsValue::from_str("done"))
            .ok()
            .and_then(|v| v.as_bool());
        if done == Some(true) {
            return StreamEnd::Finished;
        }
        let Ok(value) = Reflect::get(&result, &JsValue::from_str("value")) else {
            continue;
        };
        let bytes = Uint8Array::new(&value).to_vec();
        let frames: Vec<Frame> = parser
            .feed(&bytes)
            .into_iter()
            .filter_map(|event| serde_json::from_str(&event.data).ok())
            .collect();
        if !frames.is_empty() {
            on_frames(frames);
        }
    }
}

fn describe(err: &JsValue) -> String {
    let message = Reflect::get(err, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string());
    format!("连接中断：{}", message.unwrap_or_else(|| "未知错误".into()))
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

pub(crate) fn load(key: &str) -> Option<String> {
    storage()?.get_item(key).ok().flatten()
}

pub(crate) fn save(key: &str, value: &str) {
    if let Some(storage) = storage() {
        // Quota errors lose only the saved copy, never the page's state.
        let _ = storage.set_item(key, value);
    }
}

pub(crate) fn copy_text(text: &str) {
    if let Some(window) = web_sys::window() {
        let _ = window.navigator().clipboard().write_text(text);
    }
}

pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Runs `f` before the next repaint (coalesces many updates into one per frame).
pub(crate) fn next_frame(f: impl FnOnce() + 'static) {
    leptos::prelude::request_animation_frame(f);
}

/// True when the page is scrolled to (near) its end: new text should keep it there.
pub(crate) fn near_bottom() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let Some(root) = window.document().and_then(|d| d.document_element()) else {
        return false;
    };
    let viewport = window
        .inner_height()
        .ok()
        .and_then(|h| h.as_f64())
        .unwrap_or(0.0);
    let scrolled = window.scroll_y().unwrap_or(0.0);
    scrolled + viewport >= f64::from(root.scroll_height()) - 120.0
}

/// Scrolls to the end of the page once the pending DOM update has landed.
pub(crate) fn scroll_to_bottom() {
    leptos::prelude::request_animation_frame(|| {
        if let Some(window) = web_sys::window() {
            let height = window
                .document()
                .and_then(|d| d.document_element())
                .map_or(0, |root| root.scroll_height());
            window.scroll_to_with_x_and_y(0.0, f64::from(height));
        }
    });
}
