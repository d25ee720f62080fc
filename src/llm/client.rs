//! The client for OpenAI-compatible providers: picks a key, sends the streaming request,
//! classifies failures, and retries — all of it only until the first text arrives.
//! After that nothing is ever retried: the user has seen the text (see `relay`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::Retryable;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::config::LlmConfig;
use super::error::LlmError;
use super::keys::{key_id, KeyRing, NoKey};
use super::lanes::{LaneSettings, Lanes};
use super::request::{self, ChatJob};
use super::retry::retry_after;
use super::shared::SharedRests;
use super::upstream::UpstreamStream;
use super::wire;
use crate::protocol::{ChatRequest, Rejection};

/// Flips to `true` when the server shuts down; open streams then end.
pub type Shutdown = watch::Receiver<bool>;

pub struct LlmClient {
    /// Each provider's connections.
    lanes: HashMap<String, Lanes>,
    config: Arc<LlmConfig>,
    rings: HashMap<String, KeyRing>,
    /// Key rests shared with other instances (`REDIS_URL`).
    shared: std::sync::OnceLock<SharedRests>,
    /// Each provider's `{base_url}/chat/completions`, parsed once: by base URL.
    endpoints: HashMap<String, reqwest::Url>,
}

/// A provider stream that has produced its first text (or finished without any); the
/// events read so far are still in `body`, in order.
pub(super) struct Opened {
    pub key: usize,
    pub body: UpstreamStream,
}

impl LlmClient {
    pub fn new(config: Arc<LlmConfig>) -> Result<Self, reqwest::Error> {
        let lanes = config
            .providers
            .iter()
            .map(|p| {
                let settings = LaneSettings {
                    connect_timeout: config.timeout,
                    h2c: p.h2c,
                    streams: p.streams_per_connection,
                };
                Ok((p.id.clone(), Lanes::new(settings)?))
            })
            .collect::<reqwest::Result<_>>()?;
        let rings = config
            .providers
            .iter()
            .map(|p| (p.id.clone(), KeyRing::named(&p.id, p.keys.clone())))
            .collect();
        // A base URL that does not parse is left to reqwest, which reports it per request.
        let endpoints = config
            .providers
            .iter()
            .filter_map(|p| {
                let url = reqwest::Url::parse(&endpoint_of(&p.base_url)).ok()?;
                Some((p.base_url.clone(), url))
            })
            .collect();
        Ok(LlmClient {
            lanes,
            config,
            rings,
            shared: std::sync::OnceLock::new(),
            endpoints,
        })
    }

    /// The key ring of `provider`.
    pub(super) fn ring(&self, provider: &str) -> Option<&KeyRing> {
        self.rings.get(provider)
    }

    /// The rests shared with other instances, when `REDIS_URL` is set.
    pub(super) fn shared_rests(&self) -> Option<&SharedRests> {
        self.shared.get()
    }

    /// Shares key rests (429 cooldowns, parked keys) through the Redis at `url` with
    /// every instance that names it.
    pub async fn share_rests(&self, url: &str) -> Result<(), redis::RedisError> {
        let shared = SharedRests::connect(url).await?;
        let _ = self.shared.set(shared);
        Ok(())
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Validates a request against the configuration and the model's context window.
    /// The prompt is counted on the blocking pool: a 1 MiB prompt takes tens of
    /// milliseconds, which must not stall the streams sharing the async workers.
    pub async fn resolve(self: &Arc<Self>, request: ChatRequest) -> Result<ChatJob, Rejection> {
        let client = self.clone();
        off_the_workers(move || client.resolve_now(request, true)).await
    }

    /// [`Self::resolve`] for a raw JSON body: a large one is parsed on the blocking pool
    /// too (a 1 MiB body takes milliseconds to parse); a small one — most chats — right
    /// here, where parsing it (and counting it, if ever) costs less than the hand-over
    /// (1,000 chats arriving at once queued behind the one blocking slot of a 2-core
    /// machine). A large prompt is counted there and then, so no later need of the count
    /// (a budget's worst case) makes it on an async worker.
    pub async fn resolve_body(self: &Arc<Self>, body: Bytes) -> Result<ChatJob, Rejection> {
        if body.len() <= INLINE_BODY_BYTES {
            return self.resolve_now(request::parse_body(&body)?, false);
        }
        let client = self.clone();
        off_the_workers(move || client.resolve_now(request::parse_body(&body)?, true)).await
    }

    /// Checks, fills in defaults and fits the prompt in the context window; counts it
    /// now if `count`, else when something needs it ([`ChatJob::prompt_tokens`]).
    fn resolve_now(&self, request: ChatRequest, count: bool) -> Result<ChatJob, Rejection> {
        let job = request::resolve(&self.config, request)?;
        if count {
            job.prompt_tokens();
        }
        request::fit_context(job)
    }

    /// An error as the user and the logs may see it: any configured key of `provider`
    /// replaced by its id, *then* cut to a readable length (a cut must never leave part
    /// of a key behind). The one place where upstream text is redacted.
    pub fn describe(&self, provider: &str, err: &LlmError) -> String {
        let text = err.to_string();
        let redacted = match self.rings.get(provider) {
            Some(ring) => ring.redact(&text),
            None => text,
        };
        wire::truncate(&redacted, 400)
    }

    /// Opens the provider stream, retrying what is worth retrying. Each wait is announced
    /// through `on_retry` before it starts. Returns the outcome and the attempts made.
    ///
    /// Waits: a 429 cools the key's whole account (see `keys`), so the retry waits for its
    /// `Retry-After` (or the backoff when it gave none) unless a key of another account
    /// is ready, which is then used at once. A refused key is replaced at once.
    pub(super) async fn open_with_retry(
        &self,
        job: &ChatJob,
        on_retry: impl Fn(RetryWait),
    ) -> (Result<Opened, LlmError>, u32) {
        let ring = &self.rings[&job.provider];
        let policy = &self.config.retry;
        let attempts = AtomicU32::new(0);
        let counter = &attempts;
        let result = (move || async move {
            counter.fetch_add(1, Ordering::Relaxed);
            self.try_open(job, ring).await
        })
        .retry(policy.backoff())
        .when(LlmError::is_retryable)
        .adjust(|err, proposed| {
            // `None` means the retries are used up: keep it so.
            let proposed = proposed?;
            Some(retry_wait(err, policy.clamp(proposed), ring))
        })
        .notify(|err, wait| {
            let attempt = attempts.load(Ordering::Relaxed);
            tracing::warn!(
                attempt,
                wait_ms = millis(wait),
                "retrying before the first token: {}",
                self.describe(&job.provider, err).escape_debug()
            );
            on_retry(RetryWait {
                attempt,
                max_retries: policy.max_retries,
                wait,
                reason: err.retry_reason(),
            });
        })
        .await;
        (result, attempts.load(Ordering::Relaxed))
    }

    /// One attempt: a key, the request, and reading up to the first text.
    async fn try_open(&self, job: &ChatJob, ring: &KeyRing) -> Result<Opened, LlmError> {
        if let Some(shared) = self.shared.get() {
            ring.apply_rests(&shared.pull(ring.rest_names()).await);
        }
        let now = Instant::now();
        let key = match ring.acquire(now) {
            Ok(key) => key,
            Err(NoKey::CoolingUntil(until)) => {
                return Err(LlmError::KeysCooling {
                    wait: until.saturating_duration_since(now),
                    cap: self.config.retry.retry_after_cap,
                })
            }
            Err(NoKey::AllParked) => return Err(LlmError::NoUsableKey),
        };
        let timeout = self.config.timeout;
        let deadline = now + timeout;
        let first_token_timeout = || LlmError::FirstTokenTimeout(timeout.as_secs());
        let body = super::shape::request_body(job);
        let (http, lease) = self.lanes[&job.provider]
            .lease()
            .map_err(|err| LlmError::Connect(describe(&err)))?;
        // A provider's endpoint was parsed at start (parsing it per request was 2 % of an
        // answer's setup); another base URL (the beta one of a prefix continuation), here.
        let request = match self.endpoints.get(&job.base_url) {
            Some(url) => http.post(url.clone()),
            None => http.post(endpoint_of(&job.base_url)),
        };
        let send = request.bearer_auth(ring.secret(key)).json(&body).send();
        let response = match timeout_at(deadline, send).await {
            Err(_) => return Err(first_token_timeout()),
            Ok(Err(err)) => return Err(LlmError::Connect(describe(&err))),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let headers = response.headers().clone();
            let text = match timeout_at(deadline, read_error_body(response)).await {
                Ok(Err(err)) => return Err(err),
                Ok(Ok(text)) => text,
                Err(_) => String::new(),
            };
            let err = self.classify(status, &headers, &text, ring, key);
            if let Some(shared) = self.shared.get() {
                shared.push(ring.rests_of(key)).await;
            }
            return Err(err);
        }

        let mut body = UpstreamStream::new(response, lease);
        match timeout_at(deadline, body.read_to_first_text()).await {
            Err(_) => Err(first_token_timeout()),
            Ok(Err(err)) => Err(err),
            Ok(Ok(())) => Ok(Opened { key, body }),
        }
    }

    /// Turns an error status into an error, resting the key or its account when they
    /// are the problem: 401 or an explicit invalid-key code parks the key, a 429 cools the
    /// account, no balance parks the account. A 403 leaves the key in rotation.
    fn classify(
        &self,
        status: u16,
        headers: &HeaderMap,
        text: &str,
        ring: &KeyRing,
        key: usize,
    ) -> LlmError {
        let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let detail = match &json {
            Some(value) => wire::error_message(value),
            // Gateways answer 5xx with HTML pages: say so rather than echo the page.
            None if text.trim_start().starts_with('<') => "网关返回了一个 HTML 错误页".to_owned(),
            None if text.trim().is_empty() => "（无说明）".to_owned(),
            None => text.to_owned(),
        };
        let code = json.as_ref().and_then(wire::error_code).unwrap_or_default();
        let now = Instant::now();
        let park_until = later(now, self.config.key_park);
        // The detail is logged, redacted, where the error is reported (`describe`).
        tracing::warn!(key_id = %key_id(key), status, code = %code.escape_debug(), "provider refused");
        match status {
            402 => {
                ring.park_account(key, park_until, super::keys::ParkReason::OutOfBalance);
                LlmError::QuotaExhausted { detail }
            }
            429 if code == "insufficient_quota" => {
                ring.park_account(key, park_until, super::keys::ParkReason::OutOfBalance);
                LlmError::QuotaExhausted { detail }
            }
            429 => {
                let wait = retry_after(headers, SystemTime::now());
                // A wait beyond the cap fails the request at once; the account still
                // rests, but never longer than the cap (a hostile value cannot shut
                // the deployment out for a day).
                let cool = wait
                    .unwrap_or(self.config.retry.min_delay)
                    .min(self.config.retry.retry_after_cap);
                ring.cool_account(key, later(now, cool));
                LlmError::RateLimited {
                    retry_after: wait,
                    cap: self.config.retry.retry_after_cap,
                    detail,
                }
            }
            401 => {
                ring.park_key(key, park_until, super::keys::ParkReason::Rejected);
                LlmError::KeyRejected { status, detail }
            }
            _ if is_invalid_key_code(&code) => {
                ring.park_key(key, park_until, super::keys::ParkReason::Rejected);
                LlmError::KeyRejected { status, detail }
            }
            403 => LlmError::Forbidden { detail },
            _ => LlmError::Api { status, detail },
        }
    }
}

/// A wait before the next attempt, as the relay announces it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RetryWait {
    pub attempt: u32,
    pub max_retries: u32,
    pub wait: Duration,
    pub reason: String,
}

/// How long to wait after `err` before the next attempt; `backoff` is the policy's
/// proposal. A key of another account that is ready now is used at once.
fn retry_wait(err: &LlmError, backoff: Duration, ring: &KeyRing) -> Duration {
    let rotate_now = matches!(
        err,
        LlmError::RateLimited { .. }
            | LlmError::KeyRejected { .. }
            | LlmError::QuotaExhausted { .. }
    ) && ring.has_ready(Instant::now());
    if rotate_now {
        return Duration::ZERO;
    }
    err.wait_hint().unwrap_or(backoff)
}

/// `now + wait`, saturating far in the future instead of overflowing.
pub(super) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + super::retry::RETRY_AFTER_CEILING)
}

/// Providers' explicit "this key is invalid" codes (OpenAI `invalid_api_key`,
/// DashScope `InvalidApiKey`, Ark `AuthenticationError`…), whatever the status.
fn is_invalid_key_code(code: &str) -> bool {
    let code: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        code.as_str(),
        "invalidapikey" | "invalidkey" | "authenticationerror"
    )
}

/// Where a provider at `base_url` takes chats.
fn endpoint_of(base_url: &str) -> String {
    format!("{base_url}/chat/completions")
}

/// Bodies up to this size are parsed (and their prompt counted, if ever) on the async
/// worker that received them (well under a millisecond); larger ones, and their count, on
/// the blocking pool.
const INLINE_BODY_BYTES: usize = 8 * 1024;

/// Runs `work` on the blocking pool, at most (cores − 1) at once, so one core always stays
/// with the async workers that relay the open streams.
async fn off_the_workers(
    work: impl FnOnce() -> Result<ChatJob, Rejection> + Send + 'static,
) -> Result<ChatJob, Rejection> {
    let _permit = counting_slots().acquire().await;
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Err(Rejection {
            code: "internal".into(),
            field: None,
            message: "服务器处理请求时出错，请重试".into(),
        })
    })
}

/// Prompt counts that may run at once, leaving a core to the async workers that relay
/// the open streams (on 2 cores: one count at a time).
fn counting_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1))
    })
}

/// The largest error body we read: a provider error is a few hundred bytes; more is not
/// an error message but a misbehaving upstream.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads an error response's body, refusing one over [`MAX_ERROR_BODY`].
async fn read_error_body(mut response: reqwest::Response) -> Result<String, LlmError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok().flatten() {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            return Err(LlmError::Protocol(format!(
                "错误响应体超过 {} KiB",
                MAX_ERROR_BODY / 1024
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A transport error in plain words, without the URL's query or any header.
fn describe(err: &reqwest::Error) -> String {
    if err.is_connect() {
        "连接被拒绝或地址无法解析".to_owned()
    } else if err.is_timeout() {
        "连接超时".to_owned()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    }
}
