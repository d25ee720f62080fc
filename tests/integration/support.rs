//! Shared test set-up: the app state from the real Cargo.toml and the settings fixture, a real
//! server on a loopback port (through `server::serve`, the production accept loop), the
//! fake upstream, and a client that reads our SSE frames with the same parser the
//! browser uses.

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};
use streamai::fake_upstream::FakeUpstream;
use streamai::llm::LlmConfig;
use streamai::protocol::{Cost, ErrorCode, Frame, Timing, Usage};
use streamai::server::{routes::router, serve::serve, AppState};
use streamai::sse::Parser;
use tokio::sync::Notify;

use streamai::store::{sqlite_url, Store};
use tokio::task::JoinHandle;

/// An app state whose environment is exactly `vars` (the process env is not read), with a
/// fresh SQLite database of its own.
pub async fn state(vars: &[(&str, &str)]) -> AppState {
    state_with(llm_config(vars)).await
}

/// An app state for `llm`, with a fresh SQLite database of its own.
pub async fn state_with(llm: LlmConfig) -> AppState {
    AppState::new(leptos_options(), llm, test_store().await).expect("HTTP client builds")
}

/// A fresh SQLite database in a temporary file.
pub async fn test_store() -> Store {
    test_store_and_url().await.0
}

/// [`test_store`], and its URL, for a second `Store` on it (another process's view).
pub async fn test_store_and_url() -> (Store, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("streamai-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{n}.db"));
    let _ = std::fs::remove_file(&path);
    let url = sqlite_url(&path);
    let store = Store::connect(&url).await.expect("the test database opens");
    (store, url)
}

pub fn leptos_options() -> leptos::config::LeptosOptions {
    let conf = leptos::config::get_configuration(Some("Cargo.toml"))
        .expect("Cargo.toml has [package.metadata.leptos]");
    conf.leptos_options
}

pub fn llm_config(vars: &[(&str, &str)]) -> LlmConfig {
    let settings = std::fs::read_to_string("tests/fixtures/settings.toml")
        .expect("the settings fixture is readable");
    LlmConfig::from_parts(&settings, vars.iter().copied()).expect("test configuration is valid")
}

/// The app, served on a free loopback port, talking to its own fake upstream.
pub struct Harness {
    pub addr: SocketAddr,
    pub fake: FakeUpstream,
    pub state: AppState,
    http: reqwest::Client,
    /// Signals the server's shutdown, as SIGTERM does in `server::run`.
    stop: Arc<Notify>,
    served: Option<JoinHandle<()>>,
}

/// Extra environment on top of the harness defaults (short timeouts and backoff); `{fake}`
/// in a value stands for the fake upstream's base URL.
pub async fn harness(keys: &[&str], extra: &[(&str, &str)]) -> Harness {
    harness_on(test_store().await, keys, extra).await
}

/// [`harness`] on a given database (several servers may share one).
pub async fn harness_on(store: Store, keys: &[&str], extra: &[(&str, &str)]) -> Harness {
    harness_with(fake().await, store, keys, extra).await
}

/// A scripted fake upstream on a free loopback port.
pub async fn fake() -> FakeUpstream {
    fake_with(streamai::fake_upstream::H2_MAX_STREAMS).await
}

/// [`fake`], allowing at most `h2_max_streams` streams on one HTTP/2 connection.
pub async fn fake_with(h2_max_streams: u32) -> FakeUpstream {
    let mode = streamai::fake_upstream::Mode::Scripted("openai".into());
    FakeUpstream::start_with(([127, 0, 0, 1], 0).into(), mode, h2_max_streams)
        .await
        .unwrap()
}

/// [`harness_on`] with a given fake upstream.
pub async fn harness_with(
    fake: FakeUpstream,
    store: Store,
    keys: &[&str],
    extra: &[(&str, &str)],
) -> Harness {
    let base_url = fake.base_url();
    let key_vars: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("CUSTOM_API_KEY_{}", i + 1), k.to_string()))
        .collect();
    let mut vars: Vec<(&str, &str)> = vec![
        ("LLM_PROVIDER", "custom"),
        ("LLM_MODEL", "fake-model"),
        ("CUSTOM_FREE_MODELS", "fake-model"),
        ("CUSTOM_BASE_URL", &base_url),
        ("LLM_TIMEOUT_SECS", "2"),
        ("LLM_RETRY_MIN_MS", "50"),
        ("LLM_RETRY_MAX_MS", "200"),
    ];
    vars.extend(key_vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // `{fake}` in a value is this fake's base URL (to let it play another provider).
    let extra: Vec<(&str, String)> = extra
        .iter()
        .map(|(k, v)| (*k, v.replace("{fake}", &base_url)))
        .collect();
    vars.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let state =
        AppState::new(leptos_options(), llm_config(&vars), store).expect("HTTP client builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone());
    let stop = Arc::new(Notify::new());
    let shutdown = {
        let stop = stop.clone();
        async move { stop.notified().await }
    };
    let on_shutdown = {
        let state = state.clone();
        move || state.begin_shutdown()
    };
    let limits = state.llm.config().limits.clone();
    let served = tokio::spawn(serve(listener, app, &limits, shutdown, on_shutdown));
    Harness {
        addr,
        fake,
        state,
        http: reqwest::Client::new(),
        stop,
        served: Some(served),
    }
}

/// A `retry` frame's fields.
#[derive(Debug)]
pub struct Retried<'a> {
    pub attempt: u32,
    pub max_retries: u32,
    pub wait_ms: u64,
    pub reason: &'a str,
}

/// An `error` frame's fields.
#[derive(Debug)]
pub struct Failed<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    pub retryable: bool,
}

/// A `done` frame's fields.
#[derive(Debug)]
pub struct Finished<'a> {
    pub finish_reason: &'a str,
    pub usage: &'a Usage,
    pub cost: &'a Cost,
    pub timing: &'a Timing,
}

fn retried(frame: &Frame) -> Option<Retried<'_>> {
    match frame {
        Frame::Retry {
            attempt,
            max_retries,
            wait_ms,
            reason,
        } => Some(Retried {
            attempt: *attempt,
            max_retries: *max_retries,
            wait_ms: *wait_ms,
            reason,
        }),
        _ => None,
    }
}

/// A streamed answer as the client saw it.
pub struct Streamed {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub raw: String,
    pub frames: Vec<Frame>,
}

impl Streamed {
    /// A response as read: its frames are parsed when the status is 200.
    pub fn new(status: u16, headers: reqwest::header::HeaderMap, raw: String) -> Streamed {
        let frames = if status == 200 {
            parse_frames(&raw)
        } else {
            Vec::new()
        };
        Streamed {
            status,
            headers,
            raw,
            frames,
        }
    }

    /// The answer text: every chunk, in order.
    pub fn text(&self) -> String {
        self.joined(false)
    }

    pub fn reasoning(&self) -> String {
        self.joined(true)
    }

    fn joined(&self, reasoning: bool) -> String {
        let texts = self
            .frames
            .iter()
            .filter_map(streamai::protocol::Frame::text);
        texts
            .filter(|(_, _, r)| *r == reasoning)
            .map(|(_, text, _)| text)
            .collect()
    }

    /// Every `retry` frame, in order.
    pub fn retries(&self) -> Vec<Retried<'_>> {
        self.frames.iter().filter_map(retried).collect()
    }

    /// The `wait_ms` of every `retry` frame.
    pub fn retry_waits(&self) -> Vec<u64> {
        self.retries().iter().map(|r| r.wait_ms).collect()
    }

    /// The `error` frame that ended the stream (panics, showing the frame, otherwise).
    pub fn error(&self) -> Failed<'_> {
        match self.last() {
            Frame::Error {
                code,
                message,
                retryable,
                ..
            } => Failed {
                code: *code,
                message,
                retryable: *retryable,
            },
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    /// The `done` frame that ended the stream (panics, showing the frame, otherwise).
    pub fn done(&self) -> Finished<'_> {
        match self.last() {
            Frame::Done {
                finish_reason,
                usage,
                cost,
                timing,
            } => Finished {
                finish_reason,
                usage,
                cost,
                timing,
            },
            other => panic!("expected a done frame, got {other:?}"),
        }
    }

    pub fn last(&self) -> &Frame {
        self.frames.last().expect("at least one frame")
    }

    /// The contract every stream keeps: `start` first, one terminal frame last,
    /// `seq` counting 0, 1, 2, … across chunks and reasoning.
    pub fn assert_well_formed(&self) {
        assert!(
            matches!(self.frames.first(), Some(Frame::Start { .. })),
            "{:?}",
            self.frames.first()
        );
        let terminals = self.frames.iter().filter(|f| f.is_terminal()).count();
        assert_eq!(
            terminals, 1,
            "exactly one terminal frame: {:?}",
            self.frames
        );
        assert!(self.last().is_terminal());
        let seqs: Vec<u64> = self
            .frames
            .iter()
            .filter_map(|f| match f {
                Frame::Chunk { seq, .. } | Frame::Reasoning { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a body to the stream endpoint and reads the whole response.
    pub async fn post(&self, body: &str) -> Streamed {
        self.post_as(None, body).await
    }

    /// [`Self::post`] with an access code.
    pub async fn post_as(&self, code: Option<&str>, body: &str) -> Streamed {
        let mut request = self
            .http
            .post(self.url("/api/chat/stream"))
            .header("content-type", "application/json");
        if let Some(code) = code {
            request = request.bearer_auth(code);
        }
        let response = request.body(body.to_owned()).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.text().await.unwrap();
        Streamed::new(status, headers, raw)
    }

    /// Streams one user message (which may carry a `[[fake:…]]` marker).
    pub async fn ask(&self, prompt: &str) -> Streamed {
        let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
        self.post(&body.to_string()).await
    }

    /// Stops answer `id` (`POST /api/chat/stream/{id}/stop`); the response's status.
    pub async fn stop_answer(&self, id: &str) -> u16 {
        self.stop_answer_as(None, id).await
    }

    /// [`Self::stop_answer`] with an access code.
    pub async fn stop_answer_as(&self, code: Option<&str>, id: &str) -> u16 {
        let mut request = self
            .http
            .post(self.url(&format!("/api/chat/stream/{id}/stop")))
            .header("content-type", "application/json");
        if let Some(code) = code {
            request = request.bearer_auth(code);
        }
        let response = request.body("{}").send().await.unwrap();
        response.status().as_u16()
    }

    pub fn raw_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// Begins a graceful shutdown of the server; the handle ends when `serve` returns.
    pub fn shut_down(&mut self) -> JoinHandle<()> {
        self.stop.notify_one();
        self.served.take().expect("the server is shut down once")
    }
}

/// Our frames from an SSE body, through the shared parser. Keep-alive comments are skipped.
pub fn parse_frames(raw: &str) -> Vec<Frame> {
    Parser::new()
        .feed(raw.as_bytes())
        .into_iter()
        .map(|event| {
            serde_json::from_str(&event.data)
                .unwrap_or_else(|e| panic!("bad frame {:?}: {e}", event.data))
        })
        .collect()
}
