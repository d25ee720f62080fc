//! The server (feature `ssr`): start-up, shared state, routes, tracing and shutdown.
//! `main` → [`main`] → [`run`]: settings → telemetry → state → router → serve.
//!
//! Architecture invariant: this is the only layer that knows HTTP towards the browser,
//! the app state and the secrets' owner (`llm`).

mod chat_sse;
mod limits;
pub mod routes;
pub mod security;
pub mod serve;
mod shutdown;
mod state;
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
    #[error("cannot start the offline demo model: {0}")]
    Demo(std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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
    let _demo = start_demo_if_needed(&mut llm)
        .await
        .map_err(StartError::Demo)?;
    crate::llm::tokens::warm_up();
    let state = AppState::new(leptos_options, llm)?;
    let app = routes::router(state.clone());

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    warn_if_exposed(addr);
    tracing::info!("流式AI listening on http://{addr}");
    let limits = state.llm.config().limits.clone();
    serve::serve(listener, app, &limits, shutdown::signal(), move || {
        state.begin_shutdown()
    })
    .await;
    Ok(())
}

/// Bound beyond loopback with no access control, anyone who reaches the port spends the
/// deployment's keys: say so plainly at start-up. (Access codes make this a refusal.)
fn warn_if_exposed(addr: std::net::SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "流式AI 监听在非回环地址 {addr}，且没有配置任何访问控制：网络上能访问这个端口的任何人，\
             都可以用服务器上配置的 API 密钥调用模型、花费你的额度（密钥本身不会泄露）。\
             请只在可信网络中这样运行，或改为监听 127.0.0.1 并在前面放一个带认证的反向代理。"
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
