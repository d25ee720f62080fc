//! The server (feature `ssr`): start-up, shared state, routes, tracing and shutdown.
//! `main` → [`main`] → [`run`]: settings → telemetry → state → router → serve.
//!
//! Architecture invariant: this is the only layer that knows HTTP towards the browser,
//! the app state and the secrets' owner (`llm`).

pub mod auth;
pub(crate) mod billing;
mod chat_sse;
mod cli;
mod limits;
pub mod routes;
pub mod security;
pub mod serve;
mod shutdown;
mod state;
pub(crate) mod streams;
mod telemetry;

use std::process::ExitCode;

pub use state::AppState;

use crate::fake_upstream::FakeUpstream;
use crate::llm::config::{ConfigError, DEMO_PROVIDER};
use crate::llm::LlmConfig;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("Leptos settings: {0}")]
    Leptos(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("REDIS_URL: cannot connect: {0}")]
    Redis(String),
    #[error("cannot start the offline demo model: {0}")]
    Demo(std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{var} = {value:?} is not valid: {reason}")]
    Setting {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "refusing to listen on {0} with no access code: anyone on the network could spend the \
         API keys. Create a code first (`streamai codes add --name 管理员`, or set ADMIN_CODE), \
         or set STREAMAI_ALLOW_OPEN=1 to serve openly anyway"
    )]
    Exposed(std::net::SocketAddr),
}

/// Process entry: loads `.env`, starts tracing, runs the server, maps failure to an exit code.
pub async fn main() -> ExitCode {
    let dotenv = dotenvy::dotenv();
    telemetry::init();
    if let Err(err) = dotenv {
        if !err.not_found() {
            tracing::warn!("ignoring .env: {err}");
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return cli::main(&args).await;
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("流式AI could not start: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the state from the settings and serves until Ctrl-C or SIGTERM.
pub async fn run() -> Result<(), StartError> {
    let conf =
        leptos::config::get_configuration(None).map_err(|e| StartError::Leptos(e.to_string()))?;
    let leptos_options = conf.leptos_options;
    let addr = leptos_options.site_addr;
    let mut llm = LlmConfig::load()?;
    let store = open_store().await?;
    guard_exposure(addr, &store).await?;
    store.watch_codes(crate::store::codes::NO_CODES_RECHECK / 2);
    let _demo = start_demo_if_needed(&mut llm)
        .await
        .map_err(StartError::Demo)?;
    crate::llm::tokens::warm_up();
    let mut state = AppState::new(leptos_options, llm, store.clone())?
        .recording_ledger(std::env::var("STREAMAI_LEDGER").map_or(true, |v| v.trim() != "off"));
    if let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        state = state
            .with_redis(url.trim())
            .await
            .map_err(StartError::Redis)?;
    }
    tracing::info!(
        streams = state.streams.kind(),
        "answers are logged for resuming"
    );
    let app = routes::router(state.clone());

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    tracing::info!("流式AI listening on http://{addr}");
    let limits = state.llm.config().limits.clone();
    let ledger = state.ledger.clone();
    serve::serve(listener, app, &limits, shutdown::signal(), move || {
        state.begin_shutdown()
    })
    .await;
    if let Err(err) = ledger.flush().await {
        tracing::error!("the last ledger rows could not be written: {err}");
    }
    Ok(())
}

/// The database from `DATABASE_URL` (default: SQLite in `STREAMAI_DATA_DIR`, `data/`),
/// with `STREAMAI_GLOBAL_DAILY_YUAN`, `ADMIN_CODE`, the refund of dead processes'
/// reservations and `STREAMAI_RETENTION_DAYS` in the background.
pub async fn open_store() -> Result<crate::store::Store, StartError> {
    use crate::store::{sqlite_url, unix_now, Maintenance, Store};
    let env = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let url = match env("DATABASE_URL") {
        Some(url) => url,
        None => {
            let dir = env("STREAMAI_DATA_DIR").unwrap_or_else(|| "data".into());
            sqlite_url(&std::path::Path::new(&dir).join("streamai.db"))
        }
    };
    let global = match env("STREAMAI_GLOBAL_DAILY_YUAN") {
        None => None,
        Some(text) => Some(crate::protocol::Yuan::parse(text.trim()).ok_or(
            StartError::Setting {
                var: "STREAMAI_GLOBAL_DAILY_YUAN",
                value: text,
                reason: "an amount in yuan, at most 12 decimals",
            },
        )?),
    };
    let retention_days = match env("STREAMAI_RETENTION_DAYS") {
        None => None,
        Some(text) => Some(text.trim().parse().map_err(|_| StartError::Setting {
            var: "STREAMAI_RETENTION_DAYS",
            value: text,
            reason: "a whole number of days",
        })?),
    };
    let store = Store::connect(&url).await?.with_global_daily_limit(global);
    if let Some(code) = env("ADMIN_CODE") {
        store.ensure_admin_code(&code, unix_now()).await?;
    }
    store.spawn_maintenance(Maintenance {
        retention_days,
        ..Maintenance::default()
    });
    Ok(store)
}

/// Beyond loopback, with no access code, anyone who reaches the port spends the
/// deployment's keys: refuse, unless the deployer opted out (then warn).
async fn guard_exposure(
    addr: std::net::SocketAddr,
    store: &crate::store::Store,
) -> Result<(), StartError> {
    if addr.ip().is_loopback() || store.has_codes().await? {
        return Ok(());
    }
    let opted_out = std::env::var("STREAMAI_ALLOW_OPEN").is_ok_and(|v| v.trim() == "1");
    if !opted_out {
        return Err(StartError::Exposed(addr));
    }
    warn_if_exposed(addr);
    Ok(())
}

/// Bound beyond loopback with no access control, anyone who reaches the port spends the
/// deployment's keys: say so plainly at start-up. (Access codes make this a refusal.)
fn warn_if_exposed(addr: std::net::SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "流式AI 监听在非回环地址 {addr}，且没有配置任何访问码：网络上能访问这个端口的任何人，\
             都可以用服务器上配置的 API 密钥调用模型、花费你的额度（密钥本身不会泄露）。\
             请创建访问码（streamai codes add --name 管理员，或设置 ADMIN_CODE）后再对外提供服务。"
        );
    }
}

/// With no key configured, serves the offline demo model: the fake upstream, in-process
/// on a free loopback port, answering through the same HTTP path as a real provider.
pub async fn start_demo_if_needed(llm: &mut LlmConfig) -> std::io::Result<Option<FakeUpstream>> {
    let Some(demo) = llm.providers.iter_mut().find(|p| p.id == DEMO_PROVIDER) else {
        return Ok(None);
    };
    let fake =
        FakeUpstream::start(([127, 0, 0, 1], 0).into(), crate::fake_upstream::Mode::Demo).await?;
    demo.base_url = fake.base_url();
    tracing::warn!("no API key configured: serving the offline demo model (see .env.example)");
    Ok(Some(fake))
}
