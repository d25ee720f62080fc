//! The browser side: `fetch` POST (with the access code as `Authorization: Bearer`) to
//! ask, GET to resume a stream after its last applied frame, POST to stop it; the body
//! read as a `ReadableStream`, bytes fed to the shared SSE parser (which decodes UTF-8
//! only on whole events), each frame numbered by its SSE `id`; `AbortController` to drop
//! the local connection; `localStorage`; the clipboard; timers.

use js_sys::{Reflect, Uint8Array};
use leptos::prelude::{IntervalHandle, TimeoutHandle};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, AbortSignal, ReadableStreamDefaultReader};

use super::{event_index, follow_wait, StreamEnd, StreamFrame};
use crate::protocol::{ChatRequest, Frame, RejectBody};
use crate::sse::Parser;

/// Where a [`StreamHandle`] may be kept: it holds a JS object, so only on this thread.
pub(crate) type HandleStorage = leptos::prelude::LocalStorage;

/// A running request. Dropping it does not stop it; [`StreamHandle::abort`] does.
pub(crate) struct StreamHandle {
    controller: Option<AbortController>,
}

impl StreamHandle {
    /// Aborts the local fetch (its end is [`StreamEnd::Aborted`]). The generation on the
    /// server goes on: only [`stop_stream`] stops it.
    pub fn abort(&self) {
        if let Some(controller) = &self.controller {
            controller.abort();
        }
    }
}

/// POSTs `request` to `/api/chat/stream`. `on_frames` gets an empty batch once the
/// response begins, then the frames of each network read (a batch, so the page updates
/// once per read); `on_end` is called once.
pub(crate) fn start_stream(
    request: &ChatRequest,
    on_frames: impl FnMut(Vec<StreamFrame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    let body = serde_json::to_string(request).unwrap_or_default();
    open(Target::Ask(body), on_frames, on_end)
}

/// GETs `/api/chat/stream/{id}?after=N`: the frames after index `after` (all of them
/// without it), then the live rest. Callbacks as for [`start_stream`].
pub(crate) fn resume_stream(
    id: &str,
    after: Option<u64>,
    on_frames: impl FnMut(Vec<StreamFrame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    let target = Target::Resume {
        id: id.to_owned(),
        after,
    };
    open(target, on_frames, on_end)
}

/// POSTs `/api/chat/stream/{id}/stop`; `on_done(true)` once the server has taken the
/// stop (every reader then gets a `done` frame ending in `stopped`), `false` if not.
pub(crate) fn stop_stream(id: &str, on_done: impl FnOnce(bool) + 'static) {
    let url = format!("{}/stop", stream_url(id));
    leptos::task::spawn_local(async move {
        let request = with_bearer(gloo_net::http::Request::post(&url))
            .header("content-type", "application/json")
            .body("{}");
        let accepted = match request {
            Ok(request) => request.send().await.is_ok_and(|r| r.ok()),
            Err(_) => false,
        };
        on_done(accepted);
    });
}

/// What a connection asks for.
enum Target {
    /// A new answer: the request body.
    Ask(String),
    /// The rest of stream `id`, after frame `after`.
    Resume { id: String, after: Option<u64> },
}

impl Target {
    fn request(
        &self,
        signal: Option<&AbortSignal>,
    ) -> Result<gloo_net::http::Request, gloo_net::Error> {
        let builder = match self {
            Target::Ask(_) => gloo_net::http::Request::post("/api/chat/stream")
                .header("content-type", "application/json"),
            Target::Resume { id, after } => {
                let builder = gloo_net::http::Request::get(&stream_url(id));
                match after {
                    Some(after) => builder.query([("after", after.to_string())]),
                    None => builder,
                }
            }
        };
        let builder =
            with_bearer(builder.header("accept", "text/event-stream")).abort_signal(signal);
        match self {
            Target::Ask(body) => builder.body(body.as_str()),
            Target::Resume { .. } => builder.build(),
        }
    }

    /// The index of the first frame this connection reads.
    fn first_index(&self) -> u64 {
        match self {
            Target::Ask(_) => 0,
            Target::Resume { after, .. } => after.map_or(0, |after| after + 1),
        }
    }

    /// How a refusal with HTTP `status` and body `text` ends the connection.
    fn refused(&self, status: u16, text: &str) -> StreamEnd {
        let message = || {
            serde_json::from_str::<RejectBody>(text)
                .map(|body| body.error.message)
                .unwrap_or_else(|_| format!("服务器返回 HTTP {status}"))
        };
        match (self, status) {
            (_, 401) => StreamEnd::Unauthorized(crate::app::access::refusal_message(text)),
            (Target::Resume { .. }, 404) => StreamEnd::Gone("回答已过期，无法继续".into()),
            (Target::Resume { .. }, 410) => {
                StreamEnd::Gone("回答的后续内容已不再保留，无法继续".into())
            }
            // A resume meets a server restarting or busy: worth another try.
            (Target::Resume { .. }, 500..) => StreamEnd::Network(message()),
            _ => StreamEnd::Rejected(message()),
        }
    }
}

fn stream_url(id: &str) -> String {
    let id = String::from(js_sys::encode_uri_component(id));
    format!("/api/chat/stream/{id}")
}

fn with_bearer(builder: gloo_net::http::RequestBuilder) -> gloo_net::http::RequestBuilder {
    match crate::app::access::bearer() {
        Some(bearer) => builder.header("authorization", &bearer),
        None => builder,
    }
}

fn open(
    target: Target,
    mut on_frames: impl FnMut(Vec<StreamFrame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    let controller = AbortController::new().ok();
    let signal = controller.as_ref().map(|c| c.signal());
    leptos::task::spawn_local(async move {
        let end = run(&target, signal, &mut on_frames).await;
        on_end(end);
    });
    StreamHandle { controller }
}

async fn run(
    target: &Target,
    signal: Option<AbortSignal>,
    on_frames: &mut impl FnMut(Vec<StreamFrame>),
) -> StreamEnd {
    let aborted = || signal.as_ref().is_some_and(AbortSignal::aborted);
    let request = match target.request(signal.as_ref()) {
        Ok(request) => request,
        Err(err) => {
            leptos::logging::warn!("the chat request could not be made: {err}");
            return StreamEnd::Network("无法发起请求".into());
        }
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) if aborted() => return StreamEnd::Aborted,
        Err(_) => return StreamEnd::Network("无法连接到服务器".into()),
    };
    if !response.ok() {
        let text = response.text().await.unwrap_or_default();
        return target.refused(response.status(), &text);
    }
    let Some(stream) = response.body() else {
        return StreamEnd::Network("服务器没有返回内容".into());
    };
    on_frames(Vec::new());
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut next_index = target.first_index();
    let mut parser = Parser::unlimited(); // our own server: it bounds what it relays
    loop {
        let result = match JsFuture::from(reader.read()).await {
            Ok(result) => result,
            Err(_) if aborted() => return StreamEnd::Aborted,
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
        let frames: Vec<StreamFrame> = parser
            .feed(&bytes)
            .into_iter()
            .filter_map(|event| {
                let frame = serde_json::from_str::<Frame>(&event.data).ok()?;
                let index = event_index(event.id.as_deref(), next_index);
                next_index = index + 1;
                Some(StreamFrame { index, frame })
            })
            .collect();
        if !frames.is_empty() {
            on_frames(frames);
        }
    }
}

/// What the user reads of a broken read: in Chinese; the browser's own words (English,
/// "network error") go to the console.
fn describe(err: &JsValue) -> String {
    let message = Reflect::get(err, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string());
    leptos::logging::warn!("the answer's stream broke: {}", message.unwrap_or_default());
    "连接中断".into()
}

/// A pending timeout or a running interval; [`Timer::cancel`] ends it, dropping does not.
pub(crate) enum Timer {
    Timeout(TimeoutHandle),
    Interval(IntervalHandle),
    Unavailable,
}

impl Timer {
    pub fn cancel(&self) {
        match self {
            Timer::Timeout(handle) => handle.clear(),
            Timer::Interval(handle) => handle.clear(),
            Timer::Unavailable => {}
        }
    }
}

/// Runs `f` once, after `ms` milliseconds.
pub(crate) fn after(ms: u64, f: impl FnOnce() + 'static) -> Timer {
    leptos::prelude::set_timeout_with_handle(f, std::time::Duration::from_millis(ms))
        .map_or(Timer::Unavailable, Timer::Timeout)
}

/// Runs `f` every `ms` milliseconds.
pub(crate) fn every(ms: u64, f: impl Fn() + 'static) -> Timer {
    leptos::prelude::set_interval_with_handle(f, std::time::Duration::from_millis(ms))
        .map_or(Timer::Unavailable, Timer::Interval)
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

/// The follow scrolls ([`scroll_to_bottom`]): when the last one was, where it left the
/// page, whether one waits, how long the next one waits after the last ([`follow_wait`]),
/// the shortest frame seen (the display's refresh), when the reader last used anything
/// that scrolls (wheel, touch, keys, the scrollbar), and when they last asked to go up.
#[derive(Clone, Copy)]
struct Follow {
    last_ms: f64,
    at_y: f64,
    pending: bool,
    every_ms: f64,
    refresh_ms: f64,
    reader_ms: f64,
    up_ms: f64,
}

impl Follow {
    /// The reader scrolled up since the last follow scroll. Only their own input counts:
    /// the page also moves up when content above shrinks or the page gets shorter.
    fn reader_scrolled_up(&self, scrolled: f64) -> bool {
        self.reader_ms >= self.last_ms && scrolled < self.at_y - 2.0
    }

    /// The reader asked to go up (wheel, keys) since the last follow scroll. It counts at
    /// once: the scroll it starts may land frames later (smoothly, or on a busy machine),
    /// and a follow scroll meanwhile would cancel it.
    fn asked_up(&self) -> bool {
        self.up_ms.is_finite() && self.up_ms >= self.last_ms
    }
}

thread_local! {
    static FOLLOW: std::cell::Cell<Follow> = const {
        std::cell::Cell::new(Follow {
            last_ms: f64::NEG_INFINITY,
            at_y: 0.0,
            pending: false,
            every_ms: 0.0,
            refresh_ms: f64::INFINITY,
            reader_ms: f64::NEG_INFINITY,
            up_ms: f64::NEG_INFINITY,
        })
    };
    static WATCHING_READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the finger was at the last touch event ([`touch_y`]).
    static TOUCH_Y: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Notes, from the first answer's text on, when the reader uses anything that scrolls.
fn watch_reader() {
    if WATCHING_READER.replace(true) {
        return;
    }
    /// `up`: the input asks to go up (`Some(true)`), down (`Some(false)`: the page may
    /// follow again once it is at the end), or says nothing of where.
    fn reader_moved(up: Option<bool>) {
        let mut follow = FOLLOW.get();
        follow.reader_ms = now_ms();
        match up {
            Some(true) => follow.up_ms = follow.reader_ms,
            Some(false) => follow.up_ms = f64::NEG_INFINITY,
            None => {}
        }
        FOLLOW.set(follow);
    }
    use leptos::{ev, prelude::window_event_listener};
    // For the page's life: never removed.
    let _ = window_event_listener(ev::wheel, |e| {
        let dy = e.delta_y();
        reader_moved((dy != 0.0).then_some(dy < 0.0));
    });
    let _ = window_event_listener(ev::touchstart, |e| TOUCH_Y.set(touch_y(&e)));
    let _ = window_event_listener(ev::touchmove, |e| {
        let now = touch_y(&e);
        // A finger moving down the screen takes the page up.
        let up = match (TOUCH_Y.replace(now), now) {
            (Some(before), Some(now)) if now != before => Some(now > before),
            _ => None,
        };
        reader_moved(up);
    });
    let _ = window_event_listener(ev::keydown, |e| reader_moved(key_direction(&e)));
    let _ = window_event_listener(ev::mousedown, |_| reader_moved(None));
}

/// Where the first finger touching the screen is, from the top of the view.
fn touch_y(e: &web_sys::TouchEvent) -> Option<f64> {
    e.touches().get(0).map(|touch| f64::from(touch.client_y()))
}

/// Where a key scrolls the page, if it does: not while typing in a field.
fn key_direction(e: &web_sys::KeyboardEvent) -> Option<bool> {
    let typing = e
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        .is_some_and(|el| matches!(el.tag_name().as_str(), "TEXTAREA" | "INPUT" | "SELECT"));
    match e.key().as_str() {
        _ if typing => None,
        "ArrowUp" | "PageUp" | "Home" => Some(true),
        " " if e.shift_key() => Some(true),
        "ArrowDown" | "PageDown" | "End" | " " => Some(false),
        _ => None,
    }
}

/// True when the page is at (near) its end, or where the last follow scroll left it, or
/// a follow scroll is on its way and the reader has not scrolled up since the last one
/// (nor asked to): new text should keep it there.
pub(crate) fn near_bottom() -> bool {
    watch_reader();
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
    let mut follow = FOLLOW.get();
    let at_end = scrolled + viewport >= f64::from(root.scroll_height()) - 120.0;
    if follow.asked_up() {
        // Until a later input (the scrollbar, a key) takes the reader back to the end.
        if !(at_end && follow.reader_ms > follow.up_ms) {
            return false;
        }
        follow.up_ms = f64::NEG_INFINITY;
        FOLLOW.set(follow);
    }
    // Still where the last follow scroll left it (a patch may add more than the margin
    // below), or a follow scroll is on its way, or at the end.
    let left_there = follow.last_ms.is_finite() && scrolled >= follow.at_y - 2.0;
    left_there || (follow.pending && !follow.reader_scrolled_up(scrolled)) || at_end
}

/// Scrolls to the end of the page once the pending DOM update has landed, and no sooner
/// than the follow's wait after the last such scroll; calls meanwhile share it.
pub(crate) fn scroll_to_bottom() {
    watch_reader();
    let follow = FOLLOW.get();
    if follow.pending {
        return;
    }
    FOLLOW.set(Follow {
        pending: true,
        ..follow
    });
    let wait = (follow.last_ms + follow.every_ms - now_ms()).max(0.0);
    let throttled = wait >= 1.0;
    let scroll = move || {
        leptos::prelude::request_animation_frame(move || {
            let Some(window) = web_sys::window() else {
                return;
            };
            let follow = FOLLOW.get();
            // Scrolled up while the scroll waited: the reader is reading; let them.
            if follow.asked_up() {
                // The reader's own scroll is on its way: the follow waits for the next
                // text, and leaves the page alone.
                FOLLOW.set(Follow {
                    pending: false,
                    ..follow
                });
                return;
            }
            let moved_up = throttled && follow.reader_scrolled_up(window.scroll_y().unwrap_or(0.0));
            if !moved_up {
                let height = window
                    .document()
                    .and_then(|d| d.document_element())
                    .map_or(0, |root| root.scroll_height());
                window.scroll_to_with_x_and_y(0.0, f64::from(height));
            }
            let scrolled_at = now_ms();
            FOLLOW.set(Follow {
                last_ms: scrolled_at,
                at_y: window.scroll_y().unwrap_or(0.0),
                pending: false,
                ..follow
            });
            // The next frame starts once this one (with the scroll) is drawn.
            leptos::prelude::request_animation_frame(move || {
                let frame_ms = now_ms() - scrolled_at;
                let mut follow = FOLLOW.get();
                follow.refresh_ms = follow.refresh_ms.min(frame_ms.max(1.0));
                follow.every_ms = follow_wait(follow.every_ms, frame_ms, follow.refresh_ms);
                FOLLOW.set(follow);
            });
        });
    };
    if throttled {
        after(wait as u64, scroll);
    } else {
        scroll();
    }
}
