//! Server-side stand-ins: during SSR there is no browser to stream into.

use crate::protocol::ChatRequest;

use super::{StreamEnd, StreamFrame};

/// Where a [`StreamHandle`] may be kept: on the server it is plain data, so any thread.
pub(crate) type HandleStorage = leptos::prelude::SyncStorage;

/// A running request; without a browser there never is one.
pub(crate) struct StreamHandle;

impl StreamHandle {
    pub fn abort(&self) {}
}

pub(crate) fn start_stream(
    _request: &ChatRequest,
    _on_frames: impl FnMut(Vec<StreamFrame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    on_end(StreamEnd::Network("页面尚未加载完成".into()));
    StreamHandle
}

pub(crate) fn resume_stream(
    _id: &str,
    _after: Option<u64>,
    _on_frames: impl FnMut(Vec<StreamFrame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    on_end(StreamEnd::Network("页面尚未加载完成".into()));
    StreamHandle
}

/// Nothing to stop: the stop is not taken.
pub(crate) fn stop_stream(_id: &str, on_done: impl FnOnce(bool) + 'static) {
    on_done(false);
}

/// A timer that never fires: without a browser there is no event loop to run it.
pub(crate) struct Timer;

impl Timer {
    pub fn cancel(&self) {}
}

pub(crate) fn after(_ms: u64, _f: impl FnOnce() + 'static) -> Timer {
    Timer
}

pub(crate) fn every(_ms: u64, _f: impl Fn() + 'static) -> Timer {
    Timer
}

pub(crate) fn load(_key: &str) -> Option<String> {
    None
}

pub(crate) fn save(_key: &str, _value: &str) {}

pub(crate) fn copy_text(_text: &str) {}

pub(crate) fn now_ms() -> f64 {
    0.0
}

/// No frames to wait for: runs `f` now.
pub(crate) fn next_frame(f: impl FnOnce() + 'static) {
    f();
}

/// No page to scroll.
pub(crate) fn near_bottom() -> bool {
    false
}

/// No page to scroll.
pub(crate) fn scroll_to_bottom() {}
