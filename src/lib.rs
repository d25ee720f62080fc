//! 流式AI: a Leptos SSR + hydrated WASM app that streams answers from OpenAI-compatible
//! LLM providers to the browser as Server-Sent Events.
//!
//! Modules in reading order: the wire contract shared by both targets (`protocol`, `sse`),
//! server functions (`api`), the UI (`app`, `chat`), then the server-only layers (`server`, `llm`). See ARCHITECTURE.md.

pub mod protocol;
pub mod sse;

pub mod api;
pub(crate) mod app;
pub(crate) mod chat;

#[cfg(feature = "ssr")]
pub mod fake_upstream;
#[cfg(feature = "ssr")]
pub mod llm;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod store;

/// Browser entry point: hydrates the server-rendered page. `hydrate_lazy`: a page that
/// starts on a lazy tab (`app::tabs`) loads that tab's chunk before hydrating it.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_lazy(app::App);
}
