//! The chat's reactive state and its actions: send, stop, regenerate, edit and resend,
//! clear; frames applied to the answer being streamed; saving to local storage.
//! Shared with the components through context as one `Copy` handle.

use leptos::prelude::*;

use super::markdown::MarkdownStream;
use super::platform::{self, StreamEnd, StreamHandle};
use super::state::{self, Accept, Failure, Saved, SavedMessage, SeqGuard, Settings, Stats, Status};
use crate::api::ServerInfo;
use crate::protocol::{ChatRequest, Frame, Role};

const STORAGE_KEY: &str = "streamai.chat.v1";

/// A `retry` frame as the answer shows it, with a live countdown.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryNotice {
    pub attempt: u32,
    pub max_retries: u32,
    pub reason: String,
    /// When the wait ends, in `platform::now_ms()` time.
    pub until_ms: f64,
}

/// One message on screen. Every field that changes while streaming is its own signal,
/// so a chunk touches only what it changes.
#[derive(Clone, Copy)]
pub struct Msg {
    pub id: u64,
    pub role: Role,
    /// The whole text (user text, or the answer so far).
    pub content: RwSignal<String>,
    /// The answer's rendered markdown: finished blocks, then the tail.
    pub blocks: RwSignal<Vec<String>>,
    pub tail: RwSignal<String>,
    markdown: StoredValue<MarkdownStream>,
    /// A tail render is scheduled for the next frame.
    tail_pending: StoredValue<bool>,
    pub reasoning: RwSignal<String>,
    pub status: RwSignal<Status>,
    pub stats: RwSignal<Option<Stats>>,
    pub failure: RwSignal<Option<Failure>>,
    pub retry: RwSignal<Option<RetryNotice>>,
    /// Frames that never arrived (a gap in `seq`).
    pub missing: RwSignal<u64>,
    seq: StoredValue<SeqGuard>,
}

impl Msg {
    fn new(id: u64, role: Role, content: &str, status: Status) -> Msg {
        let msg = Msg {
            id,
            role,
            content: RwSignal::new(String::new()),
            blocks: RwSignal::new(Vec::new()),
            tail: RwSignal::new(String::new()),
            markdown: StoredValue::new(MarkdownStream::new()),
            tail_pending: StoredValue::new(false),
            reasoning: RwSignal::new(String::new()),
            status: RwSignal::new(status),
            stats: RwSignal::new(None),
            failure: RwSignal::new(None),
            retry: RwSignal::new(None),
            missing: RwSignal::new(0),
            seq: StoredValue::new(SeqGuard::default()),
        };
        msg.append_text(content);
        msg
    }

    fn from_saved(id: u64, saved: SavedMessage) -> Msg {
        // A reload interrupts a stream: what was shown is kept, marked as stopped.
        let status = match saved.status {
            Status::Waiting | Status::Streaming => Status::Stopped,
            other => other,
        };
        let msg = Msg::new(id, saved.role, &saved.content, status);
        msg.reasoning.set(saved.reasoning);
        msg.stats.set(saved.stats);
        msg.failure.set(saved.failure);
        msg
    }

    fn to_saved(self) -> SavedMessage {
        SavedMessage {
            role: self.role,
            content: self.content.get_untracked(),
            reasoning: self.reasoning.get_untracked(),
            status: self.status.get_untracked(),
            stats: self.stats.get_untracked(),
            failure: self.failure.get_untracked(),
        }
    }

    /// Appends answer text: O(chunk) work now; the unfinished paragraph is re-rendered
    /// at most once per frame, however many chunks arrive in between.
    fn append_text(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.content.update(|c| c.push_str(text));
        if self.role != Role::Assistant {
            return;
        }
        let finished = self
            .markdown
            .try_update_value(|md| md.push(text))
            .unwrap_or_default();
        if !finished.is_empty() {
            self.blocks.update(|b| b.extend(finished));
        }
        if !self.tail_pending.get_value() {
            self.tail_pending.set_value(true);
            let msg = *self;
            platform::next_frame(move || {
                // The tab may have been left since: its signals are gone.
                if msg.tail.is_disposed() {
                    return;
                }
                // Follow the answer down, unless the reader has scrolled up to read.
                let follow = platform::near_bottom();
                msg.tail_pending.set_value(false);
                msg.tail
                    .set(msg.markdown.with_value(MarkdownStream::tail_html));
                if follow {
                    platform::scroll_to_bottom();
                }
            });
        }
    }

    /// Applies one frame of this answer's stream.
    fn apply(&self, frame: Frame) {
        if let Some((seq, text, is_reasoning)) = state::text_of(&frame) {
            match self.seq.try_update_value(|g| g.offer(seq)) {
                Some(Accept::Duplicate) | None => return,
                Some(Accept::Gap { missing }) => self.missing.update(|m| *m += missing),
                Some(Accept::New) => {}
            }
            if self.status.get_untracked() != Status::Streaming {
                self.status.set(Status::Streaming);
                self.retry.set(None);
            }
            if is_reasoning {
                self.reasoning.update(|r| r.push_str(text));
            } else {
                self.append_text(text);
            }
            return;
        }
        match frame {
            Frame::Retry {
                attempt,
                max_retries,
                wait_ms,
                reason,
            } => self.retry.set(Some(RetryNotice {
                attempt,
                max_retries,
                reason,
                until_ms: platform::now_ms() + wait_ms as f64,
            })),
            Frame::Done {
                finish_reason,
                usage,
                cost,
                timing,
            } => {
                self.retry.set(None);
                self.stats.set(Some(Stats {
                    usage,
                    cost,
                    timing: Some(timing),
                    finish_reason: Some(finish_reason),
                }));
                self.status.set(Status::Done);
            }
            Frame::Error {
                code,
                message,
                retryable,
                usage,
                cost,
            } => {
                self.retry.set(None);
                if let (Some(usage), Some(cost)) = (usage, cost) {
                    self.stats.set(Some(Stats {
                        usage,
                        cost,
                        timing: None,
                        finish_reason: None,
                    }));
                }
                self.failure
                    .set(Some(Failure::from_code(code, message, retryable)));
                self.status.set(Status::Failed);
            }
            _ => {}
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self.status.get(), Status::Waiting | Status::Streaming)
    }
}

/// The chat's state, shared with every component of the tab.
#[derive(Clone, Copy)]
pub struct ChatSession {
    pub info: StoredValue<ServerInfo>,
    pub messages: RwSignal<Vec<Msg>>,
    pub settings: RwSignal<Settings>,
    /// The answer being streamed, if any.
    pub streaming: RwSignal<Option<u64>>,
    pub composer: RwSignal<String>,
    /// The user message being edited, if any.
    pub editing: RwSignal<Option<u64>>,
    /// A clock for countdowns, ticking while a stream runs.
    pub now_ms: RwSignal<f64>,
    handle: StoredValue<Option<StreamHandle>, platform::HandleStorage>,
    next_id: StoredValue<u64>,
    /// The chat's reactive owner. Messages are created under it, not under whichever
    /// component's button was clicked: that component may be removed (regenerate drops
    /// the old answer) and would take the new message's signals with it.
    owner: StoredValue<Owner>,
}

impl ChatSession {
    pub fn new(info: ServerInfo) -> ChatSession {
        let settings = default_settings(&info);
        ChatSession {
            info: StoredValue::new(info),
            messages: RwSignal::new(Vec::new()),
            settings: RwSignal::new(settings),
            streaming: RwSignal::new(None),
            composer: RwSignal::new(String::new()),
            editing: RwSignal::new(None),
            now_ms: RwSignal::new(0.0),
            handle: StoredValue::new_with_storage(None),
            next_id: StoredValue::new(1),
            owner: StoredValue::new(Owner::current().unwrap_or_default()),
        }
    }

    fn new_msg(&self, role: Role, content: &str, status: Status) -> Msg {
        let id = self.fresh_id();
        self.owner
            .with_value(|owner| owner.with(|| Msg::new(id, role, content, status)))
    }

    fn fresh_id(&self) -> u64 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id + 1);
        id
    }

    /// Restores the saved conversation and settings (browser only, after hydration).
    pub fn restore(&self) {
        let Some(saved) =
            platform::load(STORAGE_KEY).and_then(|text| serde_json::from_str::<Saved>(&text).ok())
        else {
            return;
        };
        if let Some(settings) = saved
            .settings
            .filter(|s| self.info.with_value(|info| settings_fit(info, s)))
        {
            self.settings.set(settings);
        }
        let messages = saved
            .messages
            .into_iter()
            .map(|m| {
                let id = self.fresh_id();
                self.owner
                    .with_value(|owner| owner.with(|| Msg::from_saved(id, m)))
            })
            .collect();
        self.messages.set(messages);
    }

    /// Saves the conversation and settings. Called at the end of each turn, not per chunk.
    pub fn persist(&self) {
        let saved = Saved {
            messages: self
                .messages
                .get_untracked()
                .into_iter()
                .map(Msg::to_saved)
                .collect(),
            settings: Some(self.settings.get_untracked()),
        };
        if let Ok(text) = serde_json::to_string(&saved) {
            platform::save(STORAGE_KEY, &text);
        }
    }

    /// Sends the composer's text as a new user message.
    pub fn send(&self) {
        let text = self.composer.get_untracked();
        if text.trim().is_empty() || self.streaming.get_untracked().is_some() {
            return;
        }
        self.composer.set(String::new());
        let user = self.new_msg(Role::User, &text, Status::Done);
        self.messages.update(|m| m.push(user));
        self.answer();
    }

    /// Appends an empty answer and streams into it, with everything before it as context.
    fn answer(&self) {
        let turns: Vec<(Role, String, Status)> = self
            .messages
            .get_untracked()
            .iter()
            .map(|m| (m.role, m.content.get_untracked(), m.status.get_untracked()))
            .collect();
        let settings = self.settings.get_untracked();
        let request = ChatRequest {
            messages: state::context(&settings.system_prompt, &turns),
            provider: Some(settings.provider.clone()),
            model: Some(settings.model.clone()),
            temperature: Some(settings.temperature),
            top_p: settings.top_p,
            max_tokens: Some(settings.max_tokens),
            seed: settings.seed,
        };
        let answer = self.new_msg(Role::Assistant, "", Status::Waiting);
        self.messages.update(|m| m.push(answer));
        self.streaming.set(Some(answer.id));
        self.persist();

        let session = *self;
        let ticker = set_interval_with_handle(
            move || session.now_ms.set(platform::now_ms()),
            std::time::Duration::from_millis(250),
        )
        .ok();
        self.now_ms.set(platform::now_ms());
        // The stream can outlive the tab: after `leave`, its last reads and its end find
        // the session's signals disposed (reading them would panic) and do nothing.
        let on_frames = move |frames: Vec<Frame>| {
            if answer.status.is_disposed() {
                return;
            }
            for frame in frames {
                answer.apply(frame);
            }
        };
        let on_end = move |end: StreamEnd| {
            if let Some(ticker) = ticker {
                ticker.clear();
            }
            if !answer.status.is_disposed() {
                session.end(answer, end);
            }
        };
        let handle = platform::start_stream(&request, on_frames, on_end);
        if self.streaming.get_untracked() == Some(answer.id) {
            self.handle.set_value(Some(handle));
        }
    }

    /// Ends the turn: an answer still open says how its stream ended; the chat is saved.
    fn end(&self, answer: Msg, end: StreamEnd) {
        if answer.is_active() {
            answer.retry.set(None);
            match end {
                StreamEnd::Aborted => answer.status.set(Status::Stopped),
                StreamEnd::Rejected(message) => answer.fail(message, false),
                StreamEnd::Network(message) => answer.fail(message, true),
                StreamEnd::Finished => answer.fail("连接意外结束，回答不完整".into(), true),
            }
        }
        self.streaming.set(None);
        self.handle.set_value(None);
        self.persist();
    }

    /// Stops the answer being streamed; its text so far stays.
    pub fn stop(&self) {
        self.handle.with_value(|handle| {
            if let Some(handle) = handle {
                handle.abort();
            }
        });
    }

    /// The tab or the page is going away: aborts the stream (the server then drops the
    /// upstream request) and ends the turn now, saving the answer so far as stopped. The
    /// stream's own end would come too late (the tab's signals are disposed by then) or
    /// as a network error (an unloading page breaks the connection).
    pub fn leave(&self) {
        let Some(id) = self.streaming.get_untracked() else {
            return;
        };
        self.stop();
        let answer = self
            .messages
            .with_untracked(|m| m.iter().find(|m| m.id == id).copied());
        if let Some(answer) = answer {
            self.end(answer, StreamEnd::Aborted);
        }
    }

    /// Replaces the last answer with a new one (also the 重试 of a failed answer).
    pub fn regenerate(&self) {
        if self.streaming.get_untracked().is_some() {
            return;
        }
        let last_is_answer = self
            .messages
            .with_untracked(|m| m.last().is_some_and(|m| m.role == Role::Assistant));
        if last_is_answer {
            self.messages.update(|m| {
                m.pop();
            });
        }
        self.answer();
    }

    /// Replaces user message `id` with `text`, drops everything after it, and asks again.
    pub fn resend_edited(&self, id: u64, text: String) {
        if text.trim().is_empty() || self.streaming.get_untracked().is_some() {
            return;
        }
        self.editing.set(None);
        self.messages.update(|messages| {
            if let Some(index) = messages.iter().position(|m| m.id == id) {
                messages.truncate(index);
            }
        });
        let user = self.new_msg(Role::User, &text, Status::Done);
        self.messages.update(|m| m.push(user));
        self.answer();
    }

    /// 新对话: stops any stream and starts afresh (settings are kept).
    pub fn clear(&self) {
        self.stop();
        self.editing.set(None);
        self.messages.set(Vec::new());
        self.persist();
    }
}

impl Msg {
    fn fail(&self, message: String, retryable: bool) {
        self.failure.set(Some(Failure {
            message,
            retryable,
            hint: None,
        }));
        self.status.set(Status::Failed);
    }
}

/// The panel's starting values: the server's defaults.
pub fn default_settings(info: &ServerInfo) -> Settings {
    let provider = info.provider(&info.default_provider);
    let model = provider
        .map(|p| p.default_model.clone())
        .unwrap_or_default();
    let limit = provider
        .and_then(|p| p.models.iter().find(|m| m.id == model))
        .map_or(info.max_tokens, |m| m.max_output_tokens);
    Settings {
        provider: info.default_provider.clone(),
        model,
        temperature: info.temperature,
        max_tokens: info.max_tokens.min(limit),
        top_p: None,
        seed: info.seed,
        system_prompt: String::new(),
    }
}

/// Saved settings are used only if the server still offers that provider and model.
fn settings_fit(info: &ServerInfo, settings: &Settings) -> bool {
    info.provider(&settings.provider)
        .and_then(|p| p.models.iter().find(|m| m.id == settings.model))
        .is_some_and(|m| settings.max_tokens >= 1 && settings.max_tokens <= m.max_output_tokens)
}
