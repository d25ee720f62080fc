//! One provider response body, read as a stream of [`UpstreamEvent`]s: bytes go through
//! the shared SSE parser, each event's data through the lenient wire reader.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::error::LlmError;
use super::wire::{parse_data, UpstreamEvent};
use crate::sse::Parser;

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
    /// [`LlmError::Disconnected`]. A data line that is not valid JSON is skipped and
    /// logged: one bad line must not cost the user the rest of the answer.
    pub async fn next_event(&mut self) -> Result<Option<UpstreamEvent>, LlmError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
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
