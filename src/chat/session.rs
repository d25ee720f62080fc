//! The chat's reactive state and its actions: send, stop, regenerate, edit and resend,
//! clear; frames applied to the answer being streamed; a broken stream resumed after its
//! last applied frame (also after a reload, and in a second tab); saving to local
//! storage. Shared with the components through context as one `Copy` handle.
//!
//! A generation lives on the server, apart from any connection: leaving the tab or the
//! page drops only the local connection, and only [`ChatSession::stop`] (or 新对话) stops
//! the generation, for every tab reading it.

use leptos::prelude::*;
use reactive_stores::Store;

use super::markdown::{self, MarkdownStream, TailPatch};
use super::platform::{self, StreamEnd, StreamFrame, StreamHandle, Timer};
use super::state::{
    self, Accept, Failure, Message, MessageStoreFields, Reconnect, Saved, Settings, Stats, Status,
    Switch,
};
use crate::api::ServerInfo;
use crate::protocol::{ChatRequest, Frame, Role};

const STORAGE_KEY: &str = "streamai.chat.v1";

/// How long a stop asked before the answer has its stream id waits for it.
const STOP_WAIT_MS: u64 = 3_000;

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
    /// The answer's rendered markdown: finished blocks, then the tail (the open block),
    /// which the view takes as patches ([`Msg::take_tail_patch`]) when `tail_version`
    /// changes, at most once per frame.
    pub blocks: RwSignal<Vec<String>>,
    pub tail_version: RwSignal<u64>,
    pub retry: RwSignal<Option<RetryNotice>>,
    /// Frames that never arrived (a gap in `seq`).
    pub missing: RwSignal<u64>,
    /// The connection broke and the stream is being resumed: 重新连接中….
    pub reconnecting: RwSignal<bool>,
    markdown: StoredValue<MarkdownStream>,
    /// The blocks and tail are to be shown at the next frame.
    tail_pending: StoredValue<bool>,
}

impl Msg {
    fn new(id: u64, mut message: Message) -> Msg {
        let content = std::mem::take(&mut message.content);
        let msg = Msg {
            id,
            data: Store::new(message),
            blocks: RwSignal::new(Vec::new()),
            tail_version: RwSignal::new(0),
            retry: RwSignal::new(None),
            missing: RwSignal::new(0),
            reconnecting: RwSignal::new(false),
            markdown: StoredValue::new(MarkdownStream::new()),
            tail_pending: StoredValue::new(false),
        };
        msg.append_text(&content);
        if !msg.is_active() {
            msg.markdown.update_value(MarkdownStream::finish);
        }
        msg
    }

    pub fn role(&self) -> Role {
        self.data.with_untracked(|m| m.role)
    }

    /// Still waiting or streaming (untracked: for actions, not views).
    pub fn is_active(&self) -> bool {
        self.data.with_untracked(Message::is_active)
    }

    /// The stream's id, once its `start` frame has come.
    fn stream_id(&self) -> Option<String> {
        self.data.progress().with_untracked(|p| p.stream_id.clone())
    }

    /// Where a resume starts: the stream's id and the last frame applied.
    fn resume_point(&self) -> Option<(String, Option<u64>)> {
        self.data
            .progress()
            .with_untracked(|p| Some((p.stream_id.clone()?, p.last_event)))
    }

    /// Appends answer text: O(chunk) work now; what it changes is shown at the next
    /// frame, once for all the chunks before it.
    fn append_text(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.data.content().update(|c| c.push_str(text));
        if self.role() != Role::Assistant {
            return;
        }
        self.markdown.try_update_value(|md| md.push(text));
        self.schedule_tail();
    }

    /// At the next frame: shows the blocks finished since the last one and lets the view
    /// take the tail's change. Both in one frame, so a block never shows twice (finished
    /// and still in the tail).
    fn schedule_tail(&self) {
        if self.tail_pending.get_value() {
            return;
        }
        self.tail_pending.set_value(true);
        let msg = *self;
        platform::next_frame(move || {
            // The tab may have been left since: its signals are gone.
            if msg.tail_version.is_disposed() {
                return;
            }
            if !markdown::renderer_ready() {
                // Shown once the renderer has come (still pending: nothing else asks).
                leptos::task::spawn_local(async move {
                    markdown::load_renderer().await;
                    if msg.tail_pending.try_set_value(false).is_none() {
                        msg.schedule_tail();
                    }
                });
                return;
            }
            // Follow the answer down, unless the reader has scrolled up to read.
            let follow = platform::near_bottom();
            msg.tail_pending.set_value(false);
            let finished = msg
                .markdown
                .try_update_value(MarkdownStream::take_blocks)
                .unwrap_or_default();
            if !finished.is_empty() {
                msg.blocks.update(|b| b.extend(finished));
            }
            msg.tail_version.update(|v| *v += 1);
            if follow {
                platform::scroll_to_bottom();
            }
        });
    }

    /// What the view of the tail must change to show it as it is now (`None`: nothing).
    // Only the browser's view takes patches; the server renders no answers.
    #[cfg_attr(not(any(feature = "hydrate", test)), allow(dead_code))]
    pub fn take_tail_patch(&self) -> Option<TailPatch> {
        // Without the renderer nothing is shown yet: the tail is scheduled again once
        // it has come.
        if !markdown::renderer_ready() {
            return None;
        }
        self.markdown
            .try_update_value(MarkdownStream::take_patch)
            .flatten()
    }

    /// A new (empty) view of the tail: its next patch is the whole tail.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    pub fn forget_tail(&self) {
        self.markdown.try_update_value(MarkdownStream::forget_shown);
    }

    /// Applies frame `index` of this answer's stream, unless it was applied already (a
    /// resume replays what a save missed). Returns whether it was new.
    fn apply(&self, index: u64, frame: Frame) -> bool {
        let fresh = self
            .data
            .progress()
            .try_update(|p| p.take(index))
            .unwrap_or(false);
        if !fresh {
            return false;
        }
        if let Some((seq, text, is_reasoning)) = frame.text() {
            self.apply_text(seq, text, is_reasoning);
            return true;
        }
        match frame {
            Frame::Start { id, .. } => self.data.progress().update(|p| p.stream_id = Some(id)),
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
                // A stop (from any tab) ends the stream with `done`, its cost included.
                let status = if finish_reason == "stopped" {
                    Status::Stopped
                } else {
                    Status::Done
                };
                let stats = Stats {
                    usage,
                    cost,
                    timing: Some(timing),
                    finish_reason: Some(finish_reason),
                };
                self.finish(status, Some(stats), None);
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
            Frame::Fallback {
                provider,
                model,
                reason,
                continues,
            } => {
                self.retry.set(None);
                let switch = Switch {
                    provider,
                    model,
                    reason,
                    continues,
                };
                self.data.switches().update(|s| s.push(switch));
            }
            Frame::Chunk { .. } | Frame::Reasoning { .. } => {}
        }
        true
    }

    /// Applies the text of frame `seq`, each `seq` once; a gap is counted and shown.
    fn apply_text(&self, seq: u64, text: &str, is_reasoning: bool) {
        match self.data.progress().try_update(|p| p.seq.offer(seq)) {
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
        // The open block is rendered as markdown now, as a reload would render it.
        self.markdown.try_update_value(MarkdownStream::finish);
        self.schedule_tail();
    }
}

/// What a connection asks for.
enum Open {
    /// A new answer.
    Ask(ChatRequest),
    /// The rest of stream `id`, after frame `after`.
    Resume { id: String, after: Option<u64> },
}

/// The chat's state, shared with every component of the tab.
#[derive(Clone, Copy)]
pub(crate) struct ChatSession {
    pub info: StoredValue<ServerInfo>,
    pub messages: RwSignal<Vec<Msg>>,
    pub settings: RwSignal<Settings>,
    /// The answer being streamed, if any.
    pub streaming: RwSignal<Option<u64>>,
    /// A stop of that answer was asked for (sent once its stream id is known).
    pub stopping: RwSignal<bool>,
    pub composer: RwSignal<String>,
    /// The user message being edited, if any.
    pub editing: RwSignal<Option<u64>>,
    /// A clock for countdowns, ticking while a stream runs.
    pub now_ms: RwSignal<f64>,
    handle: StoredValue<Option<StreamHandle>, platform::HandleStorage>,
    /// Numbers connections: a connection's frames and end count only while it is the
    /// latest, so one let go of (leaving, 新对话, ended) touches nothing any more.
    connection: StoredValue<u64>,
    /// The wait before the next resume of a broken stream, and the schedule of waits.
    resume_timer: StoredValue<Option<Timer>>,
    reconnect: StoredValue<Reconnect>,
    /// Ticks `now_ms` during a turn.
    ticker: StoredValue<Option<Timer>>,
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
            stopping: RwSignal::new(false),
            composer: RwSignal::new(String::new()),
            editing: RwSignal::new(None),
            now_ms: RwSignal::new(0.0),
            handle: StoredValue::new_with_storage(None),
            connection: StoredValue::new(0),
            resume_timer: StoredValue::new(None),
            reconnect: StoredValue::new(Reconnect::default()),
            ticker: StoredValue::new(None),
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

    /// Restores the saved conversation and settings (browser only, after hydration), and
    /// follows an answer the server may still be generating.
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
        let messages = state::restored(saved.messages)
            .into_iter()
            .map(|m| self.new_msg(m))
            .collect();
        self.messages.set(messages);
        self.rejoin();
    }

    /// Another tab saved the conversation (`key` is what it saved under): a tab with
    /// nothing of its own under way shows what was saved, so that its own next save (a
    /// setting moved, a question sent) does not bring back the conversation as it was.
    /// A question being written is kept.
    pub fn saved_elsewhere(&self, key: Option<String>) {
        let busy = self.reading()
            || self.streaming.get_untracked().is_some()
            || self.editing.get_untracked().is_some();
        if key.as_deref() == Some(STORAGE_KEY) && !busy {
            self.restore();
        }
    }

    /// A stream is read, or a resume of one waits.
    fn reading(&self) -> bool {
        self.handle.with_value(Option::is_some) || self.resume_timer.with_value(Option::is_some)
    }

    /// Follows the last answer if it is still open with a stream id and nothing reads
    /// it: after a reload, in a second tab, or back from the page cache.
    pub fn rejoin(&self) {
        let busy = self.reading();
        let last = self.messages.with_untracked(|m| m.last().copied());
        let Some(answer) = last.filter(|m| m.data.with_untracked(Message::is_resumable)) else {
            return;
        };
        if !busy {
            self.begin_turn(answer);
            self.resume(answer);
        }
    }

    /// Saves the conversation and settings: at the start and end of each turn and on
    /// leaving, not per chunk. An answer's text and its place in the stream are saved
    /// together, so a resume goes on exactly where the saved text ends.
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

    /// The answer being streamed.
    fn current(&self) -> Option<Msg> {
        let id = self.streaming.get_untracked()?;
        self.messages
            .with_untracked(|m| m.iter().find(|m| m.id == id).copied())
    }

    /// Whether `answer` is (still) the one being streamed; false once the tab is gone.
    fn is_current(&self, answer: Msg) -> bool {
        self.streaming.try_get_untracked() == Some(Some(answer.id))
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
        self.begin_turn(answer);
        self.persist();
        self.connect(answer, Open::Ask(request));
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

    /// Makes `answer` the one being streamed, with a clock for countdowns.
    fn begin_turn(&self, answer: Msg) {
        self.streaming.set(Some(answer.id));
        self.stopping.set(false);
        self.reconnect.set_value(Reconnect::default());
        self.now_ms.set(platform::now_ms());
        let session = *self;
        let ticker = platform::every(250, move || {
            session.now_ms.try_set(platform::now_ms());
        });
        if let Some(old) = self
            .ticker
            .try_update_value(|t| t.replace(ticker))
            .flatten()
        {
            old.cancel();
        }
    }

    /// Opens a connection reading into `answer`. Its frames and its end count only while
    /// it is the latest connection: the stream can outlive the tab, and its last reads
    /// must not touch disposed signals (reading them would panic).
    fn connect(&self, answer: Msg, open: Open) {
        let session = *self;
        let connection = self
            .connection
            .try_update_value(|n| {
                *n += 1;
                *n
            })
            .unwrap_or_default();
        let current = move || {
            session.connection.try_get_value() == Some(connection) && !answer.data.is_disposed()
        };
        let on_frames = move |frames: Vec<StreamFrame>| {
            if current() {
                session.receive(answer, frames);
            }
        };
        let on_end = move |end: StreamEnd| {
            if current() {
                session.end(answer, end);
            }
        };
        let handle = match open {
            Open::Ask(request) => platform::start_stream(&request, on_frames, on_end),
            Open::Resume { id, after } => platform::resume_stream(&id, after, on_frames, on_end),
        };
        // A stand-in that ended at once has moved the count on already.
        if current() {
            self.handle.set_value(Some(handle));
        }
    }

    /// Resumes `answer` after the last frame it applied.
    fn resume(&self, answer: Msg) {
        match answer.resume_point() {
            Some((id, after)) => self.connect(answer, Open::Resume { id, after }),
            None => self.end(answer, StreamEnd::Gone("回答无法继续".into())),
        }
    }

    /// A read of `answer`'s connection (empty: the response has begun).
    fn receive(&self, answer: Msg, frames: Vec<StreamFrame>) {
        if answer.reconnecting.get_untracked() {
            answer.reconnecting.set(false);
        }
        for StreamFrame { index, frame } in frames {
            let is_start = matches!(frame, Frame::Start { .. });
            if !answer.apply(index, frame) {
                continue;
            }
            self.reconnect.set_value(Reconnect::default());
            if is_start {
                self.started(answer);
            }
        }
    }

    /// The stream has its id: saved now, so a reload or another tab can follow it; a
    /// stop asked for before is sent now.
    fn started(&self, answer: Msg) {
        self.persist();
        if self.stopping.get_untracked() {
            self.send_stop(answer);
        }
    }

    /// A connection of `answer` ended. A broken one of an answer still open is resumed
    /// after a wait; otherwise the turn ends, an open answer saying how its stream did.
    /// A 401 asks for the access code, and a question not yet answered at all goes back
    /// into the composer.
    fn end(&self, answer: Msg, end: StreamEnd) {
        self.handle.set_value(None);
        self.connection.update_value(|n| *n += 1);
        if let StreamEnd::Unauthorized(message) = &end {
            crate::app::access::refused(message.clone());
            if answer.is_active() && self.hold_question(answer) {
                self.end_turn(answer);
                return;
            }
        }
        if answer.is_active() {
            if end.is_broken() && self.schedule_resume(answer) {
                return;
            }
            let (status, failure) = outcome(end, self.stopping.get_untracked());
            answer.finish(status, None, failure);
        }
        self.end_turn(answer);
    }

    /// Tries `answer`'s broken stream again after a wait, showing 重新连接中…; false if
    /// its id is unknown or the stream has been broken for too long.
    fn schedule_resume(&self, answer: Msg) -> bool {
        if answer.stream_id().is_none() {
            return false;
        }
        let wait = self
            .reconnect
            .try_update_value(|r| r.next_wait(platform::now_ms()))
            .flatten();
        let Some(wait) = wait else {
            return false;
        };
        answer.reconnecting.set(true);
        let session = *self;
        let timer = platform::after(wait, move || {
            session.resume_timer.try_set_value(None);
            if session.is_current(answer) {
                session.resume(answer);
            }
        });
        self.resume_timer.set_value(Some(timer));
        true
    }

    /// The turn is over: nothing reads or waits any more; the chat is saved.
    fn end_turn(&self, answer: Msg) {
        self.detach();
        answer.reconnecting.set(false);
        self.streaming.set(None);
        self.stopping.set(false);
        self.persist();
    }

    /// Lets go of the connection (aborting the local fetch only), the resume wait and
    /// the clock. The connection's later frames and end are ignored.
    fn detach(&self) {
        self.connection.update_value(|n| *n += 1);
        if let Some(handle) = self.handle.try_update_value(Option::take).flatten() {
            handle.abort();
        }
        for timer in [self.resume_timer, self.ticker] {
            if let Some(timer) = timer.try_update_value(Option::take).flatten() {
                timer.cancel();
            }
        }
    }

    /// Takes back the question whose answer `answer` was refused before it began: both
    /// leave the conversation and the question returns to the composer, so nothing typed
    /// is lost. Only when the composer is empty (nothing else typed meanwhile) and the
    /// answer has nothing of its own yet.
    fn hold_question(&self, answer: Msg) -> bool {
        let untouched = answer
            .data
            .with_untracked(|m| m.content.is_empty() && m.progress.stream_id.is_none());
        if !untouched || !self.composer.with_untracked(|text| text.trim().is_empty()) {
            return false;
        }
        let question = self.messages.with_untracked(|m| match m.as_slice() {
            [.., question, last] if last.id == answer.id && question.role() == Role::User => {
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

    /// Stops the answer being streamed, in every tab reading it; its text so far stays.
    /// The server is asked (once the stream id is known) and the stream is read on to
    /// its `done`, so the stopped answer shows what it cost. If the server cannot be
    /// asked, the local fetch is dropped instead.
    pub fn stop(&self) {
        let Some(answer) = self.current() else {
            return;
        };
        if self.stopping.get_untracked() {
            return;
        }
        self.stopping.set(true);
        if answer.stream_id().is_some() {
            self.send_stop(answer);
            return;
        }
        // Not started yet: the stop is sent with the id, unless the server does not
        // answer soon (overloaded, a stalled network): then the fetch is dropped here.
        let session = *self;
        platform::after(STOP_WAIT_MS, move || {
            if session.is_current(answer) && answer.stream_id().is_none() {
                session.abort(answer);
            }
        });
    }

    fn send_stop(&self, answer: Msg) {
        let Some(id) = answer.stream_id() else {
            return;
        };
        let session = *self;
        platform::stop_stream(&id, move |accepted| {
            if !accepted && session.is_current(answer) {
                session.abort(answer);
            }
        });
    }

    /// Ends `answer` here as stopped: aborts its fetch (whose end then ends the turn), or
    /// ends it now while it waits to resume.
    fn abort(&self, answer: Msg) {
        let running = self
            .handle
            .with_value(|h| h.as_ref().map(StreamHandle::abort).is_some());
        if !running {
            self.end(answer, StreamEnd::Aborted);
        }
    }

    /// The tab or the page is going away: only the local connection is dropped; the
    /// server goes on generating. The answer is saved as still streaming, with its
    /// stream id and last applied frame, and the next page (or another tab) resumes it.
    /// One whose stream id never came cannot be resumed: it is saved as stopped.
    pub fn leave(&self) {
        let Some(answer) = self.current() else {
            return;
        };
        self.detach();
        if answer.data.with_untracked(Message::is_resumable) {
            self.persist();
        } else {
            answer.finish(Status::Stopped, None, None);
            self.end_turn(answer);
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

    /// 新对话: stops the answer being streamed (on the server too) and starts afresh
    /// (settings are kept).
    pub fn clear(&self) {
        if let Some(answer) = self.current() {
            if let Some(id) = answer.stream_id() {
                platform::stop_stream(&id, |_| {});
            }
            self.detach();
            self.streaming.set(None);
            self.stopping.set(false);
        }
        self.editing.set(None);
        self.messages.set(Vec::new());
        self.persist();
    }
}

/// How an answer still open ends with its connection: stopped when we dropped it (or
/// a stop was asked for), otherwise failed, its text kept.
fn outcome(end: StreamEnd, stopping: bool) -> (Status, Option<Failure>) {
    let failed = |message, retryable| (Status::Failed, Some(Failure::plain(message, retryable)));
    match end {
        StreamEnd::Aborted => (Status::Stopped, None),
        end if stopping && end.is_broken() => (Status::Stopped, None),
        StreamEnd::Rejected(message) | StreamEnd::Unauthorized(message) => failed(message, false),
        StreamEnd::Gone(message) | StreamEnd::Network(message) => failed(message, true),
        StreamEnd::Finished => failed("连接意外结束，回答不完整".into(), true),
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
    use crate::protocol::{Cost, ErrorCode, Timing, Usage, UsageSource};

    fn chunk(seq: u64, content: &str) -> Frame {
        Frame::Chunk {
            seq,
            content: content.into(),
        }
    }

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            source: UsageSource::Tiktoken,
        }
    }

    fn cost() -> Cost {
        Cost {
            currency: "CNY".into(),
            input: "0".into(),
            output: "0".into(),
            total: "0".into(),
        }
    }

    fn start(id: &str) -> Frame {
        Frame::Start {
            id: id.into(),
            provider: "p".into(),
            model: "m".into(),
        }
    }

    fn session() -> ChatSession {
        ChatSession::new(ServerInfo {
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
        })
    }

    /// A conversation of one question and an open answer, being streamed.
    fn streaming(session: ChatSession, answer: Message) -> Msg {
        let question = session.new_msg(Message::new(Role::User, "问", Status::Done));
        let answer = session.new_msg(answer);
        session.messages.set(vec![question, answer]);
        session.begin_turn(answer);
        answer
    }

    #[test]
    fn frames_fold_into_the_answer_each_once() {
        let owner = Owner::new();
        owner.set();
        let msg = Msg::new(1, Message::new(Role::Assistant, "", Status::Waiting));
        assert!(msg.apply(0, chunk(0, "# 标题\n\n")));
        assert!(!msg.apply(0, chunk(0, "# 标题\n\n")));
        // A new frame repeating a text seq is still applied once.
        assert!(msg.apply(1, chunk(0, "# 标题\n\n")));
        msg.apply(
            2,
            Frame::Reasoning {
                seq: 1,
                content: "想".into(),
            },
        );
        msg.apply(3, chunk(3, "尾巴"));
        let data = msg.data.get_untracked();
        assert_eq!(data.content, "# 标题\n\n尾巴");
        assert_eq!(data.reasoning, "想");
        assert_eq!(data.status, Status::Streaming);
        assert_eq!(data.progress.last_event, Some(3));
        assert_eq!(msg.missing.get_untracked(), 1);
        assert_eq!(msg.blocks.get_untracked().len(), 1);
        assert_eq!(
            msg.take_tail_patch(),
            Some(TailPatch::Html("<p>尾巴</p>\n".into()))
        );
        assert_eq!(msg.take_tail_patch(), None);

        msg.apply(
            4,
            Frame::Error {
                code: ErrorCode::RateLimited,
                message: "限流".into(),
                retryable: true,
                usage: Some(usage()),
                cost: Some(cost()),
            },
        );
        let data = msg.data.get_untracked();
        assert_eq!(data.status, Status::Failed);
        assert!(data
            .failure
            .is_some_and(|f| f.retryable && f.hint.is_some()));
        assert!(data.stats.is_some());

        // Leaving the tab disposes the message: late frames must check before reading.
        owner.cleanup();
        assert!(msg.data.is_disposed() && msg.tail_version.is_disposed());
    }

    #[test]
    fn a_resumed_replay_applied_twice_gives_the_text_once() {
        let owner = Owner::new();
        owner.set();
        let frames: Vec<Frame> = std::iter::once(start("s-1"))
            .chain((0..6).map(|seq| chunk(seq, &format!("第{seq}段。"))))
            .collect();
        let whole: String = (0..6).map(|seq| format!("第{seq}段。")).collect();
        let msg = Msg::new(1, Message::new(Role::Assistant, "", Status::Waiting));
        for (index, frame) in frames.iter().enumerate().take(4) {
            msg.apply(index as u64, frame.clone());
        }
        // Saved here (say, on a reload): text and place in the stream together.
        let saved = msg.data.get_untracked();
        assert_eq!(saved.progress.stream_id.as_deref(), Some("s-1"));
        assert_eq!(saved.progress.last_event, Some(3));

        // The page that resumes, with the frames after 3, then the whole stream again.
        let resumed = Msg::new(2, saved.restored());
        let after = resumed.resume_point().and_then(|(_, after)| after).unwrap();
        let replay = frames.iter().enumerate().skip(after as usize + 1);
        for (index, frame) in replay.chain(frames.iter().enumerate()) {
            resumed.apply(index as u64, frame.clone());
        }
        assert_eq!(resumed.data.content().get_untracked(), whole);
        assert_eq!(resumed.missing.get_untracked(), 0);
    }

    #[test]
    fn a_stop_ends_the_answer_as_stopped_with_its_cost() {
        let owner = Owner::new();
        owner.set();
        let msg = Msg::new(1, Message::new(Role::Assistant, "", Status::Waiting));
        msg.apply(0, start("s-1"));
        msg.apply(1, chunk(0, "一半"));
        msg.apply(
            2,
            Frame::Done {
                finish_reason: "stopped".into(),
                usage: usage(),
                cost: cost(),
                timing: Timing {
                    first_token_ms: Some(5),
                    total_ms: 10,
                },
            },
        );
        let data = msg.data.get_untracked();
        assert_eq!(data.status, Status::Stopped);
        assert_eq!(data.content, "一半");
        assert!(data.stats.is_some());
    }

    /// What a view of the answer holds: its blocks, then its tail built from patches.
    fn shown(msg: Msg) -> String {
        let tail = match msg.take_tail_patch() {
            Some(TailPatch::Html(html)) => html,
            other => panic!("a new view gets the whole tail, not {other:?}"),
        };
        msg.blocks.get_untracked().concat() + &tail
    }

    #[test]
    fn a_finished_answer_shows_the_same_after_a_reload() {
        let owner = Owner::new();
        owner.set();
        let text = "代码：\n```rust\nfn main() {}\n``";
        let msg = Msg::new(1, Message::new(Role::Assistant, "", Status::Waiting));
        msg.apply(0, start("s-1"));
        for (seq, piece) in text.split_inclusive('\n').enumerate() {
            msg.apply(seq as u64 + 1, chunk(seq as u64, piece));
            msg.take_tail_patch();
        }
        let done = Frame::Done {
            finish_reason: "stop".into(),
            usage: usage(),
            cost: cost(),
            timing: Timing {
                first_token_ms: Some(5),
                total_ms: 10,
            },
        };
        msg.apply(9, done);
        let saved = msg.data.get_untracked();
        msg.forget_tail();
        let streamed = shown(msg);
        assert!(streamed.contains("fn main() {}\n``</code>"), "{streamed}");
        assert_eq!(streamed, shown(Msg::new(2, saved)));
    }

    #[test]
    fn a_broken_stream_is_resumed_and_leaving_keeps_it_open() {
        let owner = Owner::new();
        owner.set();
        let session = session();
        let answer = streaming(session, Message::new(Role::Assistant, "", Status::Waiting));
        session.receive(
            answer,
            vec![
                StreamFrame {
                    index: 0,
                    frame: start("s-1"),
                },
                StreamFrame {
                    index: 1,
                    frame: chunk(0, "已收到"),
                },
            ],
        );
        session.end(answer, StreamEnd::Network("连接中断".into()));
        assert!(answer.reconnecting.get_untracked());
        assert_eq!(session.streaming.get_untracked(), Some(answer.id));

        session.leave();
        let saved = session.history().pop().unwrap();
        assert_eq!(saved.status, Status::Streaming);
        assert_eq!(saved.content, "已收到");
        assert_eq!(saved.progress.last_event, Some(1));
        assert_eq!(saved.progress.stream_id.as_deref(), Some("s-1"));
    }

    #[test]
    fn without_a_stream_id_a_break_fails_and_leaving_stops() {
        let owner = Owner::new();
        owner.set();
        let session = session();
        let answer = streaming(session, Message::new(Role::Assistant, "", Status::Waiting));
        session.end(answer, StreamEnd::Network("无法连接到服务器".into()));
        assert_eq!(answer.data.status().get_untracked(), Status::Failed);
        assert!(!answer.reconnecting.get_untracked());
        assert_eq!(session.streaming.get_untracked(), None);

        let answer = streaming(session, Message::new(Role::Assistant, "", Status::Waiting));
        session.leave();
        assert_eq!(answer.data.status().get_untracked(), Status::Stopped);
        assert_eq!(session.streaming.get_untracked(), None);
    }

    #[test]
    fn a_stop_the_server_cannot_take_drops_the_connection() {
        let owner = Owner::new();
        owner.set();
        let session = session();
        let mut open = Message::new(Role::Assistant, "部分", Status::Streaming);
        open.progress.stream_id = Some("s-1".into());
        let answer = streaming(session, open);
        // The stand-in refuses every stop, as a failed request would.
        session.stop();
        assert_eq!(answer.data.status().get_untracked(), Status::Stopped);
        assert_eq!(answer.data.content().get_untracked(), "部分");
        assert_eq!(session.streaming.get_untracked(), None);
    }

    #[test]
    fn how_an_open_answer_ends_with_its_connection() {
        let check = |end: StreamEnd, stopping: bool, status: Status, retryable: Option<bool>| {
            let (got, failure) = outcome(end, stopping);
            assert_eq!((got, failure.map(|f| f.retryable)), (status, retryable));
        };
        check(StreamEnd::Aborted, false, Status::Stopped, None);
        check(StreamEnd::Network("x".into()), true, Status::Stopped, None);
        check(StreamEnd::Finished, true, Status::Stopped, None);
        check(
            StreamEnd::Network("x".into()),
            false,
            Status::Failed,
            Some(true),
        );
        check(
            StreamEnd::Gone("过期".into()),
            true,
            Status::Failed,
            Some(true),
        );
        check(
            StreamEnd::Rejected("x".into()),
            false,
            Status::Failed,
            Some(false),
        );
        check(StreamEnd::Finished, false, Status::Failed, Some(true));
    }

    #[test]
    fn a_refused_access_code_puts_the_question_back_in_the_composer() {
        let owner = Owner::new();
        owner.set();
        let session = session();
        let answer = streaming(session, Message::new(Role::Assistant, "", Status::Waiting));
        session.composer.set(String::new());
        session.messages.update(|m| {
            m[0].data.content().set("别丢了".into());
        });

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

    #[test]
    fn a_refused_resume_keeps_the_text() {
        let owner = Owner::new();
        owner.set();
        let session = session();
        let mut open = Message::new(Role::Assistant, "部分", Status::Streaming);
        open.progress.stream_id = Some("s-1".into());
        let answer = streaming(session, open);
        session.end(answer, StreamEnd::Unauthorized("访问码已被停用".into()));
        assert_eq!(session.messages.get_untracked().len(), 2);
        assert_eq!(answer.data.content().get_untracked(), "部分");
        assert_eq!(answer.data.status().get_untracked(), Status::Failed);
    }
}
