//! The contract between the browser and `POST /api/chat/stream`: the request body and the
//! frames of the response. Serde only, no cfg: both targets compile this one definition,
//! so the two sides cannot disagree about the wire format.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of the conversation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// The body of `POST /api/chat/stream` (and of the one-shot `chat` server function).
/// Every parameter is optional; the server fills in its configured defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// 深度思考: `Some(true)` asks a model that can think to think, `Some(false)` asks it
    /// not to; absent leaves the model's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
}

/// Where token counts came from: the provider's own `usage`, or our tiktoken estimate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UsageSource {
    Provider,
    Tiktoken,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub source: UsageSource,
}

/// A cost in yuan, as exact decimal strings (e.g. `"0.000123"`), never floats.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Cost {
    pub currency: String,
    pub input: String,
    pub output: String,
    pub total: String,
}

/// An exact amount of money, in pico-yuan (10⁻¹² ¥). Written as plain decimal yuan with
/// trailing zeros dropped (`0.000246`, `2`, `0`), and read back from that form, so both
/// sides can add costs without float drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Yuan(pub u128);

impl Yuan {
    const SCALE: u128 = 1_000_000_000_000;

    /// `tokens` at a price in micro-yuan per million tokens.
    pub fn of_tokens(tokens: u32, micro_per_million: u64) -> Yuan {
        Yuan(u128::from(tokens) * u128::from(micro_per_million))
    }

    /// Reads `"0.000246"`; at most 12 decimals.
    pub fn parse(text: &str) -> Option<Yuan> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (whole, frac) = match text.split_once('.') {
            Some((whole, frac)) if digits(frac) => (whole, frac),
            Some(_) => return None,
            None => (text, ""),
        };
        if !digits(whole) || frac.len() > 12 {
            return None;
        }
        let whole: u128 = whole.parse().ok()?;
        let frac: u128 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<12}").parse().ok()?
        };
        whole.checked_mul(Self::SCALE)?.checked_add(frac).map(Yuan)
    }
}

impl std::ops::Add for Yuan {
    type Output = Yuan;
    fn add(self, other: Yuan) -> Yuan {
        Yuan(self.0.saturating_add(other.0))
    }
}

impl std::fmt::Display for Yuan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.0 / Self::SCALE;
        let frac = self.0 % Self::SCALE;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:012}");
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Time from the request reaching the server to the first text; `None` if none came.
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
}

/// Why a stream ended in an `error` frame. The browser shows `message`; `code` is for code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The provider kept answering 429 (or asked us to wait longer than we may).
    RateLimited,
    /// Every configured key was rejected (401/403) or out of quota.
    AuthFailed,
    /// The provider answered with an error status or an error object.
    Upstream,
    /// No first token within the timeout, or silence between chunks too long.
    Timeout,
    /// The connection to the provider broke after streaming began.
    Disconnected,
    /// The provider sent something that is not a valid stream.
    Protocol,
    /// The server is shutting down.
    Shutdown,
}

/// One Server-Sent Event of the response, sent as `data: <json>\n\n`.
/// Order: `start`, any `retry`/`fallback`, then `chunk`/`reasoning` (a `fallback` may
/// come between them when a cut answer is continued), then exactly one `done` or `error`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Start {
        id: String,
        provider: String,
        model: String,
    },
    /// Waiting before attempt `attempt` (1-based) of at most `max_retries` retries.
    Retry {
        attempt: u32,
        max_retries: u32,
        wait_ms: u64,
        reason: String,
    },
    /// Another model of the configured fallback chain answers from here on (before any
    /// text; or, continuing a cut answer, after it): the browser says 已切换到 `model`
    /// （`reason`）. Cost is counted at the prices of the model that answers.
    Fallback {
        provider: String,
        model: String,
        reason: String,
        /// True when the new model continues text already sent (a cut answer).
        #[serde(default)]
        continues: bool,
    },
    /// Answer text. `seq` counts chunks and reasoning together: 0, 1, 2, …
    Chunk { seq: u64, content: String },
    /// Reasoning ("thinking") text, shown folded above the answer.
    Reasoning { seq: u64, content: String },
    Done {
        finish_reason: String,
        usage: Usage,
        cost: Cost,
        timing: Timing,
    },
    /// The stream failed; text already sent stays valid.
    Error {
        code: ErrorCode,
        message: String,
        retryable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<Cost>,
    },
}

impl Frame {
    /// `done` and `error` end the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Frame::Done { .. } | Frame::Error { .. })
    }

    /// For `chunk` and `reasoning`: `(seq, text, is_reasoning)`; `None` for other frames.
    pub fn text(&self) -> Option<(u64, &str, bool)> {
        match self {
            Frame::Chunk { seq, content } => Some((*seq, content, false)),
            Frame::Reasoning { seq, content } => Some((*seq, content, true)),
            _ => None,
        }
    }
}

/// The 4xx body for a request refused before streaming: `{"error": {...}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RejectBody {
    pub error: Rejection,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Rejection {
    /// Machine-readable reason, e.g. `invalid_temperature`.
    pub code: String,
    /// The field at fault, when there is one (`temperature`, `messages[2].role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Plain words naming the problem.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(frame: Frame, json: &str) {
        assert_eq!(serde_json::to_string(&frame).unwrap(), json);
        assert_eq!(serde_json::from_str::<Frame>(json).unwrap(), frame);
    }

    #[test]
    fn frames_are_tagged_by_type() {
        check(
            Frame::Chunk {
                seq: 3,
                content: "你好".into(),
            },
            r#"{"type":"chunk","seq":3,"content":"你好"}"#,
        );
        check(
            Frame::Error {
                code: ErrorCode::RateLimited,
                message: "m".into(),
                retryable: true,
                usage: None,
                cost: None,
            },
            r#"{"type":"error","code":"rate_limited","message":"m","retryable":true}"#,
        );
    }

    #[test]
    fn yuan_round_trips_exactly() {
        for text in [
            "0",
            "2",
            "0.000246",
            "0.00000105",
            "23192.823393",
            "0.000000000001",
        ] {
            assert_eq!(Yuan::parse(text).unwrap().to_string(), text);
        }
        let sum = Yuan::parse("0.1").unwrap() + Yuan::parse("0.2").unwrap();
        assert_eq!(sum.to_string(), "0.3");
        for bad in ["", ".5", "1.", "-1", "1e3", "0.0000000000001"] {
            assert_eq!(Yuan::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_parameters_are_optional() {
        let req: ChatRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(req.messages[0].role, Role::User);
        assert_eq!(req.temperature, None);
        assert!(serde_json::from_str::<ChatRequest>(
            r#"{"messages":[{"role":"robot","content":"hi"}]}"#
        )
        .is_err());
    }
}
