//! What the chat needs from the browser: the streaming request, local storage, the
//! clipboard, a clock. One cfg picks the implementation; both files have the same
//! signatures. On the server (SSR) nothing streams: the chat renders empty and the
//! browser takes over after hydration.

#[cfg(feature = "hydrate")]
#[path = "platform/browser.rs"]
mod imp;
#[cfg(not(feature = "hydrate"))]
#[path = "platform/server.rs"]
mod imp;

pub(crate) use imp::*;

/// Why a stream ended without a terminal frame.
// Only the browser builds some of these; the server's stand-in ends every stream at once.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEnd {
    /// The stream ended normally (a terminal frame was seen by the caller).
    Finished,
    /// The user pressed stop.
    Aborted,
    /// The server refused the request (4xx) with this message.
    Rejected(String),
    /// The server refused the access code, or its lack (401), with this message.
    Unauthorized(String),
    /// The connection failed or the body broke off.
    Network(String),
}
