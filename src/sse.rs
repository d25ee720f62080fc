//! Server-Sent Events syntax (WHATWG HTML §9.2), for both targets: `parser` reads any SSE
//! byte stream incrementally — the providers' streams on the server and our own stream in
//! the browser. (The server writes its frames with axum's `Event::json_data`.)
//!
//! No cfg and no transport imports: only serde, so server and browser share one parser.

pub mod parser;

pub use parser::{Event, Parser};
