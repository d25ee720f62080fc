//! Request shaping per provider, in one place: from a [`ChatJob`] to the body sent to
//! `POST {base_url}/chat/completions`. What each model accepts comes from its row in the
//! model table (`Leptos.toml`, [`Shaping`]), never from a branch on a provider's name:
//!
//! - 深度思考: `enable_thinking` (DashScope, SiliconFlow), `thinking.type` (Ark), or
//!   another model (DeepSeek: `request::resolve` has already put the reasoner in the
//!   job, so its price and limits apply); `thinking_budget` where the model has one;
//! - parameters the model rejects are left out, and the log names them;
//! - consecutive messages of one role are joined where the model requires alternation;
//! - `stream_options.include_usage` only where accepted;
//! - a cut answer to continue goes last, as the assistant's text: with `"prefix": true`
//!   (DeepSeek's prefix completion), `"partial": true` (DashScope's partial mode), or
//!   plain.
//!
//! Reasoning never goes back in the history: [`ChatMessage`] has only a role and a
//! content, so a client's `reasoning_content` is dropped when the body is parsed.

use std::borrow::Cow;

use super::config::{Continuation, Shaping, Thinking};
use super::request::{ChatJob, Continued};
use super::wire::{ChatCompletionRequest, StreamOptions, ThinkingSwitch, WireMessage};
use crate::protocol::ChatMessage;

/// The provider request body for `job`.
pub fn request_body(job: &ChatJob) -> ChatCompletionRequest<'_> {
    let shaping = &job.model.shaping;
    let mut dropped: Vec<&str> = Vec::new();
    let mut keep = |name: &'static str, set: bool| {
        let rejected = set && shaping.rejects(name);
        if rejected {
            dropped.push(name);
        }
        set && !rejected
    };
    let temperature = Some(job.temperature).filter(|_| keep("temperature", true));
    let max_tokens = Some(job.max_tokens).filter(|_| keep("max_tokens", true));
    let top_p = job.top_p.filter(|_| keep("top_p", true));
    let seed = job.seed.filter(|_| keep("seed", true));
    if !dropped.is_empty() {
        tracing::info!(
            model = %job.model.id,
            dropped = %dropped.join(", "),
            "left out parameters the model rejects"
        );
    }
    let (enable_thinking, thinking, thinking_budget) = thinking_fields(job, shaping);
    ChatCompletionRequest {
        model: &job.model.id,
        messages: wire_messages(job),
        stream: true,
        temperature,
        max_tokens,
        top_p,
        seed,
        stream_options: shaping.include_usage.then_some(StreamOptions {
            include_usage: true,
        }),
        enable_thinking,
        thinking,
        thinking_budget,
    }
}

type ThinkingFields = (Option<bool>, Option<ThinkingSwitch>, Option<u32>);

/// The 深度思考 switch as this model takes it; nothing when the request left it unset.
fn thinking_fields(job: &ChatJob, shaping: &Shaping) -> ThinkingFields {
    let Some(on) = job.thinking else {
        return (None, None, None);
    };
    let budget = shaping.thinking_budget.filter(|_| on);
    match &shaping.thinking {
        Some(Thinking::EnableFlag) => (Some(on), None, budget),
        Some(Thinking::TypeSwitch) => {
            let kind = if on { "enabled" } else { "disabled" };
            (None, Some(ThinkingSwitch { kind }), budget)
        }
        Some(Thinking::Always) if !on => {
            tracing::info!(model = %job.model.id, "this model always thinks; thinking off is ignored");
            (None, None, None)
        }
        // `Model`: the job already names the model to send. `None`: `resolve` refused
        // thinking on, and thinking off needs nothing.
        _ => (None, None, None),
    }
}

/// The history, then the cut answer to continue, if any.
fn wire_messages(job: &ChatJob) -> Vec<WireMessage<'_>> {
    let history = messages(&job.messages, job.model.shaping.merge_same_role);
    let mut wire: Vec<WireMessage<'_>> = match history {
        Cow::Borrowed(messages) => messages.iter().map(WireMessage::from).collect(),
        Cow::Owned(messages) => messages
            .into_iter()
            .map(|m| WireMessage {
                role: m.role.as_str(),
                content: Cow::Owned(m.content),
                prefix: None,
                partial: None,
            })
            .collect(),
    };
    if let Some(Continued { mode, text }) = &job.continued {
        wire.push(WireMessage {
            role: "assistant",
            content: Cow::Borrowed(text),
            prefix: (*mode == Continuation::Prefix).then_some(true),
            partial: (*mode == Continuation::Partial).then_some(true),
        });
    }
    wire
}

/// The history as sent: with `merge`, consecutive messages of one role become one, their
/// contents joined by a blank line.
fn messages(messages: &[ChatMessage], merge: bool) -> Cow<'_, [ChatMessage]> {
    let alternates = messages.windows(2).all(|w| w[0].role != w[1].role);
    if !merge || alternates {
        return Cow::Borrowed(messages);
    }
    let mut merged: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for message in messages {
        match merged.last_mut() {
            Some(last) if last.role == message.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => merged.push(message.clone()),
        }
    }
    Cow::Owned(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::llm::config::tests::SETTINGS;
    use crate::llm::request::{parse_body, resolve};
    use crate::llm::LlmConfig;

    fn config() -> LlmConfig {
        let keys = [
            ("SILICONFLOW_API_KEY", "k"),
            ("DEEPSEEK_API_KEY", "k"),
            ("QWEN_API_KEY", "k"),
            ("DOUBAO_API_KEY", "k"),
            ("HUNYUAN_API_KEY", "k"),
            ("CUSTOM_API_KEY", "k"),
        ];
        LlmConfig::from_parts(SETTINGS, keys).unwrap()
    }

    /// The body we would send for a client's request body.
    fn shaped(client_body: Value) -> Value {
        let request = parse_body(client_body.to_string().as_bytes()).unwrap();
        let job = resolve(&config(), request).unwrap();
        serde_json::to_value(request_body(&job)).unwrap()
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    /// DeepSeek, https://api-docs.deepseek.com/zh-cn/guides/reasoning_model (推理模型):
    /// thinking is the `deepseek-reasoner` model; temperature and top_p are "不支持的参数"
    /// (ignored), a `reasoning_content` in the input messages is a 400, so the round-2
    /// history is `[user, {assistant, content}, user]`. Consecutive same-role messages were
    /// refused by the reasoner ("does not support successive user or assistant messages").
    /// `stream_options.include_usage`: https://api-docs.deepseek.com/zh-cn/api/create-chat-completion
    #[test]
    fn deepseek_thinking_is_the_reasoner() {
        let body = shaped(json!({
            "provider": "deepseek",
            "model": "deepseek-chat",
            "thinking": true,
            "temperature": 0.7,
            "top_p": 0.9,
            "messages": [
                user("9.11 and 9.8, which is greater?"),
                {"role": "assistant", "content": "9.8 is greater.",
                 "reasoning_content": "Compare the tenths: 1 < 8."},
                user("How many Rs are there"),
                user("in the word 'strawberry'?"),
            ],
        }));
        let expected = json!({
            "model": "deepseek-reasoner",
            "messages": [
                {"role": "user", "content": "9.11 and 9.8, which is greater?"},
                {"role": "assistant", "content": "9.8 is greater."},
                {"role": "user", "content": "How many Rs are there\n\nin the word 'strawberry'?"},
            ],
            "stream": true,
            "max_tokens": 65535,
            "stream_options": {"include_usage": true},
        });
        assert_eq!(body, expected);

        // Thinking off (or unset) stays on deepseek-chat, nothing added.
        let off =
            shaped(json!({"provider": "deepseek", "thinking": false, "messages": [user("hi")]}));
        assert_eq!(off["model"], "deepseek-chat");
        assert_eq!(off["temperature"], json!(0.8f32));
        assert!(off.get("enable_thinking").is_none() && off.get("thinking").is_none());
    }

    /// DashScope compatible mode, https://help.aliyun.com/zh/model-studio/deep-thinking
    /// (深度思考): `extra_body={"enable_thinking": True}` with `model="qwen-plus"`,
    /// `stream=True`, `stream_options={"include_usage": True}` — extra_body fields are sent
    /// top-level in the JSON body.
    #[test]
    fn dashscope_qwen3_enable_thinking() {
        let body = shaped(json!({
            "provider": "qwen",
            "model": "qwen-plus",
            "thinking": true,
            "messages": [user("你是谁")],
        }));
        let expected = json!({
            "model": "qwen-plus",
            "messages": [{"role": "user", "content": "你是谁"}],
            "stream": true,
            "temperature": 0.8f32,
            "max_tokens": 32768,
            "stream_options": {"include_usage": true},
            "enable_thinking": true,
        });
        assert_eq!(body, expected);
        let off =
            shaped(json!({"provider": "qwen", "thinking": false, "messages": [user("你是谁")]}));
        assert_eq!(off["enable_thinking"], json!(false));
    }

    /// A cut answer to continue, as each provider documents it:
    /// - DeepSeek, https://api-docs.deepseek.com/zh-cn/guides/chat_prefix_completion
    ///   (对话前缀续写): the last message's role is `assistant`, with `"prefix": true`;
    /// - DashScope, https://help.aliyun.com/zh/model-studio/partial-mode (指定前缀续写):
    ///   the last message's role is `assistant`, with `"partial": true`;
    /// - otherwise the text as a plain trailing assistant message.
    #[test]
    fn a_cut_answer_goes_last_as_the_assistants_text() {
        let request = parse_body(
            json!({"provider": "deepseek", "messages": [user("写一首诗")]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let mut job = resolve(&config(), request).unwrap();
        for (mode, flag) in [
            (Continuation::Prefix, Some("prefix")),
            (Continuation::Partial, Some("partial")),
            (Continuation::Assistant, None),
        ] {
            job.continued = Some(Continued {
                mode,
                text: "春眠不觉晓，".into(),
            });
            let body = serde_json::to_value(request_body(&job)).unwrap();
            let mut last = json!({"role": "assistant", "content": "春眠不觉晓，"});
            if let Some(flag) = flag {
                last[flag] = json!(true);
            }
            assert_eq!(
                body["messages"],
                json!([user("写一首诗"), last]),
                "{mode:?}"
            );
        }
    }

    /// SiliconFlow, https://docs.siliconflow.cn/cn/api-reference/chat-completions/chat-completions
    /// (创建对话请求): `enable_thinking` (boolean, Qwen3 and other hybrid models) and
    /// `thinking_budget` (integer, 128–32768), both top-level.
    #[test]
    fn siliconflow_qwen3_enable_thinking_with_budget() {
        let body = shaped(json!({
            "provider": "siliconflow",
            "model": "Qwen/Qwen3-8B",
            "thinking": true,
            "max_tokens": 4096,
            "messages": [user("9.9和9.11哪个大")],
        }));
        let expected = json!({
            "model": "Qwen/Qwen3-8B",
            "messages": [{"role": "user", "content": "9.9和9.11哪个大"}],
            "stream": true,
            "temperature": 0.8f32,
            "max_tokens": 4096,
            "stream_options": {"include_usage": true},
            "enable_thinking": true,
            "thinking_budget": 4096,
        });
        assert_eq!(body, expected);
        // Off: the switch, no budget.
        let off = shaped(json!({
            "provider": "siliconflow", "model": "Qwen/Qwen3-8B", "thinking": false,
            "messages": [user("hi")],
        }));
        assert_eq!(off["enable_thinking"], json!(false));
        assert!(off.get("thinking_budget").is_none());
    }

    /// Volcengine Ark, https://www.volcengine.com/docs/82379/1494384 (对话(Chat) API) and
    /// https://www.volcengine.com/docs/82379/1449737 (深度思考): `"thinking": {"type":
    /// "enabled" | "disabled" | "auto"}` for doubao-seed-1.6 models.
    #[test]
    fn doubao_thinking_type_enabled_and_disabled() {
        for (on, kind) in [(true, "enabled"), (false, "disabled")] {
            let body = shaped(json!({
                "provider": "doubao",
                "thinking": on,
                "messages": [user("9.9和9.11哪个大")],
            }));
            let expected = json!({
                "model": "doubao-seed-1.6-flash",
                "messages": [{"role": "user", "content": "9.9和9.11哪个大"}],
                "stream": true,
                "temperature": 0.8f32,
                "max_tokens": 32768,
                "stream_options": {"include_usage": true},
                "thinking": {"type": kind},
            });
            assert_eq!(body, expected, "{kind}");
        }
        // Unset: the model's own default (Ark: enabled for seed-1.6), nothing sent.
        let unset = shaped(json!({"provider": "doubao", "messages": [user("hi")]}));
        assert!(unset.get("thinking").is_none());
    }

    /// A model whose row says `rejects = ["top_p", "seed"]`, `include_usage = false`:
    /// those are left out (and logged); the rest is the plain OpenAI body.
    #[test]
    fn rejected_parameters_and_stream_options_are_left_out() {
        let body = shaped(json!({
            "provider": "custom",
            "model": "fake-strict",
            "top_p": 0.5,
            "seed": 7,
            "messages": [user("a"), user("b")],
        }));
        let expected = json!({
            "model": "fake-strict",
            "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "stream": true,
            "temperature": 0.8f32,
            "max_tokens": 65535,
        });
        assert_eq!(body, expected);
        // The same parameters reach a model that takes them.
        let plain = shaped(json!({
            "provider": "custom", "model": "fake-priced", "top_p": 0.5, "seed": 7,
            "messages": [user("a")],
        }));
        assert_eq!(
            (plain["top_p"].clone(), plain["seed"].clone()),
            (json!(0.5), json!(7))
        );
        assert_eq!(plain["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn thinking_on_for_a_model_that_cannot_think_is_refused() {
        let body = json!({"provider": "hunyuan", "thinking": true, "messages": [user("hi")]});
        let request = parse_body(body.to_string().as_bytes()).unwrap();
        let rejection = resolve(&config(), request).unwrap_err();
        assert_eq!(rejection.code, "thinking_unsupported");
        assert_eq!(rejection.field.as_deref(), Some("thinking"));
        assert!(
            rejection.message.contains("hunyuan-lite"),
            "{}",
            rejection.message
        );
        // Off is always fine.
        let off =
            shaped(json!({"provider": "hunyuan", "thinking": false, "messages": [user("hi")]}));
        assert!(off.get("enable_thinking").is_none());
    }
}
