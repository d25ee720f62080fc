//! What can go wrong between us and a provider. Messages are plain Chinese for the user;
//! they never contain a key (upstream text is redacted by the key ring before it gets here).

use std::time::Duration;

use crate::protocol::ErrorCode;

use super::retry::is_retryable_status;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    #[error("无法连接到模型服务：{0}")]
    Connect(String),

    #[error("模型服务在 {0} 秒内没有返回任何内容")]
    FirstTokenTimeout(u64),

    #[error("模型服务已有 {0} 秒没有输出，已停止等待")]
    IdleTimeout(u64),

    /// 429. `retry_after` is what the provider asked for, if it said.
    #[error("{}", rate_limited_message(*.retry_after, *.cap))]
    RateLimited {
        retry_after: Option<Duration>,
        /// The longest wait we accept; above it we give up at once.
        cap: Duration,
        detail: String,
    },

    /// Every key is resting after a 429; the first is free after `wait`.
    #[error("所有 API 密钥都在限流冷却中，约 {} 秒后可用", .wait.as_secs().max(1))]
    KeysCooling { wait: Duration, cap: Duration },

    /// 401, or an explicit invalid-key error: this key was refused and is parked.
    /// The next key is tried at once.
    #[error("API 密钥被拒绝（HTTP {status}）：{detail}")]
    KeyRejected { status: u16, detail: String },

    /// 403: this account may not use this model (SiliconFlow: often real-name
    /// verification). The request fails; the key stays in rotation.
    #[error("模型服务拒绝了此请求（HTTP 403）：{detail}。此账号可能无权使用该模型（例如需要实名认证），请换一个模型")]
    Forbidden { detail: String },

    /// The key's account is out of quota or balance (OpenAI `insufficient_quota`,
    /// DeepSeek 402).
    #[error("API 密钥额度已用尽：{detail}")]
    QuotaExhausted { detail: String },

    #[error("没有可用的 API 密钥：全部被拒绝或额度已用尽，请检查服务端配置")]
    NoUsableKey,

    /// Any other error status.
    #[error("模型服务返回错误（HTTP {status}）：{detail}")]
    Api { status: u16, detail: String },

    /// An `{"error": …}` object inside a 200 stream.
    #[error("模型服务在输出过程中报错：{0}")]
    InStream(String),

    #[error("与模型服务的连接在输出中途断开")]
    Disconnected,

    /// The provider sent something no valid stream contains (an oversized line or
    /// error body).
    #[error("模型服务返回的数据不符合协议：{0}")]
    Protocol(String),

    /// The answer streamed longer than the configured cap.
    #[error("回答超过了单次最长 {0} 秒的上限，已停止")]
    TooLong(u64),

    #[error("服务器正在关闭，本次回答已中止")]
    Shutdown,

    /// The stream ended properly but without a word.
    #[error("模型服务返回了空回答")]
    EmptyAnswer,
}

fn rate_limited_message(retry_after: Option<Duration>, cap: Duration) -> String {
    match retry_after {
        Some(wait) if wait > cap => format!(
            "模型服务限流，要求等待 {} 秒（超过上限 {} 秒），请稍后再试",
            wait.as_secs(),
            cap.as_secs()
        ),
        _ => "模型服务限流（HTTP 429），重试次数已用完，请稍后再试".to_owned(),
    }
}

impl LlmError {
    /// Worth another attempt, if nothing has reached the user yet.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Connect(_) | LlmError::FirstTokenTimeout(_) | LlmError::Disconnected => true,
            LlmError::RateLimited {
                retry_after, cap, ..
            } => retry_after.is_none_or(|w| w <= *cap),
            LlmError::KeysCooling { wait, cap } => wait <= cap,
            // Another key may work: the ring says when none is left.
            LlmError::KeyRejected { .. } | LlmError::QuotaExhausted { .. } => true,
            LlmError::Api { status, .. } => is_retryable_status(*status),
            LlmError::IdleTimeout(_)
            | LlmError::Forbidden { .. }
            | LlmError::NoUsableKey
            | LlmError::InStream(_)
            | LlmError::Protocol(_)
            | LlmError::TooLong(_)
            | LlmError::Shutdown
            | LlmError::EmptyAnswer => false,
        }
    }

    /// Whether the next model of a fallback chain should take over: this provider or
    /// model cannot serve now (limits after the retries, 5xx, no first token, no
    /// connection, no balance, no access to the model, garbage, an empty answer, a
    /// break mid-answer). Not when the request itself is at fault or must not go on
    /// elsewhere: 400s, a rejected key (a configuration to fix, not to hide), the
    /// answer's time cap, shutdown.
    pub fn falls_back(&self) -> bool {
        match self {
            LlmError::RateLimited { .. }
            | LlmError::KeysCooling { .. }
            | LlmError::Connect(_)
            | LlmError::FirstTokenTimeout(_)
            | LlmError::IdleTimeout(_)
            | LlmError::Disconnected
            | LlmError::QuotaExhausted { .. }
            | LlmError::Forbidden { .. }
            | LlmError::InStream(_)
            | LlmError::Protocol(_)
            | LlmError::EmptyAnswer => true,
            LlmError::Api { status, .. } => *status >= 500,
            LlmError::KeyRejected { .. }
            | LlmError::NoUsableKey
            | LlmError::TooLong(_)
            | LlmError::Shutdown => false,
        }
    }

    /// Why the chain moved on, for the `fallback` frame: 已切换到 X（这里的原因）.
    pub fn fallback_reason(&self) -> String {
        match self {
            LlmError::RateLimited { .. } | LlmError::KeysCooling { .. } => "限流".to_owned(),
            LlmError::Connect(_) => "无法连接".to_owned(),
            LlmError::FirstTokenTimeout(_) => "首字超时".to_owned(),
            LlmError::IdleTimeout(_) => "输出停滞".to_owned(),
            LlmError::Disconnected => "连接中断".to_owned(),
            LlmError::QuotaExhausted { .. } => "额度用尽".to_owned(),
            LlmError::Forbidden { .. } => "无权使用该模型".to_owned(),
            LlmError::InStream(_) => "输出中途报错".to_owned(),
            LlmError::Protocol(_) => "返回数据异常".to_owned(),
            LlmError::EmptyAnswer => "空回答".to_owned(),
            LlmError::Api { status, .. } => format!("服务不可用，HTTP {status}"),
            other => other.retry_reason(),
        }
    }

    /// The wait this error itself asks for, overriding the backoff.
    pub fn wait_hint(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            LlmError::KeysCooling { wait, .. } => Some(*wait),
            LlmError::KeyRejected { .. } | LlmError::QuotaExhausted { .. } => Some(Duration::ZERO),
            _ => None,
        }
    }

    /// The code the browser receives.
    pub fn code(&self) -> ErrorCode {
        match self {
            LlmError::RateLimited { .. } | LlmError::KeysCooling { .. } => ErrorCode::RateLimited,
            LlmError::KeyRejected { .. }
            | LlmError::QuotaExhausted { .. }
            | LlmError::NoUsableKey => ErrorCode::AuthFailed,
            LlmError::FirstTokenTimeout(_) | LlmError::IdleTimeout(_) | LlmError::TooLong(_) => {
                ErrorCode::Timeout
            }
            LlmError::Connect(_) | LlmError::Disconnected => ErrorCode::Disconnected,
            LlmError::Api { .. }
            | LlmError::InStream(_)
            | LlmError::Forbidden { .. }
            | LlmError::EmptyAnswer => ErrorCode::Upstream,
            LlmError::Protocol(_) => ErrorCode::Protocol,
            LlmError::Shutdown => ErrorCode::Shutdown,
        }
    }

    /// Whether the user may reasonably press "retry" (the frame's `retryable`).
    pub fn user_may_retry(&self) -> bool {
        !matches!(
            self,
            LlmError::KeyRejected { .. }
                | LlmError::QuotaExhausted { .. }
                | LlmError::NoUsableKey
                | LlmError::Forbidden { .. }
        )
    }

    /// A short reason for a `retry` frame.
    pub fn retry_reason(&self) -> String {
        match self {
            LlmError::RateLimited { .. } | LlmError::KeysCooling { .. } => "限流".to_owned(),
            LlmError::KeyRejected { .. } | LlmError::QuotaExhausted { .. } => {
                "密钥不可用，换用下一个密钥".to_owned()
            }
            LlmError::FirstTokenTimeout(_) => "超时".to_owned(),
            LlmError::Connect(_) | LlmError::Disconnected => "连接失败".to_owned(),
            LlmError::Api { status, .. } => format!("服务暂时不可用（HTTP {status}）"),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_retry_after_is_final_and_says_when() {
        let cap = Duration::from_secs(60);
        let err = LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(300)),
            cap,
            detail: String::new(),
        };
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("300 秒"), "{err}");
        let short = LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            cap,
            detail: String::new(),
        };
        assert!(short.is_retryable());
        assert_eq!(short.wait_hint(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn statuses_that_retry() {
        let api = |status| LlmError::Api {
            status,
            detail: String::new(),
        };
        assert!(api(503).is_retryable());
        assert!(api(502).is_retryable());
        assert!(!api(400).is_retryable());
        assert!(!api(404).is_retryable());
        assert!(!LlmError::IdleTimeout(120).is_retryable());
    }

    #[test]
    fn the_chain_moves_on_for_the_provider_never_for_the_request() {
        let api = |status| LlmError::Api {
            status,
            detail: String::new(),
        };
        for moves in [
            api(500),
            api(503),
            LlmError::Connect("refused".into()),
            LlmError::FirstTokenTimeout(5),
            LlmError::EmptyAnswer,
            LlmError::KeysCooling {
                wait: Duration::from_secs(5),
                cap: Duration::from_secs(60),
            },
        ] {
            assert!(moves.falls_back(), "{moves:?}");
        }
        for stops in [
            api(400),
            api(404),
            api(422),
            LlmError::KeyRejected {
                status: 401,
                detail: String::new(),
            },
            LlmError::NoUsableKey,
            LlmError::TooLong(1800),
            LlmError::Shutdown,
        ] {
            assert!(!stops.falls_back(), "{stops:?}");
        }
    }
}
