//! One provider response body, read as a stream of [`UpstreamEvent`]s: bytes go through
//! the shared SSE parser, each event's data through the lenient wire reader.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::error::LlmError;
use super::wire::{parse_data, UpstreamEvent};
use crate::sse::parser::{LimitExceeded, Part};
use crate::sse::Parser;

/// The protocol error's text, in the user's language.
fn oversized(exceeded: LimitExceeded) -> String {
    let part = match exceeded.part {
        Part::Line => "一行",
        Part::Event => "一个事件",
    };
    format!("上游的{part}超过 {} KiB", exceeded.limit / 1024)
}

pub struct UpstreamStream {
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    parser: Parser,
    pending: VecDeque<UpstreamEvent>,
    ended: bool,
}

impl UpstreamStream {
    pub fn new(response: reqwest::Response) -> Self {
        UpstreamStream::from_body(response.bytes_stream().boxed())
    }

    pub fn from_body(body: BoxStream<'static, Result<Bytes, reqwest::Error>>) -> Self {
        UpstreamStream {
            body,
            parser: Parser::new(),
            pending: VecDeque::new(),
            ended: false,
        }
    }

    /// The next event; `Ok(None)` when the body has ended. A broken connection is
    /// [`LlmError::Disconnected`]; a line or event over the parser's 1 MiB limit is
    /// [`LlmError::Protocol`] (after the events completed before it). A data line that is not valid JSON is skipped and
    /// logged: one bad line must not cost the user the rest of the answer.
    pub async fn next_event(&mut self) -> Result<Option<UpstreamEvent>, LlmError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if let Some(exceeded) = self.parser.failed() {
                return Err(LlmError::Protocol(oversized(exceeded)));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.absorb(&bytes),
                Some(Err(err)) => {
                    tracing::debug!("upstream body broke: {err}");
                    self.ended = true;
                    return Err(LlmError::Disconnected);
                }
                None => self.ended = true,
            }
        }
    }

    fn absorb(&mut self, bytes: &[u8]) {
        for event in self.parser.feed(bytes) {
            match parse_data(&event.data) {
                Ok(events) => self.pending.extend(events),
                Err(err) => {
                    tracing::warn!("skipping a malformed upstream event: {err}");
                }
            }
        }
    }
}
