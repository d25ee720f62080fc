//! The provider layer (server only): configuration, keys, retry policy, token counting,
//! cost, and the streaming client for OpenAI-compatible APIs.
//!
//! Data path: [`request`] validates a [`ChatRequest`](crate::protocol::ChatRequest) into a
//! [`ChatJob`]; [`LlmClient::stream`] spawns [`relay`] (or [`LlmClient::prepare`] hands it
//! to the caller to drive), which opens the provider stream
//! through [`client`] (keys from [`keys`], waits from [`retry`]), reads it with [`upstream`]
//! and [`wire`], and emits [`Frame`](crate::protocol::Frame)s with usage ([`tokens`]) and
//! cost ([`cost`]).
//!
//! Architecture invariant: nothing here imports axum or leptos. The layer takes a
//! validated request and yields protocol frames; `server` owns HTTP towards the browser.
//! Keys never leave [`keys`] except into the `Authorization` header.

mod client;
pub(crate) mod config;
pub mod cost;
mod error;
mod frames;
pub(crate) mod idle;
mod key_state;
pub(crate) mod keys;
mod lanes;
mod relay;
pub(crate) mod request;
pub(crate) mod retry;
pub(crate) mod shape;
mod shared;
pub mod tokens;
mod upstream;
pub mod wire;
mod woken;

pub use client::{LlmClient, Shutdown};
pub use config::LlmConfig;
pub use error::LlmError;
pub use frames::Frames;
pub use relay::{chat_id, Control, Ended, FrameStream, Prepared, Report, STOPPED};
pub use request::ChatJob;
