//! Answers detached from connections. Each chat's frames go to a log — in this process's
//! memory, or with `REDIS_URL` in a Redis Stream that every instance reads — and
//! connections only read it: `POST /api/chat/stream` starts an answer and reads it from
//! its start; `GET /api/chat/stream/{id}?after=N` (or `Last-Event-ID: N`) reads every
//! frame after N, then live, to the terminal frame. A frame's SSE `id` is its index in the
//! log (0 = `start`). The provider is cancelled only by a stop (`POST
//! /api/chat/stream/{id}/stop`, from any tab and any instance) or when nobody has read
//! the answer for `idle_reader`, never because one connection dropped. A log stays
//! readable for `resume_keep` after its end, and keeps at most `resume_max_frames`.

mod memory;
mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::FusedFuture;
use futures::stream::BoxStream;
use futures::FutureExt;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::llm::config::Limits;
use crate::llm::{Frames, Prepared};
use crate::protocol::{ErrorCode, Frame};

/// Who may read and stop an answer: the access code that started it (`None`: the open
/// server, where anyone who may chat may).
pub(crate) type Owner = Option<i64>;

/// One frame of a log: its index (the SSE `id`) and its JSON, kept as the whole SSE
/// event (`id: N\ndata: JSON\n\n`), rendered once however many readers send it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Logged {
    pub index: u64,
    pub terminal: bool,
    event: Bytes,
    /// Where the JSON starts in `event`.
    data_at: usize,
}

impl Logged {
    /// Frame `index` with the JSON of `write` (which must not write a line break: JSON
    /// text from serde never does).
    fn render(index: u64, terminal: bool, write: impl FnOnce(&mut Vec<u8>)) -> Logged {
        use std::io::Write as _;
        let mut event = Vec::with_capacity(96);
        let _ = write!(event, "id: {index}\ndata: ");
        let data_at = event.len();
        write(&mut event);
        event.extend_from_slice(b"\n\n");
        Logged {
            index,
            terminal,
            event: event.into(),
            data_at,
        }
    }

    /// Frame `index` whose JSON is `data` (one line).
    pub(crate) fn new(index: u64, data: &str, terminal: bool) -> Logged {
        debug_assert!(!data.contains(['\n', '\r']), "one line of JSON: {data}");
        Logged::render(index, terminal, |event| {
            event.extend_from_slice(data.as_bytes())
        })
    }

    /// The frame's JSON.
    pub(crate) fn data(&self) -> &str {
        let end = self.event.len().saturating_sub(2);
        std::str::from_utf8(self.event.get(self.data_at..end).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The frame as an SSE event, ready to send.
    pub(crate) fn event(&self) -> Bytes {
        self.event.clone()
    }
}

/// Frames in log order, in the batches they were read; ends after the terminal frame, or
/// early if the log went away (the reader may resume).
pub(crate) type Reader = BoxStream<'static, Vec<Logged>>;

/// Why a log cannot be read or stopped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum StreamsError {
    /// Unknown, expired, or another access code's.
    #[error("这条回答不存在或已过期")]
    NotFound,
    /// The frames after the requested one are no longer kept.
    #[error("这条回答的前面部分已不再保留，无法从这里继续")]
    Trimmed,
    #[error("暂时无法读取回答（{0}）")]
    Unavailable(String),
}

/// How logs are kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogLimits {
    pub idle_reader: Duration,
    pub keep: Duration,
    pub max_frames: usize,
    /// The longest an answer may run: a Redis log expires after it plus `keep` even if
    /// its instance dies.
    pub max_stream: Duration,
}

impl From<&Limits> for LogLimits {
    fn from(limits: &Limits) -> Self {
        LogLimits {
            idle_reader: limits.idle_reader,
            keep: limits.resume_keep,
            max_frames: limits.resume_max_frames,
            max_stream: limits.max_stream,
        }
    }
}

/// The answers of this instance, and where every instance's logs are.
#[derive(Clone)]
pub(crate) struct Streams {
    backend: Backend,
    limits: LogLimits,
    /// The stop switches of the answers running here.
    running: Arc<Mutex<HashMap<String, Running>>>,
}

#[derive(Clone)]
enum Backend {
    Memory(memory::Logs),
    Redis(redis::Logs),
}

struct Running {
    owner: Owner,
    stop: watch::Sender<bool>,
}

impl Streams {
    /// Logs in this process's memory: one instance.
    pub(crate) fn memory(limits: LogLimits) -> Streams {
        Streams::with(Backend::Memory(memory::Logs::new(limits)), limits)
    }

    /// Logs in Redis at `url`, shared by every instance that names it.
    pub(crate) async fn redis(url: &str, limits: LogLimits) -> Result<Streams, StreamsError> {
        let logs = redis::Logs::connect(url, limits).await?;
        Ok(Streams::with(Backend::Redis(logs), limits))
    }

    fn with(backend: Backend, limits: LogLimits) -> Streams {
        Streams {
            backend,
            limits,
            running: Arc::default(),
        }
    }

    /// `redis` or `memory`, for the start-up log.
    pub(crate) fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Runs answer `id` and logs its frames until its end, the relay and the log's pump
    /// in one task; `stop` is its stop switch, `slot` its stream slot, held until the
    /// end. Returns at once.
    pub(crate) async fn run(
        &self,
        id: String,
        owner: Owner,
        chat: Prepared,
        stop: watch::Sender<bool>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), StreamsError> {
        let writer = match &self.backend {
            Backend::Memory(logs) => Writer::Memory(logs.create(&id, owner)),
            Backend::Redis(logs) => Writer::Redis(logs.create(&id, owner).await?),
        };
        let running = Running {
            owner,
            stop: stop.clone(),
        };
        lock(&self.running).insert(id.clone(), running);
        let streams = self.clone();
        let Prepared { relay, frames } = chat;
        // A relay that panics ends like one that vanished: its channel closes and the
        // pump gives the readers a terminal frame (the panic would otherwise take the
        // pump, sharing its task, down with it).
        let relay = std::panic::AssertUnwindSafe(relay).catch_unwind();
        tokio::spawn(async move {
            let pump = pump(writer, frames, &stop, streams.limits.idle_reader);
            relay_then(relay.map(drop), pump).await;
            lock(&streams.running).remove(&id);
            drop(slot);
        });
        Ok(())
    }

    /// Reads answer `id` from the frame after `after` (from its start without one).
    pub(crate) async fn read(
        &self,
        id: &str,
        owner: Owner,
        after: Option<u64>,
    ) -> Result<Reader, StreamsError> {
        match &self.backend {
            Backend::Memory(logs) => logs.read(id, owner, after),
            Backend::Redis(logs) => logs.read(id, owner, after).await,
        }
    }

    /// Stops answer `id` wherever it runs. Stopping an answer that has ended is no error.
    pub(crate) async fn stop(&self, id: &str, owner: Owner) -> Result<(), StreamsError> {
        let local = lock(&self.running)
            .get(id)
            .map(|r| (r.owner == owner).then(|| r.stop.clone()));
        match local {
            Some(Some(stop)) => {
                stop.send_replace(true);
                Ok(())
            }
            Some(None) => Err(StreamsError::NotFound),
            None => match &self.backend {
                Backend::Memory(logs) => logs.exists(id, owner),
                Backend::Redis(logs) => logs.request_stop(id, owner).await,
            },
        }
    }
}

/// Runs `relay` and `pump` to their ends in one task, polling the relay first each time,
/// so the pump finds what the relay just sent ([`Frames::poll_sent`]): a chunk costs one
/// poll of the task, where a channel's wake-up for each frame made it two.
async fn relay_then(relay: impl Future<Output = ()>, pump: impl Future<Output = ()>) {
    let mut relay = pin!(relay.fuse());
    let mut pump = pin!(pump.fuse());
    std::future::poll_fn(|cx| {
        if !relay.is_terminated() {
            let _ = relay.as_mut().poll(cx);
        }
        if !pump.is_terminated() {
            let _ = pump.as_mut().poll(cx);
        }
        match relay.is_terminated() && pump.is_terminated() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    })
    .await;
}

/// Where one answer's frames are written.
enum Writer {
    Memory(Arc<memory::Log>),
    Redis(redis::Writer),
}

/// What the writer learns on each poll.
struct Polled {
    /// Someone is reading the answer.
    read: bool,
    /// A stop was asked for on another instance.
    stop: bool,
}

impl Writer {
    /// Writes `batch` and empties it (its room is kept for the next).
    async fn append(&mut self, batch: &mut Vec<Logged>) {
        match self {
            Writer::Memory(log) => log.append(batch),
            Writer::Redis(writer) => writer.append(batch).await,
        }
    }

    async fn poll(&mut self) -> Polled {
        match self {
            Writer::Memory(log) => Polled {
                read: log.is_read(),
                stop: false,
            },
            Writer::Redis(writer) => writer.poll().await,
        }
    }

    /// How often the pump looks at the readers: in memory only to notice that nobody
    /// reads (a quarter of `idle`, at most every 5 s: a wake-up of every answer's task
    /// twice a second was a tenth of the relay's wake-ups at 1,000 streams); with Redis
    /// also for a stop sent to another instance (which should arrive within ~200 ms).
    fn every(&self, idle: Duration) -> Duration {
        match self {
            Writer::Memory(_) => {
                (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
            }
            Writer::Redis(_) => Duration::from_millis(200),
        }
    }

    async fn end(self) {
        match self {
            Writer::Memory(log) => log.end(),
            Writer::Redis(writer) => writer.end().await,
        }
    }
}

/// Frames written in one go: what is already waiting behind the first.
const BATCH: usize = 256;

/// Moves the answer's frames into its log until the terminal frame; stops the answer
/// when a stop is asked for elsewhere or nobody has read it for `idle`. Polled right after
/// the relay (`relay_then`): frames are taken as sent, not waited for.
async fn pump(mut writer: Writer, mut frames: Frames, stop: &watch::Sender<bool>, idle: Duration) {
    let mut index = 0u64;
    let mut batch = Vec::new();
    let mut tick = Tick::new(writer.every(idle));
    let mut readers = Readers::new(idle);
    loop {
        match std::future::poll_fn(|cx| sent_or_tick(cx, &mut frames, &mut tick)).await {
            Some(frame) => {
                let mut next = frame;
                while let Some(frame) = next {
                    batch.push(logged(index, &frame));
                    index += 1;
                    if frame.is_terminal() || batch.len() == BATCH {
                        break;
                    }
                    next = match frames.poll_sent() {
                        Poll::Ready(next) => next,
                        Poll::Pending => None,
                    };
                }
                let ended = batch.last().is_none_or(|f| f.terminal);
                if batch.last().is_none() {
                    // The relay ended without its terminal frame (it cannot, short of a
                    // panic): readers still get one.
                    batch.push(logged(index, &vanished()));
                }
                writer.append(&mut batch).await;
                if ended {
                    break;
                }
            }
            None => readers.look(&mut writer, stop).await,
        }
    }
    writer.end().await;
}

/// What the pump's tick looks at: whether anyone reads the answer, and whether a stop
/// was asked for elsewhere.
struct Readers {
    idle: Duration,
    unread_since: Option<Instant>,
}

impl Readers {
    fn new(idle: Duration) -> Readers {
        Readers {
            idle,
            unread_since: None,
        }
    }

    /// Stops the answer when a stop was asked for elsewhere or nobody has read it for
    /// `idle`.
    async fn look(&mut self, writer: &mut Writer, stop: &watch::Sender<bool>) {
        let polled = writer.poll().await;
        let now = Instant::now();
        self.unread_since = match polled.read {
            true => None,
            false => Some(self.unread_since.unwrap_or(now)),
        };
        let abandoned = self
            .unread_since
            .is_some_and(|since| now - since >= self.idle);
        if (polled.stop || abandoned) && !*stop.borrow() {
            if abandoned {
                tracing::info!(
                    idle_secs = self.idle.as_secs(),
                    "nobody is reading the answer: stopping it"
                );
            }
            stop.send_replace(true);
        }
    }
}

/// `None` when the pump's tick is due, else `Some` with what the relay sent (`Some(None)`
/// once it has ended). The tick first: frames may be waiting after every write (a fast
/// provider, a slow Redis), and the readers are still looked at on time.
fn sent_or_tick(
    cx: &mut Context<'_>,
    frames: &mut Frames,
    tick: &mut Tick,
) -> Poll<Option<Option<Frame>>> {
    if tick.poll(cx).is_ready() {
        return Poll::Ready(None);
    }
    frames.poll_sent().map(Some)
}

/// The pump's look at its readers every `every`, on one timer polled only when it may
/// have fired: a task polled once per chunk re-registered an `Interval` on each poll.
struct Tick {
    timer: Pin<Box<tokio::time::Sleep>>,
    every: Duration,
    /// The timer holds the task's waker (the waker of one task does not change).
    registered: bool,
}

impl Tick {
    fn new(every: Duration) -> Tick {
        Tick {
            timer: Box::pin(tokio::time::sleep(every)),
            every,
            registered: false,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        // Out of the task's budget, the timer returns `Pending` without holding the
        // waker (tokio wakes the task to come back): only then is it not registered.
        let can_register = tokio::task::coop::has_budget_remaining();
        match self.timer.as_mut().poll(cx) {
            Poll::Pending => {
                self.registered = can_register;
                Poll::Pending
            }
            Poll::Ready(()) => {
                self.timer.as_mut().reset(Instant::now() + self.every);
                self.registered = false;
                Poll::Ready(())
            }
        }
    }
}

fn logged(index: u64, frame: &Frame) -> Logged {
    Logged::render(index, frame.is_terminal(), |event| {
        let at = event.len();
        if serde_json::to_writer(&mut *event, frame).is_err() {
            event.truncate(at);
            event.extend_from_slice(b"{}");
        }
    })
}

/// The terminal frame of an answer whose relay vanished.
fn vanished() -> Frame {
    Frame::Error {
        code: ErrorCode::Disconnected,
        message: "回答意外中断，请重试".into(),
        retryable: true,
        usage: None,
        cost: None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The first frame index a read `after` wants.
fn first_wanted(after: Option<u64>) -> u64 {
    after.map_or(0, |n| n.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc::UnboundedSender;
    use futures::StreamExt;

    fn limits() -> LogLimits {
        LogLimits {
            idle_reader: Duration::from_secs(30),
            keep: Duration::from_secs(60),
            max_frames: 16,
            max_stream: Duration::from_secs(60),
        }
    }

    /// A tick first polled when the task's budget is spent (a busy relay in the same
    /// poll) still fires: the timer held no waker then.
    #[tokio::test]
    async fn a_tick_polled_out_of_budget_still_fires() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        let mut tick = Tick::new(Duration::from_millis(50));
        let (received, first) = std::future::poll_fn(|cx| {
            let mut received = 0;
            while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {
                received += 1;
            }
            Poll::Ready((received, tick.poll(cx)))
        })
        .await;
        assert!(received < 1000, "the budget was not spent");
        assert!(first.is_pending());
        let fired = tokio::time::timeout(
            Duration::from_secs(2),
            std::future::poll_fn(|cx| tick.poll(cx)),
        )
        .await;
        assert!(fired.is_ok(), "the 50 ms tick never fired");
    }

    /// A chat whose relay passes on the frames of `rx` (the test sends them).
    fn chat(rx: impl futures::Stream<Item = Frame> + Send + 'static) -> Prepared {
        let (tx, frames) = Frames::channel();
        let relay = async move {
            let mut rx = pin!(rx);
            while let Some(frame) = rx.next().await {
                if tx.send(frame).await.is_err() {
                    break;
                }
            }
        };
        Prepared {
            relay: relay.boxed(),
            frames,
        }
    }

    #[test]
    fn a_frame_is_kept_as_its_sse_event_and_its_json() {
        let frame = Frame::Chunk {
            seq: 7,
            content: "第一行\n第二行".into(),
        };
        let kept = logged(12, &frame);
        let json = serde_json::to_string(&frame).unwrap();
        assert!(!json.contains('\n'));
        assert_eq!(kept.data(), json);
        assert_eq!(kept.event(), format!("id: 12\ndata: {json}\n\n").as_bytes());
        assert!(!kept.terminal);
        // As read back from Redis: the same event.
        assert_eq!(Logged::new(12, &json, false), kept);
    }

    /// Answer `id` of the open start running in `streams`, fed with what the test sends.
    async fn started(streams: &Streams, id: &str) -> UnboundedSender<Frame> {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (stop, _) = watch::channel(false);
        streams
            .run(id.into(), None, chat(rx), stop, None)
            .await
            .unwrap();
        tx
    }

    fn chunk(seq: u64) -> Frame {
        Frame::Chunk {
            seq,
            content: format!("c{seq}"),
        }
    }

    fn done() -> Frame {
        serde_json::from_str(
            r#"{"type":"done","finish_reason":"stop","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"source":"tiktoken"},"cost":{"currency":"CNY","input":"0","output":"0","total":"0"},"timing":{"first_token_ms":1,"total_ms":2}}"#,
        )
        .unwrap()
    }

    /// The tests on Redis run one at a time: one drops every connection to it.
    static ON_REDIS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Logs in the Redis that `scripts/test.sh` starts (`TEST_REDIS_URL`); `None`
    /// without one, unless the run requires it.
    async fn redis_streams() -> Option<Streams> {
        let Some(url) = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var("TEST_SCALE_REQUIRED").is_err(),
                "TEST_SCALE_REQUIRED is set but TEST_REDIS_URL is not"
            );
            return None;
        };
        let limits = LogLimits {
            max_frames: 100_000,
            ..limits()
        };
        Some(Streams::redis(&url, limits).await.unwrap())
    }

    /// A provider whose chunks are always there (a fast model, a burst): each write to
    /// Redis finds the next frames waiting, and a stop sent to another instance is still
    /// seen between writes (it was not, until the answer's end).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_from_another_instance_reaches_an_answer_that_never_pauses() {
        let _alone = ON_REDIS.lock().await;
        let (Some(here), Some(elsewhere)) = (redis_streams().await, redis_streams().await) else {
            return;
        };
        let id = format!("test-{}", crate::llm::chat_id());
        let (tx, frames) = Frames::channel();
        let (stop, stopped) = watch::channel(false);
        let watching = stopped.clone();
        let relay = async move {
            for seq in 0..200_000 {
                if *watching.borrow() {
                    break;
                }
                if tx.send(chunk(seq)).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = tx.send(done()).await;
        };
        let chat = Prepared {
            relay: relay.boxed(),
            frames,
        };
        here.run(id.clone(), None, chat, stop, None).await.unwrap();
        let reading = tokio::spawn(collect(here.read(&id, None, None).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        elsewhere.stop(&id, None).await.unwrap();
        let mut stopped = stopped;
        let seen =
            tokio::time::timeout(Duration::from_secs(3), stopped.wait_for(|stopped| *stopped))
                .await;
        assert!(seen.is_ok(), "the stop was not seen in 3 s");
        let logged = reading.await.unwrap();
        assert!(logged.len() < 200_000, "{} frames", logged.len());
    }

    /// Redis stalls writes mid-answer, then drops its connections (as while it fails
    /// over): the frames whose writes were lost are written again once it is back, and a
    /// reader that resumes gets every one, once, in order, then the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_written_while_redis_stalls_reach_the_reader_whole() {
        let _alone = ON_REDIS.lock().await;
        let Some(streams) = redis_streams().await else {
            return;
        };
        let url = std::env::var("TEST_REDIS_URL").unwrap();
        let mut admin = ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let id = format!("test-{}", crate::llm::chat_id());
        let tx = started(&streams, &id).await;
        // A reader that resumes after the last frame it got whenever its read ends before
        // the end, as the browser does.
        let reading = {
            let (streams, id) = (streams.clone(), id.clone());
            tokio::spawn(async move {
                let mut read: Vec<u64> = Vec::new();
                while read.last() != Some(&40) {
                    if let Ok(reader) = streams.read(&id, None, read.last().copied()).await {
                        read.extend(collect(reader).await);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                read
            })
        };
        for seq in 0..40 {
            let client = |args: &[&str]| ::redis::cmd("CLIENT").arg(args).clone();
            if seq == 10 {
                let pause = client(&["PAUSE", "5000", "WRITE"]);
                pause.exec_async(&mut admin).await.unwrap();
            }
            if seq == 20 {
                // Writes held since frame 10 are lost with their connection.
                let kill = client(&["KILL", "TYPE", "normal"]);
                kill.exec_async(&mut admin).await.unwrap();
                client(&["UNPAUSE"]).exec_async(&mut admin).await.unwrap();
            }
            tx.unbounded_send(chunk(seq)).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.unbounded_send(done()).unwrap();
        let read = tokio::time::timeout(Duration::from_secs(15), reading)
            .await
            .expect("the reader got the end")
            .unwrap();
        assert_eq!(read, (0..41).collect::<Vec<u64>>());
    }

    async fn collect(reader: Reader) -> Vec<u64> {
        reader
            .flat_map(futures::stream::iter)
            .map(|f| f.index)
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_reader_gets_every_frame_after_n_then_live_to_the_end() {
        let streams = Streams::memory(limits());
        let tx = started(&streams, "a").await;
        for seq in 0..5 {
            tx.unbounded_send(chunk(seq)).unwrap();
        }
        tokio::task::yield_now().await;
        let late = streams.read("a", None, Some(2)).await.unwrap();
        let whole = streams.read("a", None, None).await.unwrap();
        assert_eq!(
            streams.read("a", Some(7), None).await.err(),
            Some(StreamsError::NotFound)
        );
        tx.unbounded_send(chunk(5)).unwrap();
        tx.unbounded_send(done()).unwrap();
        assert_eq!(collect(late).await, [3, 4, 5, 6]);
        assert_eq!(collect(whole).await, [0, 1, 2, 3, 4, 5, 6]);
        // After the end, still readable.
        let again = streams.read("a", None, Some(5)).await.unwrap();
        assert_eq!(collect(again).await, [6]);
    }

    #[tokio::test]
    async fn a_relay_that_panics_still_ends_its_readers() {
        let streams = Streams::memory(limits());
        let (tx, frames) = Frames::channel();
        let (stop, _) = watch::channel(false);
        let relay = async move {
            tx.send(chunk(0)).await.unwrap();
            tokio::task::yield_now().await;
            panic!("a bug in the relay");
        };
        let prepared = Prepared {
            relay: relay.boxed(),
            frames,
        };
        streams
            .run("p".into(), None, prepared, stop, None)
            .await
            .unwrap();
        let reader = streams.read("p", None, None).await.unwrap();
        let frames: Vec<Logged> = reader.flat_map(futures::stream::iter).collect().await;
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames[1].terminal && frames[1].data().contains("回答意外中断"));
    }

    #[tokio::test]
    async fn a_burst_beyond_the_channel_reaches_the_log_at_once_whole_and_in_order() {
        // More frames at once than the relay's channel holds (64): the relay waits on a
        // full channel and is woken as the pump, polled after it, drains it. Sent once
        // the answer's task has settled, so no timer of the pump's polls it meanwhile.
        let streams = Streams::memory(LogLimits {
            max_frames: 1_000,
            ..limits()
        });
        let tx = started(&streams, "burst").await;
        let reader = streams.read("burst", None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for seq in 0..300 {
            tx.unbounded_send(chunk(seq)).unwrap();
        }
        tx.unbounded_send(done()).unwrap();
        // Well inside the pump's next look at its readers (5 s), which would poll the task.
        let frames: Vec<Logged> = tokio::time::timeout(
            Duration::from_secs(2),
            reader.flat_map(futures::stream::iter).collect(),
        )
        .await
        .expect("every frame arrives without another wake-up");
        let indexes: Vec<u64> = frames.iter().map(|f| f.index).collect();
        assert_eq!(indexes, (0..=300).collect::<Vec<u64>>());
        assert!(frames[299].data().contains(r#""seq":299"#));
        assert!(frames[300].terminal);
    }

    #[tokio::test]
    async fn frames_beyond_the_cap_are_trimmed_and_a_resume_before_them_refused() {
        let streams = Streams::memory(limits());
        let tx = started(&streams, "b").await;
        for seq in 0..40 {
            tx.unbounded_send(chunk(seq)).unwrap();
        }
        tx.unbounded_send(done()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            streams.read("b", None, Some(3)).await.err(),
            Some(StreamsError::Trimmed)
        );
        let tail = streams.read("b", None, Some(35)).await.unwrap();
        assert_eq!(collect(tail).await, [36, 37, 38, 39, 40]);
    }

    #[tokio::test]
    async fn an_answer_nobody_reads_is_stopped_after_the_idle_time() {
        // Real time (paused time needs tokio's test-util, a second build of the tree).
        let idle = Duration::from_millis(300);
        let streams = Streams::memory(LogLimits {
            idle_reader: idle,
            ..limits()
        });
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (stop, mut stopped) = watch::channel(false);
        streams
            .run("c".into(), None, chat(rx), stop, None)
            .await
            .unwrap();
        tx.unbounded_send(chunk(0)).unwrap();
        let reader = streams.read("c", None, None).await.unwrap();
        tokio::time::sleep(idle * 4).await;
        assert!(!*stopped.borrow(), "a reader is attached");
        drop(reader);
        let started = Instant::now();
        stopped.wait_for(|s| *s).await.unwrap();
        let waited = started.elapsed();
        // Noticed at the writer's next poll (every 500 ms) after `idle`.
        assert!(
            waited >= idle && waited <= idle + Duration::from_millis(900),
            "{waited:?}"
        );
        drop(tx);
    }

    #[tokio::test]
    async fn a_stop_reaches_the_answer_and_only_its_owner_may_send_it() {
        let streams = Streams::memory(limits());
        let (_tx, rx) = futures::channel::mpsc::unbounded::<Frame>();
        let (stop, stopped) = watch::channel(false);
        streams
            .run("d".into(), Some(1), chat(rx), stop, None)
            .await
            .unwrap();
        assert_eq!(
            streams.stop("d", Some(2)).await,
            Err(StreamsError::NotFound)
        );
        assert_eq!(
            streams.stop("x", Some(1)).await,
            Err(StreamsError::NotFound)
        );
        assert!(!*stopped.borrow());
        streams.stop("d", Some(1)).await.unwrap();
        assert!(*stopped.borrow());
    }
}
