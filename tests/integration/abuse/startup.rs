//! Item 8 and the log half of item 6, against the real binary: bound to a non-loopback
//! address with no access code, the server refuses to start, or — when the deployer opts
//! out — says at start-up what anyone on the network can do; user-supplied strings reach
//! its log escaped, never as forged lines.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use streamai::fake_upstream::{FakeUpstream, Mode, ANSWER};

use crate::support::parse_frames;

/// The server binary on `addr` with a fresh database, its log lines arriving on the
/// returned channel.
fn spawn_server(
    addr: &str,
    fake_url: &str,
    extra: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>) {
    let db = std::env::temp_dir().join(format!(
        "streamai-startup-{}-{}.db",
        std::process::id(),
        free_port()
    ));
    let database_url = format!("sqlite://{}", db.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamai"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("LEPTOS_OUTPUT_NAME", "streamai"),
            ("LEPTOS_SITE_ROOT", "target/site"),
            ("LEPTOS_SITE_PKG_DIR", "pkg"),
            ("LEPTOS_SITE_ADDR", addr),
            ("LEPTOS_ENV", "PROD"),
            ("RUST_LOG", "streamai=info"),
            ("NO_COLOR", "1"),
            ("LLM_PROVIDER", "custom"),
            ("LLM_MODEL", "fake-model"),
            ("CUSTOM_FREE_MODELS", "fake-model"),
            ("CUSTOM_BASE_URL", fake_url),
            ("CUSTOM_API_KEY", "sk-startup-test-key-0001"),
            ("DATABASE_URL", database_url.as_str()),
        ])
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Log lines until one contains `needle` (panics after 30 s).
fn lines_until(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            lines.push(line);
            if found {
                return lines;
            }
        }
    }
    panic!("no log line with {needle:?} in: {lines:#?}");
}

fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_exposed_server_without_codes_refuses_to_start() {
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let (mut child, log) = spawn_server(&addr, "http://127.0.0.1:9/v1", &[]);
    let lines = lines_until(&log, "could not start");
    let status = child.wait().expect("the server exits");
    assert!(!status.success());
    let refusal = lines.last().unwrap();
    assert!(refusal.contains("STREAMAI_ALLOW_OPEN"), "{refusal}");
    assert!(refusal.contains("codes add"), "{refusal}");
}

#[tokio::test]
async fn an_exposed_server_warns_and_logs_user_strings_escaped() {
    let mode = Mode::Scripted("openai".into());
    let fake = FakeUpstream::start(([127, 0, 0, 1], 0).into(), mode)
        .await
        .unwrap();
    let port = free_port();
    let allow = [("STREAMAI_ALLOW_OPEN", "1")];
    let (mut child, log) = spawn_server(&format!("0.0.0.0:{port}"), &fake.base_url(), &allow);
    let start_up = lines_until(&log, "listening");
    let warning = start_up.iter().find(|l| l.contains("非回环地址"));
    let warning = warning.unwrap_or_else(|| panic!("no exposure warning in {start_up:#?}"));
    assert!(warning.contains("API 密钥"), "{warning}");

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/chat/stream");
    let forged = "x\nFORGED streamai: admin logged in\r\n";
    let body =
        serde_json::json!({"model": forged, "messages": [{"role": "user", "content": "hi"}]});
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let logged = lines_until(&log, "request refused");
    assert!(
        logged.iter().all(|l| !l.starts_with("FORGED")),
        "a user string forged a log line: {logged:#?}"
    );
    assert!(logged.last().unwrap().contains("\\n"), "{logged:#?}");

    // Still serving, byte-exact.
    let body = serde_json::json!({"messages": [{"role": "user", "content": "[[fake:openai]]"}]});
    let raw = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let text: String = parse_frames(&raw)
        .iter()
        .filter_map(streamai::protocol::Frame::text)
        .map(|(_, text, _)| text)
        .collect();
    assert_eq!(text, ANSWER);
    let _ = child.kill();
    let _ = child.wait();
}
