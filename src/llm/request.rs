//! From a client's request body to a [`ChatJob`] the client can run: parsed, checked
//! against the configuration, defaults filled in. Every refusal names the problem.

use std::sync::OnceLock;

use super::config::{Continuation, LlmConfig, Model, ModelRef, Provider, Thinking};
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
    /// 深度思考 as asked; `None` leaves the model's default. When thinking means another
    /// model (DeepSeek), `model` is already that model, so its price and limits apply.
    pub thinking: Option<bool>,
    /// Our tiktoken count of the prompt, made when something needs it (see
    /// [`ChatJob::prompt_tokens`]).
    pub(crate) prompt_count: OnceLock<u32>,
    /// A cut answer this job continues: sent after the history as the assistant's text.
    pub continued: Option<Continued>,
}

/// The text a continuation goes on from, and how the model is told so.
#[derive(Clone, Debug, PartialEq)]
pub struct Continued {
    pub mode: Continuation,
    pub text: String,
}

impl ChatJob {
    /// Our tiktoken count of the prompt, made on the first call. Most chats never make it:
    /// a prompt whose bytes leave room for the answer fits without it
    /// ([`fit_context`]), and the provider's usage is what gets billed. Budgets (the
    /// worst case), continuations and answers without usage count it.
    pub fn prompt_tokens(&self) -> u32 {
        *self
            .prompt_count
            .get_or_init(|| super::tokens::count_prompt(&self.messages))
    }

    fn with_prompt_tokens(mut self, count: u32) -> ChatJob {
        self.prompt_count = OnceLock::from(count);
        self
    }
}

fn reject(code: &str, field: Option<String>, message: String) -> Rejection {
    Rejection {
        code: code.to_owned(),
        field,
        message,
    }
}

/// Parses a JSON body. One that does not parse as a request is read again as JSON to
/// name its problem: missing messages, an unknown role with its position, or the rest.
pub fn parse_body(bytes: &[u8]) -> Result<ChatRequest, Rejection> {
    if let Ok(request) = serde_json::from_slice(bytes) {
        return Ok(request);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
        reject(
            "invalid_json",
            None,
            format!("请求体不是合法的 JSON：{err}"),
        )
    })?;
    let Some(messages) = value.get("messages") else {
        return Err(reject(
            "no_messages",
            Some("messages".into()),
            "缺少 messages 字段".into(),
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
                        "messages[{index}].role 为 {:?}，只能是 system、user 或 assistant",
                        role.escape_debug().to_string()
                    ),
                ));
            }
        }
    }
    serde_json::from_value(value).map_err(|err| {
        reject(
            "invalid_request",
            None,
            format!("请求体的字段不符合要求：{err}"),
        )
    })
}

/// Checks a parsed request against the configuration and fills in the defaults.
pub fn resolve(config: &LlmConfig, request: ChatRequest) -> Result<ChatJob, Rejection> {
    check_messages(&request.messages, config.limits.max_messages)?;
    let (provider, model) = pick_model(config, &request)?;
    let model = thinking_model(provider, model, request.thinking)?;
    let temperature = request.temperature.unwrap_or(config.defaults.temperature);
    check_sampling(temperature, request.top_p)?;
    let max_tokens = max_tokens(request.max_tokens, config.defaults.max_tokens, &model)?;
    Ok(ChatJob {
        provider: provider.id.clone(),
        base_url: provider.base_url.clone(),
        model,
        messages: request.messages,
        temperature,
        top_p: request.top_p,
        max_tokens,
        seed: request.seed.or(config.defaults.seed),
        thinking: request.thinking,
        prompt_count: OnceLock::new(),
        continued: None,
    })
}

/// At least one message, at most `max`, none empty.
fn check_messages(messages: &[ChatMessage], max: usize) -> Result<(), Rejection> {
    let field = || Some("messages".to_owned());
    if messages.is_empty() {
        return Err(reject("no_messages", field(), "messages 不能为空".into()));
    }
    if messages.len() > max {
        let message = format!(
            "一次请求最多 {max} 条消息，收到 {} 条；请开始新对话或删减历史",
            messages.len()
        );
        return Err(reject("too_many_messages", field(), message));
    }
    match messages.iter().position(|m| m.content.trim().is_empty()) {
        Some(index) => Err(reject(
            "empty_content",
            Some(format!("messages[{index}].content")),
            format!("messages[{index}].content 为空"),
        )),
        None => Ok(()),
    }
}

/// The provider and model asked for (or the defaults), if they are served.
fn pick_model<'c>(
    config: &'c LlmConfig,
    request: &ChatRequest,
) -> Result<(&'c Provider, Model), Rejection> {
    let provider_id = request
        .provider
        .as_deref()
        .unwrap_or(&config.default_provider);
    let Some(provider) = config.provider(provider_id) else {
        let known: Vec<&str> = config.providers.iter().map(|p| p.id.as_str()).collect();
        let message = format!(
            "服务商 {:?} 不可用（可用：{}）",
            provider_id.escape_debug().to_string(),
            known.join(", ")
        );
        return Err(reject("unknown_provider", Some("provider".into()), message));
    };
    let model_id = request.model.as_deref().unwrap_or(&provider.default_model);
    let Some(model) = provider.model(model_id) else {
        let known: Vec<&str> = provider.models.iter().map(|m| m.id.as_str()).collect();
        let message = format!(
            "{} 不提供模型 {:?}（可用：{}）",
            provider.id,
            model_id.escape_debug().to_string(),
            known.join(", ")
        );
        return Err(reject("unknown_model", Some("model".into()), message));
    };
    Ok((provider, model))
}

/// Refuses 深度思考 for a model that cannot think; when thinking means another model of
/// the provider (`thinking = "model:<id>"`), that model.
fn thinking_model(
    provider: &Provider,
    model: Model,
    thinking: Option<bool>,
) -> Result<Model, Rejection> {
    if thinking != Some(true) {
        return Ok(model);
    }
    match &model.shaping.thinking {
        None => Err(reject(
            "thinking_unsupported",
            Some("thinking".into()),
            format!(
                "模型 {} 不支持深度思考，请关闭深度思考或换用其他模型",
                model.id
            ),
        )),
        Some(Thinking::Model(target)) => Ok(provider
            .model(target)
            .expect("config checks that a thinking model is listed")),
        Some(_) => Ok(model),
    }
}

fn check_sampling(temperature: f32, top_p: Option<f32>) -> Result<(), Rejection> {
    if !(0.0..=2.0).contains(&temperature) {
        return Err(reject(
            "invalid_temperature",
            Some("temperature".into()),
            format!("temperature 必须在 0 到 2 之间，收到 {temperature}"),
        ));
    }
    match top_p {
        Some(top_p) if !(top_p > 0.0 && top_p <= 1.0) => Err(reject(
            "invalid_top_p",
            Some("top_p".into()),
            format!("top_p 必须大于 0 且不超过 1，收到 {top_p}"),
        )),
        _ => Ok(()),
    }
}

/// The answer's token limit: as asked (within the model's), else the default capped by
/// the model's own limit.
fn max_tokens(asked: Option<u32>, default: u32, model: &Model) -> Result<u32, Rejection> {
    match asked {
        Some(n) if n < 1 || n > model.max_output_tokens => Err(reject(
            "invalid_max_tokens",
            Some("max_tokens".into()),
            format!(
                "{} 的 max_tokens 必须在 1 到 {} 之间，收到 {n}",
                model.id, model.max_output_tokens
            ),
        )),
        Some(n) => Ok(n),
        None => Ok(default.min(model.max_output_tokens)),
    }
}

/// Fits `job` into its model's context window: a prompt larger than the window is
/// refused; otherwise the answer's `max_tokens` shrinks to the room left, so the provider
/// never refuses the request for its length. A prompt whose bytes (each token is at least
/// one) leave room for `max_tokens` fits as it is, uncounted.
pub fn fit_context(mut job: ChatJob) -> Result<ChatJob, Rejection> {
    let window = job.model.context_tokens;
    if job.prompt_count.get().is_none() {
        let bound = super::tokens::prompt_bound(&job.messages);
        if bound < window && job.max_tokens <= window - bound {
            return Ok(job);
        }
    }
    let prompt_tokens = job.prompt_tokens();
    if prompt_tokens >= window {
        return Err(reject(
            "context_too_long",
            Some("messages".into()),
            format!(
                "对话约 {prompt_tokens} 个 token，超过了模型 {} 的上下文窗口（{window} token）；请开始新对话或删减历史",
                job.model.id
            ),
        ));
    }
    job.max_tokens = job.max_tokens.min(window - prompt_tokens);
    Ok(job)
}

/// `job` for `next`, a model of its fallback chain: the same conversation and
/// parameters within that model's limits (深度思考 kept where it can think); `None` if
/// it cannot take it (not served here, or the prompt does not fit its window).
pub fn fallback(config: &LlmConfig, job: &ChatJob, next: &ModelRef) -> Option<ChatJob> {
    let provider = config.provider(&next.provider)?;
    let model = provider.model(&next.model)?;
    let thinking = job.thinking.filter(|_| model.shaping.can_think());
    let model = thinking_model(provider, model, thinking).ok()?;
    let candidate = ChatJob {
        provider: provider.id.clone(),
        base_url: provider.base_url.clone(),
        max_tokens: job.max_tokens.min(model.max_output_tokens),
        model,
        thinking,
        ..job.clone()
    };
    let fitted = fit_context(candidate);
    if let Err(refused) = &fitted {
        tracing::warn!(fallback = %next, "fallback skipped: {}", refused.message);
    }
    fitted.ok()
}

/// `job`'s cut answer, `sent` so far (`completion` tokens of it), to be finished by
/// `next` of its chain: `None` unless that model can continue one (`continue = …` in
/// its row) and everything fits its window. DeepSeek's prefix completion is asked at its
/// beta base URL.
pub fn continuation(
    config: &LlmConfig,
    job: &ChatJob,
    next: &ModelRef,
    sent: &str,
    completion: u32,
) -> Option<ChatJob> {
    let mut next_job = fallback(config, job, next)?;
    let mode = next_job.model.chain.continuation?;
    match mode {
        Continuation::Prefix => next_job.base_url = beta_url(&next_job.base_url),
        // DashScope: "思考模式不支持前缀续写" (partial mode, non-thinking only).
        Continuation::Partial if next_job.model.shaping.switchable() => {
            next_job.thinking = Some(false);
        }
        _ => {}
    }
    let prompt = job
        .prompt_tokens()
        .saturating_add(super::tokens::count_text(sent));
    next_job.max_tokens = job.max_tokens.saturating_sub(completion).max(1);
    next_job.continued = Some(Continued {
        mode,
        text: sent.to_owned(),
    });
    fit_context(next_job.with_prompt_tokens(prompt)).ok()
}

/// `https://api.deepseek.com/v1` → `https://api.deepseek.com/beta`.
fn beta_url(base_url: &str) -> String {
    let root = base_url.trim_end_matches('/');
    let root = root.strip_suffix("/v1").unwrap_or(root);
    format!("{root}/beta")
}

/// The most `job` can cost whichever model of its chain answers: what a budget must
/// reserve. A chain that continues cut answers may bill two legs: the prompt twice, and
/// at most `max_tokens` of output between them (the continuation carries the first
/// leg's text as input too).
pub fn worst_case(config: &LlmConfig, job: &ChatJob) -> crate::protocol::Yuan {
    let chain: Vec<ChatJob> = job
        .model
        .chain
        .fallback
        .iter()
        .filter_map(|next| fallback(config, job, next))
        .collect();
    let prices = std::iter::once(job).chain(&chain).map(|j| j.model.price);
    let input = prices
        .clone()
        .map(|p| p.input_micro_per_m)
        .max()
        .unwrap_or(0);
    let output = prices.map(|p| p.output_micro_per_m).max().unwrap_or(0);
    let continues = chain.iter().any(|j| j.model.chain.continuation.is_some());
    let prompt = if continues {
        job.prompt_tokens()
            .saturating_mul(2)
            .saturating_add(job.max_tokens)
    } else {
        job.prompt_tokens()
    };
    super::cost::Price::new(input, output).charge(prompt, job.max_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::config::tests::SETTINGS;
    use crate::llm::tokens;

    /// https://api-docs.deepseek.com/zh-cn/guides/chat_prefix_completion: 用户需要设置
    /// `base_url="https://api.deepseek.com/beta"` 来开启 Beta 功能.
    #[test]
    fn prefix_completion_goes_to_the_beta_base_url() {
        for base in [
            "https://api.deepseek.com",
            "https://api.deepseek.com/",
            "https://api.deepseek.com/v1",
        ] {
            assert_eq!(beta_url(base), "https://api.deepseek.com/beta", "{base}");
        }
    }

    fn config() -> LlmConfig {
        LlmConfig::from_parts(SETTINGS, [("DEEPSEEK_API_KEY", "k")]).unwrap()
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
    fn limits_on_messages_and_context() {
        let one = r#"{"role":"user","content":"hi"}"#;
        let many = vec![one; 201].join(",");
        check_rejected(
            &format!(r#"{{"messages":[{many}]}}"#),
            "too_many_messages",
            Some("messages"),
        );
        let job = |max_tokens| {
            let body = format!(r#"{{"messages":{HI},"max_tokens":{max_tokens}}}"#);
            resolve(&config(), parse_body(body.as_bytes()).unwrap()).unwrap()
        };
        // deepseek-chat: 131072 tokens of context.
        let counted = |max_tokens, count| fit_context(job(max_tokens).with_prompt_tokens(count));
        let err = counted(100, 131_072).unwrap_err();
        assert_eq!(err.code, "context_too_long");
        assert!(err.message.contains("131072"), "{}", err.message);
        assert_eq!(counted(8192, 130_000).unwrap().max_tokens, 1072);
        assert_eq!(counted(8192, 1000).unwrap().max_tokens, 8192);

        // A short prompt fits by its bytes, uncounted.
        let fitted = fit_context(job(8192)).unwrap();
        assert_eq!(fitted.max_tokens, 8192);
        assert!(fitted.prompt_count.get().is_none());
        assert_eq!(
            fitted.prompt_tokens(),
            tokens::count_prompt(&fitted.messages)
        );
        // One whose bytes might not leave room is counted, and fits by its count.
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "好".repeat(45_000)
        );
        let long = resolve(&config(), parse_body(body.as_bytes()).unwrap()).unwrap();
        let asked = long.max_tokens;
        assert!(tokens::prompt_bound(&long.messages) > 131_072);
        let fitted = fit_context(long).unwrap();
        let count = *fitted.prompt_count.get().expect("counted");
        assert!(count < 131_072, "{count}");
        assert_eq!(fitted.max_tokens, asked.min(131_072 - count));
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
