//! What the fake answers: a [`Scenario`] parsed from a marker, turned into a [`Plan`] —
//! a status, headers, and a script of writes, pauses and breaks.
//!
//! Marker grammar, in the last user message: `[[fake:SHAPE OPTION OPTION=VALUE …]]`.
//! Markers are honoured only when the fake runs as the tests' or benchmarks' upstream
//! ([`super::Mode::Scripted`]); the offline demo ignores them.
//! Shapes: `openai`, `deepseek`, `reasoner`, `siliconflow`, `dashscope`, `ark`,
//! `hunyuan`, `demo`; a marker that starts with an option (`[[fake:status=500]]`) is
//! `openai`. Options:
//! - `crlf` — CRLF line endings; `split` — every write in 5-byte pieces (so `data:` lines
//!   and UTF-8 characters are cut across reads);
//! - `delay=MS` — pause before each chunk; `chunks=N` — a long answer of N chunks, one
//!   unbroken paragraph (`第0段。第1段。…`), or with `answer=code` one fenced code block
//!   ([`code_answer`]: the fence opens in the first chunk and closes in the last, a line
//!   ends every 4th chunk); `keepalive=N` — N `: keep-alive` comments before the first
//!   chunk, each after `keepalive_every=MS`; `no_usage`; `answer=xss` — an answer carrying
//!   HTML and a `javascript:` link;
//! - `status=CODE` (400–599, anything else is 500; + `times=N`: only the first N attempts;
//!   `html`: an HTML body) with `retry_after=S`, `retry_after_date=S`, `retry_after_ms=MS`,
//!   or any header text at all: `retry_after_raw=TEXT`, `retry_after_ms_raw=TEXT` (sent
//!   verbatim after `%XX` decoding, so `%20` is a space; e.g.
//!   `retry_after_raw=10000000000000000000`, `retry_after_raw=soon`);
//! - `drop_after=N`, `stall_after=N`, `error_after=N` (after N text chunks), `malformed`;
//! - `fail=MODEL:HOW,MODEL:HOW…` — only requests for MODEL misbehave, as HOW says: a
//!   status (`503`), `empty` (a proper stream with no text), `stall` (silence before
//!   the first text), `dropN` / `errorN` (cut after N text chunks). Other models answer
//!   normally: a fallback chain's models, one prompt.
//!
//! Misbehaving providers (the hardening tests):
//! - `hugeline=BYTES` — after `huge_after=N` text chunks (default 0), one `data:` line of
//!   BYTES bytes (counted from `data:`) that never ends: no line ending, then silence;
//! - `hugeevent=BYTES` — the same place, `data:` lines of 1 KiB (1,024 bytes with their
//!   LF) adding up to at least BYTES bytes, and never the blank line that ends the event;
//! - `errbody=STATUS:BYTES` (or `errbody=BYTES`, status 500) — an error response whose JSON
//!   body is exactly BYTES bytes (at least its ~60-byte frame) and ends with
//!   `, key: KEY"}}`: the request's bearer key ends 3 bytes before the end of the body, so
//!   a reader that truncates before it redacts can be caught. It takes `times` and the
//!   `retry_after*` options like `status`;
//! - `linger` — the last byte is followed by silence on an open connection: a stream sends
//!   its `finish_reason` chunk (and usage chunk) but never `[DONE]`, an error body never
//!   ends.
//!
//! A request whose last message is the assistant's (a cut answer to continue: DeepSeek's
//! `prefix`, DashScope's `partial`, or a plain assistant prefix) gets the rest of the
//! answer the marker would give, starting a few characters before the end of that text
//! (0 or 2–8 of them, fixed by its length): a continuation that repeats itself at the
//! seam, as real models do, for the relay to trim.
//!
//! Every number is bounded, so a marker cannot make the fake allocate gigabytes or wait
//! for ever: a larger value (even one too large for a u64) counts as the maximum below.
//!
//! Keys steer refusals whatever the marker: a key containing `bad` gets 401 (its message
//! echoes the key, as OpenAI's does), `broke` gets 429 `insufficient_quota`, `busy` gets
//! 429 with `Retry-After: 30`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{json, Value};

/// The most chunks `chunks=N` streams (the rendering benchmark asks for 10,000).
pub const MAX_CHUNKS: u64 = 20_000;
/// The longest pause `delay=MS` and `keepalive_every=MS` make, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The most comments `keepalive=N` sends.
pub const MAX_KEEPALIVES: u64 = 10_000;
/// The most bytes `hugeline`, `hugeevent` and `errbody` write: 16 MiB.
pub const MAX_BYTES: u64 = 16 << 20;
/// The furthest `retry_after_date=S` reaches, in seconds (about 31 years; an HTTP-date
/// cannot go past the year 9999). Larger waits are `retry_after=S` or `retry_after_raw`.
pub const MAX_RETRY_DATE_SECS: u64 = 1_000_000_000;

/// The answer every shape streams unless told otherwise: Chinese, emoji, a code fence.
pub const ANSWER: &str = "你好！这是来自模拟上游的回答。😀\n\n\
下面是一段代码：\n\n```rust\nfn main() {\n    println!(\"你好，世界 🌏\");\n}\n```\n\n\
- 中文与 English 混排\n- 表情：🚀✨👍🏽\n\n回答完毕。";

/// An answer that tries to run script (`answer=xss`): the page must show it as text.
pub const XSS_ANSWER: &str = "看这张图：<img src=x onerror=\"window.__xss='img'\"> 和 <script>window.__xss='script'</script>\n\n\
[点我](javascript:window.__xss='link')";

/// What `reasoner` thinks before it answers.
pub const REASONING: &str = "用户在打招呼。我应该礼貌地回应，并给出一个代码示例。";

/// Filler for the huge writes, shared by every response instead of allocated for each.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// One step of the script.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Write(Bytes),
    Pause(u64),
    /// Break the connection (the body ends in an error).
    Drop,
    /// Keep the connection open and silent.
    Stall,
}

#[derive(Debug)]
pub struct Plan {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub actions: Vec<Action>,
    /// Play every write in 5-byte pieces, 1 ms apart (option `split`).
    pub split: bool,
}

/// A parsed marker.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scenario {
    pub shape: String,
    pub options: HashMap<String, String>,
}

/// The marker in the last user message, if any: the text between `[[fake:` and `]]`.
pub fn marker_text(request: &Value) -> Option<String> {
    let content = last_user_content(request)?;
    let start = content.find("[[fake:")? + "[[fake:".len();
    let end = content[start..].find("]]")? + start;
    Some(content[start..end].trim().to_owned())
}

/// Requests that count as attempts of the same conversation share this key.
pub fn attempt_key(request: &Value) -> String {
    last_user_content(request).unwrap_or_default().to_owned()
}

fn last_user_content(request: &Value) -> Option<&str> {
    let messages = request.get("messages")?.as_array()?;
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    last_user.get("content")?.as_str()
}

/// The text of a trailing assistant message: a cut answer to continue.
fn assistant_prefix(request: &Value) -> Option<&str> {
    let last = request.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("assistant") {
        return None;
    }
    last.get("content")?.as_str()
}

/// The rest of `answer` after `prefix`, starting a few characters back (the repeat at
/// the seam); the whole answer again if `prefix` is not its start.
pub fn continued(answer: &str, prefix: &str) -> Vec<String> {
    let Some(rest) = answer.strip_prefix(prefix) else {
        return pieces(answer);
    };
    let sent = prefix.chars().count();
    // 0, or 2 to 8 characters (a one-character overlap is no repeat: the relay keeps it).
    let repeat = match ((sent * 7) % 9).min(sent) {
        1 => 0,
        n => n,
    };
    let start = prefix
        .char_indices()
        .nth(sent - repeat)
        .map_or(prefix.len(), |(at, _)| at);
    pieces(&format!("{}{rest}", &prefix[start..]))
}

/// The largest value each numeric option may take; `None` for the ones that are only
/// compared or echoed into a header, which any u64 can be.
fn max_of(option: &str) -> Option<u64> {
    match option {
        "chunks" => Some(MAX_CHUNKS),
        "delay" | "keepalive_every" => Some(MAX_DELAY_MS),
        "keepalive" => Some(MAX_KEEPALIVES),
        "hugeline" | "hugeevent" => Some(MAX_BYTES),
        "retry_after_date" => Some(MAX_RETRY_DATE_SECS),
        _ => None,
    }
}

/// A whole number, saturating: digits too many for a u64 are `u64::MAX`.
fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// Decodes `%XX` escapes, so a marker (split on whitespace) can carry any header text.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Scenario {
    pub fn parse(marker: &str) -> Scenario {
        let mut words = marker.split_whitespace().peekable();
        let shape = match words.peek() {
            Some(first) if !first.contains('=') => words.next().unwrap_or("openai"),
            _ => "openai",
        }
        .to_owned();
        let options = words
            .map(|word| match word.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (word.to_owned(), String::new()),
            })
            .collect();
        Scenario { shape, options }
    }

    /// What the offline demo answers every visitor.
    pub fn demo() -> Scenario {
        Scenario {
            shape: "demo".to_owned(),
            options: HashMap::new(),
        }
    }

    /// `fail=MODEL:HOW,…`: this scenario, misbehaving as HOW, when the request names
    /// MODEL (the `fail` option itself dropped).
    fn failing_model(&self, request: &Value) -> Option<Scenario> {
        let model = request.get("model")?.as_str()?;
        let how = self
            .options
            .get("fail")?
            .split(',')
            .filter_map(|entry| entry.rsplit_once(':'))
            .find(|(name, _)| *name == model)?
            .1;
        let (name, value) = match how {
            "empty" => ("chunks", "0".to_owned()),
            "stall" => ("stall_after", "0".to_owned()),
            _ if how.starts_with("drop") => ("drop_after", how[4..].to_owned()),
            _ if how.starts_with("error") => ("error_after", how[5..].to_owned()),
            status => ("status", status.to_owned()),
        };
        let mut options = self.options.clone();
        options.remove("fail");
        options.insert(name.to_owned(), value);
        Some(Scenario {
            shape: self.shape.clone(),
            options,
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }

    /// A numeric option, clamped to its maximum ([`max_of`]).
    fn number(&self, name: &str) -> Option<u64> {
        let value = parse_count(self.options.get(name)?)?;
        Some(max_of(name).map_or(value, |max| value.min(max)))
    }

    fn raw(&self, name: &str) -> Option<String> {
        self.options.get(name).map(|v| percent_decode(v))
    }

    /// The response to attempt number `attempt` (1-based) of this conversation.
    pub fn plan(&self, request: &Value, key: &str, attempt: u32) -> Plan {
        if let Some(plan) = refusal_for_key(key) {
            return plan;
        }
        if let Some(failing) = self.failing_model(request) {
            return failing.plan(request, key, attempt);
        }
        let times = self.number("times").unwrap_or(u64::MAX);
        if u64::from(attempt) <= times {
            if let Some(spec) = self.options.get("errbody") {
                let (status, bytes) = match spec.split_once(':') {
                    Some((status, bytes)) => (parse_count(status), parse_count(bytes)),
                    None => (Some(500), parse_count(spec)),
                };
                let bytes = bytes.unwrap_or(0).min(MAX_BYTES);
                return self.error_body(error_status(status), bytes, key);
            }
            if let Some(status) = self.number("status") {
                return self.refusal(error_status(Some(status)));
            }
        }
        self.stream(request)
    }

    /// The headers of an error response: its type and the `retry_after*` options.
    fn refusal_headers(&self, content_type: &str) -> Vec<(&'static str, String)> {
        let mut headers = vec![("content-type", content_type.to_owned())];
        if let Some(secs) = self.number("retry_after") {
            headers.push(("retry-after", secs.to_string()));
        }
        if let Some(secs) = self.number("retry_after_date") {
            // Round up to the next whole second, as an HTTP-date can only say seconds.
            let at = SystemTime::now() + Duration::from_secs(secs + 1);
            headers.push(("retry-after", httpdate::fmt_http_date(at)));
        }
        if let Some(text) = self.raw("retry_after_raw") {
            headers.push(("retry-after", text));
        }
        if let Some(ms) = self.number("retry_after_ms") {
            headers.push(("retry-after-ms", ms.to_string()));
        }
        if let Some(text) = self.raw("retry_after_ms_raw") {
            headers.push(("retry-after-ms", text));
        }
        headers
    }

    fn refusal(&self, status: u16) -> Plan {
        let html = self.flag("html");
        let headers = self.refusal_headers(if html {
            "text/html"
        } else {
            "application/json"
        });
        let body = if html {
            format!("<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1><hr>nginx</body></html>")
        } else {
            match (self.shape.as_str(), status) {
                ("siliconflow", 429) => json!({"message": "Request was rejected due to rate limiting. Details: TPM limit reached.", "data": null}).to_string(),
                ("siliconflow", 503) => json!({"code": 50508, "message": "System is too busy now. Please try again later.", "data": null}).to_string(),
                ("qwen" | "dashscope", 429) => json!({"error": {"message": "Requests rate limit exceeded", "type": "limit_requests", "code": "limit_requests"}, "request_id": "fake-req"}).to_string(),
                ("deepseek", 429) => json!({"error": {"message": "Rate Limit Reached", "type": "rate_limit_error"}}).to_string(),
                (_, 429) => json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}).to_string(),
                (_, status) => json!({"error": {"message": format!("The server had an error ({status})"), "type": "server_error", "code": null}}).to_string(),
            }
        };
        let mut actions = vec![Action::Write(Bytes::from(body))];
        if self.flag("linger") {
            actions.push(Action::Stall);
        }
        Plan {
            status,
            headers,
            actions,
            split: false,
        }
    }

    /// `errbody`: an error body of exactly `bytes` bytes that ends with the caller's key.
    fn error_body(&self, status: u16, bytes: u64, key: &str) -> Plan {
        let head = r#"{"error":{"type":"server_error","code":null,"message":""#;
        // JSON-escape the key the way it would be echoed (a bearer key is plain ASCII).
        let key_json = json!(key).to_string();
        let tail = format!(", key: {}}}}}", &key_json[1..]);
        let mut actions = vec![Action::Write(Bytes::from_static(head.as_bytes()))];
        let frame = (head.len() + tail.len()) as u64;
        filler(&mut actions, bytes.saturating_sub(frame));
        actions.push(Action::Write(Bytes::from(tail)));
        if self.flag("linger") {
            actions.push(Action::Stall);
        }
        Plan {
            status,
            headers: self.refusal_headers("application/json"),
            actions,
            split: false,
        }
    }

    fn stream(&self, request: &Value) -> Plan {
        let shape = Shape::new(&self.shape, request);
        let crlf = self.flag("crlf");
        let delay = self
            .number("delay")
            .unwrap_or(if self.shape == "demo" { 30 } else { 0 });
        let keepalive = self
            .number("keepalive")
            .unwrap_or(if shape.is_deepseek() { 2 } else { 0 });
        let keepalive_every = self.number("keepalive_every").unwrap_or(0);
        let include_usage = !self.flag("no_usage")
            && request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);

        let prefix = assistant_prefix(request);
        let reasoning: Vec<String> = if self.shape == "reasoner" && prefix.is_none() {
            pieces(REASONING)
        } else {
            Vec::new()
        };
        let answer: Vec<String> = match self.number("chunks") {
            Some(n) if self.options.get("answer").map(String::as_str) == Some("code") => {
                code_answer(n)
            }
            Some(n) => (0..n).map(|i| format!("第{i}段。")).collect(),
            None if self.options.get("answer").map(String::as_str) == Some("xss") => {
                pieces(XSS_ANSWER)
            }
            None if self.shape == "demo" => {
                pieces(&demo_answer(last_user_content(request).unwrap_or_default()))
            }
            None => pieces(ANSWER),
        };
        let answer = match prefix {
            Some(prefix) => continued(&answer.concat(), prefix),
            None => answer,
        };
        let prompt_tokens = prompt_size(request);
        let completion_tokens = (reasoning.len() + answer.len()) as u64;

        let mut script = Script {
            actions: Vec::new(),
            crlf,
        };
        for _ in 0..keepalive {
            if keepalive_every > 0 {
                script.actions.push(Action::Pause(keepalive_every));
            }
            script.comment("keep-alive");
        }
        if let Some(first) = shape.role_chunk() {
            script.data(&first);
        }
        let break_at = |name: &str| self.number(name);
        let huge_at = if self.flag("hugeline") || self.flag("hugeevent") {
            Some(self.number("huge_after").unwrap_or(0))
        } else {
            None
        };
        let mut sent = 0u64;
        let texts = reasoning
            .iter()
            .map(|t| (true, t))
            .chain(answer.iter().map(|t| (false, t)));
        for (is_reasoning, text) in texts {
            if break_at("drop_after") == Some(sent) {
                // Let what was written reach the wire first, as it would have on a real
                // connection that breaks later.
                script.actions.push(Action::Pause(50));
                script.actions.push(Action::Drop);
                return script.into_plan(self.flag("split"));
            }
            if break_at("stall_after") == Some(sent) {
                script.actions.push(Action::Stall);
                return script.into_plan(self.flag("split"));
            }
            if huge_at == Some(sent) {
                self.huge(&mut script.actions);
                return script.into_plan(self.flag("split"));
            }
            if break_at("error_after") == Some(sent) {
                script.data(&json!({"error": {"message": "The model is overloaded, please retry", "type": "server_error", "code": "overloaded"}}));
                return script.into_plan(self.flag("split"));
            }
            if self.flag("malformed") && sent == 2 {
                script.raw("data: {\"choices\":[{\"delta\":{\"content\":\n\n");
            }
            if delay > 0 {
                script.actions.push(Action::Pause(delay));
            }
            sent += 1;
            let usage_so_far = usage(prompt_tokens, sent);
            script.data(&shape.text_chunk(text, is_reasoning, &usage_so_far));
        }
        let total = usage(prompt_tokens, completion_tokens);
        script.data(&shape.final_chunk(&total, include_usage && !self.flag("no_usage")));
        if include_usage && shape.separate_usage_chunk() {
            script.data(&shape.usage_chunk(&total));
        }
        if self.flag("linger") {
            // The answer is over, but the provider neither says `[DONE]` nor closes.
            script.actions.push(Action::Stall);
        } else {
            script.raw(&format!(
                "data: [DONE]{}",
                if crlf { "\r\n\r\n" } else { "\n\n" }
            ));
        }
        script.into_plan(self.flag("split"))
    }

    /// `hugeline` / `hugeevent`: bytes that never make a whole line or event, then silence.
    fn huge(&self, actions: &mut Vec<Action>) {
        if let Some(bytes) = self.number("hugeline") {
            let head = r#"data: {"choices":[{"index":0,"delta":{"content":""#;
            actions.push(Action::Write(Bytes::from_static(head.as_bytes())));
            filler(actions, bytes.saturating_sub(head.len() as u64));
        } else if let Some(bytes) = self.number("hugeevent") {
            // 64 lines of 1 KiB, shared by every block.
            let mut line = b"data: ".to_vec();
            line.resize(1023, b'y');
            line.push(b'\n');
            let block = Bytes::from(line.repeat(64));
            for _ in 0..bytes.div_ceil(block.len() as u64) {
                actions.push(Action::Write(block.clone()));
            }
        }
        actions.push(Action::Stall);
    }
}

/// A `status` or `errbody` status: an error code, or 500 when it is not one.
fn error_status(status: Option<u64>) -> u16 {
    match status {
        Some(code @ 400..=599) => code as u16,
        _ => 500,
    }
}

/// `bytes` bytes of `x`, written from the shared filler without allocating.
fn filler(actions: &mut Vec<Action>, mut bytes: u64) {
    while bytes > 0 {
        let n = bytes.min(FILLER.len() as u64) as usize;
        actions.push(Action::Write(Bytes::from_static(&FILLER[..n])));
        bytes -= n as u64;
    }
}

fn refusal_for_key(key: &str) -> Option<Plan> {
    let json_plan = |status: u16, headers: Vec<(&'static str, String)>, body: Value| Plan {
        status,
        headers: [
            vec![("content-type", "application/json".to_owned())],
            headers,
        ]
        .concat(),
        actions: vec![Action::Write(Bytes::from(body.to_string()))],
        split: false,
    };
    if key.contains("bad") {
        let message = format!("Incorrect API key provided: {key}. You can find your API key in your account settings.");
        return Some(json_plan(
            401,
            vec![],
            json!({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ));
    }
    if key.contains("broke") {
        return Some(json_plan(
            429,
            vec![],
            json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "code": "insufficient_quota"}}),
        ));
    }
    if key.contains("busy") {
        return Some(json_plan(
            429,
            vec![("retry-after", "30".to_owned())],
            json!({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}),
        ));
    }
    None
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A stand-in token count for the prompt: its characters. Deliberately not tiktoken's
/// number, so tests can tell provider usage from our estimate.
fn prompt_size(request: &Value) -> u64 {
    let messages = request.get("messages").and_then(Value::as_array);
    let contents = messages
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_str));
    contents.map(|c| c.chars().count() as u64).sum()
}

/// Cuts text into pieces of 1, 2, 3, 1, 2, 3… characters, like tokens.
pub fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < chars.len() {
        let end = (at + size).min(chars.len());
        out.push(chars[at..end].iter().collect());
        at = end;
        size = size % 3 + 1;
    }
    out
}

/// `answer=code chunks=N`: one fenced code block in N chunks (the rendering benchmark's
/// long code answer): chunk `i` is `let v{i} = {i};` and a space, or a line ending every
/// 4th chunk; the first opens the fence, the last ends its line and closes it.
pub fn code_answer(chunks: u64) -> Vec<String> {
    (0..chunks)
        .map(|i| {
            let open = if i == 0 { "```rust\n" } else { "" };
            let last = i + 1 == chunks;
            let end = if last {
                "\n```"
            } else if i % 4 == 3 {
                "\n"
            } else {
                " "
            };
            format!("{open}let v{i} = {i};{end}")
        })
        .collect()
}

/// The offline demo's answer to `question`: honest about being a demo, and shows what the
/// app renders.
pub fn demo_answer(question: &str) -> String {
    let question: String = question.chars().take(60).collect();
    format!(
        "这是**离线演示模型**的回答（服务端没有配置任何 API 密钥）。你的问题是：「{question}」。\n\n\
         要接入真实模型，在 `.env` 中设置密钥后重启：\n\n\
         ```bash\nSILICONFLOW_API_KEY=sk-你的密钥\n```\n\n\
         演示回答同样逐字流式输出，会统计 token 用量并按 DeepSeek-V3.2 的价格（输入 ¥2、输出 ¥3 每百万 token）计算费用。🚀"
    )
}

/// Builds the bytes of the response.
struct Script {
    actions: Vec<Action>,
    crlf: bool,
}

impl Script {
    fn data(&mut self, value: &Value) {
        let end = if self.crlf { "\r\n\r\n" } else { "\n\n" };
        self.raw(&format!("data: {value}{end}"));
    }

    fn comment(&mut self, text: &str) {
        let end = if self.crlf { "\r\n\r\n" } else { "\n\n" };
        self.raw(&format!(": {text}{end}"));
    }

    fn raw(&mut self, text: &str) {
        self.actions
            .push(Action::Write(Bytes::from(text.to_owned())));
    }

    fn into_plan(self, split: bool) -> Plan {
        Plan {
            status: 200,
            headers: vec![
                (
                    "content-type",
                    "text/event-stream; charset=utf-8".to_owned(),
                ),
                ("cache-control", "no-cache".to_owned()),
            ],
            actions: self.actions,
            split,
        }
    }
}

/// The chunk shapes of each provider.
struct Shape {
    name: String,
    id: String,
    model: String,
    created: u64,
}

impl Shape {
    fn new(name: &str, request: &Value) -> Shape {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = match name {
            "dashscope" => "chatcmpl-3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b".to_owned(),
            "deepseek" | "reasoner" | "demo" => "0b8e4c7a-1d2f-4a3b-9c5d-6e7f8a9b0c1d".to_owned(),
            _ => format!("chatcmpl-fake{created}"),
        };
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("fake-model")
            .to_owned();
        Shape {
            name: name.to_owned(),
            id,
            model,
            created,
        }
    }

    fn is_deepseek(&self) -> bool {
        matches!(self.name.as_str(), "deepseek" | "reasoner" | "demo")
    }

    fn base(&self) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model})
    }

    fn with(&self, fields: Value) -> Value {
        let mut value = self.base();
        if let (Some(target), Some(extra)) = (value.as_object_mut(), fields.as_object()) {
            for (k, v) in extra {
                target.insert(k.clone(), v.clone());
            }
        }
        value
    }

    /// The opening delta that carries only the role, where the provider sends one.
    fn role_chunk(&self) -> Option<Value> {
        match self.name.as_str() {
            "openai" => Some(self.with(json!({"service_tier": "default", "system_fingerprint": "fp_fake", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}], "usage": null, "obfuscation": "Qx3"}))),
            "deepseek" | "reasoner" | "demo" => Some(self.with(json!({"system_fingerprint": "fp_fake_prod", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]}))),
            _ => None,
        }
    }

    fn text_chunk(&self, text: &str, reasoning: bool, usage_so_far: &Value) -> Value {
        let (content, reasoning_content) = if reasoning {
            (Value::Null, json!(text))
        } else {
            (json!(text), Value::Null)
        };
        match self.name.as_str() {
            "openai" => self.with(json!({"service_tier": "default", "system_fingerprint": "fp_fake", "choices": [{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}], "usage": null, "obfuscation": "a1B2"})),
            "reasoner" => self.with(json!({"choices": [{"index": 0, "delta": {"content": content, "reasoning_content": reasoning_content}, "logprobs": null, "finish_reason": null}]})),
            "siliconflow" => self.with(json!({"system_fingerprint": "", "choices": [{"index": 0, "delta": {"content": text, "reasoning_content": null, "role": "assistant"}, "finish_reason": null}], "usage": usage_so_far})),
            "dashscope" => self.with(json!({"system_fingerprint": null, "choices": [{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]})),
            "ark" => self.with(json!({"service_tier": "default", "choices": [{"index": 0, "delta": {"content": text, "role": "assistant"}}], "usage": null})),
            "hunyuan" => self.with(json!({"note": "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记", "system_fingerprint": "", "choices": [{"index": 0, "delta": {"role": "assistant", "content": text, "reasoning_content": ""}, "finish_reason": null}]})),
            _ => self.with(json!({"choices": [{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]})),
        }
    }

    /// The chunk with `finish_reason: "stop"`; DeepSeek, SiliconFlow and Hunyuan put the
    /// usage on it.
    fn final_chunk(&self, total: &Value, with_usage: bool) -> Value {
        let usage_here = |extra: Value| if with_usage { extra } else { Value::Null };
        match self.name.as_str() {
            "deepseek" | "reasoner" | "demo" => {
                let mut usage = total.clone();
                usage["prompt_cache_hit_tokens"] = json!(0);
                usage["prompt_cache_miss_tokens"] = total["prompt_tokens"].clone();
                if self.name == "reasoner" {
                    usage["completion_tokens_details"] = json!({"reasoning_tokens": pieces(REASONING).len()});
                }
                self.with(json!({"choices": [{"index": 0, "delta": {"content": ""}, "logprobs": null, "finish_reason": "stop"}], "usage": usage_here(usage)}))
            }
            "siliconflow" => self.with(json!({"choices": [{"index": 0, "delta": {"content": "", "reasoning_content": null, "role": "assistant"}, "finish_reason": "stop"}], "usage": usage_here(total.clone())})),
            "hunyuan" => self.with(json!({"note": "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "reasoning_content": ""}, "finish_reason": "stop"}], "usage": usage_here(total.clone())})),
            "ark" => self.with(json!({"service_tier": "default", "choices": [{"index": 0, "delta": {"content": "", "role": "assistant"}, "finish_reason": "stop"}], "usage": null})),
            "openai" => self.with(json!({"service_tier": "default", "system_fingerprint": "fp_fake", "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}], "usage": null, "obfuscation": "z9"})),
            _ => self.with(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        }
    }

    /// OpenAI, DashScope and Ark send usage in an extra chunk with empty `choices`.
    fn separate_usage_chunk(&self) -> bool {
        matches!(self.name.as_str(), "openai" | "dashscope" | "ark")
    }

    fn usage_chunk(&self, total: &Value) -> Value {
        self.with(json!({"choices": [], "usage": total}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse() {
        let request = json!({"messages": [
            {"role": "user", "content": "old [[fake:ark]]"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": "hi [[fake:openai status=429 times=1 retry_after=2 split]] there"}
        ]});
        let marker = marker_text(&request).unwrap();
        let scenario = Scenario::parse(&marker);
        assert_eq!(scenario.shape, "openai");
        assert_eq!(scenario.number("times"), Some(1));
        assert!(scenario.flag("split"));
        assert_eq!(
            marker_text(&json!({"messages": [{"role": "user", "content": "plain"}]})),
            None
        );
    }

    #[test]
    fn a_code_answer_is_one_fenced_block() {
        let plan = plan_for("openai chunks=5 answer=code", "k");
        let text = String::from_utf8(written(&plan)).unwrap();
        assert!(text.contains("let v4 = 4;"), "{text}");
        assert_eq!(
            code_answer(5).concat(),
            "```rust\nlet v0 = 0; let v1 = 1; let v2 = 2; let v3 = 3;\nlet v4 = 4;\n```"
        );
    }

    #[test]
    fn pieces_rebuild_the_text() {
        assert_eq!(pieces(ANSWER).concat(), ANSWER);
        assert_eq!(pieces("abcdef"), ["a", "bc", "def"]);
    }

    #[test]
    fn fails_the_first_times_then_streams() {
        let scenario = Scenario::parse("deepseek status=503 times=2");
        let request = json!({"messages": [{"role": "user", "content": "q"}]});
        assert_eq!(scenario.plan(&request, "k", 1).status, 503);
        assert_eq!(scenario.plan(&request, "k", 2).status, 503);
        assert_eq!(scenario.plan(&request, "k", 3).status, 200);
        assert_eq!(scenario.plan(&request, "bad-key", 3).status, 401);
    }

    fn written(plan: &Plan) -> Vec<u8> {
        let writes = plan.actions.iter().filter_map(|a| match a {
            Action::Write(bytes) => Some(bytes.as_ref()),
            _ => None,
        });
        writes.collect::<Vec<&[u8]>>().concat()
    }

    fn plan_for(marker: &str, key: &str) -> Plan {
        let request = json!({"messages": [{"role": "user", "content": "q"}], "stream_options": {"include_usage": true}});
        Scenario::parse(marker).plan(&request, key, 1)
    }

    const ABSURD: &str = "999999999999999999999999999999";

    #[test]
    fn every_count_is_bounded() {
        let plan = plan_for(
            &format!("openai chunks={ABSURD} keepalive={ABSURD} keepalive_every=1000000000 delay={ABSURD}"),
            "k",
        );
        let text = String::from_utf8(written(&plan)).unwrap();
        assert_eq!(text.matches("段。").count() as u64, MAX_CHUNKS);
        assert_eq!(text.matches(": keep-alive").count() as u64, MAX_KEEPALIVES);
        assert!(text.len() < 8 << 20, "{} bytes", text.len());
        assert!(plan
            .actions
            .iter()
            .all(|a| !matches!(a, Action::Pause(ms) if *ms > MAX_DELAY_MS)));
        // Huge writes are capped too, and cost no allocation of their size.
        for option in ["hugeline", "hugeevent"] {
            let plan = plan_for(&format!("openai {option}={ABSURD}"), "k");
            let bytes = written(&plan).len() as u64;
            assert!(
                (MAX_BYTES..MAX_BYTES + 2048).contains(&bytes),
                "{option}: {bytes}"
            );
            assert!(plan.actions.len() < 400, "{option}: {}", plan.actions.len());
        }
        let plan = plan_for(&format!("openai errbody=500:{ABSURD}"), "k");
        assert_eq!(written(&plan).len() as u64, MAX_BYTES);
        // A date too far for an HTTP-date is clamped, not a panic.
        let plan = plan_for(&format!("openai status=429 retry_after_date={ABSURD}"), "k");
        assert!(plan.headers.iter().any(|(name, _)| *name == "retry-after"));
    }

    #[test]
    fn statuses_are_error_codes() {
        assert_eq!(plan_for("openai status=70000", "k").status, 500);
        assert_eq!(plan_for("openai status=200", "k").status, 500);
        assert_eq!(
            plan_for("status=503", "k").status,
            503,
            "a bare option is openai"
        );
        assert_eq!(Scenario::parse("status=503").shape, "openai");
    }

    #[test]
    fn hugeline_is_one_line_that_never_ends() {
        let plan = plan_for("openai hugeline=2000000 huge_after=2", "k");
        assert_eq!(plan.status, 200);
        assert_eq!(plan.actions.last(), Some(&Action::Stall));
        let text = String::from_utf8(written(&plan)).unwrap();
        let (before, line) = text.rsplit_once("\n\n").unwrap();
        assert_eq!(
            before.matches("\"content\"").count(),
            3,
            "role chunk + 2 texts"
        );
        assert!(line.starts_with("data: {"));
        assert_eq!(line.len(), 2_000_000);
        assert!(!line.contains('\n') && !line.contains('\r'));
    }

    #[test]
    fn hugeevent_is_short_lines_with_no_blank_line() {
        let plan = plan_for("openai hugeevent=1100000", "k");
        assert_eq!(plan.actions.last(), Some(&Action::Stall));
        let text = String::from_utf8(written(&plan)).unwrap();
        let (_, event) = text.rsplit_once("\n\n").unwrap();
        assert!(event.len() >= 1_100_000);
        assert!(event
            .split_terminator('\n')
            .all(|line| line.len() == 1023 && line.starts_with("data: ")));
    }

    #[test]
    fn errbody_is_exactly_its_size_and_ends_with_the_key() {
        let key = "sk-fake-0123456789abcdef";
        let plan = plan_for(
            "openai errbody=429:102400 retry_after_raw=10000000000000000000",
            key,
        );
        assert_eq!(plan.status, 429);
        let body = written(&plan);
        assert_eq!(body.len(), 102_400);
        let body = String::from_utf8(body).unwrap();
        assert!(body.ends_with(&format!(", key: {key}\"}}}}")));
        assert_eq!(body.len() - body.rfind(key).unwrap() - key.len(), 3);
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["error"]["type"], "server_error");
        assert!(plan
            .headers
            .contains(&("retry-after", "10000000000000000000".to_owned())));
        // `errbody=BYTES` is a 500; `times` lets a later attempt through.
        assert_eq!(plan_for("openai errbody=70000", key).status, 500);
        let request = json!({"messages": [{"role": "user", "content": "q"}]});
        let scenario = Scenario::parse("openai errbody=500:100 times=1");
        assert_eq!(scenario.plan(&request, key, 2).status, 200);
        // `linger`: the body is written, then the connection stays open.
        let plan = plan_for("openai errbody=502:100000 linger", key);
        assert_eq!(plan.actions.last(), Some(&Action::Stall));
    }

    #[test]
    fn raw_retry_after_is_sent_verbatim() {
        let plan = plan_for(
            "openai status=429 retry_after_raw=Wed,%2021%20Oct%2099999%2007:28:00%20GMT retry_after_ms_raw=-5",
            "k",
        );
        assert!(plan
            .headers
            .contains(&("retry-after", "Wed, 21 Oct 99999 07:28:00 GMT".to_owned())));
        assert!(plan.headers.contains(&("retry-after-ms", "-5".to_owned())));
        assert_eq!(percent_decode("100%"), "100%", "a lone % stays");
    }

    #[test]
    fn linger_ends_the_answer_without_done() {
        for shape in ["openai", "deepseek", "siliconflow"] {
            let plan = plan_for(&format!("{shape} linger"), "k");
            assert_eq!(plan.actions.last(), Some(&Action::Stall), "{shape}");
            let text = String::from_utf8(written(&plan)).unwrap();
            assert!(text.contains("\"finish_reason\":\"stop\""), "{shape}");
            assert!(!text.contains("[DONE]"), "{shape}");
        }
    }

    #[test]
    fn the_demo_scenario_streams_the_demo_answer() {
        let request =
            json!({"messages": [{"role": "user", "content": "hi [[fake:openai status=500]]"}]});
        let plan = Scenario::demo().plan(&request, "", 1);
        assert_eq!(plan.status, 200);
        let text = String::from_utf8(written(&plan)).unwrap();
        assert!(text.contains("离线") && text.contains("[DONE]"));
    }
}
