//! The chat's pure logic, with no signals and no browser: how frames fold into an answer
//! (each stream frame and each `seq` applied once, in order), when to try a broken
//! stream again, what a finished answer reports, and the one [`Message`] type that is
//! both saved and (through its store) rendered. Unit-tested natively.

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

/// Keeps `seq` order: one counter for chunks and reasoning together. Saved as the next
/// `seq` expected, so a resumed answer goes on where it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
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

/// How far an answer has read its stream on the server: enough to resume it (after a
/// broken connection, a reload, or in another tab) without applying anything twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The stream's id, from its `start` frame.
    #[serde(default)]
    pub stream_id: Option<String>,
    /// The index (SSE `id`) of the last frame applied; 0 is the `start` frame.
    #[serde(default)]
    pub last_event: Option<u64>,
    /// The text `seq`s applied.
    #[serde(default)]
    pub seq: SeqGuard,
}

impl Progress {
    /// Whether frame `index` is new, and then it counts as applied; a frame replayed by
    /// a resume (or a second reader) is not.
    pub fn take(&mut self, index: u64) -> bool {
        if self.last_event.is_some_and(|last| index <= last) {
            return false;
        }
        self.last_event = Some(index);
        true
    }

    pub fn is_empty(&self) -> bool {
        *self == Progress::default()
    }
}

/// The waits between attempts to resume a broken stream: 250 ms, doubling up to 4 s,
/// given up a minute after the break. Frames arriving again start it afresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reconnect {
    attempts: u32,
    /// When the stream broke, in `platform::now_ms()` time.
    since_ms: Option<f64>,
}

impl Reconnect {
    const FIRST_MS: u64 = 250;
    const MAX_MS: u64 = 4_000;
    const GIVE_UP_MS: f64 = 60_000.0;

    /// The wait before the next attempt, or `None`: too long since the break, give up.
    pub fn next_wait(&mut self, now_ms: f64) -> Option<u64> {
        let since = *self.since_ms.get_or_insert(now_ms);
        if now_ms - since >= Self::GIVE_UP_MS {
            return None;
        }
        let wait = (Self::FIRST_MS << self.attempts.min(8)).min(Self::MAX_MS);
        self.attempts += 1;
        Some(wait)
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
    /// An answer's place in its stream on the server (absent in older saves).
    #[serde(default, skip_serializing_if = "Progress::is_empty")]
    pub progress: Progress,
    /// Each move along the server's fallback chain: 已切换到 X（原因）.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<Switch>,
}

/// The answer moved to another model of the fallback chain (a `fallback` frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Switch {
    pub provider: String,
    pub model: String,
    pub reason: String,
    /// The new model continues text already shown (a cut answer).
    #[serde(default)]
    pub continues: bool,
}

impl Switch {
    /// 已切换到 `label` · `model`（`reason`）, or 已由 … 接着写 for a continuation.
    pub fn notice(&self, provider_label: Option<&str>) -> String {
        let who = match provider_label {
            Some(label) => format!("{label} · {}", self.model),
            None => self.model.clone(),
        };
        if self.continues {
            format!("回答中断（{}），已由 {who} 接着写完", self.reason)
        } else {
            format!("已切换到 {who}（{}）", self.reason)
        }
    }
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
            progress: Progress::default(),
            switches: Vec::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self.status, Status::Waiting | Status::Streaming)
    }

    /// An answer still open whose stream can be followed on the server.
    pub fn is_resumable(&self) -> bool {
        self.is_active() && self.progress.stream_id.is_some()
    }

    /// A saved message as a reload finds it: an open answer with a stream id stays open
    /// (it is resumed); one without (an older save) is kept as stopped.
    pub fn restored(self) -> Message {
        let status = match self.status {
            Status::Waiting | Status::Streaming if !self.is_resumable() => Status::Stopped,
            other => other,
        };
        Message { status, ..self }
    }
}

/// A saved conversation as a reload finds it ([`Message::restored`]); only the last
/// answer can still be streaming, any other open one is kept as stopped.
pub(crate) fn restored(messages: Vec<Message>) -> Vec<Message> {
    let last = messages.len().saturating_sub(1);
    messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            let message = message.restored();
            if index != last && message.is_active() {
                Message {
                    status: Status::Stopped,
                    ..message
                }
            } else {
                message
            }
        })
        .collect()
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
    fn stream_progress_round_trips_and_old_saves_load() {
        let mut answer = Message::new(Role::Assistant, "部分", Status::Streaming);
        answer.progress = Progress {
            stream_id: Some("s-1".into()),
            last_event: Some(7),
            seq: SeqGuard { next: 5 },
        };
        let json = serde_json::to_string(&answer).unwrap();
        assert!(json.ends_with(r#""progress":{"stream_id":"s-1","last_event":7,"seq":5}}"#));
        let back: Message = serde_json::from_str(&json).unwrap();
        assert_eq!(back, answer);
        // Still open with a stream id: it stays open, to be resumed.
        assert_eq!(back.clone().restored(), back);

        let old = r#"{"role":"assistant","content":"旧","status":"Waiting"}"#;
        let old: Message = serde_json::from_str(old).unwrap();
        assert!(old.progress.is_empty());
        assert_eq!(old.restored().status, Status::Stopped);
    }

    #[test]
    fn only_the_last_open_answer_is_resumed() {
        let open = |content: &str| {
            let mut m = Message::new(Role::Assistant, content, Status::Streaming);
            m.progress.stream_id = Some(content.into());
            m
        };
        let statuses: Vec<Status> = restored(vec![open("a"), open("b")])
            .iter()
            .map(|m| m.status)
            .collect();
        assert_eq!(statuses, [Status::Stopped, Status::Streaming]);
    }

    #[test]
    fn each_stream_frame_is_taken_once() {
        let mut progress = Progress::default();
        let taken: Vec<bool> = [0, 1, 2, 1, 2, 3, 0]
            .iter()
            .map(|i| progress.take(*i))
            .collect();
        assert_eq!(taken, [true, true, true, false, false, true, false]);
        assert_eq!(progress.last_event, Some(3));
    }

    #[test]
    fn reconnect_backs_off_then_gives_up() {
        let mut reconnect = Reconnect::default();
        let waits: Vec<Option<u64>> = (0..7).map(|_| reconnect.next_wait(1_000.0)).collect();
        let expected = [250, 500, 1_000, 2_000, 4_000, 4_000, 4_000].map(Some);
        assert_eq!(waits, expected);
        assert_eq!(reconnect.next_wait(60_999.0), Some(4_000));
        assert_eq!(reconnect.next_wait(61_000.0), None);
        let mut fresh = Reconnect::default();
        assert_eq!(fresh.next_wait(61_000.0), Some(250));
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
