//! The chat's pure logic, with no signals and no browser: how frames fold into an answer
//! (each `seq` applied once, in order), what a finished answer reports, and the one
//! [`Message`] type that is both saved and (through its store) rendered. Unit-tested
//! natively.

use reactive_stores::Store;
use serde::{Deserialize, Serialize};

use crate::protocol::{ChatMessage, Cost, ErrorCode, Role, Timing, Usage, UsageSource, Yuan};

/// What happened when a text frame was offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Accept {
    /// New text, in order: apply it.
    New,
    /// This `seq` was applied already (or is older): ignore it.
    Duplicate,
    /// Frames were skipped: `missing` of them never arrived. Apply this one and say so.
    Gap { missing: u64 },
}

/// Keeps `seq` order: one counter for chunks and reasoning together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeqGuard {
    next: u64,
}

impl SeqGuard {
    pub fn offer(&mut self, seq: u64) -> Accept {
        if seq < self.next {
            return Accept::Duplicate;
        }
        let missing = seq - self.next;
        self.next = seq + 1;
        if missing == 0 {
            Accept::New
        } else {
            Accept::Gap { missing }
        }
    }
}

/// Where an answer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    Waiting,
    Streaming,
    Done,
    Stopped,
    Failed,
}

/// The figures shown under a finished (or failed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stats {
    pub usage: Usage,
    pub cost: Cost,
    pub timing: Option<Timing>,
    pub finish_reason: Option<String>,
}

impl Stats {
    /// Tokens per second of output, from the first token to the end.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let timing = self.timing.as_ref()?;
        let first = timing.first_token_ms?;
        let streaming_ms = timing.total_ms.saturating_sub(first);
        (streaming_ms > 0 && self.usage.completion_tokens > 0)
            .then(|| f64::from(self.usage.completion_tokens) * 1000.0 / streaming_ms as f64)
    }

    /// `服务商统计` or `tiktoken 估算`.
    pub fn source_label(&self) -> &'static str {
        match self.usage.source {
            UsageSource::Provider => "服务商统计",
            UsageSource::Tiktoken => "tiktoken 估算",
        }
    }

    /// A note when the answer was cut short by a limit.
    pub fn finish_note(&self) -> Option<&'static str> {
        match self.finish_reason.as_deref() {
            Some("length") => Some("已达到 max_tokens 上限，回答被截断"),
            Some("content_filter") => Some("回答被服务商的内容审核截断"),
            _ => None,
        }
    }

    /// Cost as shown: `¥0.000123`, six decimals (exact figure in the tooltip).
    pub fn cost_label(&self) -> String {
        yuan_label(Yuan::parse(&self.cost.total).unwrap_or_default())
    }
}

/// `¥0.000123`: rounded half-up to six decimals for display.
pub(crate) fn yuan_label(yuan: Yuan) -> String {
    const MICRO: u128 = 1_000_000; // pico-yuan per micro-yuan
    let micro = (yuan.0 + MICRO / 2) / MICRO;
    format!("¥{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// An error as the answer shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub message: String,
    /// Whether pressing 重试 may help.
    pub retryable: bool,
    /// A hint on what to do, in plain words.
    pub hint: Option<String>,
}

impl Failure {
    pub fn from_code(code: ErrorCode, message: String, retryable: bool) -> Failure {
        let hint = match code {
            ErrorCode::AuthFailed => Some("请检查服务端的 API 密钥配置（.env）。"),
            ErrorCode::RateLimited => Some("服务商限流，请稍等片刻再重试。"),
            ErrorCode::Timeout => Some("模型响应太慢，可以重试，或换一个模型。"),
            ErrorCode::Disconnected => Some("网络或服务商连接中断，已保留收到的内容。"),
            ErrorCode::Shutdown => Some("服务器正在重启，请稍后重试。"),
            ErrorCode::Upstream | ErrorCode::Protocol => None,
        };
        Failure {
            message,
            retryable,
            hint: hint.map(str::to_owned),
        }
    }

    /// A failure of the connection rather than of the provider: no hint.
    pub fn plain(message: String, retryable: bool) -> Failure {
        Failure {
            message,
            retryable,
            hint: None,
        }
    }
}

/// One message of the conversation, saved as it is and rendered field by field: the
/// page holds it in a [`Store`], so a chunk notifies only the fields it changes.
#[derive(Debug, Clone, PartialEq, Store, Serialize, Deserialize)]
pub(crate) struct Message {
    pub role: Role,
    /// The whole text (user text, or the answer so far).
    pub content: String,
    #[serde(default)]
    pub reasoning: String,
    pub status: Status,
    #[serde(default)]
    pub stats: Option<Stats>,
    #[serde(default)]
    pub failure: Option<Failure>,
}

impl Message {
    pub fn new(role: Role, content: &str, status: Status) -> Message {
        Message {
            role,
            content: content.to_owned(),
            reasoning: String::new(),
            status,
            stats: None,
            failure: None,
        }
    }

    /// A saved message as a reload finds it: a reload interrupts a stream, so what was
    /// shown is kept, marked as stopped.
    pub fn restored(self) -> Message {
        let status = match self.status {
            Status::Waiting | Status::Streaming => Status::Stopped,
            other => other,
        };
        Message { status, ..self }
    }
}

/// The request parameters the panel holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub provider: String,
    pub model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    /// `None`: left to the provider's default (the advice is to tune temperature only).
    pub top_p: Option<f32>,
    /// `None`: off (the default); set only for reproducible debugging.
    pub seed: Option<i64>,
    pub system_prompt: String,
    /// 深度思考, sent only for a model that can think (older saved settings lack it).
    #[serde(default)]
    pub thinking: bool,
}

/// Everything that survives a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub messages: Vec<Message>,
    pub settings: Option<Settings>,
}

/// The context sent with a request: the system prompt, then every finished turn.
/// Failed or empty answers are left out, so a retry does not feed an error back.
pub(crate) fn context(system_prompt: &str, turns: &[Message]) -> Vec<ChatMessage> {
    let system = (!system_prompt.trim().is_empty()).then(|| ChatMessage {
        role: Role::System,
        content: system_prompt.to_owned(),
    });
    let turns = turns.iter().filter(|m| {
        !m.content.trim().is_empty()
            && (m.role == Role::User || matches!(m.status, Status::Done | Status::Stopped))
    });
    system
        .into_iter()
        .chain(turns.map(|m| ChatMessage {
            role: m.role,
            content: m.content.clone(),
        }))
        .collect()
}

/// Conversation totals: tokens in, tokens out, cost.
pub(crate) fn totals<'a>(stats: impl Iterator<Item = &'a Stats>) -> (u64, u64, Yuan) {
    stats.fold((0, 0, Yuan::default()), |(input, output, cost), s| {
        (
            input + u64::from(s.usage.prompt_tokens),
            output + u64::from(s.usage.completion_tokens),
            cost + Yuan::parse(&s.cost.total).unwrap_or_default(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_seq_is_applied_once_in_order() {
        let mut guard = SeqGuard::default();
        let offers: Vec<Accept> = [0, 1, 1, 0, 2, 5, 4, 6]
            .iter()
            .map(|s| guard.offer(*s))
            .collect();
        assert_eq!(
            offers,
            [
                Accept::New,
                Accept::New,
                Accept::Duplicate,
                Accept::Duplicate,
                Accept::New,
                Accept::Gap { missing: 2 },
                Accept::Duplicate,
                Accept::New,
            ]
        );
    }

    fn stats(prompt: u32, completion: u32, total: &str, first: u64, total_ms: u64) -> Stats {
        Stats {
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                source: UsageSource::Provider,
            },
            cost: Cost {
                currency: "CNY".into(),
                input: "0".into(),
                output: "0".into(),
                total: total.into(),
            },
            timing: Some(Timing {
                first_token_ms: Some(first),
                total_ms,
            }),
            finish_reason: Some("stop".into()),
        }
    }

    #[test]
    fn figures_under_an_answer() {
        let s = stats(10, 50, "0.000123", 500, 1500);
        assert_eq!(s.tokens_per_second(), Some(50.0));
        assert_eq!(s.cost_label(), "¥0.000123");
        assert_eq!(yuan_label(Yuan::parse("0.0000005").unwrap()), "¥0.000001");
        assert_eq!(yuan_label(Yuan::parse("12.5").unwrap()), "¥12.500000");
        let mut cut = s.clone();
        cut.finish_reason = Some("length".into());
        assert!(cut.finish_note().unwrap().contains("max_tokens"));
    }

    #[test]
    fn totals_add_exactly() {
        let all = [stats(1, 2, "0.1", 0, 1), stats(3, 4, "0.2", 0, 1)];
        let (input, output, cost) = totals(all.iter());
        assert_eq!((input, output, cost.to_string()), (4, 6, "0.3".to_owned()));
    }

    #[test]
    fn saved_messages_keep_their_form() {
        let old = r#"{"role":"assistant","content":"部分","status":"Streaming"}"#;
        let message: Message = serde_json::from_str(old).unwrap();
        assert_eq!(message.reasoning, "");
        assert_eq!(message.restored().status, Status::Stopped);
        let done = Message::new(Role::User, "q", Status::Done);
        let json = serde_json::to_string(&done).unwrap();
        assert_eq!(
            json,
            r#"{"role":"user","content":"q","reasoning":"","status":"Done","stats":null,"failure":null}"#
        );
        assert_eq!(done.clone().restored(), done);
    }

    #[test]
    fn context_leaves_out_failed_answers() {
        let turns = [
            Message::new(Role::User, "q1", Status::Done),
            Message::new(Role::Assistant, "a1", Status::Done),
            Message::new(Role::User, "q2", Status::Done),
            Message::new(Role::Assistant, "partial", Status::Failed),
            Message::new(Role::User, "q3", Status::Done),
        ];
        let roles: Vec<(Role, &str)> = context("be brief", &turns)
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(r, c)| (r, if c == "be brief" { "sys" } else { "turn" }))
            .collect();
        assert_eq!(roles.len(), 5);
        assert_eq!(roles[0], (Role::System, "sys"));
        assert!(context("  ", &turns).iter().all(|m| m.role != Role::System));
    }
}
