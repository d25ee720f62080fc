//! A fake OpenAI-compatible provider, on loopback. It answers `POST /v1/chat/completions`
//! the way the real providers do (shared PROVIDERS.md): their chunk shapes, `[DONE]`,
//! usage chunks, `: keep-alive` comments, 429s with `Retry-After`, HTML 502 pages,
//! dropped connections, stalls — and the ways providers misbehave (huge lines, huge error
//! bodies, no `[DONE]`). It serves three users, in two [`Mode`]s:
//! - the app with no key configured: the offline demo model ([`Mode::Demo`]), which every
//!   visitor of a deployed server may reach, so it answers them all the same way;
//! - the integration tests, the browser tests and the load benchmark
//!   ([`Mode::Scripted`]): a marker in the last user message, `[[fake:SHAPE OPTION…]]`
//!   (see [`scenario`]), picks the scenario, so a browser test can pick one by typing it.
//!
//! What it keeps is bounded: the last [`MAX_RECORDS`] requests, and attempt counts for
//! the last [`MAX_ATTEMPT_KEYS`] conversations. In scripted mode,
//! `GET /__fake/requests` lists what was asked and how each response ended.

pub mod scenario;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tower::ServiceExt;

pub use scenario::{demo_answer, pieces, Scenario, ANSWER, REASONING};
use scenario::{Action, Plan};

/// The most requests the fake remembers; older ones are forgotten first.
pub const MAX_RECORDS: usize = 1000;
/// The most conversations whose attempts the fake counts ("fail N times, then succeed").
pub const MAX_ATTEMPT_KEYS: usize = 1000;

/// Who the fake is serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The offline demo model, for any visitor: every request gets the demo answer,
    /// `[[fake:…]]` markers are ignored (they are just text of the question), no attempts
    /// are counted, records keep no request body, and `/__fake/requests` does not exist.
    Demo,
    /// The tests' and benchmarks' upstream: markers are honoured; a request without one
    /// gets this scenario (e.g. `"openai"`).
    Scripted(String),
}

/// How one response ended, as the fake saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still being written.
    Streaming,
    /// Written to the end (or to its scripted break).
    Completed,
    /// The client closed the connection before the end.
    ClientGone,
    /// An error status was answered.
    Refused,
}

/// One request the fake received.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub scenario: String,
    /// The bearer key (the fake is test infrastructure; it never sees a real key).
    pub key: String,
    pub status: u16,
    pub outcome: Outcome,
    /// The protocol it came over: `HTTP/1.1` or `HTTP/2.0`.
    pub http: String,
    /// The client's port: requests with the same one came over the same connection.
    pub client_port: u16,
    /// The request body; `null` in demo mode, which keeps no visitor's text.
    pub body: serde_json::Value,
}

/// The last [`MAX_RECORDS`] records, each with an id that stays valid while it is kept.
#[derive(Default)]
struct Log {
    records: VecDeque<Record>,
    /// How many records were dropped from the front: the id of the oldest one kept.
    forgotten: u64,
}

impl Log {
    fn push(&mut self, record: Record) -> u64 {
        if self.records.len() == MAX_RECORDS {
            self.records.pop_front();
            self.forgotten += 1;
        }
        self.records.push_back(record);
        self.forgotten + self.records.len() as u64 - 1
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Record> {
        let index = id.checked_sub(self.forgotten)?;
        self.records.get_mut(usize::try_from(index).ok()?)
    }
}

/// Attempts per conversation, for the last [`MAX_ATTEMPT_KEYS`] conversations. Keyed by
/// a hash of the last user message, so a long prompt is not kept.
#[derive(Default)]
struct Attempts {
    counts: HashMap<u64, u32>,
    order: VecDeque<u64>,
}

impl Attempts {
    /// Counts one more attempt of `conversation` and returns its number (1-based).
    fn next(&mut self, conversation: &str) -> u32 {
        let mut hasher = DefaultHasher::new();
        conversation.hash(&mut hasher);
        let key = hasher.finish();
        if !self.counts.contains_key(&key) {
            if self.order.len() == MAX_ATTEMPT_KEYS {
                if let Some(oldest) = self.order.pop_front() {
                    self.counts.remove(&oldest);
                }
            }
            self.order.push_back(key);
        }
        let count = self.counts.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }
}

/// The streams one HTTP/2 connection may carry at once, by default: hyper's server
/// default, between nginx's 128 and Cloudflare's 256.
pub const H2_MAX_STREAMS: u32 = 200;

/// Serves HTTP/1.1 and HTTP/2 without TLS (h2c, by prior knowledge) on `listener`, with
/// `TCP_NODELAY` as provider front ends (nginx) set it.
async fn serve(listener: tokio::net::TcpListener, app: Router, h2_max_streams: u32) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(h2_max_streams);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!("fake upstream: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, app) = (builder.clone(), app.clone());
        let service = service_fn(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Shared {
    mode: Mode,
    log: Mutex<Log>,
    attempts: Mutex<Attempts>,
}

/// A running fake; it stops when the runtime does.
#[derive(Clone)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeUpstream {
    /// Starts on `addr` (port 0 picks a free one), serving `mode`.
    pub async fn start(addr: SocketAddr, mode: Mode) -> std::io::Result<FakeUpstream> {
        Self::start_with(addr, mode, H2_MAX_STREAMS).await
    }

    /// [`Self::start`], allowing at most `h2_max_streams` streams on one HTTP/2
    /// connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub async fn start_with(
        addr: SocketAddr,
        mode: Mode,
        h2_max_streams: u32,
    ) -> std::io::Result<FakeUpstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode,
            log: Mutex::default(),
            attempts: Mutex::default(),
        });
        let app = router(shared.clone());
        tokio::spawn(serve(listener, app, h2_max_streams));
        Ok(FakeUpstream { addr, shared })
    }

    /// The base URL to configure as a provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What was asked (the last [`MAX_RECORDS`] requests), oldest first.
    pub fn records(&self) -> Vec<Record> {
        lock(&self.shared.log).records.iter().cloned().collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    // `/beta`: DeepSeek's prefix completion lives at its beta base URL.
    let router = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/beta/chat/completions", post(completions));
    let router = match shared.mode {
        Mode::Demo => router,
        Mode::Scripted(_) => router.route("/__fake/requests", get(list_records)),
    };
    router.with_state(shared)
}

async fn list_records(State(shared): State<Arc<Shared>>) -> Json<Vec<Record>> {
    Json(lock(&shared.log).records.iter().cloned().collect())
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"invalid JSON"}}"#,
        )
            .into_response();
    };
    let (marker, plan, body) = match &shared.mode {
        Mode::Demo => {
            // A visitor's text is only the question: no marker, no key, no attempt counts.
            let plan = Scenario::demo().plan(&request, "", 1);
            ("demo".to_owned(), plan, serde_json::Value::Null)
        }
        Mode::Scripted(default_scenario) => {
            let marker =
                scenario::marker_text(&request).unwrap_or_else(|| default_scenario.clone());
            let attempt = lock(&shared.attempts).next(&scenario::attempt_key(&request));
            let plan = Scenario::parse(&marker).plan(&request, &key, attempt);
            (marker, plan, request)
        }
    };
    let id = lock(&shared.log).push(Record {
        scenario: marker,
        key,
        status: plan.status,
        outcome: if plan.status == 200 {
            Outcome::Streaming
        } else {
            Outcome::Refused
        },
        http: format!("{version:?}"),
        client_port: peer.port(),
        body,
    });
    respond(shared, id, plan)
}

fn respond(shared: Arc<Shared>, id: u64, plan: Plan) -> Response {
    let status = StatusCode::from_u16(plan.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match plan.actions.as_slice() {
        // A plain error body: one write, with a Content-Length.
        [Action::Write(bytes)] if plan.status != 200 => Body::from(bytes.clone()).into_response(),
        _ => {
            // A stream, or an error body written in parts (or never ending): the record
            // follows a stream's fate, while an error stays `Refused`.
            let guard = (plan.status == 200).then_some(Guard {
                shared,
                id,
                done: false,
            });
            Body::from_stream(perform(plan.actions, plan.split, guard)).into_response()
        }
    };
    *response.status_mut() = status;
    // The plan's headers replace any default; a name it gives twice is sent twice.
    for (name, _) in &plan.headers {
        response.headers_mut().remove(*name);
    }
    for (name, value) in plan.headers {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Marks the record when the body is dropped: completed if it ran to the end,
/// `ClientGone` if the connection closed first.
struct Guard {
    shared: Arc<Shared>,
    id: u64,
    done: bool,
}

impl Guard {
    fn complete(&mut self) {
        self.done = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let outcome = if self.done {
            Outcome::Completed
        } else {
            Outcome::ClientGone
        };
        // A record forgotten meanwhile (the log is a ring) has nothing to update.
        if let Some(record) = lock(&self.shared.log).get_mut(self.id) {
            record.outcome = outcome;
        }
    }
}

/// Where the playing of a script has got to.
struct Player {
    actions: std::vec::IntoIter<Action>,
    /// `split`: the rest of the current write, played 5 bytes at a time.
    split: bool,
    rest: Bytes,
    guard: Option<Guard>,
}

impl Player {
    fn complete(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.complete();
        }
    }
}

/// Plays the script: writes, pauses, and the scripted breaks.
fn perform(
    actions: Vec<Action>,
    split: bool,
    guard: Option<Guard>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let player = Player {
        actions: actions.into_iter(),
        split,
        rest: Bytes::new(),
        guard,
    };
    futures::stream::unfold(player, |mut player| async move {
        if !player.rest.is_empty() {
            // 5-byte pieces cut through `data:` and through multi-byte characters; the
            // pause makes each piece its own network read.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let piece = player.rest.split_to(player.rest.len().min(5));
            return Some((Ok(piece), player));
        }
        loop {
            match player.actions.next() {
                None => {
                    player.complete();
                    return None;
                }
                Some(Action::Write(bytes)) if player.split => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    player.rest = bytes;
                    let piece = player.rest.split_to(player.rest.len().min(5));
                    return Some((Ok(piece), player));
                }
                Some(Action::Write(bytes)) => return Some((Ok(bytes), player)),
                Some(Action::Pause(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Some(Action::Drop) => {
                    player.complete();
                    let err =
                        std::io::Error::new(std::io::ErrorKind::ConnectionReset, "scripted drop");
                    return Some((Err(err), player));
                }
                Some(Action::Stall) => {
                    // Hold the connection open, silent, until the client gives up.
                    std::future::pending::<()>().await;
                }
            }
        }
    })
}
