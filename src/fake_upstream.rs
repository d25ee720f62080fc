//! A fake OpenAI-compatible provider, on loopback. It answers `POST /v1/chat/completions`
//! the way the real providers do (shared PROVIDERS.md): their chunk shapes, `[DONE]`,
//! usage chunks, `: keep-alive` comments, 429s with `Retry-After`, HTML 502 pages,
//! dropped connections, stalls. It serves three users:
//! - the app with no key configured (the offline demo model, scenario `demo`);
//! - the integration tests and the browser tests (any scenario);
//! - the load benchmark.
//!
//! The scenario is chosen by a marker in the last user message, `[[fake:SHAPE OPTION…]]`
//! (see [`scenario`]), so a browser test can pick one by typing it.
//! `GET /__fake/requests` lists what was asked and how each response ended.

pub mod scenario;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

pub use scenario::{pieces, Scenario, ANSWER, REASONING};
use scenario::{Action, Plan};

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
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<Record>>,
    /// Attempts seen per scenario text, for "fail N times, then succeed".
    attempts: Mutex<HashMap<String, u32>>,
    default_scenario: String,
}

/// A running fake; it stops when the runtime does.
#[derive(Clone)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeUpstream {
    /// Starts on `addr` (port 0 picks a free one). Requests without a marker get
    /// `default_scenario`.
    pub async fn start(addr: SocketAddr, default_scenario: &str) -> std::io::Result<FakeUpstream> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            default_scenario: default_scenario.to_owned(),
            ..Shared::default()
        });
        let app = router(shared.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!("fake upstream stopped: {err}");
            }
        });
        Ok(FakeUpstream { addr, shared })
    }

    /// The base URL to configure as a provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What was asked so far, oldest first.
    pub fn records(&self) -> Vec<Record> {
        lock(&self.shared.records).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/__fake/requests", get(list_records))
        .with_state(shared)
}

async fn list_records(State(shared): State<Arc<Shared>>) -> Json<Vec<Record>> {
    Json(lock(&shared.records).clone())
}

async fn completions(
    State(shared): State<Arc<Shared>>,
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
    let marker = scenario::marker_text(&request).unwrap_or_else(|| shared.default_scenario.clone());
    let scenario = Scenario::parse(&marker);
    let attempt = {
        let mut attempts = lock(&shared.attempts);
        let count = attempts.entry(scenario::attempt_key(&request)).or_insert(0);
        *count += 1;
        *count
    };
    let plan = scenario.plan(&request, &key, attempt);
    let index = {
        let mut records = lock(&shared.records);
        records.push(Record {
            scenario: marker,
            key,
            status: plan.status,
            outcome: if plan.status == 200 {
                Outcome::Streaming
            } else {
                Outcome::Refused
            },
            body: request,
        });
        records.len() - 1
    };
    respond(shared, index, plan)
}

fn respond(shared: Arc<Shared>, index: usize, plan: Plan) -> Response {
    let status = StatusCode::from_u16(plan.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if plan.status == 200 {
        let guard = Guard {
            shared,
            index,
            done: false,
        };
        Body::from_stream(perform(plan.actions, guard)).into_response()
    } else {
        let body: Vec<Bytes> = plan
            .actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Write(bytes) => Some(bytes),
                _ => None,
            })
            .collect();
        Body::from(body.concat()).into_response()
    };
    *response.status_mut() = status;
    for (name, value) in plan.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Marks the record when the body is dropped: completed if it ran to the end,
/// `ClientGone` if the connection closed first.
struct Guard {
    shared: Arc<Shared>,
    index: usize,
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
        lock(&self.shared.records)[self.index].outcome = outcome;
    }
}

/// Plays the script: writes, pauses, and the scripted breaks.
fn perform(
    actions: Vec<Action>,
    guard: Guard,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(
        (actions.into_iter(), guard),
        |(mut actions, mut guard)| async move {
            loop {
                match actions.next() {
                    None => {
                        guard.complete();
                        return None;
                    }
                    Some(Action::Write(bytes)) => return Some((Ok(bytes), (actions, guard))),
                    Some(Action::Pause(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    Some(Action::Drop) => {
                        guard.complete();
                        let err = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "scripted drop",
                        );
                        return Some((Err(err), (actions, guard)));
                    }
                    Some(Action::Stall) => {
                        // Hold the connection open, silent, until the client gives up.
                        std::future::pending::<()>().await;
                    }
                }
            }
        },
    )
}
