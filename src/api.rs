//! Leptos server functions and the data they return. Compiled for both targets: the
//! browser gets a typed client stub, the server runs the body.

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
    use futures::StreamExt;
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
        Ok(frames) => frames,
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
}
