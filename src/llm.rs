//! The provider layer (server only): configuration, keys, retry policy, token counting,
//! cost, and the streaming client for OpenAI-compatible APIs.
//!
//! Architecture invariant: nothing here imports axum or leptos. The layer takes a
//! validated request and yields protocol frames; `server` owns HTTP towards the browser.

pub mod config;
pub mod cost;
pub mod keys;
pub mod retry;
pub mod tokens;

pub use config::LlmConfig;
