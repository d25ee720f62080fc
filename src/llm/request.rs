//! From a client's request body to a [`ChatJob`] the client can run: parsed, checked
//! against the configuration, defaults filled in. Every refusal names the problem.

use super::config::{LlmConfig, Model};
use crate::protocol::{ChatMessage, ChatRequest, Rejection};

/// A validated request, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatJob {
    pub provider: String,
    pub base_url: String,
    pub model: Model,
    pub messages: Vec<ChatMessage>,
    pub temperature: f32,
    pub top_p: Option<f32>,
    pub max_tokens: u32,
    pub seed: Option<i64>,
}

fn reject(code: &str, field: Option<String>, message: String) -> Rejection {
    Rejection {
        code: code.to_owned(),
        field,
        message,
    }
}

/// Parses a JSON body. Roles are checked before the typed parse so that an unknown role
/// is reported as such, with its position.
pub fn parse_body(bytes: &[u8]) -> Result<ChatRequest, Rejection> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
        reject(
            "invalid_json",
            None,
            format!("request body is not valid JSON: {err}"),
        )
    })?;
    let Some(messages) = value.get("messages") else {
        return Err(reject(
            "no_messages",
            Some("messages".into()),
            "messages is required".into(),
        ));
    };
    if let Some(list) = messages.as_array() {
        for (index, message) in list.iter().enumerate() {
            let role = message.get("role").and_then(|r| r.as_str());
            if let Some(role) = role.filter(|r| !matches!(*r, "system" | "user" | "assistant")) {
                return Err(reject(
                    "unknown_role",
                    Some(format!("messages[{index}].role")),
                    format!(
                        "messages[{index}].role {role:?} is not one of system, user, assistant"
                    ),
                ));
            }
        }
    }
    serde_json::from_value(value).map_err(|err| {
        reject(
            "invalid_request",
            None,
            format!("request body does not match the schema: {err}"),
        )
    })
}

/// Checks a parsed request against the configuration and fills in the defaults.
pub fn resolve(config: &LlmConfig, request: ChatRequest) -> Result<ChatJob, Rejection> {
    if request.messages.is_empty() {
        return Err(reject(
            "no_messages",
            Some("messages".into()),
            "messages must not be empty".into(),
        ));
    }
    if let Some(index) = request
        .messages
        .iter()
        .position(|m| m.content.trim().is_empty())
    {
        return Err(reject(
            "empty_content",
            Some(format!("messages[{index}].content")),
            format!("messages[{index}].content is empty"),
        ));
    }
    let provider_id = request
        .provider
        .as_deref()
        .unwrap_or(&config.default_provider);
    let Some(provider) = config.provider(provider_id) else {
        let known: Vec<&str> = config.providers.iter().map(|p| p.id.as_str()).collect();
        return Err(reject(
            "unknown_provider",
            Some("provider".into()),
            format!(
                "provider {provider_id:?} is not available (available: {})",
                known.join(", ")
            ),
        ));
    };
    let model_id = request.model.as_deref().unwrap_or(&provider.default_model);
    let Some(model) = provider.model(model_id) else {
        let known: Vec<&str> = provider.models.iter().map(|m| m.id.as_str()).collect();
        return Err(reject(
            "unknown_model",
            Some("model".into()),
            format!(
                "model {model_id:?} is not offered by {} (offered: {})",
                provider.id,
                known.join(", ")
            ),
        ));
    };
    let temperature = request.temperature.unwrap_or(config.defaults.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(reject(
            "invalid_temperature",
            Some("temperature".into()),
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    if let Some(top_p) = request.top_p {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(reject(
                "invalid_top_p",
                Some("top_p".into()),
                format!("top_p must be greater than 0 and at most 1, got {top_p}"),
            ));
        }
    }
    let max_tokens = match request.max_tokens {
        Some(n) if n < 1 || n > model.max_output_tokens => {
            return Err(reject(
                "invalid_max_tokens",
                Some("max_tokens".into()),
                format!(
                    "max_tokens must be between 1 and {} for {}, got {n}",
                    model.max_output_tokens, model.id
                ),
            ));
        }
        Some(n) => n,
        None => config.defaults.max_tokens.min(model.max_output_tokens),
    };
    Ok(ChatJob {
        provider: provider.id.clone(),
        base_url: provider.base_url.clone(),
        model,
        messages: request.messages,
        temperature,
        top_p: request.top_p,
        max_tokens,
        seed: request.seed.or(config.defaults.seed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config() -> LlmConfig {
        let env: HashMap<String, String> = [("DEEPSEEK_API_KEY", "k")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LlmConfig::from_parts(include_str!("../../Leptos.toml"), &env).unwrap()
    }

    /// Runs a body through parsing and resolving; returns the refusal's code and field.
    fn check_rejected(body: &str, code: &str, field: Option<&str>) {
        let result = parse_body(body.as_bytes()).and_then(|r| resolve(&config(), r));
        let rejection = result.expect_err(body);
        assert_eq!(rejection.code, code, "{body}: {}", rejection.message);
        assert_eq!(rejection.field.as_deref(), field, "{body}");
    }

    const HI: &str = r#"[{"role":"user","content":"hi"}]"#;

    #[test]
    fn every_bad_input_is_named() {
        check_rejected("{", "invalid_json", None);
        check_rejected("[]", "no_messages", Some("messages"));
        check_rejected(r#"{"messages":[]}"#, "no_messages", Some("messages"));
        check_rejected(
            r#"{"messages":[{"role":"user","content":"a"},{"role":"robot","content":"b"}]}"#,
            "unknown_role",
            Some("messages[1].role"),
        );
        check_rejected(
            r#"{"messages":[{"role":"user","content":"  "}]}"#,
            "empty_content",
            Some("messages[0].content"),
        );
        check_rejected(r#"{"messages":"hi"}"#, "invalid_request", None);
        for t in ["-0.1", "2.01"] {
            check_rejected(
                &format!(r#"{{"messages":{HI},"temperature":{t}}}"#),
                "invalid_temperature",
                Some("temperature"),
            );
        }
        check_rejected(
            &format!(r#"{{"messages":{HI},"temperature":"hot"}}"#),
            "invalid_request",
            None,
        );
        for p in ["0", "1.5", "-1"] {
            check_rejected(
                &format!(r#"{{"messages":{HI},"top_p":{p}}}"#),
                "invalid_top_p",
                Some("top_p"),
            );
        }
        check_rejected(
            &format!(r#"{{"messages":{HI},"max_tokens":0}}"#),
            "invalid_max_tokens",
            Some("max_tokens"),
        );
        // deepseek-chat may write at most 8192 tokens.
        check_rejected(
            &format!(r#"{{"messages":{HI},"max_tokens":8193}}"#),
            "invalid_max_tokens",
            Some("max_tokens"),
        );
        check_rejected(
            &format!(r#"{{"messages":{HI},"max_tokens":-5}}"#),
            "invalid_request",
            None,
        );
        check_rejected(
            &format!(r#"{{"messages":{HI},"provider":"moonshot"}}"#),
            "unknown_provider",
            Some("provider"),
        );
        check_rejected(
            &format!(r#"{{"messages":{HI},"model":"gpt-9"}}"#),
            "unknown_model",
            Some("model"),
        );
    }

    #[test]
    fn defaults_are_filled_in() {
        let request = parse_body(format!(r#"{{"messages":{HI}}}"#).as_bytes()).unwrap();
        let job = resolve(&config(), request).unwrap();
        assert_eq!(job.provider, "deepseek");
        assert_eq!(job.model.id, "deepseek-chat");
        assert_eq!(job.temperature, 0.8);
        // 65535 by default, but never above what the model can write.
        assert_eq!(job.max_tokens, 8192);
        assert_eq!(job.seed, None);
        assert_eq!(job.top_p, None);

        let body = format!(
            r#"{{"messages":{HI},"model":"deepseek-reasoner","temperature":0,"top_p":1,"seed":7}}"#
        );
        let job = resolve(&config(), parse_body(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(job.max_tokens, 65535);
        assert_eq!(
            (job.temperature, job.top_p, job.seed),
            (0.0, Some(1.0), Some(7))
        );
    }
}
