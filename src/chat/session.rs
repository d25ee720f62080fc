//! The chat's reactive state and its actions: send, stop, regenerate, edit and resend,
//! clear; frames applied to the answer being streamed; saving to local storage.
//! Shared with the components through context as one `Copy` handle.

use leptos::prelude::*;
use reactive_stores::Store;

use super::markdown::MarkdownStream;
use super::platform::{self, StreamEnd, StreamHandle};
use super::state::{
    self, Accept, Failure, Message, MessageStoreFields, Saved, SeqGuard, Settings, Stats, Status,
};
use crate::api::ServerInfo;
use crate::protocol::{ChatRequest, Frame, Role};

const STORAGE_KEY: &str = "streamai.chat.v1";

/// A `retry` frame as the answer shows it, with a live countdown.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryNotice {
    pub attempt: u32,
    pub max_retries: u32,
    pub reason: String,
    /// When the wait ends, in `platform::now_ms()` time.
    pub until_ms: f64,
}

/// One message on screen: the [`Message`] itself in a store (what is saved, reactive per
/// field, so a chunk touches only what it changes), and beside it what streaming needs
/// and is never saved.
#[derive(Clone, Copy)]
pub(crate) struct Msg {
    pub id: u64,
    pub data: Store<Message>,
    /// The answer's rendered markdown: finished blocks, then the tail.
    pub blocks: RwSignal<Vec<String>>,
    pub tail: RwSignal<String>,
    pub retry: RwSignal<Option<RetryNotice>>,
    /// Frames that never arrived (a gap in `seq`).
    pub missing: RwSignal<u64>,
    markdown: StoredValue<MarkdownStream>,
    /// A tail render is scheduled for the next frame.
    tail_pending: StoredValue<bool>,
    seq: StoredValue<SeqGuard>,
}

impl Msg {
    fn new(id: u64, mut message: Message) -> Msg {
        let content = std::mem::take(&mut message.content);
        let msg = Msg {
            id,
            data: Store::new(message),
            blocks: RwSignal::new(Vec::new()),
            tail: RwSignal::new(String::new()),
            retry: RwSignal::new(None),
            missing: RwSignal::new(0),
            markdown: StoredValue::new(MarkdownStream::new()),
            tail_pending: StoredValue::new(false),
            seq: StoredValue::new(SeqGuard::default()),
        };
        msg.append_text(&content);
        msg
    }

    pub fn role(&self) -> Role {
        self.data.with_untracked(|m| m.role)
    }

    pub fn is_active(&self) -> bool {
        matches!(
            self.data.status().get(),
            Status::Waiting | Status::Streaming
        )
    }

    /// Appends answer text: O(chunk) work now; the unfinished paragraph is re-rendered
    /// at most once per frame, however many chunks arrive in between.
    fn append_text(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.data.content().update(|c| c.push_str(text));
        if self.role() != Role::Assistant {
            return;
        }
        let finished = self
            .markdown
            .try_update_value(|md| md.push(text))
            .unwrap_or_default();
        if !finished.is_empty() {
            self.blocks.update(|b| b.extend(finished));
        }
        self.schedule_tail();
    }

    /// Renders the unfinished tail at the next frame, once for all the chunks before it.
    fn schedule_tail(&self) {
        if self.tail_pending.get_value() {
            return;
        }
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

    /// Applies one frame of this answer's stream.
    fn apply(&self, frame: Frame) {
        if let Some((seq, text, is_reasoning)) = frame.text() {
            self.apply_text(seq, text, is_reasoning);
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
                let stats = Stats {
                    usage,
                    cost,
                    timing: Some(timing),
                    finish_reason: Some(finish_reason),
                };
                self.finish(Status::Done, Some(stats), None);
            }
            Frame::Error {
                code,
                message,
                retryable,
                usage,
                cost,
            } => {
                let stats = usage.zip(cost).map(|(usage, cost)| Stats {
                    usage,
                    cost,
                    timing: None,
                    finish_reason: None,
                });
                let failure = Failure::from_code(code, message, retryable);
                self.finish(Status::Failed, stats, Some(failure));
            }
            _ => {}
        }
    }

    /// Applies the text of frame `seq`, each `seq` once; a gap is counted and shown.
    fn apply_text(&self, seq: u64, text: &str, is_reasoning: bool) {
        match self.seq.try_update_value(|g| g.offer(seq)) {
            Some(Accept::Duplicate) | None => return,
            Some(Accept::Gap { missing }) => self.missing.update(|m| *m += missing),
            Some(Accept::New) => {}
        }
        if self.data.status().get_untracked() != Status::Streaming {
            self.data.status().set(Status::Streaming);
            self.retry.set(None);
        }
        if is_reasoning {
            self.data.reasoning().update(|r| r.push_str(text));
        } else {
            self.append_text(text);
        }
    }

    /// Ends the answer in `status`, with its figures and failure if it has them.
    fn finish(&self, status: Status, stats: Option<Stats>, failure: Option<Failure>) {
        self.retry.set(None);
        if stats.is_some() {
            self.data.stats().set(stats);
        }
        if failure.is_some() {
            self.data.failure().set(failure);
        }
        self.data.status().set(status);
    }
}

/// The chat's state, shared with every component of the tab.
#[derive(Clone, Copy)]
pub(crate) struct ChatSession {
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
    /// A question the server refused for want of a valid access code, back in the
    /// composer until a code is entered ([`ChatSession::resend_held`]).
    held: StoredValue<Option<String>>,
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
            held: StoredValue::new(None),
            next_id: StoredValue::new(1),
            owner: StoredValue::new(Owner::current().unwrap_or_default()),
        }
    }

    fn new_msg(&self, message: Message) -> Msg {
        let id = self.next_id.get_value();
        self.next_id.set_value(id + 1);
        self.owner
            .with_value(|owner| owner.with(|| Msg::new(id, message)))
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
            .map(|m| self.new_msg(m.restored()))
            .collect();
        self.messages.set(messages);
    }

    /// Saves the conversation and settings. Called at the end of each turn, not per chunk.
    pub fn persist(&self) {
        let saved = Saved {
            messages: self.history(),
            settings: Some(self.settings.get_untracked()),
        };
        if let Ok(text) = serde_json::to_string(&saved) {
            platform::save(STORAGE_KEY, &text);
        }
    }

    /// The conversation as it stands, as plain data.
    fn history(&self) -> Vec<Message> {
        self.messages
            .with_untracked(|m| m.iter().map(|m| m.data.get_untracked()).collect())
    }

    /// Sends the composer's text as a new user message.
    pub fn send(&self) {
        let text = self.composer.get_untracked();
        if text.trim().is_empty() || self.streaming.get_untracked().is_some() {
            return;
        }
        self.composer.set(String::new());
        self.ask(&text);
    }

    /// Adds user message `text` and answers it.
    fn ask(&self, text: &str) {
        let user = self.new_msg(Message::new(Role::User, text, Status::Done));
        self.messages.update(|m| m.push(user));
        self.answer();
    }

    /// Appends an empty answer and streams into it, with everything before it as context.
    fn answer(&self) {
        let request = self.request();
        let answer = self.new_msg(Message::new(Role::Assistant, "", Status::Waiting));
        self.messages.update(|m| m.push(answer));
        self.streaming.set(Some(answer.id));
        self.persist();
        self.stream(&request, answer);
    }

    /// The request for the next answer: the panel's parameters and the context.
    fn request(&self) -> ChatRequest {
        let settings = self.settings.get_untracked();
        // 深度思考 only for a model that can think: elsewhere the server would refuse it.
        let thinking = self
            .info
            .with_value(|i| i.can_think(&settings.provider, &settings.model))
            .then_some(settings.thinking);
        ChatRequest {
            messages: state::context(&settings.system_prompt, &self.history()),
            provider: Some(settings.provider),
            model: Some(settings.model),
            temperature: Some(settings.temperature),
            top_p: settings.top_p,
            max_tokens: Some(settings.max_tokens),
            seed: settings.seed,
            thinking,
        }
    }

    /// Streams the answer to `request` into `answer`, with a clock for countdowns.
    fn stream(&self, request: &ChatRequest, answer: Msg) {
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
            if answer.data.is_disposed() {
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
            if !answer.data.is_disposed() {
                session.end(answer, end);
            }
        };
        let handle = platform::start_stream(request, on_frames, on_end);
        if self.streaming.get_untracked() == Some(answer.id) {
            self.handle.set_value(Some(handle));
        }
    }

    /// Ends the turn: an answer still open says how its stream ended; the chat is saved.
    /// A 401 asks for the access code, and the question goes back into the composer.
    fn end(&self, answer: Msg, end: StreamEnd) {
        if let StreamEnd::Unauthorized(message) = &end {
            crate::app::access::refused(message.clone());
            if answer.is_active() && self.hold_question(answer.id) {
                self.streaming.set(None);
                self.handle.set_value(None);
                self.persist();
                return;
            }
        }
        if answer.is_active() {
            let failed =
                |message, retryable| (Status::Failed, Some(Failure::plain(message, retryable)));
            let (status, failure) = match end {
                StreamEnd::Aborted => (Status::Stopped, None),
                StreamEnd::Rejected(message) | StreamEnd::Unauthorized(message) => {
                    failed(message, false)
                }
                StreamEnd::Network(message) => failed(message, true),
                StreamEnd::Finished => failed("连接意外结束，回答不完整".into(), true),
            };
            answer.finish(status, None, failure);
        }
        self.streaming.set(None);
        self.handle.set_value(None);
        self.persist();
    }

    /// Takes back the question whose answer `answer` was refused before it began: both
    /// leave the conversation and the question returns to the composer, so nothing typed
    /// is lost. Only when the composer is empty (nothing else typed meanwhile).
    fn hold_question(&self, answer: u64) -> bool {
        if !self.composer.with_untracked(|text| text.trim().is_empty()) {
            return false;
        }
        let question = self.messages.with_untracked(|m| match m.as_slice() {
            [.., question, last] if last.id == answer && question.role() == Role::User => {
                Some(question.data.content().get_untracked())
            }
            _ => None,
        });
        let Some(question) = question else {
            return false;
        };
        self.messages.update(|m| m.truncate(m.len() - 2));
        self.composer.set(question.clone());
        self.held.set_value(Some(question));
        true
    }

    /// A code has been entered: sends the question a 401 held back, if the composer still
    /// holds it unchanged.
    pub fn resend_held(&self) {
        let Some(question) = self.held.try_update_value(Option::take).flatten() else {
            return;
        };
        if self.composer.get_untracked() == question {
            self.send();
        }
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
            .with_untracked(|m| m.last().is_some_and(|m| m.role() == Role::Assistant));
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
        self.ask(&text);
    }

    /// 新对话: stops any stream and starts afresh (settings are kept).
    pub fn clear(&self) {
        self.stop();
        self.editing.set(None);
        self.messages.set(Vec::new());
        self.persist();
    }
}

/// The panel's starting values: the server's defaults.
fn default_settings(info: &ServerInfo) -> Settings {
    let (model, max_tokens) = model_defaults(info, &info.default_provider);
    Settings {
        provider: info.default_provider.clone(),
        model,
        temperature: info.temperature,
        max_tokens,
        top_p: None,
        seed: info.seed,
        system_prompt: String::new(),
        thinking: false,
    }
}

/// A provider's default model, and the server's default `max_tokens` within its limit.
pub(crate) fn model_defaults(info: &ServerInfo, provider: &str) -> (String, u32) {
    let model = info
        .provider(provider)
        .map(|p| p.default_model.clone())
        .unwrap_or_default();
    let max_tokens = info.max_tokens.min(info.output_limit(provider, &model));
    (model, max_tokens)
}

/// Saved settings are used only if the server still offers that provider and model.
fn settings_fit(info: &ServerInfo, settings: &Settings) -> bool {
    info.model(&settings.provider, &settings.model)
        .is_some_and(|m| (1..=m.max_output_tokens).contains(&settings.max_tokens))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Cost, ErrorCode, Usage, UsageSource};

    fn chunk(seq: u64, content: &str) -> Frame {
        Frame::Chunk {
            seq,
            content: content.into(),
        }
    }

    #[test]
    fn frames_fold_into_the_answer_each_once() {
        let owner = Owner::new();
        owner.set();
        let msg = Msg::new(1, Message::new(Role::Assistant, "", Status::Waiting));
        msg.apply(chunk(0, "# 标题\n\n"));
        msg.apply(chunk(0, "# 标题\n\n"));
        msg.apply(Frame::Reasoning {
            seq: 1,
            content: "想".into(),
        });
        msg.apply(chunk(3, "尾巴"));
        let data = msg.data.get_untracked();
        assert_eq!(data.content, "# 标题\n\n尾巴");
        assert_eq!(data.reasoning, "想");
        assert_eq!(data.status, Status::Streaming);
        assert_eq!(msg.missing.get_untracked(), 1);
        assert_eq!(msg.blocks.get_untracked().len(), 1);
        assert_eq!(msg.tail.get_untracked(), "<p>尾巴</p>\n");

        msg.apply(Frame::Error {
            code: ErrorCode::RateLimited,
            message: "限流".into(),
            retryable: true,
            usage: Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3,
                source: UsageSource::Tiktoken,
            }),
            cost: Some(Cost {
                currency: "CNY".into(),
                input: "0".into(),
                output: "0".into(),
                total: "0".into(),
            }),
        });
        let data = msg.data.get_untracked();
        assert_eq!(data.status, Status::Failed);
        assert!(data
            .failure
            .is_some_and(|f| f.retryable && f.hint.is_some()));
        assert!(data.stats.is_some());

        // Leaving the tab disposes the message: late frames must check before reading.
        owner.cleanup();
        assert!(msg.data.is_disposed() && msg.tail.is_disposed());
    }

    #[test]
    fn a_refused_access_code_puts_the_question_back_in_the_composer() {
        let owner = Owner::new();
        owner.set();
        let session = ChatSession::new(ServerInfo {
            demo: true,
            access_required: true,
            default_provider: "demo".into(),
            providers: Vec::new(),
            temperature: 0.7,
            max_tokens: 100,
            seed: None,
            timeout_secs: 10,
            max_retries: 0,
            max_body_bytes: 1000,
        });
        let question = session.new_msg(Message::new(Role::User, "别丢了", Status::Done));
        let answer = session.new_msg(Message::new(Role::Assistant, "", Status::Waiting));
        session.messages.set(vec![question, answer]);
        session.streaming.set(Some(answer.id));

        session.end(answer, StreamEnd::Unauthorized("访问码已被停用".into()));
        assert!(session.messages.get_untracked().is_empty());
        assert_eq!(session.composer.get_untracked(), "别丢了");
        assert_eq!(session.streaming.get_untracked(), None);

        // Sending needs a browser (the browser test covers it); a question edited
        // meanwhile is the user's to send, and is not sent for them.
        session.composer.set("别丢了，改过".into());
        session.resend_held();
        assert!(session.messages.get_untracked().is_empty());
        assert_eq!(session.held.get_value(), None);
    }
}
