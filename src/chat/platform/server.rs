//! Server-side stand-ins: during SSR there is no browser to stream into.

use crate::protocol::{ChatRequest, Frame};

use super::StreamEnd;

/// Where a [`StreamHandle`] may be kept: on the server it is plain data, so any thread.
pub type HandleStorage = leptos::prelude::SyncStorage;

/// A running request; without a browser there never is one.
pub struct StreamHandle;

impl StreamHandle {
    pub fn abort(&self) {}
}

pub fn start_stream(
    _request: &ChatRequest,
    _on_frames: impl FnMut(Vec<Frame>) + 'static,
    on_end: impl FnOnce(StreamEnd) + 'static,
) -> StreamHandle {
    on_end(StreamEnd::Network("页面尚未加载完成".into()));
    StreamHandle
}

pub fn load(_key: &str) -> Option<String> {
    None
}

pub fn save(_key: &str, _value: &str) {}

pub fn copy_text(_text: &str) {}

pub fn now_ms() -> f64 {
    0.0
}

/// No frames to wait for: runs `f` now.
pub fn next_frame(f: impl FnOnce() + 'static) {
    f();
}

/// No page to scroll.
pub fn near_bottom() -> bool {
    false
}

/// No page to scroll.
pub fn scroll_to_bottom() {}
