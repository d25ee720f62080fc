//! Leptos server functions and the data they return. Compiled for both targets: the
//! browser gets a typed client stub, the server runs the body.
//!
//! The settings tab reads [`get_server_info`] (the configuration, rendered on the server)
//! and [`get_key_states`] (how each key stands now, asked by the browser).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::protocol::{ChatRequest, Cost, Usage};

/// What the server is configured with, safe to show: keys appear only masked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServerInfo {
    /// No key is configured; the built-in offline demo model answers.
    pub demo: bool,
    /// Access codes exist: every API call needs one (`Authorization: Bearer`).
    #[serde(default)]
    pub access_required: bool,
    pub default_provider: String,
    pub providers: Vec<ProviderInfo>,
    pub temperature: f32,
    pub max_tokens: u32,
    pub seed: Option<i64>,
    pub timeout_secs: u64,
    pub max_retries: u32,
    pub max_body_bytes: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProviderInfo {
    pub id: String,
    pub label: String,
    pub base_url: String,
    pub default_model: String,
    pub models: Vec<ModelInfo>,
    /// `key#1 ••••3f9a`: never the key itself.
    pub keys: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    /// CNY per million tokens, as configured (`"2"`).
    pub input_price: String,
    pub output_price: String,
    pub max_output_tokens: u32,
    /// The 深度思考 switch applies (the model table says how to send it).
    #[serde(default)]
    pub can_think: bool,
    /// The context window in tokens (prompt + answer).
    #[serde(default)]
    pub context_tokens: u32,
    /// How 深度思考 reaches the model, in words: `切换模型 deepseek-reasoner`,
    /// `enable_thinking`, `thinking.type`, `始终思考`; `None`: it cannot think.
    #[serde(default)]
    pub thinking: Option<String>,
    /// `thinking_budget` sent with thinking on, where the provider takes one.
    #[serde(default)]
    pub thinking_budget: Option<u32>,
    /// Who answers when this model cannot, in order: `provider:model`.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// How this model finishes an answer another left cut, in words; `None`: it does not.
    #[serde(default)]
    pub continuation: Option<String>,
}

/// One provider's keys as they stand now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProviderKeys {
    /// The provider's id (`ProviderInfo::id`).
    pub provider: String,
    pub keys: Vec<KeyStatus>,
}

/// One key's live state: never the key itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyStatus {
    /// `key#1 ••••3f9a`, the tail for admins only (`key#1 ••••` otherwise).
    pub id_masked: String,
    /// The account label (`{ID}_API_KEY_N_ACCOUNT`); empty when unlabelled.
    pub account: String,
    pub state: KeyStateKind,
    /// When the cooldown or parking ends, in unix milliseconds; `None` in rotation.
    #[serde(default)]
    pub until_unix_ms: Option<i64>,
    /// Why the key is parked; `None` unless parked.
    #[serde(default)]
    pub reason: Option<ParkedBecause>,
}

/// Whether a key is used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyStateKind {
    /// In rotation: requests may use it.
    Rotation,
    /// Its account is rate limited (a 429) until `until_unix_ms`.
    Cooling,
    /// Refused, or its account out of balance, until `until_unix_ms`.
    Parked,
}

impl KeyStateKind {
    /// The name the page and its tests use (`data-state`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStateKind::Rotation => "rotation",
            KeyStateKind::Cooling => "cooling",
            KeyStateKind::Parked => "parked",
        }
    }
}

/// Why a key is parked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParkedBecause {
    /// The provider refused the key (401, or an invalid-key code).
    Rejected,
    /// The key's account is out of balance (402, or `insufficient_quota`).
    OutOfBalance,
    /// Another instance parked it; why is not shared.
    Elsewhere,
}

impl ParkedBecause {
    pub fn label(self) -> &'static str {
        match self {
            ParkedBecause::Rejected => "密钥被拒",
            ParkedBecause::OutOfBalance => "余额不足",
            ParkedBecause::Elsewhere => "其他实例停用",
        }
    }
}

impl ServerInfo {
    pub fn provider(&self, id: &str) -> Option<&ProviderInfo> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// Model `model` of provider `provider`, if the server offers it.
    pub fn model(&self, provider: &str, model: &str) -> Option<&ModelInfo> {
        self.provider(provider)?
            .models
            .iter()
            .find(|m| m.id == model)
    }

    /// The most tokens an answer of this model may have: the model's output limit, else
    /// the server's default `max_tokens`.
    pub fn output_limit(&self, provider: &str, model: &str) -> u32 {
        self.model(provider, model)
            .map_or(self.max_tokens, |m| m.max_output_tokens)
    }

    /// Whether the 深度思考 switch applies to this model.
    pub fn can_think(&self, provider: &str, model: &str) -> bool {
        self.model(provider, model).is_some_and(|m| m.can_think)
    }
}

/// The server's configuration as the settings tab and the chat's parameter panel show it.
#[server(prefix = "/api", endpoint = "server_info", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn get_server_info() -> Result<ServerInfo, ServerFnError> {
    let state = expect_context::<crate::server::AppState>();
    let access_required = state
        .store
        .has_codes()
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))?;
    Ok(server_info(state.llm.config(), access_required))
}

/// The configuration as the browser may see it: keys masked.
#[cfg(feature = "ssr")]
fn server_info(llm: &crate::llm::LlmConfig, access_required: bool) -> ServerInfo {
    use crate::llm::keys;

    let providers = llm.providers.iter().map(|p| ProviderInfo {
        id: p.id.clone(),
        label: p.label.clone(),
        base_url: p.base_url.clone(),
        default_model: p.default_model.clone(),
        models: p
            .models
            .iter()
            .map(|m| ModelInfo {
                id: m.id.clone(),
                input_price: m.price.input_display(),
                output_price: m.price.output_display(),
                max_output_tokens: m.max_output_tokens,
                can_think: m.shaping.switchable(),
                context_tokens: m.context_tokens,
                thinking: m.shaping.thinking.as_ref().map(thinking_label),
                thinking_budget: m.shaping.thinking_budget,
                fallback: m.chain.fallback.iter().map(ToString::to_string).collect(),
                continuation: m.chain.continuation.map(continuation_label),
            })
            .collect(),
        // A page behind access codes is rendered for anyone who loads it: no key tails.
        keys: match (llm.is_demo(), access_required) {
            (true, _) => Vec::new(),
            (false, true) => (0..p.keys.len())
                .map(|i| format!("{} ••••", keys::key_id(i)))
                .collect(),
            (false, false) => keys::mask_all(&p.keys),
        },
    });
    ServerInfo {
        demo: llm.is_demo(),
        access_required,
        default_provider: llm.default_provider.clone(),
        providers: providers.collect(),
        temperature: llm.defaults.temperature,
        max_tokens: llm.defaults.max_tokens,
        seed: llm.defaults.seed,
        timeout_secs: llm.timeout.as_secs(),
        max_retries: llm.retry.max_retries,
        max_body_bytes: llm.limits.max_body_bytes,
    }
}

/// How the 深度思考 switch reaches a model, in words.
#[cfg(feature = "ssr")]
fn thinking_label(thinking: &crate::llm::config::Thinking) -> String {
    use crate::llm::config::Thinking;
    match thinking {
        Thinking::Model(model) => format!("切换模型 {model}"),
        Thinking::EnableFlag => "enable_thinking".to_owned(),
        Thinking::TypeSwitch => "thinking.type".to_owned(),
        Thinking::Always => "始终思考".to_owned(),
    }
}

/// How a model finishes a cut answer, in words.
#[cfg(feature = "ssr")]
fn continuation_label(continuation: crate::llm::config::Continuation) -> String {
    use crate::llm::config::Continuation;
    match continuation {
        Continuation::Prefix => "前缀续写（prefix）",
        Continuation::Partial => "partial 续写",
        Continuation::Assistant => "接着助手消息续写",
    }
    .to_owned()
}

/// How every provider's keys stand now (rests other instances recorded included), for
/// the settings tab. Key tails only for admins (anyone while the server is open).
#[server(prefix = "/api", endpoint = "key_states", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn get_key_states() -> Result<Vec<ProviderKeys>, ServerFnError> {
    let state = expect_context::<crate::server::AppState>();
    let caller = crate::app::access::caller().await?;
    Ok(state.llm.key_states(caller.is_admin()).await)
}

/// A whole answer, for features that want one reply rather than a stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Completion {
    pub content: String,
    pub finish_reason: String,
    pub usage: Usage,
    pub cost: Cost,
}

/// One answer, not streamed: the same validation, retries, key rotation and costing as
/// `POST /api/chat/stream` (it runs the same stream and collects it). Bad input answers
/// 400, provider failures 502, both with the reason.
#[server(prefix = "/api", endpoint = "chat", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn chat(request: ChatRequest) -> Result<Completion, ServerFnError> {
    use crate::protocol::Frame;
    use leptos_axum::ResponseOptions;

    let state = expect_context::<crate::server::AppState>();
    let response = expect_context::<ResponseOptions>();
    let job = match state.llm.resolve(request).await {
        Ok(job) => job,
        Err(rejection) => {
            response.set_status(axum::http::StatusCode::BAD_REQUEST);
            return Err(ServerFnError::Args(format!(
                "{}: {}",
                rejection.code, rejection.message
            )));
        }
    };
    let caller = leptos_axum::extract::<axum::Extension<crate::server::auth::Caller>>()
        .await
        .map(|axum::Extension(caller)| caller)
        .unwrap_or(crate::server::auth::Caller::Open);
    // One-shot: the request's connection is the only reader, and nothing resumes it.
    let control = crate::llm::Control::unstoppable(state.shutdown_signal());
    let mut frames = match crate::server::billing::start(&state, &caller, job, control).await {
        Ok(chat) => {
            tokio::spawn(chat.relay);
            chat.frames
        }
        Err(turned) => {
            response.set_status(turned.status);
            return Err(ServerFnError::ServerError(turned.rejection.message));
        }
    };
    let mut content = String::new();
    while let Some(frame) = frames.next().await {
        match frame {
            Frame::Chunk { content: text, .. } => content.push_str(&text),
            Frame::Done {
                finish_reason,
                usage,
                cost,
                ..
            } => {
                return Ok(Completion {
                    content,
                    finish_reason,
                    usage,
                    cost,
                });
            }
            Frame::Error { message, .. } => {
                response.set_status(axum::http::StatusCode::BAD_GATEWAY);
                return Err(ServerFnError::ServerError(message));
            }
            Frame::Start { .. }
            | Frame::Retry { .. }
            | Frame::Fallback { .. }
            | Frame::Reasoning { .. } => {}
        }
    }
    response.set_status(axum::http::StatusCode::BAD_GATEWAY);
    Err(ServerFnError::ServerError(
        "the answer ended without a result".into(),
    ))
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    #[test]
    fn the_thinking_switch_shows_for_models_that_can_switch() {
        let llm = crate::llm::LlmConfig::from_parts(
            crate::llm::config::tests::SETTINGS,
            [("DEEPSEEK_API_KEY", "k"), ("HUNYUAN_API_KEY", "k")],
        )
        .unwrap();
        let info = server_info(&llm, false);
        assert!(info.can_think("deepseek", "deepseek-chat"));
        // The reasoner always thinks: nothing to switch.
        assert!(!info.can_think("deepseek", "deepseek-reasoner"));
        assert!(!info.can_think("hunyuan", "hunyuan-lite"));
        assert!(!info.can_think("nope", "deepseek-chat"));
    }

    #[test]
    fn models_say_how_they_think_and_who_follows_them() {
        let llm = crate::llm::LlmConfig::from_parts(
            crate::llm::config::tests::SETTINGS,
            [
                ("DEEPSEEK_API_KEY", "k"),
                ("SILICONFLOW_API_KEY", "k"),
                ("CUSTOM_API_KEY", "k"),
            ],
        )
        .unwrap();
        let info = server_info(&llm, false);
        let model = |p: &str, m: &str| info.model(p, m).unwrap().clone();
        let chat = model("deepseek", "deepseek-chat");
        assert_eq!(chat.thinking.as_deref(), Some("切换模型 deepseek-reasoner"));
        assert_eq!(chat.context_tokens, 131_072);
        let reasoner = model("deepseek", "deepseek-reasoner");
        assert_eq!(reasoner.thinking.as_deref(), Some("始终思考"));
        let qwen3 = model("siliconflow", "Qwen/Qwen3-8B");
        assert_eq!(
            (qwen3.thinking.as_deref(), qwen3.thinking_budget),
            (Some("enable_thinking"), Some(4096))
        );
        let chained = model("custom", "qwen2.5:7b");
        assert_eq!(
            chained.fallback,
            ["custom:fake-strict", "custom:fake-priced"]
        );
        assert_eq!(chained.continuation.as_deref(), Some("接着助手消息续写"));
        let plain = model("custom", "fake-strict");
        assert!(
            plain.fallback.is_empty() && plain.continuation.is_none() && plain.thinking.is_none()
        );
    }
}
