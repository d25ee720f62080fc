//! Server-Sent Events syntax (WHATWG HTML §9.2), for both directions and both targets:
//! `encode` writes our frames, `parser` reads any SSE byte stream incrementally — the
//! providers' streams on the server and our own stream in the browser.
//!
//! No cfg and no transport imports: only serde, so server and browser share one parser.

pub mod encode;
pub mod parser;

pub use encode::encode;
pub use parser::{Event, Parser};
