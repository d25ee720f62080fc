//! The state every handler and server function shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::sync::watch;

use crate::api::{ModelInfo, ProviderInfo, ServerInfo};
use crate::llm::{keys, LlmClient, LlmConfig, Shutdown};

#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub llm: Arc<LlmClient>,
    shutdown: Arc<watch::Sender<bool>>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl AppState {
    pub fn new(leptos_options: LeptosOptions, llm: LlmConfig) -> Result<Self, reqwest::Error> {
        let (shutdown, _) = watch::channel(false);
        Ok(AppState {
            leptos_options,
            llm: Arc::new(LlmClient::new(Arc::new(llm))?),
            shutdown: Arc::new(shutdown),
        })
    }

    /// A receiver that flips when the server begins to shut down.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.subscribe()
    }

    /// Tells every open stream to end (they send an `error` frame and close).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// The configuration as the browser may see it: keys masked.
    pub fn server_info(&self) -> ServerInfo {
        let llm = self.llm.config();
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
                })
                .collect(),
            keys: if llm.is_demo() {
                Vec::new()
            } else {
                keys::mask_all(&p.keys)
            },
        });
        ServerInfo {
            demo: llm.is_demo(),
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
}
