//! What the chat needs from the browser: the streaming requests (ask, resume, stop),
//! local storage, the clipboard, a clock and timers. One cfg picks the implementation;
//! both files have the same signatures. On the server (SSR) nothing streams: the chat
//! renders empty and the browser takes over after hydration.

#[cfg(feature = "hydrate")]
#[path = "platform/browser.rs"]
mod imp;
#[cfg(not(feature = "hydrate"))]
#[path = "platform/server.rs"]
mod imp;

pub(crate) use imp::*;

use crate::protocol::Frame;

/// A frame with its place in the answer's stream: `index` is the SSE `id`, 0 for the
/// `start` frame, counting every frame. A resume asks for the frames after an index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamFrame {
    pub index: u64,
    pub frame: Frame,
}

/// How a connection ended. A broken one ([`StreamEnd::is_broken`]) can be resumed.
// Only the browser builds some of these; the server's stand-in ends every stream at once.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEnd {
    /// The body ended (whether a terminal frame came is for the caller to see).
    Finished,
    /// We aborted the fetch.
    Aborted,
    /// The server refused the request (4xx) with this message.
    Rejected(String),
    /// The server refused the access code, or its lack (401), with this message.
    Unauthorized(String),
    /// The stream can no longer be resumed (unknown, expired or trimmed): why.
    Gone(String),
    /// The connection failed or the body broke off.
    Network(String),
}

impl StreamEnd {
    /// The connection broke (or ended early): the stream may go on if resumed.
    pub fn is_broken(&self) -> bool {
        matches!(self, StreamEnd::Finished | StreamEnd::Network(_))
    }
}

/// The index of an event with SSE `id` field `id`, when `expected` comes next: the
/// server numbers every frame; without a number, the count goes on.
// The server's stand-in reads no events.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub(crate) fn event_index(id: Option<&str>, expected: u64) -> u64 {
    id.and_then(|id| id.trim().parse().ok()).unwrap_or(expected)
}

/// Following the answer down waits at most this long between scrolls.
const FOLLOW_MAX_MS: f64 = 500.0;
/// The first wait once scrolls are slow.
const FOLLOW_STEP_MS: f64 = 50.0;

/// The wait between the scrolls that follow the answer down, after a scroll whose frame
/// took `frame_ms` and a wait of `every_ms`, on a display that refreshes every
/// `refresh_ms` (a frame over 1.5 refreshes is a slow one). Each scroll moves the whole page; where the
/// browser composites in software (no GPU: headless, many VMs and remote desktops) that
/// redraws the whole window, and scrolled on every frame a fast stream made one frame in
/// ten take two. So: no wait while a scroll's frame stays short; doubling (from
/// [`FOLLOW_STEP_MS`] to [`FOLLOW_MAX_MS`]) while it is slow; halving back as it is short.
// Only the browser scrolls.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub(crate) fn follow_wait(every_ms: f64, frame_ms: f64, refresh_ms: f64) -> f64 {
    if frame_ms > 1.5 * refresh_ms {
        (every_ms * 2.0).clamp(FOLLOW_STEP_MS, FOLLOW_MAX_MS)
    } else if every_ms / 2.0 >= FOLLOW_STEP_MS {
        every_ms / 2.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_by_their_id_or_in_turn() {
        assert_eq!(event_index(Some("7"), 3), 7);
        assert_eq!(event_index(None, 3), 3);
        assert_eq!(event_index(Some("x"), 4), 4);
    }

    #[test]
    fn following_waits_longer_while_scrolled_frames_are_slow() {
        let mut wait = 0.0;
        for expected in [50.0, 100.0, 200.0, 400.0, 500.0, 500.0] {
            wait = follow_wait(wait, 40.0, 16.7);
            assert_eq!(wait, expected);
        }
        for expected in [250.0, 125.0, 62.5, 0.0, 0.0] {
            wait = follow_wait(wait, 16.7, 16.7);
            assert_eq!(wait, expected);
        }
        // A display that refreshes at 30 Hz: its every frame is 33 ms, none slow.
        assert_eq!(follow_wait(0.0, 33.4, 33.3), 0.0);
    }
}
