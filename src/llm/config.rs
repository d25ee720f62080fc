//! Configuration of the provider layer: `Leptos.toml` (deployer-editable presets, prices,
//! defaults) overlaid with the environment (keys, overrides), validated once at start-up
//! into an [`LlmConfig`] that the rest of the code trusts.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::cost::Price;
use super::retry::RetryPolicy;

/// The id of the built-in offline provider served when no key is configured.
pub const DEMO_PROVIDER: &str = "demo";

/// Providers whose keys are read from `{ID}_API_KEY…`, in display order.
pub const KEYED_PROVIDERS: [&str; 7] = [
    "siliconflow",
    "deepseek",
    "qwen",
    "doubao",
    "hunyuan",
    "openai",
    "custom",
];

/// `Leptos.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    defaults: RawDefaults,
    limits: RawLimits,
    providers: BTreeMap<String, RawProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    provider: String,
    temperature: f32,
    max_tokens: u32,
    seed: Option<i64>,
    timeout_secs: u64,
    max_retries: u32,
    retry_min_ms: u64,
    retry_max_ms: u64,
    retry_after_cap_secs: u64,
    key_park_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: usize,
    max_messages: usize,
    keep_alive_secs: u64,
    header_read_timeout_secs: u64,
    body_read_timeout_secs: u64,
    max_connections: usize,
    max_streams: usize,
    client_stall_secs: u64,
    shutdown_grace_secs: u64,
    max_stream_secs: u64,
    finish_grace_ms: u64,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default = "default_idle_reader_secs")]
    idle_reader_secs: u64,
    #[serde(default = "default_resume_keep_secs")]
    resume_keep_secs: u64,
    #[serde(default = "default_resume_max_frames")]
    resume_max_frames: usize,
}

fn default_idle_reader_secs() -> u64 {
    30
}

fn default_resume_keep_secs() -> u64 {
    300
}

fn default_resume_max_frames() -> usize {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    label: String,
    base_url: String,
    default_model: String,
    models: Vec<RawModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    input: String,
    output: String,
    max_output_tokens: u32,
    /// The model's context window in tokens (prompt + answer).
    context_tokens: u32,
    /// How the 深度思考 switch reaches this model: `"model:<id>"` (send that model
    /// instead, DeepSeek), `"enable_thinking"` (DashScope, SiliconFlow), `"thinking_type"`
    /// (Ark's `thinking.type`), `"always"` (a reasoning-only model); absent: cannot think.
    #[serde(default)]
    thinking: Option<String>,
    /// `thinking_budget` sent with thinking on, where the provider takes one.
    #[serde(default)]
    thinking_budget: Option<u32>,
    /// Request parameters the model refuses or ignores; left out of the body (and logged).
    #[serde(default)]
    rejects: Vec<String>,
    /// Consecutive messages of one role are joined into one (DeepSeek's reasoner).
    #[serde(default)]
    merge_same_role: bool,
    /// `stream_options.include_usage` is sent (default); false where it is refused.
    #[serde(default = "yes")]
    include_usage: bool,
    /// Who answers when this model cannot, in order: `"provider:model"`, or `"model"`
    /// of the same provider.
    #[serde(default)]
    fallback: Vec<String>,
    /// How a model of the chain is asked to finish an answer this one left cut:
    /// `"prefix"` (DeepSeek's prefix completion), `"partial"` (DashScope's partial
    /// mode), `"assistant"` (the text so far as the last assistant message); absent: a
    /// cut answer is not continued.
    #[serde(default, rename = "continue")]
    continuation: Option<String>,
}

fn yes() -> bool {
    true
}

/// The request parameters a model may reject (`rejects = [...]`).
pub const REJECTABLE: [&str; 4] = ["temperature", "top_p", "seed", "max_tokens"];

/// How a model's thinking is switched (see `RawModel::thinking`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thinking {
    /// Thinking on means sending this other model of the same provider.
    Model(String),
    /// `"enable_thinking": true|false`.
    EnableFlag,
    /// `"thinking": {"type": "enabled"|"disabled"}`.
    TypeSwitch,
    /// The model always thinks; nothing to send.
    Always,
}

/// How requests to a model are shaped (`llm::shape`); all of it from the model table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shaping {
    pub thinking: Option<Thinking>,
    pub thinking_budget: Option<u32>,
    /// Names from [`REJECTABLE`].
    pub rejects: Vec<String>,
    pub merge_same_role: bool,
    pub include_usage: bool,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            thinking: None,
            thinking_budget: None,
            rejects: Vec::new(),
            merge_same_role: false,
            include_usage: true,
        }
    }
}

impl Shaping {
    pub fn can_think(&self) -> bool {
        self.thinking.is_some()
    }

    /// Thinking can be turned on and off (not a model that always thinks).
    pub fn switchable(&self) -> bool {
        self.can_think() && self.thinking != Some(Thinking::Always)
    }

    pub fn rejects(&self, parameter: &str) -> bool {
        self.rejects.iter().any(|r| r == parameter)
    }
}

/// A model a provider serves, with its price and output limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub id: String,
    pub price: Price,
    pub max_output_tokens: u32,
    /// The context window: a prompt of more tokens than this is refused before sending.
    pub context_tokens: u32,
    pub shaping: Shaping,
    pub chain: Chain,
}

/// What happens when a model cannot answer, or is cut off mid-answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chain {
    /// The models tried next, in order (each checked to be served at start-up).
    pub fallback: Vec<ModelRef>,
    /// How this model continues an answer another model left cut; `None`: it cannot.
    pub continuation: Option<Continuation>,
}

/// A model of a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.provider, self.model)
    }
}

/// How a model is asked to go on from text already sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continuation {
    /// DeepSeek's prefix completion (beta): the last message is the assistant's text
    /// with `"prefix": true`.
    Prefix,
    /// DashScope's partial mode: the last message is the assistant's text with
    /// `"partial": true`.
    Partial,
    /// The text so far as the last assistant message, for providers that continue it.
    Assistant,
}

/// A usable provider: it has at least one key (or is the demo).
#[derive(Clone, Debug)]
pub struct Provider {
    pub id: String,
    pub label: String,
    pub base_url: String,
    pub default_model: String,
    pub models: Vec<Model>,
    pub keys: Vec<ProviderKey>,
    /// `{ID}_HTTP2=1`: HTTP/2 over plain http, by prior knowledge (h2c), e.g. to a
    /// gateway on the team's own network. Over https the TLS handshake picks HTTP/2 or
    /// HTTP/1.1 (ALPN) whatever this says.
    pub h2c: bool,
    /// `{ID}_STREAMS_PER_CONNECTION`: the most answers one connection (over HTTP/1.1, one
    /// pool) carries; 100 unless the provider's server allows fewer streams.
    pub streams_per_connection: usize,
}

/// One API key and the provider account it belongs to. Chinese providers rate-limit per
/// account, not per key, so keys of one account share one cooldown.
#[derive(Clone, Debug)]
pub struct ProviderKey {
    pub secret: SecretString,
    /// `{ID}_API_KEY[_N]_ACCOUNT`; keys without a label share the account `""`.
    pub account: String,
}

impl Provider {
    /// The model by id: only models listed in the settings are served (a model without a
    /// known price could spend without limit).
    pub fn model(&self, id: &str) -> Option<Model> {
        self.models.iter().find(|m| m.id == id).cloned()
    }
}

/// Defaults applied to a request that leaves a parameter out.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub temperature: f32,
    pub max_tokens: u32,
    pub seed: Option<i64>,
}

/// Limits on what a client may send and hold, and stream housekeeping. Each is a key of
/// `[limits]` in `Leptos.toml`, overridden by `STREAMAI_<KEY>` in the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Request bodies, every endpoint. A declared larger `Content-Length` gets 413 at once.
    pub max_body_bytes: usize,
    /// Messages in one chat request.
    pub max_messages: usize,
    pub keep_alive: Duration,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// … and its body within this time.
    pub body_read_timeout: Duration,
    /// Open connections; beyond it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// Concurrent streaming answers; beyond it a new one is answered 503.
    pub max_streams: usize,
    /// A client that reads nothing for this long is dropped, and its upstream cancelled.
    pub client_stall: Duration,
    /// On shutdown, streams get this long to end before connections are cut.
    pub shutdown_grace: Duration,
    /// The longest one answer may stream.
    pub max_stream: Duration,
    /// After `finish_reason`, how long a provider may stay silent before we say `done`.
    pub finish_grace: Duration,
    /// When non-empty, requests must name one of these in `Host` (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// An answer nobody has read for this long is stopped (its upstream cancelled).
    pub idle_reader: Duration,
    /// How long an answer's frames stay readable (resumable) after it ends.
    pub resume_keep: Duration,
    /// Frames kept per answer; a resume from before the oldest kept one is refused.
    pub resume_max_frames: usize,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// Usable providers in display order; never empty.
    pub providers: Vec<Provider>,
    pub default_provider: String,
    pub defaults: Defaults,
    /// To the first token, and the longest silence allowed between chunks.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// How long a key refused with 401/403 (or out of quota) rests.
    pub key_park: Duration,
    pub limits: Limits,
}

/// Why the configuration was refused at start-up. Messages name the setting to fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("cannot read settings file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("settings file is invalid: {0}")]
    Parse(String),
    #[error("{var} = {value:?} is not valid: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
    #[error("LLM_PROVIDER={0:?} is not a known provider (known: {known})", known = KEYED_PROVIDERS.join(", "))]
    UnknownProvider(String),
    #[error("LLM_PROVIDER={0} but no {key}_API_KEY is set", key = .0.to_uppercase())]
    ProviderWithoutKey(String),
    #[error("model {model:?} is not offered by provider {provider} (offered: {offered})")]
    UnknownModel {
        provider: String,
        model: String,
        offered: String,
    },
}

impl LlmConfig {
    /// Reads `Leptos.toml` (or `$STREAMAI_SETTINGS`) and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var("STREAMAI_SETTINGS").unwrap_or_else(|_| "Leptos.toml".into());
        let text = std::fs::read_to_string(&path).map_err(|err| ConfigError::Read {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_parts(&text, env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Builds the configuration from the settings text and an environment map.
    pub fn from_parts<'a>(
        settings: &str,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<&str, &str> = env.into_iter().collect();
        let raw: RawSettings =
            toml::from_str(settings).map_err(|err| ConfigError::Parse(err.to_string()))?;
        let lookup = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut providers = keyed_providers(&raw, &lookup)?;
        let default_provider = default_provider(&raw, &providers, &lookup)?;
        if default_provider == DEMO_PROVIDER {
            providers.insert(0, demo_provider(&raw, &lookup)?);
        }
        if let Some(model) = lookup("LLM_MODEL") {
            let provider = providers.iter_mut().find(|p| p.id == default_provider);
            let provider = provider.expect("the default provider is in the list");
            set_default_model(provider, model)?;
        }
        check_chains(&mut providers)?;
        let d = &raw.defaults;
        let timeout_secs = env_number(&lookup, "LLM_TIMEOUT_SECS", d.timeout_secs)?;
        if timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                var: "LLM_TIMEOUT_SECS".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(LlmConfig {
            providers,
            default_provider,
            defaults: Defaults {
                temperature: d.temperature,
                max_tokens: d.max_tokens,
                seed: d.seed,
            },
            timeout: Duration::from_secs(timeout_secs),
            retry: retry_policy(d, &lookup)?,
            key_park: Duration::from_secs(d.key_park_secs),
            limits: limits(&raw.limits, &lookup)?,
        })
    }

    /// The provider by id.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// True when the app serves the built-in offline demo model.
    pub fn is_demo(&self) -> bool {
        self.default_provider == DEMO_PROVIDER
    }
}

/// Every preset that has a key in the environment, in display order.
fn keyed_providers<'a>(
    raw: &RawSettings,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Vec<Provider>, ConfigError> {
    let mut providers = Vec::new();
    for id in KEYED_PROVIDERS {
        let keys = keys_from_env(id, lookup);
        if keys.is_empty() {
            continue;
        }
        let raw_provider = raw
            .providers
            .get(id)
            .ok_or_else(|| ConfigError::Parse(format!("[providers.{id}] is missing")))?;
        providers.push(build_provider(id, raw_provider, keys, lookup)?);
    }
    Ok(providers)
}

/// `LLM_PROVIDER` if it names a keyed provider, else the settings' default if keyed,
/// else the first keyed one, else the offline demo.
fn default_provider<'a>(
    raw: &RawSettings,
    providers: &[Provider],
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<String, ConfigError> {
    let keyed = |id: &str| providers.iter().any(|p| p.id == id);
    match lookup("LLM_PROVIDER").map(str::to_lowercase) {
        Some(id) if id != DEMO_PROVIDER && !KEYED_PROVIDERS.contains(&id.as_str()) => {
            Err(ConfigError::UnknownProvider(id))
        }
        Some(id) if id != DEMO_PROVIDER && !keyed(&id) => Err(ConfigError::ProviderWithoutKey(id)),
        Some(id) => Ok(id),
        None if keyed(&raw.defaults.provider) => Ok(raw.defaults.provider.clone()),
        None => Ok(providers
            .first()
            .map_or_else(|| DEMO_PROVIDER.to_owned(), |p| p.id.clone())),
    }
}

/// The offline demo: the fake upstream, served in-process when no key is configured.
fn demo_provider<'a>(
    raw: &RawSettings,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Provider, ConfigError> {
    let raw_demo = raw
        .providers
        .get(DEMO_PROVIDER)
        .ok_or_else(|| ConfigError::Parse(format!("[providers.{DEMO_PROVIDER}] is missing")))?;
    let demo_key = vec![ProviderKey {
        secret: SecretString::from("demo-key-not-secret"),
        account: String::new(),
    }];
    build_provider(DEMO_PROVIDER, raw_demo, demo_key, lookup)
}

/// `LLM_MODEL`: the default provider's default model, if it serves it.
fn set_default_model(provider: &mut Provider, model: &str) -> Result<(), ConfigError> {
    if provider.model(model).is_none() {
        return Err(ConfigError::UnknownModel {
            provider: provider.id.clone(),
            model: model.to_owned(),
            offered: model_ids(provider),
        });
    }
    provider.default_model = model.to_owned();
    Ok(())
}

fn retry_policy<'a>(
    d: &RawDefaults,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<RetryPolicy, ConfigError> {
    let millis = |var: &str, default: u64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(env_number(lookup, var, default)?))
    };
    let retry = RetryPolicy {
        max_retries: env_number(lookup, "LLM_MAX_RETRIES", d.max_retries)?,
        min_delay: millis("LLM_RETRY_MIN_MS", d.retry_min_ms)?,
        max_delay: millis("LLM_RETRY_MAX_MS", d.retry_max_ms)?,
        retry_after_cap: Duration::from_secs(d.retry_after_cap_secs),
    };
    if retry.min_delay > retry.max_delay {
        return Err(ConfigError::Invalid {
            var: "LLM_RETRY_MIN_MS".into(),
            value: retry.min_delay.as_millis().to_string(),
            reason: "must not exceed LLM_RETRY_MAX_MS".into(),
        });
    }
    Ok(retry)
}

fn limits<'a>(
    raw: &RawLimits,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Limits, ConfigError> {
    let secs = |var: &str, default: u64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(
            env_number(lookup, var, default)?.max(1),
        ))
    };
    let allowed_hosts = match lookup("STREAMAI_ALLOWED_HOSTS") {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_lowercase)
            .collect(),
        None => raw.allowed_hosts.iter().map(|h| h.to_lowercase()).collect(),
    };
    Ok(Limits {
        max_body_bytes: env_number(lookup, "STREAMAI_MAX_BODY_BYTES", raw.max_body_bytes)?,
        max_messages: env_number(lookup, "STREAMAI_MAX_MESSAGES", raw.max_messages)?,
        keep_alive: secs("STREAMAI_KEEP_ALIVE_SECS", raw.keep_alive_secs)?,
        header_read_timeout: secs(
            "STREAMAI_HEADER_READ_TIMEOUT_SECS",
            raw.header_read_timeout_secs,
        )?,
        body_read_timeout: secs(
            "STREAMAI_BODY_READ_TIMEOUT_SECS",
            raw.body_read_timeout_secs,
        )?,
        max_connections: env_number(lookup, "STREAMAI_MAX_CONNECTIONS", raw.max_connections)?
            .max(1),
        max_streams: env_number(lookup, "STREAMAI_MAX_STREAMS", raw.max_streams)?.max(1),
        client_stall: secs("STREAMAI_CLIENT_STALL_SECS", raw.client_stall_secs)?,
        shutdown_grace: secs("STREAMAI_SHUTDOWN_GRACE_SECS", raw.shutdown_grace_secs)?,
        max_stream: secs("STREAMAI_MAX_STREAM_SECS", raw.max_stream_secs)?,
        finish_grace: Duration::from_millis(env_number(
            lookup,
            "STREAMAI_FINISH_GRACE_MS",
            raw.finish_grace_ms,
        )?),
        allowed_hosts,
        idle_reader: secs("STREAMAI_IDLE_READER_SECS", raw.idle_reader_secs)?,
        resume_keep: secs("STREAMAI_RESUME_KEEP_SECS", raw.resume_keep_secs)?,
        resume_max_frames: env_number(lookup, "STREAMAI_RESUME_MAX_FRAMES", raw.resume_max_frames)?
            .max(16),
    })
}

fn build_provider<'a>(
    id: &str,
    raw: &RawProvider,
    keys: Vec<ProviderKey>,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Provider, ConfigError> {
    let mut models = raw
        .models
        .iter()
        .map(|m| {
            let price = |which: &str, text: &str| {
                Price::parse_per_million(text).ok_or_else(|| {
                    ConfigError::Parse(format!(
                        "providers.{id} model {}: {which} price {text:?} is not a decimal number",
                        m.id
                    ))
                })
            };
            Ok(Model {
                id: m.id.clone(),
                price: Price::new(price("input", &m.input)?, price("output", &m.output)?),
                max_output_tokens: m.max_output_tokens,
                context_tokens: m.context_tokens.max(m.max_output_tokens),
                shaping: shaping(id, m)?,
                chain: chain(id, m)?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    for free in free_models(id, lookup) {
        if !models.iter().any(|m| m.id == free.id) {
            models.push(free);
        }
    }
    let url_var = format!("{}_BASE_URL", id.to_uppercase());
    let base_url = lookup(&url_var).unwrap_or(&raw.base_url);
    if id != DEMO_PROVIDER && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
    {
        return Err(ConfigError::Invalid {
            var: url_var,
            value: base_url.to_owned(),
            reason: "must start with http:// or https://".into(),
        });
    }
    let provider = Provider {
        id: id.to_owned(),
        label: raw.label.clone(),
        base_url: base_url.trim_end_matches('/').to_owned(),
        default_model: raw.default_model.clone(),
        models,
        keys,
        h2c: h2c(id, base_url, lookup)?,
        streams_per_connection: env_number(
            lookup,
            &format!("{}_STREAMS_PER_CONNECTION", id.to_uppercase()),
            super::lanes::STREAMS_PER_LANE,
        )?
        .max(1),
    };
    for model in &provider.models {
        if let Some(Thinking::Model(target)) = &model.shaping.thinking {
            if provider.model(target).is_none() {
                return Err(ConfigError::Parse(format!(
                    "providers.{id} model {}: thinking names model {target:?}, which is not listed",
                    model.id
                )));
            }
        }
    }
    if provider.model(&provider.default_model).is_none() {
        return Err(ConfigError::UnknownModel {
            provider: id.to_owned(),
            model: provider.default_model.clone(),
            offered: model_ids(&provider),
        });
    }
    Ok(provider)
}

/// `{ID}_HTTP2`: `1` speaks HTTP/2 over plain http (h2c); `0` or unset, HTTP/1.1 there.
/// With an https URL it is refused: there TLS settles the protocol, and a deployer who
/// sets it expects an effect it cannot have.
fn h2c<'a>(
    id: &str,
    base_url: &str,
    lookup: &impl Fn(&str) -> Option<&'a str>,
) -> Result<bool, ConfigError> {
    let var = format!("{}_HTTP2", id.to_uppercase());
    let invalid = |value: &str, reason: &str| ConfigError::Invalid {
        var: var.clone(),
        value: value.to_owned(),
        reason: reason.into(),
    };
    match lookup(&var).map(str::trim) {
        None | Some("" | "0") => Ok(false),
        Some("1") if base_url.starts_with("http://") => Ok(true),
        Some("1") => Err(invalid(
            "1",
            "only for an http:// base URL (over https TLS negotiates HTTP/2 by itself)",
        )),
        Some(other) => Err(invalid(other, "must be 1 or 0")),
    }
}

/// `{ID}_API_KEY`, then `{ID}_API_KEY_1`, `_2`, … until the first gap; duplicates dropped.
/// Each may name its account in `{ID}_API_KEY[_N]_ACCOUNT`.
fn keys_from_env<'a>(id: &str, lookup: &impl Fn(&str) -> Option<&'a str>) -> Vec<ProviderKey> {
    let prefix = format!("{}_API_KEY", id.to_uppercase());
    let numbered = (1..).map_while(|n| {
        let var = format!("{prefix}_{n}");
        lookup(&var).map(|key| (var, key))
    });
    let mut keys: Vec<ProviderKey> = Vec::new();
    for (var, key) in lookup(&prefix)
        .map(|k| (prefix.clone(), k))
        .into_iter()
        .chain(numbered)
    {
        if keys.iter().any(|k| k.secret.expose_secret() == key) {
            continue;
        }
        let account = lookup(&format!("{var}_ACCOUNT"))
            .unwrap_or_default()
            .to_owned();
        keys.push(ProviderKey {
            secret: SecretString::from(key),
            account,
        });
    }
    keys
}

/// Models the deployer declares free in `{ID}_FREE_MODELS` (comma-separated): served at
/// price 0 although the settings do not list them (a local Ollama or vLLM).
fn free_models<'a>(id: &str, lookup: &impl Fn(&str) -> Option<&'a str>) -> Vec<Model> {
    let var = format!("{}_FREE_MODELS", id.to_uppercase());
    let list = lookup(&var).unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| Model {
            id: m.to_owned(),
            price: Price::FREE,
            max_output_tokens: 65535,
            context_tokens: 131_072,
            shaping: Shaping::default(),
            chain: Chain::default(),
        })
        .collect()
}

/// A model's `fallback` list and `continue` mode, as written (checked once every
/// provider is known, by [`check_chains`]).
fn chain(provider: &str, m: &RawModel) -> Result<Chain, ConfigError> {
    let invalid =
        |what: String| ConfigError::Parse(format!("providers.{provider} model {}: {what}", m.id));
    let continuation = match m.continuation.as_deref() {
        None => None,
        Some("prefix") => Some(Continuation::Prefix),
        Some("partial") => Some(Continuation::Partial),
        Some("assistant") => Some(Continuation::Assistant),
        Some(other) => {
            return Err(invalid(format!(
                "continue = {other:?}: expected \"prefix\", \"partial\" or \"assistant\""
            )))
        }
    };
    let fallback = m
        .fallback
        .iter()
        .map(|entry| match entry.split_once(':') {
            Some((p, model)) if KEYED_PROVIDERS.contains(&p) => ModelRef {
                provider: p.to_owned(),
                model: model.to_owned(),
            },
            _ => ModelRef {
                provider: provider.to_owned(),
                model: entry.clone(),
            },
        })
        .collect();
    Ok(Chain {
        fallback,
        continuation,
    })
}

/// Drops chain entries whose provider has no key here (a deployment keys only some
/// providers), saying so; an entry naming a model its provider does not list is an
/// error.
fn check_chains(providers: &mut [Provider]) -> Result<(), ConfigError> {
    let served: Vec<(String, Vec<String>)> = providers
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                p.models.iter().map(|m| m.id.clone()).collect(),
            )
        })
        .collect();
    for provider in providers.iter_mut() {
        for model in &mut provider.models {
            let mut kept = Vec::new();
            for next in std::mem::take(&mut model.chain.fallback) {
                match served.iter().find(|(id, _)| *id == next.provider) {
                    None => tracing::warn!(
                        "providers.{} model {}: fallback {next} skipped ({} has no API key)",
                        provider.id,
                        model.id,
                        next.provider
                    ),
                    Some((_, models)) if !models.contains(&next.model) => {
                        return Err(ConfigError::Parse(format!(
                            "providers.{} model {}: fallback {next} is not a listed model",
                            provider.id, model.id
                        )))
                    }
                    Some(_) if next.provider == provider.id && next.model == model.id => {}
                    Some(_) => kept.push(next),
                }
            }
            model.chain.fallback = kept;
        }
    }
    Ok(())
}

/// A model's `thinking`, `thinking_budget`, `rejects`, `merge_same_role`, `include_usage`.
fn shaping(provider: &str, m: &RawModel) -> Result<Shaping, ConfigError> {
    let invalid =
        |what: String| ConfigError::Parse(format!("providers.{provider} model {}: {what}", m.id));
    let thinking = match m.thinking.as_deref() {
        None => None,
        Some("enable_thinking") => Some(Thinking::EnableFlag),
        Some("thinking_type") => Some(Thinking::TypeSwitch),
        Some("always") => Some(Thinking::Always),
        Some(other) => match other.strip_prefix("model:") {
            Some(target) if !target.is_empty() => Some(Thinking::Model(target.to_owned())),
            _ => {
                return Err(invalid(format!(
                    "thinking = {other:?} is not one of \"model:<id>\", \"enable_thinking\", \"thinking_type\", \"always\""
                )))
            }
        },
    };
    if let Some(bad) = m.rejects.iter().find(|r| !REJECTABLE.contains(&r.as_str())) {
        return Err(invalid(format!(
            "rejects names {bad:?}; known: {}",
            REJECTABLE.join(", ")
        )));
    }
    Ok(Shaping {
        thinking,
        thinking_budget: m.thinking_budget,
        rejects: m.rejects.clone(),
        merge_same_role: m.merge_same_role,
        include_usage: m.include_usage,
    })
}

fn env_number<'a, T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<&'a str>,
    var: &str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(var) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
            var: var.to_owned(),
            value: text.to_owned(),
            reason: "not a whole number".into(),
        }),
    }
}

fn model_ids(provider: &Provider) -> String {
    let ids: Vec<&str> = provider.models.iter().map(|m| m.id.as_str()).collect();
    ids.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SETTINGS: &str = include_str!("../../tests/fixtures/settings.toml");

    fn config(vars: &[(&str, &str)]) -> Result<LlmConfig, ConfigError> {
        LlmConfig::from_parts(SETTINGS, vars.iter().copied())
    }

    #[test]
    fn the_shipped_settings_load() {
        let shipped = include_str!("../../Leptos.toml");
        let config = LlmConfig::from_parts(shipped, [("SILICONFLOW_API_KEY", "k")]).unwrap();
        assert_eq!(config.default_provider, "siliconflow");
        assert!(LlmConfig::from_parts(shipped, []).unwrap().is_demo());
    }

    #[test]
    fn no_key_means_demo() {
        let config = config(&[]).unwrap();
        assert!(config.is_demo());
        assert_eq!(config.providers.len(), 1);
        assert_eq!(config.defaults.temperature, 0.8);
        assert_eq!(config.defaults.max_tokens, 65535);
        assert_eq!(config.defaults.seed, None);
        assert_eq!(config.timeout, Duration::from_secs(120));
    }

    #[test]
    fn siliconflow_is_the_default_when_keyed() {
        let config = config(&[
            ("SILICONFLOW_API_KEY", "sk-a"),
            ("DEEPSEEK_API_KEY", "sk-b"),
        ])
        .unwrap();
        assert_eq!(config.default_provider, "siliconflow");
        let provider = config.provider("siliconflow").unwrap();
        assert_eq!(provider.base_url, "https://api.siliconflow.cn/v1");
        assert_eq!(provider.default_model, "deepseek-ai/DeepSeek-V3.2-Exp");
        let price = provider
            .model("deepseek-ai/DeepSeek-V3.2-Exp")
            .unwrap()
            .price;
        assert_eq!(price, Price::new(2_000_000, 3_000_000));
    }

    #[test]
    fn numbered_keys_are_collected_in_order() {
        let config = config(&[
            ("DEEPSEEK_API_KEY", "k0"),
            ("DEEPSEEK_API_KEY_1", "k1"),
            ("DEEPSEEK_API_KEY_2", "k2"),
            ("DEEPSEEK_API_KEY_4", "k4-after-a-gap"),
        ])
        .unwrap();
        let keys: Vec<&str> = config.providers[0]
            .keys
            .iter()
            .map(|k| k.secret.expose_secret())
            .collect();
        assert_eq!(keys, ["k0", "k1", "k2"]);
        assert_eq!(config.default_provider, "deepseek");
    }

    #[test]
    fn overrides_and_their_errors() {
        let config = config(&[
            ("CUSTOM_API_KEY", "x"),
            ("CUSTOM_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("LLM_PROVIDER", "custom"),
            ("LLM_MODEL", "llama3"),
            ("CUSTOM_FREE_MODELS", "llama3, phi3"),
            ("LLM_TIMEOUT_SECS", "5"),
        ])
        .unwrap();
        assert_eq!(
            config.provider("custom").unwrap().base_url,
            "http://127.0.0.1:9/v1"
        );
        assert_eq!(config.provider("custom").unwrap().default_model, "llama3");
        assert_eq!(config.timeout, Duration::from_secs(5));

        let err = |vars: &[(&str, &str)]| config_err(vars);
        // A custom model with no price and no free mark is refused.
        assert!(matches!(
            err(&[
                ("CUSTOM_API_KEY", "x"),
                ("LLM_PROVIDER", "custom"),
                ("LLM_MODEL", "llama3")
            ]),
            ConfigError::UnknownModel { .. }
        ));
        assert_eq!(
            err(&[("LLM_PROVIDER", "moonshot")]),
            ConfigError::UnknownProvider("moonshot".into())
        );
        assert_eq!(
            err(&[("LLM_PROVIDER", "qwen")]),
            ConfigError::ProviderWithoutKey("qwen".into())
        );
        assert!(matches!(
            err(&[("QWEN_API_KEY", "k"), ("LLM_MODEL", "gpt-5")]),
            ConfigError::UnknownModel { .. }
        ));
        assert!(matches!(
            err(&[("LLM_MAX_RETRIES", "three")]),
            ConfigError::Invalid { .. }
        ));
        assert!(matches!(
            err(&[("QWEN_API_KEY", "k"), ("QWEN_BASE_URL", "ftp://x")]),
            ConfigError::Invalid { .. }
        ));
    }

    #[test]
    fn the_model_table_says_how_to_shape_requests() {
        let config = config(&[("DEEPSEEK_API_KEY", "k"), ("DOUBAO_API_KEY", "k")]).unwrap();
        let deepseek = config.provider("deepseek").unwrap();
        let chat = deepseek.model("deepseek-chat").unwrap().shaping;
        assert_eq!(
            chat.thinking,
            Some(Thinking::Model("deepseek-reasoner".into()))
        );
        assert!(chat.include_usage && !chat.merge_same_role && chat.rejects.is_empty());
        let reasoner = deepseek.model("deepseek-reasoner").unwrap().shaping;
        assert_eq!(reasoner.thinking, Some(Thinking::Always));
        assert!(reasoner.merge_same_role && reasoner.rejects("top_p"));
        let doubao = config.provider("doubao").unwrap();
        let flash = &doubao.models[0].shaping;
        assert_eq!(flash.thinking, Some(Thinking::TypeSwitch));

        let with = |row: &str| {
            let text = SETTINGS.replace(
                r#"{ id = "hunyuan-lite", input = "0", output = "0","#,
                &format!(r#"{{ id = "hunyuan-lite", input = "0", output = "0", {row},"#),
            );
            LlmConfig::from_parts(&text, [("HUNYUAN_API_KEY", "k")])
        };
        assert!(with(r#"thinking = "enable_thinking", thinking_budget = 1024"#).is_ok());
        for bad in [
            r#"thinking = "yes""#,
            r#"thinking = "model:""#,
            r#"thinking = "model:hunyuan-pro""#,
            r#"rejects = ["logprobs"]"#,
            r#"thinking_budget = -1"#,
        ] {
            assert!(matches!(with(bad), Err(ConfigError::Parse(_))), "{bad}");
        }
    }

    fn config_err(vars: &[(&str, &str)]) -> ConfigError {
        config(vars).unwrap_err()
    }

    #[test]
    fn http2_without_tls_only_for_http_urls() {
        let custom = |url: &str, http2: Option<&str>| {
            let mut vars = vec![
                ("CUSTOM_API_KEY", "x"),
                ("CUSTOM_BASE_URL", url),
                ("CUSTOM_FREE_MODELS", "llama3"),
                ("LLM_PROVIDER", "custom"),
                ("LLM_MODEL", "llama3"),
            ];
            vars.extend(http2.map(|v| ("CUSTOM_HTTP2", v)));
            config(&vars).map(|c| c.provider("custom").unwrap().h2c)
        };
        assert!(!custom("http://10.0.0.2/v1", None).unwrap());
        assert!(!custom("http://10.0.0.2/v1", Some("0")).unwrap());
        assert!(custom("http://10.0.0.2/v1", Some("1")).unwrap());
        for (url, value) in [
            ("https://gw.example/v1", "1"),
            ("http://10.0.0.2/v1", "yes"),
        ] {
            let err = custom(url, Some(value)).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { var, .. } if var == "CUSTOM_HTTP2"),
                "{err}"
            );
        }
    }

    #[test]
    fn error_messages_never_carry_keys() {
        let err = config_err(&[("QWEN_API_KEY", "sk-secret-1"), ("LLM_MODEL", "nope")]);
        assert!(!err.to_string().contains("sk-secret-1"));
        let debug = format!("{:?}", config(&[("QWEN_API_KEY", "sk-secret-1")]).unwrap());
        assert!(!debug.contains("sk-secret-1"), "{debug}");
    }
}
