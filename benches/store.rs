//! The dashboard's queries on a big ledger: seeds 1,000,000 ledger rows (and their rollup,
//! through the same batched path the writer uses) into a fresh SQLite file and, when
//! `TEST_DATABASE_URL=postgres://…` is set, into a fresh Postgres database, then times each
//! query 200 times and prints p50/p95. Also times the hot path (reserve + settle).
//!
//! Run: `cargo bench --features ssr --bench store` (`STORE_BENCH_ROWS=…` to change the size;
//! `scripts/postgres.sh start DIR PORT` gives a Postgres URL).

use std::time::{Duration, Instant};

use sqlx::Connection;
use streamai::protocol::{UsageSource, Yuan};
use streamai::store::{Day, LedgerRow, Limits, NewCode, Outcome, ReserveRequest, Store};

/// The seeded ledger spans this many Shanghai days, ending today.
const DAYS: i64 = 90;
const CODES: i64 = 20;
const MODELS: [(&str, &str, u64, u64); 6] = [
    ("deepseek", "deepseek-chat", 2_000_000, 8_000_000),
    ("deepseek", "deepseek-reasoner", 4_000_000, 16_000_000),
    ("zhipu", "glm-4-flash", 0, 0),
    ("zhipu", "glm-4-plus", 5_000_000, 5_000_000),
    ("moonshot", "moonshot-v1-8k", 12_000_000, 12_000_000),
    ("moonshot", "kimi-k2", 4_000_000, 16_000_000),
];
const SEED_BATCH: usize = 10_000;
const RUNS: usize = 200;

fn main() {
    let rows: usize = std::env::var("STORE_BENCH_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("streamai-store-bench-{}", std::process::id()));
        let sqlite = format!("sqlite://{}/bench.db", dir.display());
        bench("sqlite", &sqlite, rows).await;
        let size: u64 = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        println!("  sqlite files: {} MiB", size / (1 << 20));
        let _ = std::fs::remove_dir_all(&dir);

        match std::env::var("TEST_DATABASE_URL") {
            Ok(server) if !server.is_empty() => {
                sqlx::any::install_default_drivers();
                let db = format!("bench_{}", std::process::id());
                let mut conn = sqlx::AnyConnection::connect(&server).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = server.split('?').next().unwrap();
                let url = format!("{}/{db}", &base[..base.rfind('/').unwrap()]);
                bench("postgres", &url, rows).await;
                sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            _ => println!("postgres: skipped (set TEST_DATABASE_URL=postgres://… to include it)"),
        }
    });
}

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed_rows(
    rng: &mut Rng,
    first: usize,
    count: usize,
    total: usize,
    start_ms: i64,
) -> Vec<LedgerRow> {
    let span_ms = DAYS * 86_400_000;
    (first..first + count)
        .map(|i| {
            let (provider, model, input, output) = MODELS[rng.below(MODELS.len() as u64) as usize];
            let prompt = 200 + rng.below(4000) as u32;
            let completion = rng.below(2000) as u32;
            let outcome = match rng.below(100) {
                0..=94 => Outcome::Done,
                95..=97 => Outcome::Error("upstream".into()),
                98 => Outcome::Stopped,
                _ => Outcome::Refused("budget".into()),
            };
            let refused = matches!(outcome, Outcome::Refused(_));
            let cost = if refused {
                Yuan(0)
            } else {
                Yuan::of_tokens(prompt, input) + Yuan::of_tokens(completion, output)
            };
            LedgerRow {
                at_ms: start_ms + (i as i64) * span_ms / total as i64,
                code_id: Some(1 + rng.below(CODES as u64) as i64),
                provider: provider.into(),
                model: model.into(),
                key_id: Some(format!("key#{}", rng.below(3) + 1)),
                prompt_tokens: if refused { 0 } else { prompt },
                completion_tokens: if refused { 0 } else { completion },
                reasoning_tokens: if model.contains("reasoner") {
                    completion / 2
                } else {
                    0
                },
                usage_source: UsageSource::Provider,
                cost,
                first_token_ms: (!refused)
                    .then(|| 150 + rng.below(400) + rng.below(4) * rng.below(3000)),
                duration_ms: if refused { 0 } else { 1000 + rng.below(30_000) },
                retries: (rng.below(20) == 0) as u32,
                outcome,
            }
        })
        .collect()
}

async fn bench(engine: &str, url: &str, rows: usize) {
    let store = Store::connect(url).await.expect("connect");
    for i in 0..CODES {
        let limits = Limits {
            daily: Some(Yuan::parse("1000").unwrap()),
            ..Limits::default()
        };
        let new = NewCode {
            name: format!("team {i}"),
            admin: false,
            limits,
        };
        store.create_code(new, 0).await.unwrap();
    }
    let today = Day::of(streamai::store::unix_now());
    let start_ms = today.add_days(1 - DAYS).start_ms();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);

    let started = Instant::now();
    let mut seeded = 0;
    while seeded < rows {
        let count = SEED_BATCH.min(rows - seeded);
        let batch = seed_rows(&mut rng, seeded, count, rows, start_ms);
        store.insert_ledger_rows(&batch).await.expect("seed");
        seeded += count;
    }
    let seed_time = started.elapsed();
    println!(
        "{engine}: seeded {rows} ledger rows (+ rollup) in {:.1} s ({:.0} rows/s), {DAYS} days x {CODES} codes x {} models",
        seed_time.as_secs_f64(),
        rows as f64 / seed_time.as_secs_f64(),
        MODELS.len()
    );

    let code = Some(7);
    report(engine, "daily_usage(all codes, 30 days)", || async {
        store.daily_usage(None, 30, today).await.unwrap().len()
    })
    .await;
    report(engine, "daily_usage(one code, 30 days)", || async {
        store.daily_usage(code, 30, today).await.unwrap().len()
    })
    .await;
    report(engine, "recent(all codes, 50)", || async {
        store.recent(None, 50).await.unwrap().len()
    })
    .await;
    report(engine, "recent(one code, 50)", || async {
        store.recent(code, 50).await.unwrap().len()
    })
    .await;
    report(engine, "spending(one code)", || async {
        store
            .spending(code, streamai::store::unix_now())
            .await
            .unwrap();
        1
    })
    .await;
    report(engine, "reserve + settle (hot path)", || async {
        let request = ReserveRequest {
            code_id: code,
            amount: Yuan::parse("0.01").unwrap(),
            now: streamai::store::unix_now(),
        };
        let reservation = store.reserve(request).await.unwrap();
        store
            .settle(reservation, Yuan::parse("0.001").unwrap())
            .await
            .unwrap();
        1
    })
    .await;
    store.close().await;
}

async fn report<F, Fut>(engine: &str, name: &str, run: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    for _ in 0..5 {
        run().await;
    }
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut returned = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        returned = run().await;
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((q * RUNS as f64).ceil() as usize).clamp(1, RUNS) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {engine:8} {name:34} p50 {:7.2} ms   p95 {:7.2} ms   max {:7.2} ms   ({returned} rows)",
        ms(at(0.50)),
        ms(at(0.95)),
        ms(times[RUNS - 1])
    );
}
