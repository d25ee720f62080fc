//! The providers' wire format: the request we send, and a lenient reading of the stream
//! chunks they answer with.
//!
//! Lenient on purpose (see shared PROVIDERS.md): `choices` may be empty (DashScope's usage
//! chunk) or missing; `finish_reason` may be absent (Ark), `""` or an unknown value;
//! `usage` may be `null`, ride on the last choice chunk (DeepSeek), or be repeated
//! cumulatively on every chunk (SiliconFlow: the last one wins, never a sum); extra fields
//! (`note`, `obfuscation`, `service_tier`, …) are ignored. No strict enums.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::protocol::ChatMessage;

/// The body of `POST {base_url}/chat/completions`, as `llm::shape::request_body` builds
/// it: every optional field left out when unset (a model may reject it).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ChatCompletionRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<WireMessage<'a>>,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// DashScope and SiliconFlow (Qwen3 and other hybrid models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_thinking: Option<bool>,
    /// Volcengine Ark (Doubao): `{"type": "enabled" | "disabled"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingSwitch>,
    /// The most reasoning tokens, where the provider takes a budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<u32>,
}

/// One message as sent. `prefix` (DeepSeek) and `partial` (DashScope) mark a trailing
/// assistant message as the start of the answer to continue.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct WireMessage<'a> {
    pub role: &'static str,
    pub content: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
}

impl<'a> From<&'a ChatMessage> for WireMessage<'a> {
    fn from(message: &'a ChatMessage) -> Self {
        WireMessage {
            role: message.role.as_str(),
            content: Cow::Borrowed(&message.content),
            prefix: None,
            partial: None,
        }
    }
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct StreamOptions {
    pub include_usage: bool,
}

/// Ark's `thinking` object.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct ThinkingSwitch {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Token counts as a provider reports them.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u32,
    #[serde(default)]
    pub completion_tokens: u32,
    #[serde(default)]
    pub total_tokens: Option<u32>,
}

#[derive(Deserialize, Debug)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Debug)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

/// What one provider event means to us.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    Reasoning(String),
    Content(String),
    Finish(String),
    Usage(WireUsage),
    /// `data: [DONE]`.
    Done,
    /// `data: {"error": …}` inside a 200 stream: the message.
    Error(String),
}

impl UpstreamEvent {
    /// Text that the user will see.
    pub fn is_text(&self) -> bool {
        matches!(
            self,
            UpstreamEvent::Reasoning(_) | UpstreamEvent::Content(_)
        )
    }
}

/// Why a data line could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unreadable stream event: {reason}")]
pub struct Malformed {
    pub reason: String,
}

/// Reads the `data` of one SSE event from a provider.
pub fn parse_data(data: &str) -> Result<Vec<UpstreamEvent>, Malformed> {
    let mut events = Vec::new();
    parse_data_into(data, &mut events)?;
    Ok(events)
}

/// [`parse_data`] into `events`, which a stream reader keeps: no list made per event.
pub fn parse_data_into(
    data: &str,
    events: &mut impl Extend<UpstreamEvent>,
) -> Result<(), Malformed> {
    let data = data.trim();
    if data == "[DONE]" {
        events.extend([UpstreamEvent::Done]);
        return Ok(());
    }
    let chunk: Chunk = serde_json::from_str(data).map_err(|err| Malformed {
        reason: err.to_string(),
    })?;
    if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
        events.extend([UpstreamEvent::Error(error_message(&error))]);
        return Ok(());
    }
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(delta) = choice.delta {
            let reasoning = delta.reasoning_content.filter(|t| !t.is_empty());
            events.extend(reasoning.map(UpstreamEvent::Reasoning));
            let content = delta.content.filter(|t| !t.is_empty());
            events.extend(content.map(UpstreamEvent::Content));
        }
        let reason = choice.finish_reason.filter(|r| !r.is_empty());
        events.extend(reason.map(UpstreamEvent::Finish));
    }
    events.extend(chunk.usage.map(UpstreamEvent::Usage));
    Ok(())
}

/// The human part of a provider's error object or error body, in any of the shapes
/// they use: `{"error":{"message"}}`, `{"message"}`, `{"error":"text"}`.
pub fn error_message(value: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let found = value
        .get("error")
        .and_then(|e| e.get("message").and_then(text).or_else(|| text(e)))
        .or_else(|| value.get("message").and_then(text))
        .or_else(|| text(value));
    found.unwrap_or_else(|| truncate(&value.to_string(), 300))
}

/// The error code in a provider's error body, e.g. `insufficient_quota`.
pub fn error_code(value: &serde_json::Value) -> Option<String> {
    let error = value.get("error").unwrap_or(value);
    let code = error.get("code").or_else(|| error.get("type"))?;
    code.as_str()
        .map(str::to_owned)
        .or_else(|| Some(code.to_string()))
}

/// At most `max` characters, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpstreamEvent::*;

    fn check(data: &str, expected: &[UpstreamEvent]) {
        assert_eq!(parse_data(data).unwrap(), expected, "{data}");
    }

    fn usage(prompt: u32, completion: u32) -> UpstreamEvent {
        Usage(WireUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: Some(prompt + completion),
        })
    }

    #[test]
    fn openai_chunks_and_usage_chunk() {
        check(
            r#"{"id":"c","object":"chat.completion.chunk","service_tier":"default","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"你"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}"#,
            &[Content("你".into())],
        );
        check(
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
            &[usage(9, 3)],
        );
        check("[DONE]", &[Done]);
    }

    #[test]
    fn deepseek_first_delta_and_usage_on_last_choice() {
        check(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            &[],
        );
        check(
            r#"{"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":5}}"#,
            &[Finish("stop".into()), usage(5, 2)],
        );
    }

    #[test]
    fn reasoner_reasoning_then_content() {
        check(
            r#"{"choices":[{"delta":{"content":null,"reasoning_content":"想"}}]}"#,
            &[Reasoning("想".into())],
        );
        check(
            r#"{"choices":[{"delta":{"content":"答","reasoning_content":null}}]}"#,
            &[Content("答".into())],
        );
    }

    #[test]
    fn ark_hunyuan_and_proxy_oddities() {
        // Ark: no finish_reason key at all; unknown service_tier.
        check(
            r#"{"choices":[{"index":0,"delta":{"content":"a","role":"assistant"}}],"service_tier":"on_demand","usage":null}"#,
            &[Content("a".into())],
        );
        // Hunyuan: note field, empty reasoning on every delta.
        check(
            r#"{"note":"以上内容为AI生成","system_fingerprint":"","choices":[{"delta":{"role":"assistant","content":"b","reasoning_content":""}}]}"#,
            &[Content("b".into())],
        );
        // Proxies: finish_reason "" and unknown values.
        check(
            r#"{"choices":[{"delta":{"content":"c"},"finish_reason":""}]}"#,
            &[Content("c".into())],
        );
        check(
            r#"{"choices":[{"delta":{},"finish_reason":"content_filter_v2"}]}"#,
            &[Finish("content_filter_v2".into())],
        );
        check(r#"{"choices":null}"#, &[]);
    }

    #[test]
    fn error_inside_a_200_stream() {
        check(
            r#"{"error":{"message":"Internal error","type":"server_error","code":null}}"#,
            &[Error("Internal error".into())],
        );
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        assert!(parse_data("{not json").is_err());
        assert!(parse_data("").is_err());
    }

    #[test]
    fn error_bodies_of_every_provider() {
        let message = |json: &str| error_message(&serde_json::from_str(json).unwrap());
        let code = |json: &str| error_code(&serde_json::from_str(json).unwrap());
        let openai = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert_eq!(message(openai), "You exceeded your current quota");
        assert_eq!(code(openai).as_deref(), Some("insufficient_quota"));
        let siliconflow = r#"{"message":"Request was rejected due to rate limiting. Details: TPM limit reached.","data":null}"#;
        assert_eq!(
            message(siliconflow),
            "Request was rejected due to rate limiting. Details: TPM limit reached."
        );
        let busy = r#"{"code":50508,"message":"System is too busy now."}"#;
        assert_eq!(code(busy).as_deref(), Some("50508"));
        assert_eq!(
            message(r#"{"error":"Rate Limit Reached"}"#),
            "Rate Limit Reached"
        );
    }

    #[test]
    fn request_body_leaves_out_unset_options() {
        let messages = [ChatMessage {
            role: crate::protocol::Role::User,
            content: "hi".into(),
        }];
        let body = ChatCompletionRequest {
            model: "m",
            messages: messages.iter().map(WireMessage::from).collect(),
            stream: true,
            temperature: Some(0.8),
            max_tokens: Some(65535),
            top_p: None,
            seed: None,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            enable_thinking: None,
            thinking: None,
            thinking_budget: None,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0.8,"max_tokens":65535,"stream_options":{"include_usage":true}}"#
        );
    }
}
