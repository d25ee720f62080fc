//! What the fake answers: a [`Scenario`] parsed from a marker, turned into a [`Plan`] —
//! a status, headers, and a script of writes, pauses and breaks.
//!
//! Marker grammar, in the last user message: `[[fake:SHAPE OPTION OPTION=VALUE …]]`.
//! Shapes: `openai`, `deepseek`, `reasoner`, `siliconflow`, `dashscope`, `ark`,
//! `hunyuan`, `demo`. Options:
//! - `crlf` — CRLF line endings; `split` — every event written in 5-byte pieces (so
//!   `data:` lines and UTF-8 characters are cut across reads);
//! - `delay=MS` — pause before each chunk; `chunks=N` — a long answer of N chunks;
//!   `keepalive=N` — N `: keep-alive` comments before the first chunk; `no_usage`;
//!   `answer=xss` — an answer carrying HTML and a `javascript:` link;
//! - `status=CODE` (+ `times=N`: only the first N attempts; `html`: an HTML body) with
//!   `retry_after=S`, `retry_after_date=S`, `retry_after_ms=MS`;
//! - `drop_after=N`, `stall_after=N`, `error_after=N` (after N text chunks), `malformed`.
//!
//! Keys steer refusals whatever the marker: a key containing `bad` gets 401 (its message
//! echoes the key, as OpenAI's does), `broke` gets 429 `insufficient_quota`, `busy` gets
//! 429 with `Retry-After: 30`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{json, Value};

/// The answer every shape streams unless told otherwise: Chinese, emoji, a code fence.
pub const ANSWER: &str = "你好！这是来自模拟上游的回答。😀\n\n\
下面是一段代码：\n\n```rust\nfn main() {\n    println!(\"你好，世界 🌏\");\n}\n```\n\n\
- 中文与 English 混排\n- 表情：🚀✨👍🏽\n\n回答完毕。";

/// An answer that tries to run script (`answer=xss`): the page must show it as text.
pub const XSS_ANSWER: &str = "看这张图：<img src=x onerror=\"window.__xss='img'\"> 和 <script>window.__xss='script'</script>\n\n\
[点我](javascript:window.__xss='link')";

/// What `reasoner` thinks before it answers.
pub const REASONING: &str = "用户在打招呼。我应该礼貌地回应，并给出一个代码示例。";

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

impl Scenario {
    pub fn parse(marker: &str) -> Scenario {
        let mut words = marker.split_whitespace();
        let shape = words.next().unwrap_or("openai").to_owned();
        let options = words
            .map(|word| match word.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (word.to_owned(), String::new()),
            })
            .collect();
        Scenario { shape, options }
    }

    fn flag(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.options.get(name).and_then(|v| v.parse().ok())
    }

    /// The response to attempt number `attempt` (1-based) of this conversation.
    pub fn plan(&self, request: &Value, key: &str, attempt: u32) -> Plan {
        if let Some(plan) = refusal_for_key(key) {
            return plan;
        }
        if let Some(status) = self.number("status") {
            let times = self.number("times").unwrap_or(u64::MAX);
            if u64::from(attempt) <= times {
                return self.refusal(status as u16);
            }
        }
        self.stream(request)
    }

    fn refusal(&self, status: u16) -> Plan {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(secs) = self.number("retry_after") {
            headers.push(("retry-after", secs.to_string()));
        }
        if let Some(secs) = self.number("retry_after_date") {
            // Round up to the next whole second, as an HTTP-date can only say seconds.
            let at = SystemTime::now() + Duration::from_secs(secs + 1);
            headers.push(("retry-after", httpdate::fmt_http_date(at)));
        }
        if let Some(ms) = self.number("retry_after_ms") {
            headers.push(("retry-after-ms", ms.to_string()));
        }
        let body = if self.flag("html") {
            headers[0].1 = "text/html".to_owned();
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
        Plan {
            status,
            headers,
            actions: vec![Action::Write(Bytes::from(body))],
        }
    }

    fn stream(&self, request: &Value) -> Plan {
        let shape = Shape::new(&self.shape, request);
        let crlf = self.flag("crlf");
        let split = self.flag("split");
        let delay = self
            .number("delay")
            .unwrap_or(if self.shape == "demo" { 30 } else { 0 });
        let keepalive = self
            .number("keepalive")
            .unwrap_or(if shape.is_deepseek() { 2 } else { 0 });
        let include_usage = !self.flag("no_usage")
            && request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);

        let reasoning: Vec<String> = if self.shape == "reasoner" {
            pieces(REASONING)
        } else {
            Vec::new()
        };
        let answer: Vec<String> = match self.number("chunks") {
            Some(n) => (0..n).map(|i| format!("第{i}段。")).collect(),
            None if self.options.get("answer").map(String::as_str) == Some("xss") => {
                pieces(XSS_ANSWER)
            }
            None if self.shape == "demo" => pieces(&demo_answer(request)),
            None => pieces(ANSWER),
        };
        let prompt_tokens = prompt_size(request);
        let completion_tokens = (reasoning.len() + answer.len()) as u64;

        let mut script = Script {
            actions: Vec::new(),
            crlf,
            split,
        };
        for _ in 0..keepalive {
            script.comment("keep-alive");
        }
        if let Some(first) = shape.role_chunk() {
            script.data(&first);
        }
        let break_at = |name: &str| self.number(name);
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
                return script.into_plan();
            }
            if break_at("stall_after") == Some(sent) {
                script.actions.push(Action::Stall);
                return script.into_plan();
            }
            if break_at("error_after") == Some(sent) {
                script.data(&json!({"error": {"message": "The model is overloaded, please retry", "type": "server_error", "code": "overloaded"}}));
                return script.into_plan();
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
        script.raw(&format!(
            "data: [DONE]{}",
            if crlf { "\r\n\r\n" } else { "\n\n" }
        ));
        script.into_plan()
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

/// The offline demo's answer: honest about being a demo, and shows what the app renders.
fn demo_answer(request: &Value) -> String {
    let question = last_user_content(request).unwrap_or_default();
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
    split: bool,
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
        if !self.split {
            self.actions
                .push(Action::Write(Bytes::from(text.to_owned())));
            return;
        }
        // 5-byte pieces cut through `data:` and through multi-byte characters; the pause
        // makes each piece its own network read.
        for piece in text.as_bytes().chunks(5) {
            self.actions
                .push(Action::Write(Bytes::copy_from_slice(piece)));
            self.actions.push(Action::Pause(1));
        }
    }

    fn into_plan(self) -> Plan {
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
}
