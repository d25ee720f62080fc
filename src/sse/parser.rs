//! An incremental, sans-IO SSE parser: feed it bytes as they arrive, in pieces of any size,
//! and it hands back each complete event once.
//!
//! Why our own: the parser must run unchanged in the browser (WASM, fed from a
//! `ReadableStream`) and on the server (fed from reqwest), so it cannot be tied to a
//! futures `Stream` or an IO type; the crates that exist are (eventsource-stream, last
//! released 2022). This one is ~150 lines and tested at every split point.
//!
//! Rules (WHATWG HTML, "Parsing an event stream"): lines end in CRLF, LF or a lone CR, even
//! when the CR and LF arrive in different reads; a leading UTF-8 BOM is dropped; `:` starts a
//! comment (`: keep-alive`); `field: value` drops one space after the colon; several `data`
//! lines join with `\n`; a blank line dispatches the event, unless it had no `data`.
//! Bytes are decoded as UTF-8 only once an event is whole, so a character split across
//! reads is never corrupted.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if this event carried one.
    pub id: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The parser state between reads.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The event being built.
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    /// The last read ended in CR: an LF at the start of the next read belongs to it.
    after_cr: bool,
    /// Set once the start of the stream has been checked for a BOM.
    past_bom: bool,
    /// Comment lines seen (keep-alives), for callers that want to know the stream is alive.
    comments: u64,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream and returns the events they complete, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.past_bom {
            // Hold bytes back until we know whether the stream starts with a BOM.
            self.line.extend_from_slice(bytes);
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return out;
            }
            self.past_bom = true;
            let held = std::mem::take(&mut self.line);
            let rest = held.strip_prefix(BOM).unwrap_or(&held);
            self.scan(rest, &mut out);
            return out;
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        self.scan(bytes, &mut out);
        out
    }

    /// How many comment lines (e.g. `: keep-alive`) have been seen so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// True when bytes of an unfinished line or event are buffered: a stream that ends
    /// now ended in the middle of an event.
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    fn scan(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = bytes.split_at(end);
            let terminator_len = match rest {
                [b'\r', b'\n', ..] => 2,
                [b'\r'] => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            if self.line.is_empty() {
                self.line_done(head, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, out);
                line.clear();
                self.line = line;
            }
            bytes = &rest[terminator_len..];
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id containing NUL is ignored, as the spec says.
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned())
            }
            _ => {} // `retry` and unknown fields do not concern us.
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        let data = String::from_utf8_lossy(&self.data).into_owned();
        self.data.clear();
        out.push(Event {
            event,
            data,
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` fed whole, then split at every byte position into two reads, then one
    /// byte at a time; every way must give `expected`.
    fn check(input: &[u8], expected: &[&str]) {
        let whole = Parser::new().feed(input);
        assert_eq!(datas(&whole), expected, "fed whole");
        for split in 0..=input.len() {
            let mut parser = Parser::new();
            let mut events = parser.feed(&input[..split]);
            events.extend(parser.feed(&input[split..]));
            assert_eq!(datas(&events), expected, "split at {split}");
        }
        let mut parser = Parser::new();
        let events: Vec<Event> = input.iter().flat_map(|b| parser.feed(&[*b])).collect();
        assert_eq!(datas(&events), expected, "byte by byte");
    }

    fn datas(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_lf_crlf_and_lone_cr() {
        check(
            b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n\n",
            &["a", "b", "c", "d"],
        );
    }

    #[test]
    fn optional_space_after_colon() {
        check(b"data:a\n\ndata:  b\n\n", &["a", " b"]);
    }

    #[test]
    fn multi_line_data_joins_with_newline() {
        check(b"data: one\ndata: two\ndata\n\n", &["one\ntwo\n"]);
    }

    #[test]
    fn comments_and_keep_alives_are_skipped() {
        check(b": keep-alive\n\n: keep-alive\n\ndata: x\n\n:\n\n", &["x"]);
        let mut parser = Parser::new();
        parser.feed(b": keep-alive\n\n: ping\n");
        assert_eq!(parser.comments(), 2);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        check(b"event: ping\n\nid: 7\n\ndata: y\n\n", &["y"]);
    }

    #[test]
    fn leading_bom_is_dropped_once() {
        check(b"\xEF\xBB\xBFdata: a\n\n", &["a"]);
        check(b"\xEF\xBBdata: a\n\n", &[]); // a broken BOM is part of the field name
    }

    #[test]
    fn utf8_split_across_reads_is_kept_whole() {
        check("data: 你好😀世界\n\n".as_bytes(), &["你好😀世界"]);
    }

    #[test]
    fn incomplete_event_is_held_back() {
        let mut parser = Parser::new();
        assert!(parser.feed(b"data: {\"a\"").is_empty());
        assert!(parser.has_partial());
        assert_eq!(datas(&parser.feed(b":1}\n\n")), ["{\"a\":1}"]);
        assert!(!parser.has_partial());
    }

    #[test]
    fn event_and_id_fields() {
        let events = Parser::new().feed(b"event: update\nid: 42\ndata: z\n\ndata: w\n\n");
        assert_eq!(events[0].event.as_deref(), Some("update"));
        assert_eq!(events[0].id.as_deref(), Some("42"));
        assert_eq!(events[1].event, None);
        assert_eq!(
            events[1].id.as_deref(),
            Some("42"),
            "the last id carries over"
        );
    }

    #[test]
    fn done_marker_is_plain_data() {
        check(
            b"data: {\"x\":1}\n\ndata: [DONE]\n\n",
            &["{\"x\":1}", "[DONE]"],
        );
    }
}
