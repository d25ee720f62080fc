//! The state every handler and server function shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::sync::watch;

use super::streams::{LogLimits, Streams};
use crate::llm::{LlmClient, LlmConfig, Shutdown};
use crate::store::{LedgerWriter, Store};

/// One reference count to clone: the state is cloned for every extractor and every
/// middleware layer of every request (a dozen counts each before).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
#[derive(Clone)]
pub struct Shared {
    pub leptos_options: Arc<LeptosOptions>,
    pub llm: Arc<LlmClient>,
    /// Access codes, budgets and the ledger.
    pub store: Store,
    /// The batched ledger writer of `store`.
    pub ledger: LedgerWriter,
    /// `STREAMAI_LEDGER=off` (benchmarks only): chats are still budgeted, but no rows.
    pub record_ledger: bool,
    /// Where answers' frames are logged for their readers (memory, or Redis).
    pub(crate) streams: Streams,
    shutdown: Arc<watch::Sender<bool>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        LeptosOptions::clone(&state.leptos_options)
    }
}

impl AppState {
    /// Needs a Tokio runtime (the ledger writer is a task). Answers are logged in memory
    /// ([`AppState::with_redis`] shares them).
    pub fn new(
        leptos_options: LeptosOptions,
        llm: LlmConfig,
        store: Store,
    ) -> Result<Self, reqwest::Error> {
        let (shutdown, _) = watch::channel(false);
        let streams = Streams::memory(LogLimits::from(&llm.limits));
        Ok(AppState(Arc::new(Shared {
            streams,
            leptos_options: Arc::new(leptos_options),
            llm: Arc::new(LlmClient::new(Arc::new(llm))?),
            ledger: store.ledger_writer(),
            record_ledger: true,
            store,
            shutdown: Arc::new(shutdown),
        })))
    }

    /// Logs answers in the Redis at `url`, where every instance naming it reads them,
    /// and shares key rests (429 cooldowns, parked keys) there.
    pub async fn with_redis(self, url: &str) -> Result<Self, String> {
        let limits = LogLimits::from(&self.llm.config().limits);
        let streams = Streams::redis(url, limits)
            .await
            .map_err(|e| e.to_string())?;
        self.llm.share_rests(url).await.map_err(|e| e.to_string())?;
        Ok(self.edit(|shared| shared.streams = streams))
    }

    /// Whether chats leave ledger rows (`false`: `STREAMAI_LEDGER=off`, benchmarks only).
    pub fn recording_ledger(self, record: bool) -> Self {
        self.edit(|shared| shared.record_ledger = record)
    }

    /// Changes the state while it is being set up (a copy if it is already shared).
    fn edit(mut self, change: impl FnOnce(&mut Shared)) -> Self {
        change(Arc::make_mut(&mut self.0));
        self
    }

    /// A receiver that flips when the server begins to shut down.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.subscribe()
    }

    /// Tells every open stream to end (they send an `error` frame and close).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}
