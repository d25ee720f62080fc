//! Load benchmark of the relay: starts the fake upstream and the real server as child
//! processes on loopback, opens C concurrent streams through the server and C directly
//! against the fake, and prints what the relay adds. Every loop is bounded in count and
//! time; nothing leaves 127.0.0.1. Run with `scripts/bench.sh` (release build, fd limit).
//!
//! `loadtest [LEVEL,LEVEL,…]` — default levels 1,100,1000,10000.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use streamai::llm::wire::{parse_data, UpstreamEvent};
use streamai::protocol::Frame;
use streamai::sse::Parser;

const SERVER_ADDR: &str = "127.0.0.1:3298";
/// A second server, the same but with `STREAMAI_LEDGER=off`, for the ledger's cost.
const NO_LEDGER_ADDR: &str = "127.0.0.1:3297";
const FAKE_ADDR: &str = "127.0.0.1:3299";
/// Chunks per answer.
const CHUNKS: u64 = 20;

/// What one stream saw.
#[derive(Default)]
struct StreamResult {
    ok: bool,
    text_matches: bool,
    first_chunk: Option<Duration>,
    gaps: Vec<Duration>,
}

fn expected_text() -> String {
    (0..CHUNKS).map(|i| format!("第{i}段。")).collect()
}

/// Pacing per level: slower chunks at 10,000 streams so the machine measures the relay,
/// not its own client. Returns (delay between chunks, ramp-up between stream starts).
fn pacing(level: usize) -> (u64, Duration) {
    if level >= 5000 {
        (500, Duration::from_micros(500))
    } else {
        (50, Duration::from_micros(500))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let levels: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "1,100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let bin_dir = std::env::var("LOADTEST_BIN_DIR").unwrap_or_else(|_| "target/release".into());
    let mut fake = match spawn(
        &format!("{bin_dir}/fake-upstream"),
        &[FAKE_ADDR, "openai"],
        &[],
    ) {
        Ok(child) => child,
        Err(err) => return fail(&format!("cannot start the fake upstream: {err}")),
    };
    let fake_url = format!("http://{FAKE_ADDR}/v1");
    let env = [
        ("LEPTOS_OUTPUT_NAME", "streamai"),
        ("LEPTOS_SITE_ROOT", "target/site"),
        ("LEPTOS_SITE_PKG_DIR", "pkg"),
        ("LEPTOS_ENV", "PROD"),
        ("LLM_PROVIDER", "custom"),
        ("LLM_MODEL", "fake-model"),
        ("CUSTOM_FREE_MODELS", "fake-model"),
        ("CUSTOM_BASE_URL", fake_url.as_str()),
        ("CUSTOM_API_KEY", "sk-loadtest-key"),
        ("RUST_LOG", "warn"),
    ];
    let db = |name: &str| {
        format!(
            "sqlite://{}/streamai-loadtest-{}-{name}.db",
            std::env::temp_dir().display(),
            std::process::id()
        )
    };
    let (db_on, db_off) = (db("ledger"), db("no-ledger"));
    let with = |db: &str, ledger: &str, addr: &str| -> Vec<(String, String)> {
        let extra = [
            ("DATABASE_URL", db),
            ("STREAMAI_LEDGER", ledger),
            ("LEPTOS_SITE_ADDR", addr),
        ];
        env.iter()
            .chain(extra.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let servers = [
        with(&db_on, "on", SERVER_ADDR),
        with(&db_off, "off", NO_LEDGER_ADDR),
    ];
    let mut children = Vec::new();
    for env in &servers {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match spawn(&format!("{bin_dir}/streamai"), &[], &env) {
            Ok(child) => children.push(child),
            Err(err) => {
                let _ = fake.kill();
                children.iter_mut().for_each(|c| drop(c.kill()));
                return fail(&format!("cannot start the server: {err}"));
            }
        }
    }
    let code = run(&levels, children[0].id()).await;
    children.iter_mut().for_each(|c| drop(c.kill()));
    let _ = fake.kill();
    code
}

async fn run(levels: &[usize], server_pid: u32) -> ExitCode {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client builds");
    if !wait_ready(&http, &format!("http://{FAKE_ADDR}/__fake/requests")).await
        || !wait_ready(&http, &format!("http://{SERVER_ADDR}/")).await
    {
        return fail("the server or the fake upstream did not come up within 30 s");
    }
    println!(
        "relay load benchmark — {} chunks per answer, fake upstream and server on loopback",
        CHUNKS
    );
    println!(
        "{:>6} {:>6} {:>5} {:>8} | {:>17} {:>17} {:>15} | {:>15} {:>15} | {:>9} {:>8} {:>7} {:>9} {:>6}",
        "C", "ok", "fail", "mismatch", "ttfc direct p50/99", "ttfc relay p50/99", "added p50/99", "gap direct", "gap relay",
        "rss peak", "KiB/strm", "cpu s", "cpu s/1k", "cores"
    );
    let mut all_matched = true;
    for &level in levels {
        let (delay, ramp) = pacing(level);
        let direct = run_level(&http, level, delay, ramp, Target::Direct).await;
        let baseline_rss = rss_kib(server_pid).unwrap_or(0);
        let cpu_before = cpu_seconds(server_pid).unwrap_or(0.0);
        let peak = Arc::new(AtomicU64::new(baseline_rss));
        let sampler = tokio::spawn(sample_rss(server_pid, peak.clone()));
        let started = Instant::now();
        let relay = run_level(&http, level, delay, ramp, Target::Relay).await;
        let wall = started.elapsed().as_secs_f64();
        sampler.abort();
        let cpu = cpu_seconds(server_pid).unwrap_or(0.0) - cpu_before;
        let peak = peak.load(Ordering::Relaxed);

        let ok = relay.iter().filter(|r| r.ok).count();
        let mismatch = relay.iter().filter(|r| r.ok && !r.text_matches).count()
            + direct.iter().filter(|r| r.ok && !r.text_matches).count();
        all_matched &= mismatch == 0;
        let ttfc =
            |rs: &[StreamResult]| percentiles(rs.iter().filter_map(|r| r.first_chunk).collect());
        let gaps = |rs: &[StreamResult]| {
            percentiles(rs.iter().flat_map(|r| r.gaps.iter().copied()).collect())
        };
        let (d50, d99) = ttfc(&direct);
        let (r50, r99) = ttfc(&relay);
        let (gd50, gd99) = gaps(&direct);
        let (gr50, gr99) = gaps(&relay);
        println!(
            "{:>6} {:>6} {:>5} {:>8} | {:>8.2}/{:<8.2} {:>8.2}/{:<8.2} {:>7.2}/{:<7.2} | {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} | {:>6} Ki {:>8.1} {:>7.2} {:>9.3} {:>6.3}",
            level,
            ok,
            level - ok,
            mismatch,
            ms(d50), ms(d99), ms(r50), ms(r99), ms(r50) - ms(d50), ms(r99) - ms(d99),
            ms(gd50), ms(gd99), ms(gr50), ms(gr99),
            peak,
            peak.saturating_sub(baseline_rss) as f64 / level as f64,
            cpu,
            cpu / level as f64 * 1000.0,
            cpu / wall,
        );
    }
    println!("times in ms; gap = time between consecutive chunks (the fake paces them); cores = server CPU seconds / wall seconds");
    big_prompts_beside_streams(&http).await;
    ledger_on_and_off(&http).await;
    ssr_latency(&http).await;
    if all_matched {
        ExitCode::SUCCESS
    } else {
        fail("some streams' text did not match byte for byte")
    }
}

#[derive(Clone, Copy)]
enum Target {
    Direct,
    Relay,
    /// The relay of the server whose ledger is off.
    RelayNoLedger,
}

async fn run_level(
    http: &reqwest::Client,
    level: usize,
    delay: u64,
    ramp: Duration,
    target: Target,
) -> Vec<StreamResult> {
    let tag = match target {
        Target::Direct => "direct",
        Target::Relay => "relay",
        Target::RelayNoLedger => "relay-no-ledger",
    };
    let tasks: Vec<_> = (0..level)
        .map(|i| {
            let http = http.clone();
            let prompt = format!(
                "[[fake:openai chunks={CHUNKS} delay={delay}]] {tag} level {level} stream {i}"
            );
            tokio::spawn(async move {
                tokio::time::sleep(ramp * i as u32).await;
                let run = one_stream(&http, &prompt, target);
                tokio::time::timeout(Duration::from_secs(90), run)
                    .await
                    .unwrap_or_default()
            })
        })
        .collect();
    let mut results = Vec::with_capacity(level);
    for task in tasks {
        results.push(task.await.unwrap_or_default());
    }
    results
}

async fn one_stream(http: &reqwest::Client, prompt: &str, target: Target) -> StreamResult {
    let messages = serde_json::json!([{"role": "user", "content": prompt}]);
    let request = match target {
        Target::Direct => http.post(format!("http://{FAKE_ADDR}/v1/chat/completions")).json(&serde_json::json!({
            "model": "fake-model", "messages": messages, "stream": true, "stream_options": {"include_usage": true}
        })),
        Target::Relay | Target::RelayNoLedger => {
            let addr = if matches!(target, Target::Relay) { SERVER_ADDR } else { NO_LEDGER_ADDR };
            http.post(format!("http://{addr}/api/chat/stream")).json(&serde_json::json!({"messages": messages}))
        }
    };
    let started = Instant::now();
    let Ok(response) = request.send().await else {
        return StreamResult::default();
    };
    if !response.status().is_success() {
        return StreamResult::default();
    }
    let mut body = response.bytes_stream();
    let mut parser = Parser::new();
    let mut result = StreamResult::default();
    let mut text = String::new();
    let mut last_chunk: Option<Instant> = None;
    let mut finished = false;
    while let Some(Ok(bytes)) = body.next().await {
        for event in parser.feed(&bytes) {
            let (content, end) = match target {
                Target::Direct => match parse_data(&event.data) {
                    Ok(events) => {
                        let done = events.contains(&UpstreamEvent::Done);
                        let content: String = events
                            .into_iter()
                            .filter_map(|e| {
                                if let UpstreamEvent::Content(c) = e {
                                    Some(c)
                                } else {
                                    None
                                }
                            })
                            .collect();
                        (content, done)
                    }
                    Err(_) => (String::new(), false),
                },
                Target::Relay | Target::RelayNoLedger => {
                    match serde_json::from_str::<Frame>(&event.data) {
                        Ok(Frame::Chunk { content, .. }) => (content, false),
                        Ok(Frame::Done { .. }) => (String::new(), true),
                        Ok(Frame::Error { .. }) => return StreamResult::default(),
                        _ => (String::new(), false),
                    }
                }
            };
            if !content.is_empty() {
                let now = Instant::now();
                match last_chunk {
                    None => result.first_chunk = Some(now - started),
                    Some(previous) => result.gaps.push(now - previous),
                }
                last_chunk = Some(now);
                text.push_str(&content);
            }
            finished |= end;
        }
    }
    result.ok = finished;
    result.text_matches = text == expected_text();
    result
}

/// Chunk gaps of 100 open streams, alone and while ten 1 MiB prompts arrive (five
/// rounds): counting a large prompt's tokens must not stall the async workers.
async fn big_prompts_beside_streams(http: &reqwest::Client) {
    const STREAMS: usize = 100;
    let (delay, ramp) = (50, Duration::from_micros(500));
    let alone = run_level(http, STREAMS, delay, ramp, Target::Relay).await;
    let prompts = tokio::spawn(send_big_prompts(http.clone()));
    let beside = run_level(http, STREAMS, delay, ramp, Target::Relay).await;
    let counted = prompts.await.unwrap_or_default();
    let gaps =
        |rs: &[StreamResult]| percentiles(rs.iter().flat_map(|r| r.gaps.iter().copied()).collect());
    let (a50, a99) = gaps(&alone);
    let (b50, b99) = gaps(&beside);
    let ok = |rs: &[StreamResult]| rs.iter().filter(|r| r.ok && r.text_matches).count();
    println!(
        "big prompts: {STREAMS} streams, gap p50/p99 alone {:.2}/{:.2} ms, beside {counted} 1 MiB prompts {:.2}/{:.2} ms (added {:+.2}/{:+.2} ms); byte-exact {}/{} and {}/{}",
        ms(a50), ms(a99), ms(b50), ms(b99), ms(b50) - ms(a50), ms(b99) - ms(a99),
        ok(&alone), STREAMS, ok(&beside), STREAMS,
    );
}

/// First-token latency of 100 streams with the ledger (budget reservation, settle and a
/// batched row per chat) and without it, alternating twice, in one run.
async fn ledger_on_and_off(http: &reqwest::Client) {
    if !wait_ready(http, &format!("http://{NO_LEDGER_ADDR}/")).await {
        println!("ledger on/off: the second server did not come up");
        return;
    }
    const STREAMS: usize = 100;
    let (delay, ramp) = pacing(STREAMS);
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..2 {
        on.extend(run_level(http, STREAMS, delay, ramp, Target::Relay).await);
        off.extend(run_level(http, STREAMS, delay, ramp, Target::RelayNoLedger).await);
    }
    let ttfc = |rs: &[StreamResult]| percentiles(rs.iter().filter_map(|r| r.first_chunk).collect());
    let ok = |rs: &[StreamResult]| rs.iter().filter(|r| r.ok && r.text_matches).count();
    let ((on50, on99), (off50, off99)) = (ttfc(&on), ttfc(&off));
    println!(
        "ledger: {STREAMS} streams x2, ttfc p50/p99 with ledger {:.2}/{:.2} ms, without {:.2}/{:.2} ms (ratio p50 {:.3}); byte-exact {}/{} and {}/{}",
        ms(on50), ms(on99), ms(off50), ms(off99), ms(on50) / ms(off50).max(0.001),
        ok(&on), on.len(), ok(&off), off.len(),
    );
}

/// Five rounds of ten concurrent ~1 MiB prompts; returns how many were answered (the
/// server counts each one's tokens, then refuses it for the model's context window).
async fn send_big_prompts(http: reqwest::Client) -> usize {
    let clause = "第一条 甲方应当按照本合同约定的时间和方式支付价款。";
    let content = clause.repeat(1_000_000 / clause.len());
    let body = serde_json::json!({"messages": [{"role": "user", "content": content}]}).to_string();
    let mut answered = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let round = (0..10).map(|_| {
            http.post(format!("http://{SERVER_ADDR}/api/chat/stream"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
        });
        for response in futures::future::join_all(round).await {
            answered += usize::from(response.is_ok_and(|r| r.status().is_client_error()));
        }
    }
    answered
}

/// The server-rendered home page under 100 concurrent clients, 20 requests each.
async fn ssr_latency(http: &reqwest::Client) {
    const WORKERS: usize = 100;
    const EACH: usize = 20;
    let url = format!("http://{SERVER_ADDR}/");
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    let started = Instant::now();
                    let ok = match http.get(&url).send().await {
                        Ok(response) => {
                            response.status().is_success() && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        times.push(started.elapsed());
                    }
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap_or_default());
    }
    let count = times.len();
    let (p50, p99) = percentiles(times);
    println!(
        "SSR home page, {WORKERS} concurrent clients: {count}/{} ok, p50 {:.2} ms, p99 {:.2} ms",
        WORKERS * EACH,
        ms(p50),
        ms(p99)
    );
}

fn percentiles(mut values: Vec<Duration>) -> (Duration, Duration) {
    if values.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    values.sort();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn sample_rss(pid: u32, peak: Arc<AtomicU64>) {
    loop {
        if let Some(rss) = rss_kib(pid) {
            peak.fetch_max(rss, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resident memory of a process, from /proc (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process, from /proc (Linux; 100 ticks per second).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn wait_ready(http: &reqwest::Client, url: &str) -> bool {
    for _ in 0..300 {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn spawn(program: &str, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Child> {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("loadtest: {message}");
    ExitCode::FAILURE
}
