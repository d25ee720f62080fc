//! Integration tests: the real router and server, in-process, with no network but loopback.

mod support;

mod abuse;
mod chain;
mod chat_sse;
mod cuts;
mod lanes;
mod resume;
mod router;
mod settings;
mod shaping;
mod team;
