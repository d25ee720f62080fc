//! Load benchmark of the relay: starts the fake upstream and the real server as child
//! processes on loopback, opens C concurrent streams through the server and C directly
//! against the fake, and prints what the relay adds. Every loop is bounded in count and
//! time; nothing leaves 127.0.0.1. Run with `scripts/bench.sh` (release build, fd limit).
//!
//! `loadtest [LEVEL,LEVEL,…]` — default levels 1,100,1000,10000.
//!
//! `loadtest --scale [LEVEL,…]` — durable streams and scale-out (see [`scale`]): the
//! relay with its frame log in memory and in Redis, resume latency, and three instances
//! behind nginx against one. `scripts/bench.sh` starts Redis and nginx for it.
//!
//! `loadtest --peers [LEVEL,…]` — this relay beside LiteLLM's proxy on the same fake
//! upstream (see [`peers`]). `scripts/bench.sh` installs and starts LiteLLM for it.

use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use streamai::llm::wire::{parse_data, UpstreamEvent};
use streamai::protocol::Frame;
use streamai::sse::Parser;

#[path = "loadtest/peers.rs"]
mod peers;

const SERVER_ADDR: &str = "127.0.0.1:3298";
/// A second server, the same but with `STREAMAI_LEDGER=off`, for the ledger's cost.
const NO_LEDGER_ADDR: &str = "127.0.0.1:3297";
const FAKE_ADDR: &str = "127.0.0.1:3299";
/// Chunks per answer: 20, or `LOADTEST_CHUNKS` (2 shows the per-answer cost, 200 the
/// per-chunk one).
fn chunks() -> u64 {
    static CHUNKS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::env::var("LOADTEST_CHUNKS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(20)
    });
    *CHUNKS
}

/// What one stream saw.
#[derive(Default)]
struct StreamResult {
    ok: bool,
    text_matches: bool,
    arrivals: Arrivals,
}

/// The text the fake sends for an answer of `chunks` chunks.
fn expected_text(chunks: u64) -> String {
    (0..chunks).map(|i| format!("第{i}段。")).collect()
}

/// When one stream's text arrived: its first chunk (from sending the request) and the
/// gaps between chunks.
#[derive(Default)]
struct Arrivals {
    first_chunk: Option<Duration>,
    gaps: Vec<Duration>,
    last: Option<Instant>,
}

impl Arrivals {
    /// Text arrived now, for a request sent at `started`.
    fn text(&mut self, started: Instant) {
        let now = Instant::now();
        match self.last {
            None => self.first_chunk = Some(now - started),
            Some(previous) => self.gaps.push(now - previous),
        }
        self.last = Some(now);
    }

    fn chunks(&self) -> usize {
        self.gaps.len() + usize::from(self.first_chunk.is_some())
    }
}

/// p50 and p99 of the first chunks of `streams`.
fn ttfc_of<'a>(streams: impl IntoIterator<Item = &'a Arrivals>) -> (Duration, Duration) {
    percentiles(streams.into_iter().filter_map(|a| a.first_chunk).collect())
}

/// p50 and p99 of every gap between chunks of `streams`.
fn gaps_of<'a>(streams: impl IntoIterator<Item = &'a Arrivals>) -> (Duration, Duration) {
    percentiles(
        streams
            .into_iter()
            .flat_map(|a| a.gaps.iter().copied())
            .collect(),
    )
}

/// One SSE event of a stream: its text, and whether it ends the stream or is an error.
#[derive(Default)]
struct Decoded {
    text: String,
    done: bool,
    error: bool,
}

/// Reads an event of the provider's stream (`openai`: OpenAI chunks) or of ours (frames).
fn decode(data: &str, openai: bool) -> Decoded {
    let mut decoded = Decoded::default();
    if openai {
        for event in parse_data(data).unwrap_or_default() {
            match event {
                UpstreamEvent::Content(c) => decoded.text.push_str(&c),
                UpstreamEvent::Done => decoded.done = true,
                UpstreamEvent::Error(_) => decoded.error = true,
                _ => {}
            }
        }
        return decoded;
    }
    match serde_json::from_str::<Frame>(data) {
        Ok(Frame::Chunk { content, .. }) => decoded.text = content,
        Ok(Frame::Done { .. }) => decoded.done = true,
        Ok(Frame::Error { .. }) => decoded.error = true,
        _ => {}
    }
    decoded
}

/// The environment of a `streamai` under test on `addr`: the fake upstream at `fake_url`
/// as its one (free) model, over HTTP/2 as providers are spoken to over TLS (h2c here;
/// `LOADTEST_UPSTREAM_HTTP2=0`: HTTP/1.1), warnings only, and `extra` (a database, the
/// ledger, Redis).
fn server_env(addr: &str, fake_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let http2 = std::env::var("LOADTEST_UPSTREAM_HTTP2").unwrap_or_else(|_| "1".into());
    [
        ("CUSTOM_HTTP2", http2.as_str()),
        ("LEPTOS_OUTPUT_NAME", "streamai"),
        ("LEPTOS_SITE_ROOT", "target/site"),
        ("LEPTOS_SITE_PKG_DIR", "pkg"),
        ("LEPTOS_SITE_ADDR", addr),
        ("LEPTOS_ENV", "PROD"),
        ("LLM_PROVIDER", "custom"),
        ("LLM_MODEL", "fake-model"),
        ("CUSTOM_FREE_MODELS", "fake-model"),
        ("CUSTOM_BASE_URL", fake_url),
        ("CUSTOM_API_KEY", "sk-loadtest-key"),
        ("RUST_LOG", "warn"),
        // The benchmark measures the relay, not the caps a deployer sets (1,024 shipped).
        ("STREAMAI_MAX_STREAMS", "20000"),
        ("STREAMAI_MAX_CONNECTIONS", "20000"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
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

/// Levels from a comma-separated argument.
fn parse_levels(arg: Option<String>, default: &str) -> Vec<usize> {
    arg.unwrap_or_else(|| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--scale") {
        args.next();
        return scale::main(&parse_levels(args.next(), "1,100,1000")).await;
    }
    if args.peek().is_some_and(|a| a == "--peers") {
        args.next();
        return peers::main(&parse_levels(args.next(), "100,1000")).await;
    }
    let levels = parse_levels(args.next(), "1,100,1000,10000");
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
    let db = |name: &str| {
        format!(
            "sqlite://{}/streamai-loadtest-{}-{name}.db",
            std::env::temp_dir().display(),
            std::process::id()
        )
    };
    let (db_on, db_off) = (db("ledger"), db("no-ledger"));
    let with = |db: &str, ledger: &str, addr: &str| {
        server_env(
            addr,
            &fake_url,
            &[("DATABASE_URL", db), ("STREAMAI_LEDGER", ledger)],
        )
    };
    let servers = [
        with(&db_on, "on", SERVER_ADDR),
        with(&db_off, "off", NO_LEDGER_ADDR),
    ];
    let mut children = Vec::new();
    for env in &servers {
        // LOADTEST_SERVER_BIN: another build of the server (e.g. before a change), run
        // against the same fake and client for an A/B in one run.
        let server_bin =
            std::env::var("LOADTEST_SERVER_BIN").unwrap_or_else(|_| format!("{bin_dir}/streamai"));
        match spawn(&server_bin, &[], env) {
            Ok(child) => children.push(child),
            Err(err) => {
                let _ = fake.kill();
                children.iter_mut().for_each(|c| drop(c.kill()));
                return fail(&format!("cannot start the server: {err}"));
            }
        }
    }
    let code = run(&levels, children[0].id(), fake.id()).await;
    children.iter_mut().for_each(|c| drop(c.kill()));
    let _ = fake.kill();
    code
}

async fn run(levels: &[usize], server_pid: u32, fake_pid: u32) -> ExitCode {
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
    // One answer each way first, unmeasured: a server in use has its connection to the
    // provider open (for 90 s after an answer), and the first answer of a process would
    // otherwise charge its handshake to the one-stream level.
    for target in [Target::Direct, Target::Relay] {
        run_level(&http, 1, 1, Duration::ZERO, target).await;
    }
    println!(
        "relay load benchmark — {} chunks per answer, fake upstream and server on loopback, \
         after one unmeasured answer each way",
        chunks()
    );
    println!(
        "{:>6} {:>6} {:>5} {:>8} | {:>17} {:>17} {:>15} | {:>15} {:>15} | {:>9} {:>8} {:>7} {:>9} {:>6} {:>9} {:>6} {:>11} {:>8}",
        "C", "ok", "fail", "mismatch", "ttfc direct p50/99", "ttfc relay p50/99", "added p50/99", "gap direct", "gap relay",
        "rss peak", "KiB/strm", "cpu s", "cpu s/1k", "cores", "fake s/1k", "×fake", "direct s/1k", "×direct"
    );
    let mut all_matched = true;
    for &level in levels {
        let (delay, ramp) = pacing(level);
        let fake_direct_before = cpu_seconds(fake_pid).unwrap_or(0.0);
        let direct = run_level(&http, level, delay, ramp, Target::Direct).await;
        // The fake serving the same streams straight to the same clients (HTTP/1.1, as the
        // relay serves them): the cost of a server that only streams.
        let fake_direct = cpu_seconds(fake_pid).unwrap_or(0.0) - fake_direct_before;
        let baseline_rss = rss_kib(server_pid).unwrap_or(0);
        let cpu_before = cpu_seconds(server_pid).unwrap_or(0.0);
        let fake_before = cpu_seconds(fake_pid).unwrap_or(0.0);
        let peak = Arc::new(AtomicU64::new(baseline_rss));
        let sampler = tokio::spawn(sample_rss(server_pid, peak.clone()));
        let started = Instant::now();
        let relay = run_level(&http, level, delay, ramp, Target::Relay).await;
        let wall = started.elapsed().as_secs_f64();
        sampler.abort();
        let cpu = cpu_seconds(server_pid).unwrap_or(0.0) - cpu_before;
        // The fake served the same streams in the same interval: its own cost per stream
        // is the reference the relay's is measured against.
        let fake_cpu = cpu_seconds(fake_pid).unwrap_or(0.0) - fake_before;
        let peak = peak.load(Ordering::Relaxed);

        let ok = relay.iter().filter(|r| r.ok).count();
        let mismatch = relay.iter().filter(|r| r.ok && !r.text_matches).count()
            + direct.iter().filter(|r| r.ok && !r.text_matches).count();
        all_matched &= mismatch == 0;
        let ttfc = |rs: &[StreamResult]| ttfc_of(rs.iter().map(|r| &r.arrivals));
        let gaps = |rs: &[StreamResult]| gaps_of(rs.iter().map(|r| &r.arrivals));
        let (d50, d99) = ttfc(&direct);
        let (r50, r99) = ttfc(&relay);
        let (gd50, gd99) = gaps(&direct);
        let (gr50, gr99) = gaps(&relay);
        println!(
            "{:>6} {:>6} {:>5} {:>8} | {:>8.2}/{:<8.2} {:>8.2}/{:<8.2} {:>7.2}/{:<7.2} | {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} | {:>6} Ki {:>8.1} {:>7.2} {:>9.3} {:>6.3} {:>9.3} {:>6} {:>11.3} {:>8}",
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
            fake_cpu / level as f64 * 1000.0,
            ratio(cpu, fake_cpu),
            fake_direct / level as f64 * 1000.0,
            ratio(cpu, fake_direct),
        );
    }
    println!("times in ms; gap = time between consecutive chunks (the fake paces them); cores = server CPU seconds / wall seconds; ×fake = server CPU / the fake upstream's CPU for the same streams (serving the relay); ×direct = server CPU / the fake's CPU serving the same streams to the clients directly");
    // LOADTEST_RELAY_ONLY=1: only the table above (for profiling the relay).
    if std::env::var_os("LOADTEST_RELAY_ONLY").is_none() {
        big_prompts_beside_streams(&http).await;
        ledger_on_and_off(&http).await;
        ssr_latency(&http).await;
    }
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
    /// The fake upstream on this loopback port (the scale phase starts its own).
    FakeAt(u16),
    /// A server on this loopback port: one instance, or nginx in front of some.
    ServerAt(u16),
}

impl Target {
    /// Whether the stream is the provider's own (OpenAI chunks), not our frames.
    fn is_direct(self) -> bool {
        matches!(self, Target::Direct | Target::FakeAt(_))
    }

    /// The URL a chat is posted to.
    fn url(self) -> String {
        match self {
            Target::Direct => format!("http://{FAKE_ADDR}/v1/chat/completions"),
            Target::FakeAt(port) => format!("http://127.0.0.1:{port}/v1/chat/completions"),
            Target::Relay => format!("http://{SERVER_ADDR}/api/chat/stream"),
            Target::RelayNoLedger => format!("http://{NO_LEDGER_ADDR}/api/chat/stream"),
            Target::ServerAt(port) => format!("http://127.0.0.1:{port}/api/chat/stream"),
        }
    }
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
        Target::FakeAt(_) => "fake",
        Target::ServerAt(_) => "server",
    };
    let tasks: Vec<_> = (0..level)
        .map(|i| {
            let http = http.clone();
            let prompt = format!(
                "[[fake:openai chunks={} delay={delay}]] {tag} level {level} stream {i}",
                chunks()
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
    let body = if target.is_direct() {
        serde_json::json!({
            "model": "fake-model", "messages": messages, "stream": true, "stream_options": {"include_usage": true}
        })
    } else {
        serde_json::json!({"messages": messages})
    };
    let request = http.post(target.url()).json(&body);
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
    let mut finished = false;
    while let Some(Ok(bytes)) = body.next().await {
        for event in parser.feed(&bytes) {
            let decoded = decode(&event.data, target.is_direct());
            // An error frame of ours fails the stream; the fake's own errors are skipped.
            if decoded.error && !target.is_direct() {
                return StreamResult::default();
            }
            if !decoded.text.is_empty() {
                result.arrivals.text(started);
                text.push_str(&decoded.text);
            }
            finished |= decoded.done;
        }
    }
    result.ok = finished;
    result.text_matches = text == expected_text(chunks());
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
    let gaps = |rs: &[StreamResult]| gaps_of(rs.iter().map(|r| &r.arrivals));
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
    let ttfc = |rs: &[StreamResult]| ttfc_of(rs.iter().map(|r| &r.arrivals));
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

/// `cpu / reference` to two places, or `-` when the reference is under 0.05 CPU seconds
/// (five clock ticks: too few to divide by).
fn ratio(cpu: f64, reference: f64) -> String {
    if reference < 0.05 {
        "-".into()
    } else {
        format!("{:.2}", cpu / reference)
    }
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

fn spawn(program: &str, args: &[&str], env: &[(String, String)]) -> std::io::Result<Child> {
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// The processes a phase starts, their pids recorded in `dir/pids` (for the script's
/// trap): killed and reaped when dropped, with `dir` if it was made here.
struct Processes {
    children: Vec<Child>,
    dir: std::path::PathBuf,
    own_dir: bool,
}

impl Processes {
    /// In `dir`, or in a fresh temporary one named after `phase`.
    fn new(dir: Option<std::path::PathBuf>, phase: &str) -> Result<Processes, String> {
        let own_dir = dir.is_none();
        let dir = dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("streamai-loadtest-{phase}-{}", std::process::id()))
        });
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Processes {
            children: Vec::new(),
            dir,
            own_dir,
        })
    }

    fn spawn(
        &mut self,
        program: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<u32, String> {
        let child =
            spawn(program, args, env).map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id();
        self.children.push(child);
        let record = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pids"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{pid}\n").as_bytes()));
        record.map_err(|e| format!("{}: {e}", self.dir.display()))?;
        Ok(pid)
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Environment variable `name`, which the script sets.
fn env_var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// `text`, a number from environment variable `name`.
fn env_num(name: &str, text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{name}: not a number: {text:?}"))
}

/// Environment variable `name`: ports separated by commas.
fn env_ports(name: &str) -> Result<Vec<u16>, String> {
    env_var(name)?
        .split(',')
        .map(|p| env_num(name, p).map(|p| p as u16))
        .collect()
}

fn fail(message: &str) -> ExitCode {
    eprintln!("loadtest: {message}");
    ExitCode::FAILURE
}

/// `loadtest --scale`: durable streams and scale-out, on the services `scripts/bench.sh`
/// starts (Redis, and three nginx round-robin balancers), with the fake upstream and five
/// `streamai` instances that this phase starts itself (all `STREAMAI_LEDGER=off`):
/// `memory` (frame log in memory) and `a`, `b`, `c` (`REDIS_URL`, one SQLite file).
///
/// 1. **Redis cost per chunk** — at each level, C streams straight to the fake, to
///    `memory` and to `a`, alternating, each round in that order.
/// 2. **Resume latency** — answers running on one instance, resumed mid-answer with
///    `GET …?after=N` (N one frame behind the last one read) on the same or another one.
/// 3. **One instance or three behind nginx** — the same streams through nginx in front
///    of `memory`, of `a`, and of `a`, `b`, `c`.
///
/// The environment says where the services are:
/// - `LOADTEST_REDIS_URL`, `LOADTEST_REDIS_PID`: the Redis, and its pid (for its CPU);
/// - `LOADTEST_PORTS=FAKE,MEMORY,A,B,C`: the loopback ports of the processes started here;
/// - `LOADTEST_NGINX=PORT:PID,PORT:PID,PORT:PID`: nginx (master pid) in front of
///   `memory`, of `a`, and of `a,b,c`;
/// - `LOADTEST_DIR` (optional): a directory for the instances' SQLite files and `pids`,
///   where each started process's pid is appended, so that a trap can stop them if this
///   process is killed (default: a new directory in the temp dir, deleted at the end);
/// - `LOADTEST_ROUNDS` (default 2), `LOADTEST_SCALE_STREAMS` (default 1000).
mod scale {
    use super::*;

    /// Answers resumed in the resume phase, at once (ramped), and resumes of each.
    const RESUME_ANSWERS: usize = 50;
    const RESUMES_EACH: usize = 20;
    /// The resumed answers' length: long enough to outlast their resumes.
    const RESUME_CHUNKS: u64 = 150;
    const RESUME_DELAY_MS: u64 = 25;

    /// nginx on a port, and its master's pid (its workers are the master's children).
    struct Nginx {
        port: u16,
        pid: u32,
    }

    /// Where the services are, from the environment.
    struct Setup {
        redis_url: String,
        redis_pid: u32,
        fake: u16,
        memory: u16,
        instances: [u16; 3],
        /// In front of `memory`, of `a`, and of `a`, `b`, `c`.
        nginx: [Nginx; 3],
        dir: Option<std::path::PathBuf>,
        rounds: usize,
        streams: usize,
    }

    impl Setup {
        fn from_env() -> Result<Setup, String> {
            let ports = env_ports("LOADTEST_PORTS")?;
            let [fake, memory, a, b, c] = ports[..] else {
                return Err("LOADTEST_PORTS must be FAKE,MEMORY,A,B,C".into());
            };
            let nginx: Vec<Nginx> = env_var("LOADTEST_NGINX")?
                .split(',')
                .map(|entry| {
                    let (port, pid) = entry.split_once(':').ok_or("LOADTEST_NGINX: PORT:PID")?;
                    Ok(Nginx {
                        port: env_num("LOADTEST_NGINX", port)? as u16,
                        pid: env_num("LOADTEST_NGINX", pid)?,
                    })
                })
                .collect::<Result<_, String>>()?;
            let nginx: [Nginx; 3] = nginx
                .try_into()
                .map_err(|_| "LOADTEST_NGINX must name three nginx: memory, a, a+b+c")?;
            let optional = |name: &str, default: usize| {
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            Ok(Setup {
                redis_url: env_var("LOADTEST_REDIS_URL")?,
                redis_pid: env_num("LOADTEST_REDIS_PID", &env_var("LOADTEST_REDIS_PID")?)?,
                fake,
                memory,
                instances: [a, b, c],
                nginx,
                dir: std::env::var_os("LOADTEST_DIR").map(Into::into),
                rounds: optional("LOADTEST_ROUNDS", 2).max(1),
                streams: optional("LOADTEST_SCALE_STREAMS", 1000),
            })
        }
    }

    /// The pids of what was started, for CPU and memory.
    struct Pids {
        memory: u32,
        instances: [u32; 3],
    }

    /// One `streamai` instance's environment.
    fn instance_env(
        port: u16,
        fake: u16,
        redis: Option<&str>,
        database: &str,
    ) -> Vec<(String, String)> {
        let fake_url = format!("http://127.0.0.1:{fake}/v1");
        let addr = format!("127.0.0.1:{port}");
        let mut extra = vec![("DATABASE_URL", database), ("STREAMAI_LEDGER", "off")];
        if let Some(url) = redis {
            extra.push(("REDIS_URL", url));
        }
        server_env(&addr, &fake_url, &extra)
    }

    /// Starts the fake and the instances, one at a time (the three share one SQLite
    /// file: its schema is made once), each answering before the next starts.
    async fn start(setup: &Setup, http: &reqwest::Client) -> Result<(Processes, Pids), String> {
        let bin_dir = std::env::var("LOADTEST_BIN_DIR").unwrap_or_else(|_| "target/release".into());
        let mut processes = Processes::new(setup.dir.clone(), "scale")?;
        let dir = processes.dir.clone();
        let fake_addr = format!("127.0.0.1:{}", setup.fake);
        processes.spawn(
            &format!("{bin_dir}/fake-upstream"),
            &[&fake_addr, "openai"],
            &[],
        )?;
        if !wait_ready(http, &format!("http://{fake_addr}/__fake/requests")).await {
            return Err("the fake upstream did not come up within 30 s".into());
        }
        let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", dir.join(name).display());
        let mut instance = |port: u16, redis: Option<&str>, db: &str| {
            let env = instance_env(port, setup.fake, redis, db);
            processes.spawn(&format!("{bin_dir}/streamai"), &[], &env)
        };
        let mut pids = Vec::new();
        let plan = [
            (setup.memory, None, sqlite("memory.db")),
            (
                setup.instances[0],
                Some(setup.redis_url.as_str()),
                sqlite("shared.db"),
            ),
            (
                setup.instances[1],
                Some(setup.redis_url.as_str()),
                sqlite("shared.db"),
            ),
            (
                setup.instances[2],
                Some(setup.redis_url.as_str()),
                sqlite("shared.db"),
            ),
        ];
        for (port, redis, db) in &plan {
            pids.push(instance(*port, *redis, db)?);
            if !wait_ready(http, &format!("http://127.0.0.1:{port}/")).await {
                return Err(format!(
                    "the instance on port {port} did not come up within 30 s"
                ));
            }
        }
        let pids = Pids {
            memory: pids[0],
            instances: [pids[1], pids[2], pids[3]],
        };
        Ok((processes, pids))
    }

    pub(super) async fn main(levels: &[usize]) -> ExitCode {
        let setup = match Setup::from_env() {
            Ok(setup) => setup,
            Err(err) => {
                return fail(&format!(
                    "--scale: {err} (scripts/bench.sh --scale-only sets it)"
                ))
            }
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client builds");
        let (processes, pids) = match start(&setup, &http).await {
            Ok(started) => started,
            Err(err) => return fail(&err),
        };
        warm_up(&http, &setup).await;
        let ok = redis_cost(&http, &setup, &pids, levels).await
            & resume_latency(&http, &setup).await
            & scale_out(&http, &setup, &pids).await;
        drop(processes);
        if ok {
            ExitCode::SUCCESS
        } else {
            fail("some streams failed, did not match byte for byte, or resumed at the wrong frame")
        }
    }

    /// A few streams through every path first: connections, caches and lazy set-up are
    /// not what is measured.
    async fn warm_up(http: &reqwest::Client, setup: &Setup) {
        let mut targets = vec![Target::FakeAt(setup.fake), Target::ServerAt(setup.memory)];
        targets.extend(setup.instances.iter().map(|&p| Target::ServerAt(p)));
        targets.extend(setup.nginx.iter().map(|n| Target::ServerAt(n.port)));
        for target in targets {
            run_level(http, 20, 10, Duration::from_micros(500), target).await;
        }
    }

    /// Processes whose CPU time and resident memory are added up.
    struct Watched {
        pids: Vec<u32>,
    }

    impl Watched {
        fn of(pids: impl IntoIterator<Item = u32>) -> Watched {
            Watched {
                pids: pids.into_iter().collect(),
            }
        }

        /// nginx's master and its workers.
        fn nginx(nginx: &Nginx) -> Watched {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nginx.pid))
                    .unwrap_or_default();
            let workers = children.split_whitespace().filter_map(|p| p.parse().ok());
            Watched::of(std::iter::once(nginx.pid).chain(workers))
        }

        fn cpu(&self) -> f64 {
            self.pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
        }

        fn rss_kib(&self) -> u64 {
            self.pids.iter().filter_map(|&p| rss_kib(p)).sum()
        }
    }

    /// One level's streams at one target, with what the watched processes spent.
    struct Measured {
        results: Vec<StreamResult>,
        wall: f64,
        /// CPU seconds per watched group, in the order given.
        cpu: Vec<f64>,
        /// Peak RSS (KiB) per watched group, sampled every 50 ms.
        rss_peak: Vec<u64>,
    }

    impl Measured {
        fn completed(&self) -> usize {
            self.results
                .iter()
                .filter(|r| r.ok && r.text_matches)
                .count()
        }

        fn ttfc(&self) -> (Duration, Duration) {
            ttfc_of(self.results.iter().map(|r| &r.arrivals))
        }

        fn gaps(&self) -> (Duration, Duration) {
            gaps_of(self.results.iter().map(|r| &r.arrivals))
        }

        fn chunks(&self) -> usize {
            self.results.iter().map(|r| r.arrivals.chunks()).sum()
        }
    }

    async fn measure(
        http: &reqwest::Client,
        level: usize,
        target: Target,
        watched: &[Watched],
    ) -> Measured {
        let (delay, ramp) = pacing(level);
        let cpu_before: Vec<f64> = watched.iter().map(Watched::cpu).collect();
        let peaks: Vec<Arc<AtomicU64>> = watched
            .iter()
            .map(|w| Arc::new(AtomicU64::new(w.rss_kib())))
            .collect();
        let samplers: Vec<_> = watched
            .iter()
            .zip(&peaks)
            .map(|(w, peak)| tokio::spawn(sample_group_rss(w.pids.clone(), peak.clone())))
            .collect();
        let started = Instant::now();
        let results = run_level(http, level, delay, ramp, target).await;
        let wall = started.elapsed().as_secs_f64();
        samplers.iter().for_each(|s| s.abort());
        Measured {
            results,
            wall,
            cpu: watched
                .iter()
                .zip(cpu_before)
                .map(|(w, before)| w.cpu() - before)
                .collect(),
            rss_peak: peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect(),
        }
    }

    async fn sample_group_rss(pids: Vec<u32>, peak: Arc<AtomicU64>) {
        loop {
            let rss = pids.iter().filter_map(|&p| rss_kib(p)).sum();
            peak.fetch_max(rss, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Part 1: the same streams with the frame log in memory and in Redis, against the
    /// fake straight, alternating in each round; then the ratios Redis / memory.
    async fn redis_cost(
        http: &reqwest::Client,
        setup: &Setup,
        pids: &Pids,
        levels: &[usize],
    ) -> bool {
        println!("\n== Redis cost per chunk: instance with the frame log in memory vs in Redis ({} chunks per answer, {} rounds)", chunks(), setup.rounds);
        println!(
            "{:>5} {:>5} {:>6} {:>5} {:>5} | {:>15} {:>15} {:>15} | {:>9} {:>8} {:>9} | {:>12} {:>9}",
            "C", "round", "log", "ok", "bad", "ttfc p50/99", "added p50/99", "gap p50/99",
            "cpu s/1k", "cores", "rss peak", "redis ms/1k", "redis rss"
        );
        let mut ok = true;
        for &level in levels {
            let mut sums = [[0.0f64; 5]; 2];
            for round in 1..=setup.rounds {
                let direct = measure(http, level, Target::FakeAt(setup.fake), &[]).await;
                let (d50, d99) = direct.ttfc();
                let modes = [
                    ("memory", setup.memory, pids.memory),
                    ("redis", setup.instances[0], pids.instances[0]),
                ];
                for (m, (name, port, pid)) in modes.into_iter().enumerate() {
                    let watched = [Watched::of([pid]), Watched::of([setup.redis_pid])];
                    let run = measure(http, level, Target::ServerAt(port), &watched).await;
                    ok &= run.completed() == level;
                    let (t50, t99) = run.ttfc();
                    let (g50, g99) = run.gaps();
                    let added = (ms(t50) - ms(d50), ms(t99) - ms(d99));
                    let cpu_per_1k = run.cpu[0] / level as f64 * 1000.0;
                    let redis_per_1k_chunks =
                        run.cpu[1] * 1000.0 / (run.chunks().max(1) as f64 / 1000.0);
                    for (sum, value) in sums[m].iter_mut().zip([
                        added.0,
                        added.1,
                        ms(g99),
                        cpu_per_1k,
                        run.rss_peak[0] as f64,
                    ]) {
                        *sum += value;
                    }
                    println!(
                        "{:>5} {:>5} {:>6} {:>5} {:>5} | {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} | {:>9.3} {:>8.3} {:>6} Mi | {:>12.1} {:>6} Mi",
                        level, round, name, run.completed(), level - run.completed(),
                        ms(t50), ms(t99), added.0, added.1, ms(g50), ms(g99),
                        cpu_per_1k, run.cpu[0] / run.wall, run.rss_peak[0] / 1024,
                        redis_per_1k_chunks, run.rss_peak[1] / 1024,
                    );
                }
            }
            let ratio = |i: usize| sums[1][i] / sums[0][i];
            println!(
                "{level:>5}  mean over rounds, redis / memory: added ttfc p50 {:.2}, p99 {:.2}; gap p99 {:.3}; cpu per 1k streams {:.2}; rss peak {:.2}",
                ratio(0), ratio(1), ratio(2), ratio(3), ratio(4)
            );
        }
        println!("added = ttfc minus the same round's direct ttfc; cpu s/1k = server CPU seconds per 1,000 streams; redis ms/1k = Redis CPU ms per 1,000 chunks relayed");
        ok
    }

    /// Part 2: answers running on one instance, resumed mid-answer on the same one
    /// (memory), and on the same or another one (Redis).
    async fn resume_latency(http: &reqwest::Client, setup: &Setup) -> bool {
        println!(
            "\n== Resume latency: {RESUME_ANSWERS} answers x {RESUMES_EACH} resumes, GET ?after=N with N one frame behind the last one read; time to the first whole frame"
        );
        let [a, b, _] = setup.instances;
        let cases = [
            ("memory, same instance", setup.memory, setup.memory),
            ("redis, same instance", a, a),
            ("redis, other instance", a, b),
        ];
        let mut ok = true;
        for (name, start, resume) in cases {
            let (mut times, wrong) = resumes(http, start, resume).await;
            times.sort();
            ok &= wrong == 0 && times.len() == RESUME_ANSWERS * RESUMES_EACH;
            println!(
                "{name:>22}: {} resumes, {wrong} failed or at the wrong frame; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                times.len(),
                ms(quantile(&times, 0.50)),
                ms(quantile(&times, 0.95)),
                ms(quantile(&times, 0.99)),
                ms(quantile(&times, 1.0)),
            );
        }
        ok
    }

    /// Every resume's time to its first frame, and how many failed or began elsewhere
    /// than the frame after N.
    async fn resumes(http: &reqwest::Client, start: u16, resume: u16) -> (Vec<Duration>, usize) {
        let tasks: Vec<_> = (0..RESUME_ANSWERS)
            .map(|i| {
                let http = http.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20) * i as u32).await;
                    resumed_answer(&http, start, resume, i).await
                })
            })
            .collect();
        let mut times = Vec::new();
        let mut wrong = 0;
        for task in tasks {
            for outcome in task.await.unwrap_or_default() {
                match outcome {
                    Some(time) => times.push(time),
                    None => wrong += 1,
                }
            }
        }
        (times, wrong)
    }

    /// One answer posted to `start` and read to its end there; meanwhile resumed
    /// `RESUMES_EACH` times at `resume`, each from one frame behind the last one read.
    /// `None` for a resume that failed or did not begin at the frame asked for.
    async fn resumed_answer(
        http: &reqwest::Client,
        start: u16,
        resume: u16,
        i: usize,
    ) -> Vec<Option<Duration>> {
        let prompt =
            format!("[[fake:openai chunks={RESUME_CHUNKS} delay={RESUME_DELAY_MS}]] resume {i}");
        let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
        let Ok(response) = http
            .post(Target::ServerAt(start).url())
            .json(&body)
            .send()
            .await
        else {
            return vec![None; RESUMES_EACH];
        };
        let last_read = Arc::new(AtomicU64::new(0));
        let (id_tx, id_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(read_answer(response, last_read.clone(), id_tx));
        let Ok(Ok(id)) = tokio::time::timeout(Duration::from_secs(30), id_rx).await else {
            reader.abort();
            return vec![None; RESUMES_EACH];
        };
        let mut outcomes = Vec::with_capacity(RESUMES_EACH);
        for k in 0..RESUMES_EACH {
            // 80–120 ms apart, varied so the answers' resumes do not line up.
            tokio::time::sleep(Duration::from_millis(80 + ((i * 31 + k * 17) % 41) as u64)).await;
            let last = last_read.load(Ordering::Relaxed).max(1);
            let url = format!(
                "http://127.0.0.1:{resume}/api/chat/stream/{id}?after={}",
                last - 1
            );
            outcomes.push(first_frame(http, &url, last).await);
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), reader).await;
        outcomes
    }

    /// Reads an answer to its end, keeping the index of the last frame read and sending
    /// the answer's id (from its start frame).
    async fn read_answer(
        response: reqwest::Response,
        last_read: Arc<AtomicU64>,
        id_tx: tokio::sync::oneshot::Sender<String>,
    ) {
        let mut id_tx = Some(id_tx);
        let mut body = response.bytes_stream();
        let mut parser = Parser::new();
        while let Some(Ok(bytes)) = body.next().await {
            for event in parser.feed(&bytes) {
                if let Some(index) = event.id.as_deref().and_then(|i| i.parse().ok()) {
                    last_read.store(index, Ordering::Relaxed);
                }
                if let Ok(Frame::Start { id, .. }) = serde_json::from_str(&event.data) {
                    if let Some(tx) = id_tx.take() {
                        let _ = tx.send(id);
                    }
                }
            }
        }
    }

    /// The time from sending the resume to its first whole frame, if that frame is
    /// `expected`; the connection is dropped after it.
    async fn first_frame(http: &reqwest::Client, url: &str, expected: u64) -> Option<Duration> {
        let sent = Instant::now();
        let response = http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mut body = response.bytes_stream();
        let mut parser = Parser::new();
        while let Some(Ok(bytes)) = body.next().await {
            if let Some(event) = parser.feed(&bytes).into_iter().next() {
                let took = sent.elapsed();
                return (event.id.as_deref() == Some(expected.to_string().as_str()))
                    .then_some(took);
            }
        }
        None
    }

    /// Part 3: the same streams through nginx in front of one instance (log in memory,
    /// log in Redis) and in front of three (Redis), against the fake straight.
    async fn scale_out(http: &reqwest::Client, setup: &Setup, pids: &Pids) -> bool {
        let level = setup.streams;
        println!("\n== One instance or three behind nginx (round robin): {level} streams, {} chunks per answer, {} rounds", chunks(), setup.rounds);
        println!(
            "{:>5} {:>22} {:>6} | {:>15} {:>15} | {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} | app s per instance",
            "round",
            "setup",
            "done",
            "added p50/99",
            "gap p50/99",
            "app s",
            "nginx s",
            "redis s",
            "total s",
            "total/1k",
            "cores",
        );
        let [a, b, c] = pids.instances;
        let cases = [
            ("1 instance, memory log", &setup.nginx[0], vec![pids.memory]),
            ("1 instance, Redis", &setup.nginx[1], vec![a]),
            ("3 instances, Redis", &setup.nginx[2], vec![a, b, c]),
        ];
        let mut ok = true;
        for round in 1..=setup.rounds {
            let direct = measure(http, level, Target::FakeAt(setup.fake), &[]).await;
            let (d50, d99) = direct.ttfc();
            for (name, nginx, app) in &cases {
                let mut watched: Vec<Watched> = app.iter().map(|&p| Watched::of([p])).collect();
                watched.push(Watched::nginx(nginx));
                watched.push(Watched::of([setup.redis_pid]));
                let run = measure(http, level, Target::ServerAt(nginx.port), &watched).await;
                ok &= run.completed() == level;
                let (t50, t99) = run.ttfc();
                let (g50, g99) = run.gaps();
                let apps = &run.cpu[..app.len()];
                let app_cpu: f64 = apps.iter().sum();
                let (nginx_cpu, redis_cpu) = (run.cpu[app.len()], run.cpu[app.len() + 1]);
                let total = app_cpu + nginx_cpu + redis_cpu;
                let split: Vec<String> = apps.iter().map(|c| format!("{c:.2}")).collect();
                println!(
                    "{:>5} {:>22} {:>6} | {:>7.2}/{:<7.2} {:>7.2}/{:<7.2} | {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>6.2} | {}",
                    round, name, run.completed(),
                    ms(t50) - ms(d50), ms(t99) - ms(d99), ms(g50), ms(g99),
                    app_cpu, nginx_cpu, redis_cpu, total, total / level as f64 * 1000.0, total / run.wall,
                    split.join(" / "),
                );
            }
        }
        println!("added = ttfc through nginx minus the same round's direct ttfc (ms); CPU in seconds for the level; total/1k = total CPU s per 1,000 streams; cores = total / wall");
        ok
    }

    /// The value at quantile `q` of sorted `values` (zero when empty).
    fn quantile(values: &[Duration], q: f64) -> Duration {
        if values.is_empty() {
            return Duration::ZERO;
        }
        values[((values.len() - 1) as f64 * q).round() as usize]
    }
}
