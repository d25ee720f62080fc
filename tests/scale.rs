//! Several instances sharing one state through Redis, behind nginx: the real processes.
//! `scripts/test.sh` starts a throwaway `redis-server` and an nginx that balances
//! round-robin, without sticky sessions, over three loopback ports
//! (`TEST_REDIS_URL`, `TEST_NGINX_URL`, `TEST_INSTANCE_PORTS`); this test starts the
//! three server instances on those ports (the real `streamai` binary, one Postgres
//! database or one SQLite file between them) and the fake upstream, then:
//! - cuts 200 answers' connections at random points and resumes each through a random
//!   instance: byte-exact, no frame twice, none missing; resume latency p95 ≤ 300 ms;
//! - stops an answer running on one instance from another, read on a third;
//! - a 429 with `Retry-After` on instance A keeps B and C off that key for the wait.

#[path = "integration/cuts.rs"]
mod cuts;

use std::time::{Duration, Instant};

use std::process::{Child, Command};
use streamai::fake_upstream::{FakeUpstream, Mode, Outcome};
use streamai::protocol::{ErrorCode, Frame};

use futures::FutureExt;

use cuts::{assert_exact, cut_and_resume, percentile, random_cuts, start_answer, Rng};

/// The services `scripts/test.sh` started.
struct Services {
    redis: String,
    nginx: String,
    ports: Vec<u16>,
    database: Option<String>,
}

fn services() -> Option<Services> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Services {
            redis: var("TEST_REDIS_URL")?,
            nginx: var("TEST_NGINX_URL")?,
            ports: var("TEST_INSTANCE_PORTS")?
                .split(',')
                .map(|p| p.trim().parse().expect("a port"))
                .collect(),
            database: var("TEST_DATABASE_URL"),
        })
    })();
    if found.is_none() {
        assert!(
            var("TEST_SCALE_REQUIRED").is_none(),
            "TEST_SCALE_REQUIRED is set but the services are not (run scripts/test.sh)"
        );
        eprintln!("scale: no Redis/nginx given (scripts/test.sh starts them): skipped");
    }
    found
}

/// A database the three instances share: a fresh Postgres database, or a SQLite file.
async fn shared_database(server: Option<&str>, dir: &std::path::Path) -> String {
    let Some(server) = server else {
        return format!("sqlite://{}?mode=rwc", dir.join("scale.db").display());
    };
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let db = format!("scale_{}", std::process::id());
    let mut conn = sqlx::AnyConnection::connect(server).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut conn)
        .await;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = &server[..server.rfind('/').expect("a database in the URL")];
    format!("{base}/{db}")
}

/// The instances, killed when dropped (also when the test fails).
struct Instances(Vec<Child>);

impl Drop for Instances {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `streamai` process on `port`.
fn instance(port: u16, fake: &str, redis: &str, database: &str, dir: &std::path::Path) -> Child {
    let log = std::fs::File::create(dir.join(format!("instance-{port}.log"))).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new(env!("CARGO_BIN_EXE_streamai"))
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("LEPTOS_OUTPUT_NAME", "streamai"),
            ("LEPTOS_SITE_ROOT", "target/site"),
            ("LEPTOS_SITE_PKG_DIR", "pkg"),
            ("LEPTOS_SITE_ADDR", &format!("127.0.0.1:{port}")),
            ("LEPTOS_ENV", "PROD"),
            ("RUST_LOG", "streamai=info"),
            ("REDIS_URL", redis),
            ("DATABASE_URL", database),
            ("LLM_PROVIDER", "custom"),
            ("LLM_MODEL", "fake-model"),
            ("CUSTOM_FREE_MODELS", "fake-model"),
            ("CUSTOM_BASE_URL", fake),
            ("CUSTOM_API_KEY", "sk-scale-test-key-0123456789abcdef"),
            ("LLM_MAX_RETRIES", "0"),
            ("LLM_TIMEOUT_SECS", "10"),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the streamai binary starts")
}

async fn wait_until_up(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http
            .get(format!("{base}/api/chat/stream/chat-0-0"))
            .send()
            .await
        {
            if response.status() == 404 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{base} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn logs(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: String = text.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            all.push_str(&format!(
                "--- {:?} (last lines, newest first)\n{tail}\n",
                entry.path()
            ));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_nginx_share_answers_stops_and_key_rests() {
    let Some(services) = services() else { return };
    let dir = std::env::temp_dir().join(format!("streamai-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = FakeUpstream::start(([127, 0, 0, 1], 0).into(), Mode::Scripted("openai".into()))
        .await
        .unwrap();
    // A clean Redis: no answers or rests from an earlier run.
    let client = redis::Client::open(services.redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHDB").exec_async(&mut conn).await.unwrap();
    let database = shared_database(services.database.as_deref(), &dir).await;

    let http = reqwest::Client::new();
    let bases: Vec<String> = services
        .ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    let mut children = Instances(Vec::new());
    for (port, base) in services.ports.iter().zip(&bases) {
        let child = instance(*port, &fake.base_url(), &services.redis, &database, &dir);
        children.0.push(child);
        wait_until_up(&http, base).await;
    }
    let run = async {
        cuts_resume_through_any_instance(&http, &services.nginx, &bases).await;
        a_stop_reaches_the_answer_from_another_instance(&http, &bases, &fake).await;
        a_429_on_one_instance_rests_the_key_on_all(&http, &bases, &fake).await;
    };
    // On failure, the instances' logs say why.
    let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
    drop(children);
    if let Err(panic) = outcome {
        eprintln!("{}", logs(&dir));
        std::panic::resume_unwind(panic);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn cuts_resume_through_any_instance(http: &reqwest::Client, nginx: &str, bases: &[String]) {
    let mut rng = Rng::seeded();
    let mut pick = Rng::seeded();
    let chunks = 300;
    let prompt = format!("[[fake:reasoner chunks={chunks} delay=1]]");
    let post = format!("{nginx}/api/chat/stream");
    let plans: Vec<_> = (0..40).map(|a| random_cuts(&mut rng, a, 5)).collect();
    let mut resumes = Vec::new();
    let mut total = 0;
    let started = Instant::now();
    for batch in plans.chunks(4) {
        let runs = batch.iter().map(|plan| {
            let mut pick = pick.child();
            cut_and_resume(http, &post, &prompt, plan, move || {
                bases[pick.below(bases.len())].clone()
            })
        });
        for outcome in futures::future::join_all(runs).await {
            assert_exact(&outcome, chunks);
            total += outcome.cuts;
            resumes.extend(outcome.resumes);
        }
    }
    let p50 = percentile(&mut resumes, 0.5);
    let p95 = percentile(&mut resumes, 0.95);
    eprintln!(
        "scale: {total} resumes through random instances in {:?}: first byte p50 {p50:?}, p95 {p95:?}",
        started.elapsed()
    );
    assert!(total >= 200, "{total}");
    assert!(p95 <= Duration::from_millis(300), "resume p95 {p95:?}");
}

fn finish_reason(raw: &str) -> String {
    let frames: Vec<Frame> = streamai::sse::Parser::new()
        .feed(raw.as_bytes())
        .into_iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    match frames.last() {
        Some(Frame::Done { finish_reason, .. }) => finish_reason.clone(),
        other => panic!("{other:?}"),
    }
}

async fn a_stop_reaches_the_answer_from_another_instance(
    http: &reqwest::Client,
    bases: &[String],
    fake: &FakeUpstream,
) {
    let (id, first) = start_answer(http, &bases[0], "停 [[fake:openai delay=50 chunks=200]]").await;
    let second = http
        .get(format!("{}/api/chat/stream/{id}?after=0", bases[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let stopped = http
        .post(format!("{}/api/chat/stream/{id}/stop", bases[2]))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    let sent = Instant::now();
    let (first, second) = tokio::join!(first.text(), second.text());
    let took = sent.elapsed();
    assert_eq!(finish_reason(&first.unwrap()), "stopped");
    assert_eq!(finish_reason(&second.unwrap()), "stopped");
    eprintln!(
        "scale: a stop sent to instance C ended the answer on A (read on A and B) in {took:?}"
    );
    // The readers hear "stopped" as soon as the log ends; the fake notices the hang-up
    // when its next write fails, a moment later.
    let waited = Instant::now();
    loop {
        let outcome = fake
            .records()
            .into_iter()
            .rev()
            .find(|r| r.scenario.contains("chunks=200"))
            .expect("the fake saw the answer")
            .outcome;
        if outcome == Outcome::ClientGone {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(3),
            "the provider was not hung up on: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_429_on_one_instance_rests_the_key_on_all(
    http: &reqwest::Client,
    bases: &[String],
    fake: &FakeUpstream,
) {
    let ask = |base: &str, prompt: &str| {
        let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
        let request = http
            .post(format!("{base}/api/chat/stream"))
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let raw = request.send().await.unwrap().text().await.unwrap();
            streamai::sse::Parser::new()
                .feed(raw.as_bytes())
                .into_iter()
                .map(|e| serde_json::from_str::<Frame>(&e.data).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let wait_secs = 4;
    let limited = ask(
        &bases[0],
        &format!("限 [[fake:openai status=429 retry_after={wait_secs}]]"),
    )
    .await;
    let rested_at = Instant::now();
    assert!(matches!(
        limited.last(),
        Some(Frame::Error {
            code: ErrorCode::RateLimited,
            ..
        })
    ));
    let calls = fake.records().len();
    for base in &bases[1..] {
        let frames = ask(base, "别处 [[fake:openai]]").await;
        match frames.last() {
            Some(Frame::Error {
                code: ErrorCode::RateLimited,
                message,
                ..
            }) => {
                eprintln!("scale: {base} while the key rests: {message}");
            }
            other => panic!("{base} used the resting key: {other:?}"),
        }
    }
    assert_eq!(
        fake.records().len(),
        calls,
        "no instance called the provider with the key"
    );
    let rest = Duration::from_secs(wait_secs) - rested_at.elapsed();
    tokio::time::sleep(rest + Duration::from_millis(200)).await;
    let frames = ask(&bases[2], "之后 [[fake:openai]]").await;
    assert!(
        matches!(frames.last(), Some(Frame::Done { .. })),
        "after the wait the key answers again: {:?}",
        frames.last()
    );
}
