//! The fake OpenAI-compatible provider as a standalone process, for the browser tests
//! and the load benchmark, in scripted mode: `[[fake:…]]` markers are honoured, and
//! requests without one get the default scenario. Run with:
//! `cargo run --features ssr --bin fake-upstream -- 127.0.0.1:3199 [default-scenario]`

use std::net::SocketAddr;
use std::process::ExitCode;

use streamai::fake_upstream::{FakeUpstream, Mode};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3199".into());
    let scenario = args.next().unwrap_or_else(|| "openai".into());
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("fake-upstream: {addr:?} is not an address like 127.0.0.1:3199");
        return ExitCode::from(2);
    };
    if !addr.ip().is_loopback() {
        eprintln!("fake-upstream: refusing to listen on {addr}: loopback only");
        return ExitCode::from(2);
    }
    match FakeUpstream::start(addr, Mode::Scripted(scenario)).await {
        Ok(fake) => {
            println!("fake upstream listening on {}", fake.base_url());
            let _ = tokio::signal::ctrl_c().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("fake-upstream: cannot listen on {addr}: {err}");
            ExitCode::FAILURE
        }
    }
}
