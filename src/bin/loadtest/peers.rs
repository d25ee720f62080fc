//! `loadtest --peers [LEVEL,…]`: this relay beside a peer, LiteLLM's proxy, on the same
//! fake upstream in one run. `scripts/bench.sh --peers-only` installs LiteLLM into a
//! throwaway virtualenv, starts it with its production settings pointed at
//! `http://127.0.0.1:FAKE/v1`, and runs this phase, which starts that fake upstream and
//! one `streamai` (ledger on, as deployed) itself. At each level (default 100,1000),
//! C streams of [`CHUNKS`] chunks [`DELAY_MS`] ms apart go straight to the fake, through
//! `streamai`, and through LiteLLM, in that order, and one table per level prints them
//! side by side: first token p50/p99 and what each relay adds to the direct run's,
//! chunk gap p99, completed streams, CPU per 1,000 streams (LiteLLM: its master and all
//! its workers), the fake's own CPU during the same run and the ratio relay / fake, and
//! resident memory (peak of the process tree, and per stream above its idle size).
//!
//! A slow peer is measured, not cut: no stream has a timeout of its own, but each
//! target's run ends at a budget (default 180 s); streams still open then count as
//! timed out, and the table says how many completed.
//!
//! The environment says where things are:
//! - `LOADTEST_PORTS=FAKE,SERVER`: loopback ports for the fake and `streamai`;
//! - `LOADTEST_LITELLM=PORT:PID`: LiteLLM's port and the pid of its master process
//!   (its workers are found under it in /proc);
//! - `LOADTEST_LITELLM_KEY` (optional): the bearer key LiteLLM expects (its master key);
//! - `LOADTEST_LITELLM_LABEL` (optional): the column's name, e.g. `LiteLLM 1.108.7`;
//! - `LOADTEST_DIR` (optional): a directory for the SQLite file and `pids` (each started
//!   process's pid is appended, so that a trap can stop it if this process is killed);
//! - `LOADTEST_PEER_BUDGET_S` (optional, default 180): the time bound of one target's run;
//! - `LOADTEST_PEER_LEDGER` (optional, `on` or `off`, default `on` as deployed): our
//!   server's ledger (LiteLLM runs without a database, so keeps none).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

/// Chunks per answer and the fake's pause before each: a fast upstream, as in issue 13.
const CHUNKS: u64 = 200;
const DELAY_MS: u64 = 20;
/// Between stream starts.
const RAMP: Duration = Duration::from_micros(500);

struct Setup {
    fake: u16,
    server: u16,
    litellm: u16,
    litellm_pid: u32,
    litellm_key: Option<String>,
    label: String,
    dir: Option<PathBuf>,
    budget: Duration,
}

impl Setup {
    fn from_env() -> Result<Setup, String> {
        let ports = env_ports("LOADTEST_PORTS")?;
        let [fake, server] = ports[..] else {
            return Err("LOADTEST_PORTS must be FAKE,SERVER".into());
        };
        let litellm = env_var("LOADTEST_LITELLM")?;
        let (port, pid) = litellm
            .split_once(':')
            .ok_or("LOADTEST_LITELLM must be PORT:PID")?;
        let budget = std::env::var("LOADTEST_PEER_BUDGET_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(180);
        Ok(Setup {
            fake,
            server,
            litellm: env_num("LOADTEST_LITELLM", port)? as u16,
            litellm_pid: env_num("LOADTEST_LITELLM", pid)?,
            litellm_key: std::env::var("LOADTEST_LITELLM_KEY").ok(),
            label: std::env::var("LOADTEST_LITELLM_LABEL").unwrap_or_else(|_| "LiteLLM".into()),
            dir: std::env::var_os("LOADTEST_DIR").map(Into::into),
            budget: Duration::from_secs(budget),
        })
    }
}

/// Where a stream is posted, and how its answer is read.
#[derive(Clone)]
enum Peer {
    /// OpenAI chat completions (the fake, LiteLLM), with a bearer key if any.
    OpenAi { url: String, key: Option<String> },
    /// Our `/api/chat/stream` and its frames.
    Relay { url: String },
}

/// How a stream ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum End {
    Completed,
    /// Completed, but not the text the fake sent.
    WrongText,
    /// The connection failed or was refused before a response.
    Refused,
    /// A status other than 2xx.
    Status(u16),
    /// The body ended (or an error frame came) before the end of the answer.
    Cut,
    /// Still open when the run's budget ran out.
    TimedOut,
}

struct Stream {
    end: End,
    arrivals: Arrivals,
}

impl Stream {
    /// A stream that has not ended yet: counted as `end` if nothing else happens.
    fn ending(end: End) -> Stream {
        Stream {
            end,
            arrivals: Arrivals::default(),
        }
    }
}

async fn one_stream(http: &reqwest::Client, peer: &Peer, prompt: &str, partial: &mut Stream) {
    let messages = serde_json::json!([{"role": "user", "content": prompt}]);
    let request = match peer {
        Peer::OpenAi { url, key } => {
            let body = serde_json::json!({
                "model": "fake-model", "messages": messages, "stream": true,
                "stream_options": {"include_usage": true}
            });
            let request = http.post(url).json(&body);
            match key {
                Some(key) => request.bearer_auth(key),
                None => request,
            }
        }
        Peer::Relay { url } => http
            .post(url)
            .json(&serde_json::json!({"messages": messages})),
    };
    let started = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) => {
            partial.end = End::Refused;
            return;
        }
    };
    if !response.status().is_success() {
        partial.end = End::Status(response.status().as_u16());
        return;
    }
    partial.end = End::Cut;
    let mut body = response.bytes_stream();
    let mut parser = Parser::new();
    let mut text = String::new();
    let mut finished = false;
    while let Some(Ok(bytes)) = body.next().await {
        for event in parser.feed(&bytes) {
            let decoded = decode(&event.data, matches!(peer, Peer::OpenAi { .. }));
            if decoded.error {
                return;
            }
            if !decoded.text.is_empty() {
                partial.arrivals.text(started);
                text.push_str(&decoded.text);
            }
            finished |= decoded.done;
        }
    }
    if finished {
        partial.end = if text == expected_text(CHUNKS) {
            End::Completed
        } else {
            End::WrongText
        };
    }
}

/// `level` streams to `peer`, started `RAMP` apart; whatever is still open at `budget`
/// after the first start is dropped and counted as timed out (with what it had seen).
async fn run(
    http: &reqwest::Client,
    peer: &Peer,
    level: usize,
    tag: &str,
    budget: Duration,
) -> Vec<Stream> {
    let deadline = tokio::time::Instant::now() + budget;
    let tasks: Vec<_> = (0..level)
        .map(|i| {
            let (http, peer) = (http.clone(), peer.clone());
            let prompt = format!(
                "[[fake:openai chunks={CHUNKS} delay={DELAY_MS}]] {tag} level {level} stream {i}"
            );
            tokio::spawn(async move {
                tokio::time::sleep(RAMP * i as u32).await;
                let mut stream = Stream::ending(End::TimedOut);
                let run = one_stream(&http, &peer, &prompt, &mut stream);
                if tokio::time::timeout_at(deadline, run).await.is_err() {
                    stream.end = End::TimedOut;
                }
                stream
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(level);
    for task in tasks {
        streams.push(task.await.unwrap_or(Stream::ending(End::Cut)));
    }
    streams
}

/// A process and all its descendants, from /proc (Linux): LiteLLM's master, its
/// uvicorn workers and whatever they start.
fn tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let pid = pids[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn tree_cpu(root: u32) -> f64 {
    tree(root).into_iter().filter_map(cpu_seconds).sum()
}

fn tree_rss(root: u32) -> u64 {
    tree(root).into_iter().filter_map(rss_kib).sum()
}

/// One target's run, with what the target (its process tree) and the fake spent.
struct Measured {
    streams: Vec<Stream>,
    wall: f64,
    /// CPU seconds of the target's tree, and of the fake.
    cpu: f64,
    fake_cpu: f64,
    /// KiB: the tree's resident memory before the run, and its peak during it.
    rss_idle: u64,
    rss_peak: u64,
}

impl Measured {
    fn completed(&self) -> usize {
        self.streams
            .iter()
            .filter(|s| s.end == End::Completed)
            .count()
    }

    fn ttfc(&self) -> (Duration, Duration) {
        ttfc_of(self.streams.iter().map(|s| &s.arrivals))
    }

    fn gaps(&self) -> (Duration, Duration) {
        gaps_of(self.streams.iter().map(|s| &s.arrivals))
    }

    /// How the streams that did not complete ended, e.g. `timed out 649, http 500 3`.
    fn failures(&self) -> String {
        let mut counts: BTreeMap<End, usize> = BTreeMap::new();
        for s in self.streams.iter().filter(|s| s.end != End::Completed) {
            *counts.entry(s.end).or_default() += 1;
        }
        let name = |end: &End| match end {
            End::Completed => "completed".to_string(),
            End::WrongText => "wrong text".into(),
            End::Refused => "refused".into(),
            End::Status(code) => format!("http {code}"),
            End::Cut => "cut".into(),
            End::TimedOut => "timed out".into(),
        };
        let parts: Vec<String> = counts
            .iter()
            .map(|(end, n)| format!("{} {n}", name(end)))
            .collect();
        parts.join(", ")
    }
}

async fn measure(
    http: &reqwest::Client,
    peer: &Peer,
    level: usize,
    tag: &str,
    root: u32,
    fake_pid: u32,
    budget: Duration,
) -> Measured {
    let (cpu_before, fake_before) = (tree_cpu(root), cpu_seconds(fake_pid).unwrap_or(0.0));
    let rss_idle = tree_rss(root);
    let peak = Arc::new(AtomicU64::new(rss_idle));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(tree_rss(root), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let streams = run(http, peer, level, tag, budget).await;
    let wall = started.elapsed().as_secs_f64();
    sampler.abort();
    Measured {
        streams,
        wall,
        cpu: tree_cpu(root) - cpu_before,
        fake_cpu: cpu_seconds(fake_pid).unwrap_or(0.0) - fake_before,
        rss_idle,
        rss_peak: peak.load(Ordering::Relaxed),
    }
}

/// Waits (at most 60 s) until the processes have been nearly idle for a second: a peer
/// still working through streams the last run gave up on must not be measured again.
async fn settle(roots: &[u32]) {
    let cpu = || roots.iter().map(|&r| tree_cpu(r)).sum::<f64>();
    for _ in 0..60 {
        let before = cpu();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cpu() - before < 0.05 {
            return;
        }
    }
}

pub(super) async fn main(levels: &[usize]) -> ExitCode {
    let setup = match Setup::from_env() {
        Ok(setup) => setup,
        Err(err) => {
            return fail(&format!(
                "--peers: {err} (scripts/bench.sh --peers-only sets it)"
            ))
        }
    };
    let mut processes = match Processes::new(setup.dir.clone(), "peers") {
        Ok(processes) => processes,
        Err(err) => return fail(&err),
    };
    // No timeout of the client's own: each run's budget bounds every stream.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client builds");
    let (fake_pid, server_pid) = match start(&setup, &mut processes, &http).await {
        Ok(pids) => pids,
        Err(err) => return fail(&err),
    };
    let direct = Peer::OpenAi {
        url: format!("http://127.0.0.1:{}/v1/chat/completions", setup.fake),
        key: None,
    };
    let relay = Peer::Relay {
        url: format!("http://127.0.0.1:{}/api/chat/stream", setup.server),
    };
    let litellm = Peer::OpenAi {
        url: format!("http://127.0.0.1:{}/v1/chat/completions", setup.litellm),
        key: setup.litellm_key.clone(),
    };
    // Warm-up: connections, lazy set-up and every LiteLLM worker's first request are
    // not what is measured.
    for peer in [&direct, &relay, &litellm] {
        let warm = run(&http, peer, 20, "warm-up", Duration::from_secs(120)).await;
        if !warm.iter().any(|s| s.end == End::Completed) {
            drop(processes);
            return fail("warm-up: no stream completed through one of the targets");
        }
    }
    let mut all_ours = true;
    for &level in levels {
        settle(&[setup.litellm_pid, fake_pid, server_pid]).await;
        let targets = [
            ("direct", &direct, fake_pid),
            ("streamai", &relay, server_pid),
            ("litellm", &litellm, setup.litellm_pid),
        ];
        let mut runs = Vec::new();
        for (tag, peer, root) in targets {
            runs.push(measure(&http, peer, level, tag, root, fake_pid, setup.budget).await);
            settle(&[setup.litellm_pid, fake_pid]).await;
        }
        all_ours &= runs[0].completed() == level && runs[1].completed() == level;
        print_table(&setup, level, &runs);
    }
    drop(processes);
    if all_ours {
        ExitCode::SUCCESS
    } else {
        fail("some direct or streamai streams did not complete byte for byte")
    }
}

/// Starts the fake and `streamai` on their ports; returns their pids once both answer.
async fn start(
    setup: &Setup,
    processes: &mut Processes,
    http: &reqwest::Client,
) -> Result<(u32, u32), String> {
    let bin_dir = std::env::var("LOADTEST_BIN_DIR").unwrap_or_else(|_| "target/release".into());
    let fake_addr = format!("127.0.0.1:{}", setup.fake);
    let fake = processes.spawn(
        &format!("{bin_dir}/fake-upstream"),
        &[&fake_addr, "openai"],
        &[],
    )?;
    let fake_url = format!("http://{fake_addr}/v1");
    let addr = format!("127.0.0.1:{}", setup.server);
    let db = format!(
        "sqlite://{}?mode=rwc",
        processes.dir.join("peers.db").display()
    );
    let ledger = std::env::var("LOADTEST_PEER_LEDGER").unwrap_or_else(|_| "on".into());
    let env = server_env(
        &addr,
        &fake_url,
        &[("DATABASE_URL", &db), ("STREAMAI_LEDGER", &ledger)],
    );
    let server = processes.spawn(&format!("{bin_dir}/streamai"), &[], &env)?;
    if !wait_ready(http, &format!("http://{fake_addr}/__fake/requests")).await
        || !wait_ready(http, &format!("http://{addr}/")).await
    {
        return Err("the fake upstream or the server did not come up within 30 s".into());
    }
    Ok((fake, server))
}

fn print_table(setup: &Setup, level: usize, runs: &[Measured]) {
    let [direct, ours, peer] = runs else {
        return;
    };
    let (d50, d99) = direct.ttfc();
    println!(
        "\n== {level} concurrent streams, {CHUNKS} chunks {DELAY_MS} ms apart; each run bounded at {} s",
        setup.budget.as_secs()
    );
    println!(
        "{:<34} {:>16} {:>16} {:>16}",
        "", "direct (fake)", "streamai", setup.label
    );
    let row = |name: &str, cells: [String; 3]| {
        println!(
            "{name:<34} {:>16} {:>16} {:>16}",
            cells[0], cells[1], cells[2]
        );
    };
    let each = |f: &dyn Fn(&Measured) -> String| [f(direct), f(ours), f(peer)];
    let relays = |f: &dyn Fn(&Measured) -> String| ["—".to_string(), f(ours), f(peer)];
    row(
        "completed / total",
        each(&|m| format!("{}/{level}", m.completed())),
    );
    row(
        "first token received",
        each(&|m| {
            format!(
                "{}/{level}",
                m.streams
                    .iter()
                    .filter(|s| s.arrivals.first_chunk.is_some())
                    .count()
            )
        }),
    );
    row(
        "first token p50 (ms)",
        each(&|m| format!("{:.1}", ms(m.ttfc().0))),
    );
    row(
        "first token p99 (ms)",
        each(&|m| format!("{:.1}", ms(m.ttfc().1))),
    );
    row(
        "added vs direct p50 (ms)",
        relays(&|m| format!("{:+.1}", ms(m.ttfc().0) - ms(d50))),
    );
    row(
        "added vs direct p99 (ms)",
        relays(&|m| format!("{:+.1}", ms(m.ttfc().1) - ms(d99))),
    );
    row(
        "chunk gap p99 (ms)",
        each(&|m| format!("{:.1}", ms(m.gaps().1))),
    );
    let per_1k = |cpu: f64| cpu / level as f64 * 1000.0;
    row(
        "CPU s per 1k streams",
        each(&|m| format!("{:.2}", per_1k(m.cpu))),
    );
    row(
        "fake's CPU s per 1k (same run)",
        each(&|m| format!("{:.2}", per_1k(m.fake_cpu))),
    );
    row(
        "CPU relay / fake",
        relays(&|m| format!("{:.1}x", m.cpu / m.fake_cpu.max(0.001))),
    );
    row(
        "RSS peak (MiB)",
        each(&|m| format!("{:.1}", m.rss_peak as f64 / 1024.0)),
    );
    row(
        "RSS per stream (KiB)",
        each(&|m| {
            format!(
                "{:.1}",
                m.rss_peak.saturating_sub(m.rss_idle) as f64 / level as f64
            )
        }),
    );
    row("wall (s)", each(&|m| format!("{:.1}", m.wall)));
    println!(
        "first token: percentiles over the streams that received one; added = minus the direct run's; \
         CPU: user + system seconds of the target's process tree (LiteLLM: master and workers) during \
         its run; RSS per stream: (peak - size before the run) / {level}"
    );
    for (name, m) in [
        ("direct", direct),
        ("streamai", ours),
        (setup.label.as_str(), peer),
    ] {
        if m.completed() < level {
            println!("  {name}: not completed: {}", m.failures());
        }
    }
}
