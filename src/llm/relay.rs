//! One streaming chat, in a task of its own or beside its log's pump: open the provider
//! stream (with retries), then relay its text as frames, numbering them, timing them, and
//! counting tokens and cost.
//!
//! Invariants: `start` is the first frame; exactly one `done` or `error` is the last;
//! once any text has been sent nothing is retried; a stop ([`Control::stop`]) ends the
//! answer with a `done` frame whose `finish_reason` is `stopped`, billed for what was
//! generated; when the frame receiver is dropped the task ends at once, dropping the
//! provider connection, and logs the partial usage.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::client::{later, millis, LlmClient, RetryWait, Shutdown};
use super::cost::Price;
use super::error::LlmError;
use super::frames::{FrameTx, Frames, Refused, SendFailed};
use super::idle::IdleTimer;
use super::keys::key_id;
use super::request::ChatJob;
use super::tokens;
use super::wire::{UpstreamEvent, WireUsage};
use super::woken::WhenWoken;
use crate::protocol::{Cost, ErrorCode, Frame, Timing, Usage, UsageSource, Yuan};

/// A stream of protocol frames: `start`, …, then exactly one `done` or `error`.
pub type FrameStream = BoxStream<'static, Frame>;

/// What one chat cost and how it ended: sent once, when it ends, for the ledger and the
/// budget. The same numbers as the terminal frame (or, for a browser that went away, as
/// the log line).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub ended: Ended,
    /// The model that answered: the last one tried when a fallback chain moved on.
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    /// Our tiktoken count of the reasoning text (providers report it inconsistently).
    pub reasoning_tokens: u32,
    pub cost: Yuan,
    pub key_id: Option<String>,
    /// Attempts made to open the stream (1 without retries).
    pub attempts: u32,
    pub first_token_ms: Option<u64>,
    pub duration_ms: u64,
}

/// How a chat ended, as its [`Report`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    Failed(ErrorCode),
    /// The browser stopped it or went away.
    Stopped,
}

/// What the caller holds of a running chat besides its frames.
pub struct Control {
    /// The chat's id, sent in the `start` frame ([`chat_id`]).
    pub id: String,
    pub shutdown: Shutdown,
    /// Becomes `true` to stop the answer: it ends with a `done` frame whose
    /// `finish_reason` is `stopped`, billed for what was generated.
    pub stop: watch::Receiver<bool>,
}

impl Control {
    /// A chat with a fresh id that only shutdown or a dropped stream can end.
    pub fn unstoppable(shutdown: Shutdown) -> Control {
        let (_, stop) = watch::channel(false);
        Control {
            id: chat_id(),
            shutdown,
            stop,
        }
    }
}

impl LlmClient {
    /// Starts a streaming chat. The provider call runs in its own task, which stops —
    /// dropping the upstream connection — as soon as the returned stream is dropped.
    pub fn stream(self: &Arc<Self>, job: ChatJob, shutdown: Shutdown) -> FrameStream {
        self.stream_reported(job, Control::unstoppable(shutdown)).0
    }

    /// [`Self::stream`] under `control`, with the chat's [`Report`] delivered when it ends.
    pub fn stream_reported(
        self: &Arc<Self>,
        job: ChatJob,
        control: Control,
    ) -> (FrameStream, oneshot::Receiver<Report>) {
        let (prepared, report) = self.prepare(job, control);
        tokio::spawn(prepared.relay);
        let frames = futures::stream::unfold(prepared.frames, |mut frames| async move {
            frames.next().await.map(|frame| (frame, frames))
        });
        (frames.boxed(), report)
    }

    /// [`Self::stream_reported`] without its task: the caller drives `relay`.
    pub fn prepare(
        self: &Arc<Self>,
        job: ChatJob,
        control: Control,
    ) -> (Prepared, oneshot::Receiver<Report>) {
        let (tx, frames) = Frames::channel();
        let (report_tx, report_rx) = oneshot::channel();
        let relay = run(self.clone(), job, tx, report_tx, control).boxed();
        let prepared = Prepared { relay, frames };
        (prepared, report_rx)
    }
}

/// A chat whose `relay` produces `frames`. Whoever holds it drives `relay`: in its own
/// task, or in the task that reads the frames (`server::streams`, which polls the relay
/// and then takes what it sent with [`Frames::poll_sent`]), so that a chunk is not
/// handed from one task to another on its way to the log.
pub struct Prepared {
    pub relay: BoxFuture<'static, ()>,
    pub frames: Frames,
}

/// Runs one chat to its end, sending frames to `tx` and its report to `report`.
async fn run(
    client: Arc<LlmClient>,
    job: ChatJob,
    tx: FrameTx,
    report_to: oneshot::Sender<Report>,
    control: Control,
) {
    let id = control.id.clone();
    let span = tracing::info_span!(
        "chat",
        %id,
        provider = %job.provider,
        model = %job.model.id,
        key_id = Empty,
        attempts = Empty,
        first_token_ms = Empty,
        prompt_tokens = Empty,
        completion_tokens = Empty,
        // Our tiktoken count, kept beside the provider's numbers.
        completion_estimate = Empty,
        usage_source = Empty,
        cost = Empty,
        outcome = Empty,
    );
    let report = relay(client, job, tx, control).instrument(span).await;
    let _ = report_to.send(report);
}

async fn relay(client: Arc<LlmClient>, job: ChatJob, tx: FrameTx, mut control: Control) -> Report {
    let job = Arc::new(job);
    let mut session = Session::new(&job);
    let start = Frame::Start {
        id: control.id.clone(),
        provider: job.provider.clone(),
        model: job.model.id.clone(),
    };
    if tx.send(start).await.is_err() {
        return session.cancelled();
    }
    match drive(&client, &job, &mut session, &tx, &mut control).await {
        End::Finished => session.done(&tx, None).await,
        End::Stopped => session.done(&tx, Some(STOPPED)).await,
        End::Failed(err) => session.fail(&client, &job, &tx, err).await,
        End::ClientGone => session.cancelled(),
    }
}

/// How a chat ended.
enum End {
    /// `[DONE]`, or the body ended (or fell silent) after a `finish_reason`.
    Finished,
    Failed(LlmError),
    /// Stopped on request ([`Control::stop`]).
    Stopped,
    /// The frame receiver went away or stopped reading.
    ClientGone,
}

/// The `finish_reason` of an answer stopped on request.
pub const STOPPED: &str = "stopped";

/// Relays the answer of `job`, moving along its fallback chain while nothing has been
/// sent: when a model fails in a way that another may not ([`LlmError::falls_back`]),
/// or answers nothing, the next model of the chain is asked, and a `fallback` frame
/// says so.
async fn drive(
    client: &LlmClient,
    job: &ChatJob,
    session: &mut Session,
    tx: &FrameTx,
    control: &mut Control,
) -> End {
    let config = client.config();
    let limits = &config.limits;
    let mut stops = Stops::new(
        tx,
        control,
        later(session.started, limits.max_stream),
        limits.max_stream,
    );
    let mut chain = job.model.chain.fallback.iter();
    let mut current = Cow::Borrowed(job);
    loop {
        let end = attempt(client, &current, session, &mut stops).await;
        let (err, cut) = match end {
            End::Finished if !session.has_text() => (LlmError::EmptyAnswer, false),
            End::Failed(err) if err.falls_back() && !session.has_text() => (err, false),
            // Cut mid-answer: a model of the chain that can continue finishes it.
            End::Failed(err) if err.falls_back() && !session.text.is_empty() => (err, true),
            other => return other,
        };
        let next = if cut {
            let completion = tokens::count_text(&session.text);
            chain.find_map(|next| {
                super::request::continuation(config, job, next, &session.text, completion)
            })
        } else {
            chain.find_map(|next| super::request::fallback(config, job, next))
        };
        let Some(next) = next else {
            return match err {
                LlmError::EmptyAnswer => End::Finished,
                err => End::Failed(err),
            };
        };
        tracing::warn!(
            from = %current.model.id,
            to = %next.model.id,
            continues = cut,
            "falling back: {}",
            client.describe(&current.provider, &err).escape_debug()
        );
        let frame = Frame::Fallback {
            provider: next.provider.clone(),
            model: next.model.id.clone(),
            reason: err.fallback_reason(),
            continues: cut,
        };
        if let Err(end) = deliver(tx, frame, limits.client_stall).await {
            return end;
        }
        session.switch(&next, cut);
        current = Cow::Owned(next);
    }
}

/// One model's turn: opens its stream (with retries and key rotation) and relays it
/// into `session` until it ends; text a continuation's seam still holds goes out last.
async fn attempt(
    client: &LlmClient,
    job: &ChatJob,
    session: &mut Session,
    stops: &mut Stops<'_>,
) -> End {
    let end = relay_turn(client, job, session, stops).await;
    match session.flush_seam() {
        Some(frame) => match deliver(stops.tx, frame, client.config().limits.client_stall).await {
            Ok(()) => end,
            Err(gone) => gone,
        },
        None => end,
    }
}

async fn relay_turn(
    client: &LlmClient,
    job: &ChatJob,
    session: &mut Session,
    stops: &mut Stops<'_>,
) -> End {
    let config = client.config();
    let limits = &config.limits;
    let tx = stops.tx;
    // Boxed: the opening (retries, the request) is over once text flows, and its state
    // should not stay in every streaming chat's task.
    let opening = Box::pin(client.open_with_retry(job, |wait| announce_retry(tx, wait)));
    let (opened, attempts) = match stops.race(opening).await {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    session.attempts += attempts;
    tracing::Span::current().record("attempts", session.attempts);
    let mut upstream = match opened {
        Ok(opened) => opened,
        Err(err) => return End::Failed(err),
    };
    tracing::Span::current().record("key_id", key_id(upstream.key));
    session.key = Some(upstream.key);
    // The provider's silence limit: one timer per turn.
    let mut silence = IdleTimer::new(config.timeout);
    loop {
        // After `finish_reason` only usage and `[DONE]` may follow: a provider that
        // keeps the connection open in silence gets a short grace, not the idle timeout.
        let finished = session.finish_reason.is_some();
        let limit = if finished {
            limits.finish_grace
        } else {
            config.timeout
        };
        let next = silence.watch(limit, upstream.body.next_event());
        let event = match stops.race(next).await {
            Err(end) => return end,
            Ok(Some(event)) => event,
            Ok(None) if finished => Ok(None),
            Ok(None) => Err(LlmError::IdleTimeout(limit.as_secs())),
        };
        let frame = match event {
            Ok(Some(UpstreamEvent::Done)) => return End::Finished,
            Ok(None) if finished => return End::Finished,
            Ok(None) => return End::Failed(LlmError::Disconnected),
            Ok(Some(UpstreamEvent::Error(message))) => {
                return End::Failed(LlmError::InStream(message))
            }
            Err(err) => return End::Failed(err),
            Ok(Some(event)) => session.apply(event),
        };
        if let Some(frame) = frame {
            if let Err(end) = deliver(tx, frame, limits.client_stall).await {
                return end;
            }
        }
    }
}

/// What ends a chat from outside: a stop, the receiver leaving, shutdown, the total
/// time cap. One future watches all four for the whole chat, so each event raced
/// against them registers nothing new (no timer, no waiter) — the per-chunk path stays
/// a poll of an already-registered future.
struct Stops<'a> {
    tx: &'a FrameTx,
    /// The one future, polled only after it was woken, so a chunk does not cost a poll
    /// of four watchers (three of them take a lock to look).
    outside: WhenWoken<dyn Future<Output = Outside> + Send + 'a>,
    /// Set once `outside` has resolved: a resolved future is not polled again.
    fired: Option<Outside>,
}

/// An end that came from outside the provider stream.
#[derive(Clone, Copy, Debug)]
enum Outside {
    ClientGone,
    Stopped,
    Shutdown,
    TooLong(Duration),
}

impl From<Outside> for End {
    fn from(outside: Outside) -> End {
        match outside {
            Outside::ClientGone => End::ClientGone,
            Outside::Stopped => End::Stopped,
            Outside::Shutdown => End::Failed(LlmError::Shutdown),
            Outside::TooLong(cap) => End::Failed(LlmError::TooLong(cap.as_secs())),
        }
    }
}

impl<'a> Stops<'a> {
    fn new(
        tx: &'a FrameTx,
        control: &'a mut Control,
        deadline: Instant,
        cap: Duration,
    ) -> Stops<'a> {
        let stop = &mut control.stop;
        let shutdown = &mut control.shutdown;
        let outside = async move {
            tokio::select! {
                biased;
                () = tx.closed() => Outside::ClientGone,
                () = flipped(stop) => Outside::Stopped,
                () = flipped(shutdown) => Outside::Shutdown,
                () = tokio::time::sleep_until(deadline) => Outside::TooLong(cap),
            }
        };
        let boxed: Pin<Box<dyn Future<Output = Outside> + Send + 'a>> = Box::pin(outside);
        Stops {
            tx,
            outside: WhenWoken::new(boxed),
            fired: None,
        }
    }

    /// Runs `work` unless one of the stops comes first.
    async fn race<T>(&mut self, work: impl Future<Output = T>) -> Result<T, End> {
        if let Some(outside) = self.fired {
            return Err(outside.into());
        }
        tokio::select! {
            biased;
            outside = &mut self.outside => {
                self.fired = Some(outside);
                Err(outside.into())
            }
            out = work => Ok(out),
        }
    }
}

/// Sends a frame to the browser; one that has read nothing for `stall` is dropped. A
/// channel with room (the usual case) takes the frame without a timer.
async fn deliver(tx: &FrameTx, frame: Frame, stall: Duration) -> Result<(), End> {
    let frame = match tx.try_send(frame) {
        Ok(()) => return Ok(()),
        Err(Refused::ReaderGone) => return Err(End::ClientGone),
        Err(Refused::Full(frame)) => frame,
    };
    match tx.send_timeout(frame, stall).await {
        Ok(()) => Ok(()),
        Err(SendFailed::Timeout) => {
            tracing::info!("client stopped reading: dropping it");
            Err(End::ClientGone)
        }
        Err(SendFailed::ReaderGone) => Err(End::ClientGone),
    }
}

/// What one chat has produced so far.
struct Session {
    started: Instant,
    first_token: Option<Duration>,
    seq: u64,
    text: String,
    reasoning: String,
    finish_reason: Option<String>,
    provider_usage: Option<WireUsage>,
    /// The job whose prompt this leg answers (its count is made only if the provider
    /// gives no usage), or a continuation's count, which includes the text it goes on from.
    prompt: Arc<ChatJob>,
    continued_prompt: Option<u32>,
    /// The model answering, and its prices.
    provider: String,
    model: String,
    price: Price,
    /// Attempts made to open the stream (over every model tried), and the key that
    /// answered.
    attempts: u32,
    key: Option<usize>,
    /// Earlier legs of a continued answer: each model's prices and usage.
    legs: Vec<(Price, Usage)>,
    /// Where this leg's text and reasoning begin (a continuation bills its own).
    leg_text_from: usize,
    leg_reasoning_from: usize,
    /// A continuation's joint, while it may still repeat the end of what was sent.
    seam: Option<Seam>,
}

impl Session {
    fn new(job: &Arc<ChatJob>) -> Self {
        Session {
            started: Instant::now(),
            first_token: None,
            seq: 0,
            text: String::new(),
            reasoning: String::new(),
            finish_reason: None,
            provider_usage: None,
            prompt: job.clone(),
            continued_prompt: None,
            provider: job.provider.clone(),
            model: job.model.id.clone(),
            price: job.model.price,
            attempts: 0,
            key: None,
            legs: Vec::new(),
            leg_text_from: 0,
            leg_reasoning_from: 0,
            seam: None,
        }
    }

    /// The next model of the chain answers from here: its prices apply. When it
    /// continues a cut answer (`continues`), what the last model sent is billed as a leg
    /// of its own and the new one's first text is checked at the seam.
    fn switch(&mut self, job: &ChatJob, continues: bool) {
        if continues {
            self.legs.push((self.price, self.leg_usage()));
            self.leg_text_from = self.text.len();
            self.leg_reasoning_from = self.reasoning.len();
            self.seam = Some(Seam::after(&self.text));
            self.continued_prompt = Some(job.prompt_tokens());
        }
        self.provider = job.provider.clone();
        self.model = job.model.id.clone();
        self.price = job.model.price;
        self.key = None;
        self.finish_reason = None;
        self.provider_usage = None;
    }

    /// What the seam still holds when the continuation ends: it goes out as it is (minus
    /// a repeat of what was sent).
    fn flush_seam(&mut self) -> Option<Frame> {
        let rest = self.seam.take()?.release();
        self.chunk(rest)
    }

    /// A chunk frame for `content`, with the next `seq`; nothing for no text.
    fn chunk(&mut self, content: String) -> Option<Frame> {
        if content.is_empty() {
            return None;
        }
        self.text.push_str(&content);
        let frame = Frame::Chunk {
            seq: self.seq,
            content,
        };
        self.count_frame();
        Some(frame)
    }

    /// One more text frame: the sequence goes on, the first one is timed.
    fn count_frame(&mut self) {
        self.seq += 1;
        if self.first_token.is_none() {
            let first = self.started.elapsed();
            self.first_token = Some(first);
            tracing::Span::current().record("first_token_ms", millis(first));
        }
    }

    /// Folds one provider event in; returns the frame to send, if any.
    fn apply(&mut self, event: UpstreamEvent) -> Option<Frame> {
        let frame = match event {
            UpstreamEvent::Content(content) => {
                let content = match &mut self.seam {
                    None => content,
                    Some(seam) => {
                        let released = seam.feed(&content)?;
                        self.seam = None;
                        released
                    }
                };
                return self.chunk(content);
            }
            UpstreamEvent::Reasoning(content) => {
                self.reasoning.push_str(&content);
                Frame::Reasoning {
                    seq: self.seq,
                    content,
                }
            }
            UpstreamEvent::Finish(reason) => {
                self.finish_reason = Some(reason);
                return None;
            }
            // Cumulative on some providers (SiliconFlow): the last one wins.
            UpstreamEvent::Usage(usage) => {
                self.provider_usage = Some(usage);
                return None;
            }
            UpstreamEvent::Done | UpstreamEvent::Error(_) => return None,
        };
        self.count_frame();
        Some(frame)
    }

    /// Our count of this leg's prompt.
    fn prompt_estimate(&self) -> u32 {
        self.continued_prompt
            .unwrap_or_else(|| self.prompt.prompt_tokens())
    }

    fn has_text(&self) -> bool {
        self.seq > 0
    }

    /// This leg's usage: the provider's numbers when it gave them, our tiktoken estimate
    /// otherwise. The completion is counted once, on the whole text, never per chunk, and
    /// only when the provider gave no usage (with DEBUG logs on, always, to compare).
    fn leg_usage(&self) -> Usage {
        let span = tracing::Span::current();
        let estimate = || {
            let reasoning = &self.reasoning[self.leg_reasoning_from..];
            let text = &self.text[self.leg_text_from..];
            let estimate = tokens::count_text(reasoning).saturating_add(tokens::count_text(text));
            span.record("completion_estimate", estimate);
            estimate
        };
        if self.provider_usage.is_some() && tracing::enabled!(tracing::Level::DEBUG) {
            estimate();
        }
        let usage = match self.provider_usage {
            Some(u) => Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u
                    .total_tokens
                    .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
                source: UsageSource::Provider,
            },
            None => {
                let estimate = estimate();
                let prompt = self.prompt_estimate();
                Usage {
                    prompt_tokens: prompt,
                    completion_tokens: estimate,
                    total_tokens: prompt.saturating_add(estimate),
                    source: UsageSource::Tiktoken,
                }
            }
        };
        span.record("prompt_tokens", usage.prompt_tokens);
        span.record("completion_tokens", usage.completion_tokens);
        span.record("usage_source", usage_source(&usage));
        usage
    }

    /// Every leg's usage and prices, this one last.
    fn billed_legs(&self) -> Vec<(Price, Usage)> {
        let mut legs = self.legs.clone();
        legs.push((self.price, self.leg_usage()));
        legs
    }

    /// The answer's usage (every leg's, added) and its exact cost (each leg at its
    /// model's prices).
    fn bill(&self) -> (Usage, Cost) {
        let legs = self.billed_legs();
        let add = |a: u32, b: u32| a.saturating_add(b);
        let usage = legs.iter().map(|(_, u)| u).fold(
            Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                total_tokens: 0,
                // The provider's figures only if every leg had them.
                source: UsageSource::Provider,
            },
            |sum, u| Usage {
                prompt_tokens: add(sum.prompt_tokens, u.prompt_tokens),
                completion_tokens: add(sum.completion_tokens, u.completion_tokens),
                total_tokens: add(sum.total_tokens, u.total_tokens),
                source: match u.source {
                    UsageSource::Tiktoken => UsageSource::Tiktoken,
                    UsageSource::Provider => sum.source,
                },
            },
        );
        let yuan = |part: fn(&Price, &Usage) -> Yuan| {
            legs.iter().fold(Yuan(0), |sum, (p, u)| sum + part(p, u))
        };
        let input = yuan(|p, u| Yuan::of_tokens(u.prompt_tokens, p.input_micro_per_m));
        let output = yuan(|p, u| Yuan::of_tokens(u.completion_tokens, p.output_micro_per_m));
        let cost = Cost {
            currency: "CNY".into(),
            input: input.to_string(),
            output: output.to_string(),
            total: (input + output).to_string(),
        };
        (usage, cost)
    }

    /// Ends the answer with `done`: finished by the provider, or `stopped` on request.
    async fn done(self, tx: &FrameTx, stopped: Option<&str>) -> Report {
        let (usage, cost) = self.bill();
        let finish_reason = stopped
            .map(str::to_owned)
            .or_else(|| self.finish_reason.clone())
            .unwrap_or_else(|| "stop".to_owned());
        let (outcome, ended) = match stopped {
            Some(_) => ("stopped", Ended::Stopped),
            None => ("done", Ended::Done),
        };
        let span = tracing::Span::current();
        span.record("cost", cost.total.as_str());
        span.record("outcome", outcome);
        tracing::info!(
            finish_reason,
            total_ms = millis(self.started.elapsed()),
            "chat {outcome}"
        );
        let report = self.report(ended, usage.clone(), &cost);
        let frame = Frame::Done {
            finish_reason,
            usage,
            cost,
            timing: self.timing(),
        };
        let _ = tx.send(frame).await;
        report
    }

    async fn fail(self, client: &LlmClient, job: &ChatJob, tx: &FrameTx, err: LlmError) -> Report {
        // Text already sent is billed: report what it cost.
        let (usage, cost) = if self.has_text() {
            let (usage, cost) = self.bill();
            (Some(usage), Some(cost))
        } else {
            (None, None)
        };
        let message = client.describe(&job.provider, &err);
        let span = tracing::Span::current();
        span.record("outcome", "error");
        if let Some(cost) = &cost {
            span.record("cost", cost.total.as_str());
        }
        tracing::warn!(code = ?err.code(), after_text = self.has_text(), "chat failed: {}", message.escape_debug());
        let billed = usage.clone().unwrap_or(Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            total_tokens: 0,
            source: UsageSource::Tiktoken,
        });
        let free = Cost {
            currency: "CNY".into(),
            input: "0".into(),
            output: "0".into(),
            total: "0".into(),
        };
        let report = self.report(
            Ended::Failed(err.code()),
            billed,
            cost.as_ref().unwrap_or(&free),
        );
        let frame = Frame::Error {
            code: err.code(),
            message,
            retryable: err.user_may_retry(),
            usage,
            cost,
        };
        let _ = tx.send(frame).await;
        report
    }

    /// The browser went away: the provider connection is dropped with this task.
    fn cancelled(self) -> Report {
        let (usage, cost) = self.bill();
        let span = tracing::Span::current();
        span.record("cost", cost.total.as_str());
        span.record("outcome", "cancelled");
        tracing::info!(
            completion_tokens = usage.completion_tokens,
            cost = %cost.total,
            "client went away; upstream dropped (partial usage above)"
        );
        self.report(Ended::Stopped, usage, &cost)
    }

    /// The chat's report, for `usage` and `cost` as billed.
    fn report(&self, ended: Ended, usage: Usage, cost: &Cost) -> Report {
        Report {
            ended,
            provider: self.provider.clone(),
            model: self.model.clone(),
            cost: Yuan::parse(&cost.total).unwrap_or_default(),
            reasoning_tokens: match self.reasoning.is_empty() {
                true => 0,
                false => tokens::count_text(&self.reasoning),
            },
            usage,
            key_id: self.key.map(key_id),
            attempts: self.attempts,
            first_token_ms: self.first_token.map(millis),
            duration_ms: millis(self.started.elapsed()),
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            first_token_ms: self.first_token.map(millis),
            total_ms: millis(self.started.elapsed()),
        }
    }
}

/// The joint of a continued answer. A model asked to go on from a text often starts by
/// repeating its last words; the continuation's first text is held while it could still
/// be such a repeat (it occurs in the end of what was sent), then the longest repeat of
/// at least [`Seam::MIN_REPEAT`] characters is cut from its start.
#[derive(Debug)]
struct Seam {
    /// The last [`Seam::WINDOW`] characters sent.
    tail: String,
    held: String,
}

impl Seam {
    const WINDOW: usize = 200;
    /// Shorter coincidences are left alone (a continuation may well begin with "的").
    const MIN_REPEAT: usize = 2;

    fn after(sent: &str) -> Seam {
        let chars = sent.chars().count();
        let start = sent
            .char_indices()
            .nth(chars.saturating_sub(Self::WINDOW))
            .map_or(0, |(at, _)| at);
        Seam {
            tail: sent[start..].to_owned(),
            held: String::new(),
        }
    }

    /// Takes the continuation's next text: `None` while it may still be a repeat, else
    /// everything held so far, with the repeat cut.
    fn feed(&mut self, text: &str) -> Option<String> {
        self.held.push_str(text);
        let still_repeating =
            self.tail.contains(self.held.as_str()) && self.held.chars().count() < Self::WINDOW;
        (!still_repeating).then(|| self.release())
    }

    /// What is held, minus the longest start of it that ends what was sent.
    fn release(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        let repeat = held
            .char_indices()
            .rev()
            .map(|(at, c)| at + c.len_utf8())
            .filter(|&end| held[..end].chars().count() >= Self::MIN_REPEAT)
            .find(|&end| self.tail.ends_with(&held[..end]))
            .unwrap_or(0);
        held[repeat..].to_owned()
    }
}

fn usage_source(usage: &Usage) -> &'static str {
    match usage.source {
        UsageSource::Provider => "provider",
        UsageSource::Tiktoken => "tiktoken",
    }
}

/// Tells the browser how long we wait before the next attempt (the real wait).
fn announce_retry(tx: &FrameTx, wait: RetryWait) {
    let _ = tx.try_send(Frame::Retry {
        attempt: wait.attempt,
        max_retries: wait.max_retries,
        wait_ms: millis(wait.wait),
        reason: wait.reason,
    });
}

/// Resolves once `flag` (shutdown, stop) is `true`; never, if it cannot be any more.
async fn flipped(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A new chat id, `chat-<unix ms, hex>-<128 random bits, hex>`: sortable by time, and
/// unguessable, since the id alone lets a reader resume the answer.
pub fn chat_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("chat-{ms:x}-{:032x}", u128::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::config::Model;

    fn session() -> Session {
        Session::new(&Arc::new(job()))
    }

    fn job() -> ChatJob {
        ChatJob {
            provider: "p".into(),
            base_url: "http://127.0.0.1:9".into(),
            model: Model {
                id: "m".into(),
                price: Price::new(2_000_000, 3_000_000),
                max_output_tokens: 100,
                context_tokens: 1000,
                shaping: Default::default(),
                chain: Default::default(),
            },
            messages: vec![],
            temperature: 0.8,
            top_p: None,
            max_tokens: 100,
            seed: None,
            thinking: None,
            prompt_count: 7.into(),
            continued: None,
        }
    }

    #[test]
    fn chat_ids_are_unguessable_hex() {
        let (a, b) = (chat_id(), chat_id());
        assert_ne!(a, b);
        let random = a.rsplit('-').next().unwrap();
        assert!(a.starts_with("chat-") && a.split('-').count() == 3, "{a}");
        assert_eq!(random.len(), 32, "{a}");
        assert!(random
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn one_sequence_for_chunks_and_reasoning() {
        let mut s = session();
        let frames: Vec<Frame> = [
            UpstreamEvent::Reasoning("想".into()),
            UpstreamEvent::Content("答".into()),
            UpstreamEvent::Finish("stop".into()),
            UpstreamEvent::Content("案".into()),
        ]
        .into_iter()
        .filter_map(|e| s.apply(e))
        .collect();
        assert_eq!(
            frames,
            [
                Frame::Reasoning {
                    seq: 0,
                    content: "想".into()
                },
                Frame::Chunk {
                    seq: 1,
                    content: "答".into()
                },
                Frame::Chunk {
                    seq: 2,
                    content: "案".into()
                },
            ]
        );
        assert_eq!(s.text, "答案");
        assert_eq!(s.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn a_repeat_at_the_seam_is_cut_and_only_a_repeat() {
        let cases = [
            // (sent, continuation pieces, what goes out)
            (
                "第一段。第二段",
                &["第二段", "。第三段。"][..],
                "。第三段。",
            ),
            (
                "我们来看看",
                &["来看", "看代码", "：fn main"],
                "代码：fn main",
            ),
            ("结束了。", &["新的一段"], "新的一段"),
            // One character in common is a coincidence, not a repeat.
            ("好的", &["的确如此"], "的确如此"),
            // The whole continuation repeats: nothing new goes out.
            ("abcdef", &["def"], ""),
        ];
        for (sent, pieces, expected) in cases {
            let mut seam = Seam::after(sent);
            let mut out = String::new();
            let mut open = true;
            for piece in pieces {
                if open {
                    if let Some(released) = seam.feed(piece) {
                        out.push_str(&released);
                        open = false;
                    }
                } else {
                    out.push_str(piece);
                }
            }
            if open {
                out.push_str(&seam.release());
            }
            assert_eq!(out, expected, "{sent:?} + {pieces:?}");
        }
    }

    #[test]
    fn a_continued_answer_bills_each_leg_at_its_prices() {
        let mut s = session();
        s.apply(UpstreamEvent::Content("前半段".into()));
        let mut next = ChatJob {
            prompt_count: 9.into(),
            ..job()
        };
        next.model.price = Price::new(1_000_000, 1_000_000);
        s.switch(&next, true);
        s.apply(UpstreamEvent::Content("半段后半".into()));
        assert!(s.flush_seam().is_none());
        assert_eq!(s.text, "前半段后半", "the repeated 半段 is cut at the seam");
        let (usage, cost) = s.bill();
        let first = Price::new(2_000_000, 3_000_000).charge(7, tokens::count_text("前半段"));
        let second = Price::new(1_000_000, 1_000_000).charge(9, tokens::count_text("后半"));
        assert_eq!(Yuan::parse(&cost.total), Some(first + second));
        assert_eq!(usage.prompt_tokens, 16);
    }

    #[test]
    fn provider_usage_wins_and_the_last_one_counts() {
        let mut s = session();
        s.apply(UpstreamEvent::Content("hello".into()));
        assert_eq!(s.leg_usage().source, UsageSource::Tiktoken);
        assert_eq!(s.leg_usage().completion_tokens, 1);
        for completion in [1, 2, 3] {
            s.apply(UpstreamEvent::Usage(WireUsage {
                prompt_tokens: 10,
                completion_tokens: completion,
                total_tokens: None,
            }));
        }
        let usage = s.leg_usage();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (10, 3, 13)
        );
        assert_eq!(usage.source, UsageSource::Provider);
    }
}
