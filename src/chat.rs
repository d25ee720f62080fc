//! The 流式AI tab: a streaming chat that shows every character once, in order, as it
//! arrives.
//!
//! Data path in the browser: [`platform`] POSTs to `/api/chat/stream` and feeds each
//! network read to the shared SSE parser; [`session`] applies the frames (each `seq`
//! once, via [`state`]) to the store of the one answer being streamed; [`markdown`]
//! renders finished blocks once and re-renders only the unfinished tail;
//! [`messages`], [`params`] and [`page`] draw it.
//!
//! Architecture invariant: nothing here imports `llm` or `server`; the chat knows the
//! server only through `protocol` and `api`.

mod markdown;
mod messages;
mod page;
mod params;
mod platform;
mod session;
mod state;

pub(crate) use page::ChatPage;
