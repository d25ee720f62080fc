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
//!
//! Limits: a parser holds at most one line and one event's data in memory, and each is
//! capped ([`DEFAULT_LIMIT`], 1 MiB, unless built [`Parser::with_limit`]). A line or an
//! event's data that grows past the cap — even a line whose end never comes — puts the
//! parser in a failed state ([`Parser::failed`]): it drops what it buffered and reads
//! nothing more. The check does not depend on how the reads were split.

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

/// The cap a parser built with [`Parser::new`] puts on one line and on one event's data:
/// 1 MiB, far above any real chunk (a few hundred bytes) and far below what would hurt.
pub const DEFAULT_LIMIT: usize = 1 << 20;

/// Which buffer grew past the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// One line (field name, colon and value, without its line ending).
    Line,
    /// One event's data: its `data` values joined with `\n`.
    Event,
}

/// Why a parser stopped: one line or one event was larger than its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitExceeded {
    pub part: Part,
    /// The limit, in bytes.
    pub limit: usize,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let part = match self.part {
            Part::Line => "an SSE line",
            Part::Event => "an SSE event's data",
        };
        write!(f, "{part} is larger than {} bytes", self.limit)
    }
}

impl std::error::Error for LimitExceeded {}

/// The parser state between reads.
#[derive(Debug)]
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
    /// The most bytes one line, or one event's data, may have.
    limit: usize,
    /// Set when the stream broke the limit; from then on nothing is read.
    failed: Option<LimitExceeded>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::with_limit(DEFAULT_LIMIT)
    }
}

impl Parser {
    /// A parser with the [`DEFAULT_LIMIT`] of 1 MiB per line and per event.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that fails once one line, or one event's data, is longer than `limit`
    /// bytes. Exactly `limit` bytes is fine.
    pub fn with_limit(limit: usize) -> Self {
        Parser {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: None,
            id: None,
            after_cr: false,
            past_bom: false,
            limit,
            failed: None,
        }
    }

    /// A parser with no limit, for a stream from a trusted source (the browser reading
    /// our own server, which already bounds what it relays).
    pub fn unlimited() -> Self {
        Parser::with_limit(usize::MAX)
    }

    /// The limit this parser enforces, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Feeds the next bytes of the stream and returns the events they complete, in order.
    ///
    /// When these bytes break the limit, the events completed before the offending line
    /// are still returned, and [`Parser::failed`] says so; later calls return nothing.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        if self.failed.is_some() {
            return out;
        }
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

    /// `Some` once a line or an event was larger than the limit: the stream is broken
    /// and the parser has stopped reading it.
    pub fn failed(&self) -> Option<LimitExceeded> {
        self.failed
    }

    /// Records the failure and frees the buffers.
    fn fail(&mut self, part: Part) {
        self.failed = Some(LimitExceeded {
            part,
            limit: self.limit,
        });
        self.line = Vec::new();
        self.data = Vec::new();
        self.has_data = false;
        self.event = None;
    }

    fn scan(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) {
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            let (head, rest) = bytes.split_at(end);
            let terminator_len = match rest {
                [b'\r', b'\n', ..] => 2,
                [b'\r'] => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            // A whole line in one read counts the same as one gathered over many.
            if self.line.len() + head.len() > self.limit {
                self.fail(Part::Line);
                return;
            }
            if self.line.is_empty() {
                self.line_done(head, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line, out);
                line.clear();
                self.line = line;
            }
            if self.failed.is_some() {
                self.line = Vec::new();
                return;
            }
            bytes = &rest[terminator_len..];
        }
        // The end of this line has not come yet: refuse to hold more than a line's worth.
        if self.line.len() + bytes.len() > self.limit {
            self.fail(Part::Line);
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let joined = self.data.len() + usize::from(self.has_data) + value.len();
                if joined > self.limit {
                    self.fail(Part::Event);
                    return;
                }
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
        // The buffer becomes the event's text: no copy, and valid UTF-8 (nearly always) is
        // checked by the fast validator rather than the lossy one.
        let data = String::from_utf8(std::mem::take(&mut self.data))
            .unwrap_or_else(|bad| String::from_utf8_lossy(bad.as_bytes()).into_owned());
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
        assert_eq!(datas(&parser.feed(b":1}\n\n")), ["{\"a\":1}"]);
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

    /// Feeds `input` in pieces of `size` bytes; returns the events and the failure.
    fn feed_in_pieces(
        parser: &mut Parser,
        input: &[u8],
        size: usize,
    ) -> (Vec<Event>, Option<LimitExceeded>) {
        let events = input.chunks(size).flat_map(|c| parser.feed(c)).collect();
        (events, parser.failed())
    }

    #[test]
    fn a_line_over_the_limit_is_caught_before_its_end_arrives() {
        let mut parser = Parser::new();
        let mut line = b"data: ".to_vec();
        line.resize(DEFAULT_LIMIT + 1, b'x');
        // No line ending at all: the provider just keeps sending.
        let (events, failed) = feed_in_pieces(&mut parser, &line, 4096);
        assert!(events.is_empty());
        let expected = LimitExceeded {
            part: Part::Line,
            limit: DEFAULT_LIMIT,
        };
        assert_eq!(failed, Some(expected));
        assert!(
            parser.line.is_empty() && parser.data.is_empty(),
            "the buffers are freed"
        );
        assert!(
            parser.feed(b"\n\ndata: later\n\n").is_empty(),
            "nothing is read after a failure"
        );
        assert_eq!(
            expected.to_string(),
            "an SSE line is larger than 1048576 bytes"
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read() {
        let mut line = b"data: ".to_vec();
        line.resize(DEFAULT_LIMIT, b'x');
        line.extend_from_slice(b"\r\n\r\n");
        for size in [line.len(), 1000, 65536] {
            let mut parser = Parser::new();
            let (events, failed) = feed_in_pieces(&mut parser, &line, size);
            assert_eq!(failed, None, "pieces of {size}");
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].data.len(), DEFAULT_LIMIT - "data: ".len());
        }
    }

    #[test]
    fn limits_do_not_depend_on_how_reads_split() {
        // Limit 8: "data: ab" is 8 bytes (fine), "data: abc" is 9 (too long).
        let fine = b"data: ab\n\n";
        let long = b"data: ab\n\ndata: abc\n\ndata: z\n\n";
        for split in 0..=long.len() {
            let mut parser = Parser::with_limit(8);
            let mut events = parser.feed(&long[..split]);
            events.extend(parser.feed(&long[split..]));
            assert_eq!(datas(&events), ["ab"], "split at {split}");
            assert_eq!(parser.failed().map(|f| f.part), Some(Part::Line));
            let mut parser = Parser::with_limit(8);
            let mut events = parser.feed(&fine[..split.min(fine.len())]);
            events.extend(parser.feed(&fine[split.min(fine.len())..]));
            assert_eq!((datas(&events), parser.failed()), (vec!["ab"], None));
        }
    }

    #[test]
    fn an_event_over_the_limit_is_caught_though_each_line_is_short() {
        // Limit 8: data "abc\ndef" is 7 bytes, "abc\ndef\ng" is 9.
        let mut parser = Parser::with_limit(8);
        let events = parser.feed(b"data:abc\ndata:def\n\ndata:abc\ndata:def\ndata:g\n");
        assert_eq!(datas(&events), ["abc\ndef"]);
        assert_eq!(parser.failed().map(|f| f.part), Some(Part::Event));
        // At the real default, many short lines add up the same way.
        let mut parser = Parser::new();
        let line = format!("data: {}\n", "y".repeat(1023));
        let input = line.repeat(1025);
        let (events, failed) = feed_in_pieces(&mut parser, input.as_bytes(), 7000);
        assert!(events.is_empty());
        assert_eq!(failed.map(|f| f.part), Some(Part::Event));
    }

    #[test]
    fn comment_lines_are_limited_too() {
        let mut parser = Parser::with_limit(4);
        assert!(parser.feed(b": ok\n: too long\n").is_empty());
        assert_eq!(parser.failed().map(|f| f.part), Some(Part::Line));
    }

    #[test]
    fn many_small_events_never_reach_the_limit() {
        let event = format!("data: {{\"content\":\"{}\"}}\n\n", "你好".repeat(30));
        let input = event.repeat(20_000); // ~4 MB in all, far more than one limit
        for size in [input.len(), 4096, 333] {
            let mut parser = Parser::new();
            let (events, failed) = feed_in_pieces(&mut parser, input.as_bytes(), size);
            assert_eq!(failed, None);
            assert_eq!(events.len(), 20_000);
        }
    }

    #[test]
    fn a_limited_parser_still_decodes_utf8_only_on_whole_events() {
        let text = "你好😀世界";
        let input = format!("data: {text}\n\n");
        let limit = input.len() - 2; // the line, exactly
        let mut parser = Parser::with_limit(limit);
        let events: Vec<Event> = input.bytes().flat_map(|b| parser.feed(&[b])).collect();
        assert_eq!((datas(&events), parser.failed()), (vec![text], None));
        // One byte less, and the line is refused in the middle of a character.
        let mut parser = Parser::with_limit(limit - 1);
        let events: Vec<Event> = input.bytes().flat_map(|b| parser.feed(&[b])).collect();
        assert!(events.is_empty());
        assert!(parser.failed().is_some());
    }

    #[test]
    fn unlimited_reads_a_line_of_any_size() {
        let mut line = b"data: ".to_vec();
        line.resize(DEFAULT_LIMIT * 2, b'x');
        line.extend_from_slice(b"\n\n");
        let mut parser = Parser::unlimited();
        let (events, failed) = feed_in_pieces(&mut parser, &line, 65536);
        assert_eq!((events.len(), failed), (1, None));
    }

    #[test]
    fn done_marker_is_plain_data() {
        check(
            b"data: {\"x\":1}\n\ndata: [DONE]\n\n",
            &["{\"x\":1}", "[DONE]"],
        );
    }
}
