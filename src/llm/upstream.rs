//! One provider response body, read as a stream of [`UpstreamEvent`]s: bytes go through
//! the shared SSE parser, each event's data through the lenient wire reader.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::error::LlmError;
use super::lanes::Lease;
use super::wire::{parse_data_into, UpstreamEvent};
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

/// A provider's response body, read event by event.
pub struct UpstreamStream {
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    parser: Parser,
    pending: VecDeque<UpstreamEvent>,
    ended: bool,
    /// The answer's place in its lane, held as long as the body.
    _lease: Lease,
}

impl UpstreamStream {
    pub(crate) fn new(response: reqwest::Response, lease: Lease) -> Self {
        UpstreamStream {
            body: response.bytes_stream().boxed(),
            parser: Parser::new(),
            pending: VecDeque::new(),
            ended: false,
            _lease: lease,
        }
    }

    /// The next event; `Ok(None)` when the body has ended. A broken connection is
    /// [`LlmError::Disconnected`]; a line or event over the parser's 1 MiB limit is
    /// [`LlmError::Protocol`] (after the events completed before it). A data line that is
    /// not valid JSON is skipped and logged: one bad line must not cost the user the rest
    /// of the answer.
    pub async fn next_event(&mut self) -> Result<Option<UpstreamEvent>, LlmError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Reads ahead until the first text has arrived, keeping every event for
    /// [`Self::next_event`]: until then a failure can still be retried, after it never.
    /// Also succeeds on `[DONE]`, or on the body's end after a `finish_reason` (an empty
    /// answer). Fails on a break or an in-stream error before any text.
    pub async fn read_to_first_text(&mut self) -> Result<(), LlmError> {
        let mut scanned = 0;
        loop {
            for event in self.pending.iter().skip(scanned) {
                match event {
                    UpstreamEvent::Done => return Ok(()),
                    UpstreamEvent::Error(message) => {
                        return Err(LlmError::InStream(message.clone()))
                    }
                    event if event.is_text() => return Ok(()),
                    _ => {}
                }
            }
            keep_last_of_each(&mut self.pending);
            scanned = self.pending.len();
            if !self.read_more().await? {
                let finished = self
                    .pending
                    .iter()
                    .any(|e| matches!(e, UpstreamEvent::Finish(_)));
                return if finished {
                    Ok(())
                } else {
                    Err(LlmError::Disconnected)
                };
            }
        }
    }

    /// Reads the next bytes into `pending`; `Ok(false)` once the body has ended.
    async fn read_more(&mut self) -> Result<bool, LlmError> {
        if let Some(exceeded) = self.parser.failed() {
            return Err(LlmError::Protocol(oversized(exceeded)));
        }
        if self.ended {
            return Ok(false);
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
        Ok(true)
    }

    fn absorb(&mut self, bytes: &[u8]) {
        for event in self.parser.feed(bytes) {
            if let Err(err) = parse_data_into(&event.data, &mut self.pending) {
                tracing::warn!("skipping a malformed upstream event: {err}");
            }
        }
    }
}

/// Keeps, of events read before any text (usage and finish reasons only: text, `[DONE]`
/// and errors end the wait), the last of each kind, which is all the relay uses: a
/// provider repeating them while it thinks must not grow the queue for two minutes.
fn keep_last_of_each(pending: &mut VecDeque<UpstreamEvent>) {
    let last = |kind: fn(&UpstreamEvent) -> bool| pending.iter().rposition(kind);
    let usage = last(|e| matches!(e, UpstreamEvent::Usage(_)));
    let finish = last(|e| matches!(e, UpstreamEvent::Finish(_)));
    let mut at = 0;
    pending.retain(|event| {
        let keep = event.is_text() || Some(at) == usage || Some(at) == finish;
        at += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::wire::WireUsage;

    #[test]
    fn only_the_last_usage_and_finish_wait_for_the_first_text() {
        let usage = |n| {
            UpstreamEvent::Usage(WireUsage {
                prompt_tokens: n,
                completion_tokens: 0,
                total_tokens: None,
            })
        };
        let mut pending: VecDeque<_> = (0..10_000).map(usage).collect();
        pending.push_back(UpstreamEvent::Finish("length".into()));
        pending.push_back(usage(7));
        keep_last_of_each(&mut pending);
        assert_eq!(
            Vec::from(pending),
            [UpstreamEvent::Finish("length".into()), usage(7)]
        );
    }
}
