//! The store against real databases, no mocks: every test runs on SQLite (a fresh temp
//! file) and, when `TEST_DATABASE_URL=postgres://…` is set, on Postgres too, each in a
//! database of its own (`CREATE DATABASE test_<random>`, dropped afterwards).
//! `scripts/postgres.sh start DIR PORT` prints a URL to use.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Connection;
use streamai::protocol::{ErrorCode, UsageSource, Yuan};
use streamai::store::{
    AuthError, BudgetScope, Day, LedgerRow, Limits, NewCode, Outcome, Refusal, ReserveError,
    ReserveRequest, Store, CODE_PREFIX,
};

/// 2026-11-26 00:00:00 +08:00.
const NOV_26: i64 = 1_795_622_400;
/// 2026-11-26 12:00:00 +08:00.
const NOON: i64 = NOV_26 + 12 * 3600;

fn y(text: &str) -> Yuan {
    Yuan::parse(text).unwrap()
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One engine's fresh database.
struct Engine {
    name: &'static str,
    url: String,
    /// SQLite: the temp directory. Postgres: the server URL and the database to drop.
    sqlite_dir: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl Engine {
    async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|err| panic!("{}: connect: {err}", self.name))
    }

    /// Drops the Postgres database (the SQLite directory goes with `Drop`, even on a panic).
    async fn cleanup(self) {
        if let Some((server, db)) = &self.postgres {
            sqlx::any::install_default_drivers();
            let mut conn = sqlx::AnyConnection::connect(server).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn engines() -> Vec<Engine> {
    let dir = std::env::temp_dir().join(format!("streamai-store-{}", random_suffix()));
    let mut engines = vec![Engine {
        name: "sqlite",
        // A subdirectory that does not exist yet: connect must create it.
        url: format!("sqlite://{}/data/store.db", dir.display()),
        sqlite_dir: Some(dir),
        postgres: None,
    }];
    if let Ok(server) = std::env::var("TEST_DATABASE_URL") {
        if !server.is_empty() {
            sqlx::any::install_default_drivers();
            let db = format!("test_{}", random_suffix());
            let mut conn = sqlx::AnyConnection::connect(&server)
                .await
                .expect("TEST_DATABASE_URL: cannot connect");
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let (base, query) = match server.split_once('?') {
                Some((base, query)) => (base, format!("?{query}")),
                None => (server.as_str(), String::new()),
            };
            let base = &base[..base.rfind('/').expect("a database in TEST_DATABASE_URL")];
            engines.push(Engine {
                name: "postgres",
                url: format!("{base}/{db}{query}"),
                sqlite_dir: None,
                postgres: Some((server.clone(), db)),
            });
        }
    }
    engines
}

/// Runs `test` once per engine, each on a fresh database.
async fn on_every_engine(test: impl AsyncFn(&Engine)) {
    for engine in engines().await {
        eprintln!("-- {}", engine.name);
        test(&engine).await;
        engine.cleanup().await;
    }
}

fn new_code(name: &str, limits: Limits) -> NewCode {
    NewCode {
        name: name.into(),
        admin: false,
        limits,
    }
}

fn daily(limit: &str) -> Limits {
    Limits {
        daily: Some(y(limit)),
        ..Limits::default()
    }
}

fn request(code_id: Option<i64>, amount: &str, now: i64) -> ReserveRequest {
    ReserveRequest {
        code_id,
        amount: y(amount),
        now,
    }
}

fn refusal(result: Result<streamai::store::Reservation, ReserveError>) -> Refusal {
    match result {
        Err(ReserveError::Refused(refusal)) => refusal,
        Err(ReserveError::Store(err)) => panic!("store error: {err}"),
        Ok(r) => panic!("admitted reservation {}", r.id()),
    }
}

fn row(at_ms: i64, code_id: Option<i64>, cost: &str, outcome: Outcome) -> LedgerRow {
    LedgerRow {
        at_ms,
        code_id,
        provider: "deepseek".into(),
        model: "deepseek-chat".into(),
        key_id: Some("key#1".into()),
        prompt_tokens: 123,
        completion_tokens: 45,
        reasoning_tokens: 6,
        usage_source: UsageSource::Provider,
        cost: y(cost),
        first_token_ms: Some(250),
        duration_ms: 1500,
        retries: 1,
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_rows_and_rollup_are_exact() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let (code, _) = store
            .create_code(new_code("team", Limits::default()), NOON)
            .await
            .unwrap();
        let c = Some(code.id);
        let rows = vec![
            row(NOON * 1000, c, "0.000246", Outcome::Done),
            LedgerRow {
                usage_source: UsageSource::Tiktoken,
                first_token_ms: None,
                key_id: None,
                ..row(
                    NOON * 1000 + 1,
                    c,
                    "0.000001",
                    Outcome::error(ErrorCode::Upstream),
                )
            },
            row(NOON * 1000 + 2, c, "0.000000000123", Outcome::Stopped),
            LedgerRow {
                prompt_tokens: 0,
                completion_tokens: 0,
                reasoning_tokens: 0,
                first_token_ms: None,
                duration_ms: 0,
                retries: 0,
                ..row(NOON * 1000 + 3, c, "0", Outcome::Refused("budget".into()))
            },
        ];
        let writer = store.ledger_writer();
        for r in &rows {
            writer.record(r.clone());
        }
        // Many small costs through several batches: the sum stays exact.
        for i in 0..1000 {
            writer.record(LedgerRow {
                model: "glm-4-flash".into(),
                ..row(NOON * 1000 + 10 + i, None, "0.000001", Outcome::Done)
            });
        }
        writer.flush().await.unwrap();
        assert_eq!(writer.dropped(), 0);

        let recent = store.recent(c, 10).await.unwrap();
        let mut got: Vec<LedgerRow> = recent.into_iter().map(|e| e.row).collect();
        got.reverse();
        assert_eq!(got, rows, "{}", engine.name);
        assert_eq!(store.recent(None, 50).await.unwrap().len(), 50);

        let today = Day::of(NOON);
        let usage = store.daily_usage(c, 1, today).await.unwrap();
        assert_eq!(usage.len(), 1, "{usage:?}");
        let u = &usage[0];
        assert_eq!((u.day, u.model.as_str()), (today, "deepseek-chat"));
        assert_eq!((u.requests, u.errors, u.stopped, u.refused), (4, 1, 1, 1));
        assert_eq!(u.cost, y("0.000247000123"), "{}", engine.name);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (369, 135, 18)
        );
        assert_eq!((u.ttft_count, u.ttft_ms_sum, u.ttft_ms_max), (2, 500, 250));
        assert_eq!(u.duration_ms_sum, 4500);

        let all = store.daily_usage(None, 7, today).await.unwrap();
        assert_eq!(all.len(), 2);
        let glm = all.iter().find(|u| u.model == "glm-4-flash").unwrap();
        assert_eq!((glm.requests, glm.cost), (1000, y("0.001")));
        let anonymous = store.daily_usage(Some(0), 1, today).await.unwrap();
        assert_eq!(anonymous.len(), 1);
        assert_eq!(anonymous[0].cost, y("0.001"));
        let by_code = store.usage_by_code(today, today).await.unwrap();
        let totals: Vec<(i64, u64, Yuan)> = by_code
            .iter()
            .map(|u| (u.code_id, u.requests, u.cost))
            .collect();
        assert_eq!(
            totals,
            [(0, 1000, y("0.001")), (code.id, 4, y("0.000247000123"))]
        );
        let without_code = store.recent(Some(0), 5).await.unwrap();
        assert_eq!(without_code.len(), 5);
        assert!(without_code
            .iter()
            .all(|e| e.row.code_id.is_none() && e.row.model == "glm-4-flash"));
        store.close().await;
    })
    .await;
}

/// Starts 50 reservations of 0.003 at once against a 0.05 budget, spread over `stores`.
async fn race_50(stores: &[Store], code_id: Option<i64>, now: i64) -> usize {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move { store.reserve(request(code_id, "0.003", now)).await })
        })
        .collect();
    let mut admitted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(reservation) => admitted.push(reservation),
            Err(ReserveError::Refused(Refusal::Budget(b))) => {
                assert!(b.spent_and_reserved + b.requested > b.limit, "{b:?}");
            }
            Err(err) => panic!("{err}"),
        }
    }
    let n = admitted.len();
    let spending = stores[0].spending(code_id, now).await.unwrap();
    assert_eq!(spending.day_reserved, Yuan(3_000_000_000 * n as u128));
    assert!(
        spending.day_reserved + spending.day_spent <= y("0.05"),
        "{n} admitted: {spending:?}"
    );
    for (i, reservation) in admitted.into_iter().enumerate() {
        stores[i % stores.len()]
            .settle(reservation, y("0.003"))
            .await
            .unwrap();
    }
    let spending = stores[0].spending(code_id, now).await.unwrap();
    assert_eq!(spending.day_reserved, Yuan(0));
    assert!(spending.day_spent <= y("0.05"));
    assert_eq!(spending.day_spent, Yuan(3_000_000_000 * n as u128));
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reservations_never_overdraw() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let (code, _) = store
            .create_code(new_code("team", daily("0.05")), NOON)
            .await
            .unwrap();
        // floor(0.05 / 0.003) = 16.
        assert_eq!(
            race_50(std::slice::from_ref(&store), Some(code.id), NOON).await,
            16,
            "{}",
            engine.name
        );

        // The deployment-wide limit, for requests without a code (no code row to lock).
        let global = store.clone().with_global_daily_limit(Some(y("0.05")));
        let tomorrow = NOON + 86_400;
        assert_eq!(
            race_50(std::slice::from_ref(&global), None, tomorrow).await,
            16,
            "{}",
            engine.name
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_budget() {
    on_every_engine(async |engine: &Engine| {
        // Two stores = two pools = two instances of the app on one database.
        let a = engine
            .store()
            .await
            .with_global_daily_limit(Some(y("0.05")));
        let b = engine
            .store()
            .await
            .with_global_daily_limit(Some(y("0.05")));
        assert_ne!(a.instance_id(), b.instance_id());
        let (code, _) = a
            .create_code(new_code("team", daily("0.05")), NOON)
            .await
            .unwrap();
        let both = [a.clone(), b.clone()];
        assert_eq!(
            race_50(&both, Some(code.id), NOON).await,
            16,
            "{}",
            engine.name
        );
        let next_day = NOON + 86_400;
        assert_eq!(race_50(&both, None, next_day).await, 16, "{}", engine.name);
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shanghai_day_and_month_boundaries_split_budgets() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let (code, _) = store
            .create_code(new_code("d", daily("0.05")), NOON)
            .await
            .unwrap();
        let c = Some(code.id);
        let last_second = NOV_26 + 86_400 - 1; // 2026-11-26 23:59:59 +08:00
        let midnight = NOV_26 + 86_400; // 2026-11-27 00:00:00 +08:00
        assert_ne!(Day::of(last_second), Day::of(midnight));

        let late = store
            .reserve(request(c, "0.05", last_second))
            .await
            .unwrap();
        assert_eq!(late.day().to_string(), "2026-11-26");
        let Refusal::Budget(refused) =
            refusal(store.reserve(request(c, "0.000001", last_second)).await)
        else {
            panic!("not a budget refusal");
        };
        assert_eq!(refused.scope, BudgetScope::Daily);
        assert_eq!(refused.limit, y("0.05"));
        assert_eq!(refused.spent_and_reserved, y("0.05"));
        assert_eq!(refused.requested, y("0.000001"));
        assert_eq!(refused.resets_at, midnight);
        let message = refused.to_string();
        assert!(
            message.contains("¥0.05") && message.contains("2026-11-27 00:00"),
            "{message}"
        );

        let early = store.reserve(request(c, "0.05", midnight)).await.unwrap();
        assert_eq!(early.day().to_string(), "2026-11-27");
        // A stream that ends after midnight still counts to the day it started.
        store.settle(late, y("0.04")).await.unwrap();
        store.settle(early, y("0.01")).await.unwrap();
        assert_eq!(
            store.spending(c, last_second).await.unwrap().day_spent,
            y("0.04")
        );
        assert_eq!(
            store.spending(c, midnight).await.unwrap().day_spent,
            y("0.01")
        );
        assert_eq!(
            store.spending(c, midnight).await.unwrap().month_spent,
            y("0.05")
        );

        // Months: the last second of November and the first of December.
        let monthly = Limits {
            monthly: Some(y("0.1")),
            ..Limits::default()
        };
        let (m, _) = store
            .create_code(new_code("m", monthly), NOON)
            .await
            .unwrap();
        let dec_1 = "2026-12-01".parse::<Day>().unwrap().start();
        let full = store
            .reserve(request(Some(m.id), "0.1", dec_1 - 1))
            .await
            .unwrap();
        let Refusal::Budget(refused) = refusal(
            store
                .reserve(request(Some(m.id), "0.000001", dec_1 - 1))
                .await,
        ) else {
            panic!("not a budget refusal");
        };
        assert_eq!(
            (refused.scope, refused.resets_at),
            (BudgetScope::Monthly, dec_1)
        );
        let december = store
            .reserve(request(Some(m.id), "0.1", dec_1))
            .await
            .unwrap();
        store.settle(full, y("0.1")).await.unwrap();
        store.settle(december, y("0")).await.unwrap();

        // The ledger: 23:59:59.999 and 00:00:00.000 are rolled up on different days.
        let writer = store.ledger_writer();
        writer.record(row(midnight * 1000 - 1, c, "0.001", Outcome::Done));
        writer.record(row(midnight * 1000, c, "0.002", Outcome::Done));
        writer.flush().await.unwrap();
        let usage = store.daily_usage(c, 2, Day::of(midnight)).await.unwrap();
        let days: Vec<(String, Yuan)> = usage.iter().map(|u| (u.day.to_string(), u.cost)).collect();
        assert_eq!(
            days,
            [
                ("2026-11-26".to_string(), y("0.001")),
                ("2026-11-27".to_string(), y("0.002"))
            ]
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_records_the_real_cost() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let (code, _) = store
            .create_code(new_code("team", daily("0.01")), NOON)
            .await
            .unwrap();
        let c = Some(code.id);
        let r = store.reserve(request(c, "0.006", NOON)).await.unwrap();
        assert_eq!(r.amount(), y("0.006"));
        // Only 0.004 left while 0.006 is reserved.
        assert!(matches!(
            refusal(store.reserve(request(c, "0.0041", NOON)).await),
            Refusal::Budget(_)
        ));
        store.settle(r, y("0.001234567891")).await.unwrap();
        let spending = store.spending(c, NOON).await.unwrap();
        assert_eq!(
            (spending.day_spent, spending.day_reserved),
            (y("0.001234567891"), Yuan(0))
        );
        assert_eq!(spending.month_spent, y("0.001234567891"));
        assert_eq!(
            store.spending(None, NOON).await.unwrap().day_spent,
            y("0.001234567891")
        );
        // The room came back, exactly.
        let rest = store
            .reserve(request(c, "0.008765432109", NOON))
            .await
            .unwrap();
        assert!(matches!(
            refusal(store.reserve(request(c, "0.000000000001", NOON)).await),
            Refusal::Budget(_)
        ));
        // A provider that overshoots the worst case is recorded as it charged.
        store.settle(rest, y("0.009")).await.unwrap();
        assert_eq!(
            store.spending(c, NOON).await.unwrap().day_spent,
            y("0.010234567891")
        );
        // Dropping a reservation without settling charges its worst case in the background.
        let dropped = store.reserve(request(None, "0.5", NOON)).await.unwrap();
        drop(dropped);
        for _ in 0..100 {
            if store.open_reservations(None).await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.open_reservations(None).await.unwrap(), 0);
        assert_eq!(
            store.spending(None, NOON).await.unwrap().day_spent,
            y("0.510234567891")
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_stale_returns_reservations_of_a_dead_instance() {
    on_every_engine(async |engine: &Engine| {
        let dead = engine.store().await;
        let alive = engine.store().await;
        let limits = Limits {
            daily: Some(y("1")),
            concurrent: Some(3),
            ..Limits::default()
        };
        let (code, _) = alive
            .create_code(new_code("team", limits), NOON)
            .await
            .unwrap();
        let c = Some(code.id);
        dead.heartbeat(NOON).await.unwrap();
        alive.heartbeat(NOON).await.unwrap();
        let crashed = dead.reserve(request(c, "0.3", NOON)).await.unwrap();
        let slow = dead.reserve(request(c, "0.2", NOON)).await.unwrap();
        let own = alive.reserve(request(c, "0.1", NOON)).await.unwrap();
        // The process dies: its reservation is never settled nor dropped.
        std::mem::forget(crashed);
        assert!(matches!(
            refusal(alive.reserve(request(c, "0.01", NOON)).await),
            Refusal::Concurrent { limit: 3 }
        ));

        // Still beating: nothing to refund.
        let later = NOON + 120;
        dead.heartbeat(later).await.unwrap();
        alive.heartbeat(later).await.unwrap();
        let none = alive
            .refund_stale(later, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(none.reservations, 0);

        // Silent for longer than 60 s: its two reservations are refunded, ours are not.
        let much_later = later + 61;
        alive.heartbeat(much_later).await.unwrap();
        let refunded = alive
            .refund_stale(much_later, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            (refunded.reservations, refunded.amount),
            (2, y("0.5")),
            "{}",
            engine.name
        );
        let spending = alive.spending(c, NOON).await.unwrap();
        assert_eq!(
            (spending.day_spent, spending.day_reserved),
            (Yuan(0), y("0.1"))
        );
        assert_eq!(alive.open_reservations(c).await.unwrap(), 1);
        // The stream slots are free again.
        let again = alive.reserve(request(c, "0.01", NOON)).await.unwrap();

        // The "dead" process was only slow: its settle counts the cost once, not the refund twice.
        dead.settle(slow, y("0.05")).await.unwrap();
        let spending = alive.spending(c, NOON).await.unwrap();
        assert_eq!(
            (spending.day_spent, spending.day_reserved),
            (y("0.05"), y("0.11"))
        );
        alive.settle(own, y("0.1")).await.unwrap();
        alive.settle(again, y("0.01")).await.unwrap();
        let spending = alive.spending(c, NOON).await.unwrap();
        assert_eq!(
            (spending.day_spent, spending.day_reserved),
            (y("0.16"), Yuan(0))
        );
        assert_eq!(
            alive.spending(None, NOON).await.unwrap().day_reserved,
            Yuan(0)
        );
        dead.close().await;
        alive.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_code_is_refused_at_once() {
    on_every_engine(async |engine: &Engine| {
        let relay = engine.store().await;
        let admin = engine.store().await; // another instance revokes
        let (code, plaintext) = admin
            .create_code(new_code("team", Limits::default()), NOON)
            .await
            .unwrap();
        let info = relay.authenticate(&plaintext, NOON).await.unwrap();
        assert_eq!(info.id, code.id);
        let open = relay
            .reserve(request(Some(code.id), "0.01", NOON))
            .await
            .unwrap();

        let revoked = admin.revoke(code.id, NOON + 5).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(NOON + 5));
        assert!(matches!(
            relay.authenticate(&plaintext, NOON + 5).await,
            Err(AuthError::Revoked { at }) if at == NOON + 5
        ));
        assert_eq!(
            refusal(
                relay
                    .reserve(request(Some(code.id), "0.01", NOON + 5))
                    .await
            ),
            Refusal::Revoked
        );
        // A stream already open still settles.
        relay.settle(open, y("0.002")).await.unwrap();
        assert!(matches!(
            admin.revoke(999_999, NOON).await,
            Err(streamai::store::StoreError::NoSuchCode(_))
        ));
        relay.close().await;
        admin.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_expired_codes_are_distinguished() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let limits = Limits {
            expires_at: Some(NOON + 60),
            ..Limits::default()
        };
        let (code, plaintext) = store
            .create_code(new_code("temp", limits), NOON)
            .await
            .unwrap();
        assert!(store.authenticate(&plaintext, NOON + 59).await.is_ok());
        let wrong = format!("{CODE_PREFIX}{}", "0".repeat(32));
        assert!(matches!(
            store.authenticate(&wrong, NOON).await,
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            store.authenticate("", NOON).await,
            Err(AuthError::Unknown)
        ));
        let expired = store.authenticate(&plaintext, NOON + 60).await;
        assert!(matches!(expired, Err(AuthError::Expired { at }) if at == NOON + 60));
        assert_eq!(
            refusal(
                store
                    .reserve(request(Some(code.id), "0.01", NOON + 60))
                    .await
            ),
            Refusal::Expired
        );
        assert_eq!(
            refusal(store.reserve(request(Some(424_242), "0.01", NOON)).await),
            Refusal::UnknownCode
        );
        // Lifting the expiry makes it work again.
        store
            .update_limits(code.id, &Limits::default())
            .await
            .unwrap();
        assert!(store.authenticate(&plaintext, NOON + 3600).await.is_ok());
        store.close().await;
    })
    .await;
}

/// The open start asks whether codes exist on every request: "none yet" is remembered (for
/// a second: `CodesSeen`'s unit tests), a code created by this process counts at once, the
/// database is asked at once where it must be (`has_codes_now`), and "yes" is kept for
/// good (codes are never deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whether_codes_exist_is_remembered() {
    on_every_engine(async |engine: &Engine| {
        let (remembers, creates, waits) = (
            engine.store().await,
            engine.store().await,
            engine.store().await,
        );
        for store in [&creates, &waits, &remembers] {
            assert!(!store.has_codes().await.unwrap());
        }
        // Answered from memory: its database is closed.
        remembers.close().await;
        assert!(!remembers.has_codes().await.unwrap());

        creates
            .create_code(new_code("first", Limits::default()), NOON)
            .await
            .unwrap();
        assert!(
            creates.has_codes().await.unwrap(),
            "at once where it was made"
        );
        assert!(waits.has_codes_now().await.unwrap(), "asked now: at once");
        waits.close().await;
        assert!(waits.has_codes().await.unwrap(), "yes is kept");
        creates.close().await;
    })
    .await;
}

/// The server's watch keeps "none yet" fresh, so a request past the second does not ask
/// the database (here: closed, so asking would fail), and it sees a code made elsewhere
/// (the CLI, another instance) and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_answers_for_the_database_until_a_code_exists() {
    on_every_engine(async |engine: &Engine| {
        let (server, creates, watched) = (
            engine.store().await,
            engine.store().await,
            engine.store().await,
        );
        let watch = server.watch_codes(Duration::from_millis(100));
        // Past the second "none yet" is believed without the watch.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        server.close().await;
        assert!(!server.has_codes().await.expect("answered from memory"));
        watch.abort();

        let watch = watched.watch_codes(Duration::from_millis(100));
        creates
            .create_code(new_code("first", Limits::default()), NOON)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(3), watch)
            .await
            .expect("the watch saw the code and ended")
            .unwrap();
        watched.close().await;
        assert!(watched.has_codes().await.unwrap(), "yes is kept");
        creates.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_are_shown_once_and_stored_hashed() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        assert!(!store.has_codes().await.unwrap());
        let limits = Limits {
            daily: Some(y("5")),
            monthly: Some(y("100.5")),
            rpm: Some(20),
            concurrent: Some(2),
            models: Some(vec!["deepseek-chat".into(), "glm-4-flash".into()]),
            expires_at: Some(NOON + 86_400),
        };
        let (first, plaintext) = store
            .create_code(new_code("first", limits.clone()), NOON)
            .await
            .unwrap();
        assert!(first.admin, "the first code is an admin code");
        assert!(store.has_codes().await.unwrap());
        assert!(plaintext.starts_with(CODE_PREFIX) && plaintext.len() == CODE_PREFIX.len() + 32);
        assert!(plaintext.starts_with(&first.prefix) && first.prefix.len() < plaintext.len());
        assert_eq!(first.limits, limits);
        assert!(first.allows_model("glm-4-flash") && !first.allows_model("qwen-max"));
        let (second, other) = store
            .create_code(new_code("second", Limits::default()), NOON)
            .await
            .unwrap();
        assert!(!second.admin && other != plaintext);

        // Only the hash is in the database.
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&engine.url).await.unwrap();
        let hashes: Vec<String> =
            sqlx::query_scalar("SELECT code_hash FROM access_codes ORDER BY id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let sha = |p: &str| -> String {
            Sha256::digest(p.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(hashes, [sha(&plaintext), sha(&other)]);
        conn.close().await.unwrap();

        // ADMIN_CODE: created once, idempotent, un-revoked by the environment.
        let admin = store
            .ensure_admin_code("correct horse battery", NOON)
            .await
            .unwrap();
        assert!(admin.admin);
        assert_eq!(
            store
                .ensure_admin_code("correct horse battery", NOON)
                .await
                .unwrap()
                .id,
            admin.id
        );
        store.revoke(admin.id, NOON).await.unwrap();
        let again = store
            .ensure_admin_code("correct horse battery", NOON + 1)
            .await
            .unwrap();
        assert_eq!((again.id, again.revoked_at), (admin.id, None));
        assert!(
            store
                .authenticate("correct horse battery", NOON)
                .await
                .unwrap()
                .admin
        );
        assert!(store.ensure_admin_code("short", NOON).await.is_err());

        let updated = store
            .update_limits(
                second.id,
                &Limits {
                    rpm: Some(7),
                    ..Limits::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.limits.rpm, Some(7));
        let listed = store.list_codes().await.unwrap();
        assert_eq!(
            listed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["first", "second", "ADMIN_CODE"]
        );
        assert_eq!(
            store.code(second.id).await.unwrap().unwrap().limits.rpm,
            Some(7)
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_and_concurrency_limits_are_atomic() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let rpm = Limits {
            rpm: Some(3),
            ..Limits::default()
        };
        let (code, _) = store.create_code(new_code("rpm", rpm), NOON).await.unwrap();
        let c = Some(code.id);
        for t in [0, 1, 2] {
            let r = store.reserve(request(c, "0.001", NOON + t)).await.unwrap();
            store.settle(r, y("0.001")).await.unwrap();
        }
        assert_eq!(
            refusal(store.reserve(request(c, "0.001", NOON + 10)).await),
            Refusal::Rpm {
                limit: 3,
                retry_after: 50
            }
        );
        // A minute after the first admission there is room for one more.
        let r = store.reserve(request(c, "0.001", NOON + 60)).await.unwrap();
        store.settle(r, y("0")).await.unwrap();
        assert!(matches!(
            refusal(store.reserve(request(c, "0.001", NOON + 60)).await),
            Refusal::Rpm { .. }
        ));

        // 20 streams at once against a limit of 2.
        let limits = Limits {
            concurrent: Some(2),
            ..Limits::default()
        };
        let (code, _) = store
            .create_code(new_code("streams", limits), NOON)
            .await
            .unwrap();
        let c = Some(code.id);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.reserve(request(c, "0.001", NOON)).await })
            })
            .collect();
        let mut open = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => open.push(r),
                Err(ReserveError::Refused(Refusal::Concurrent { limit: 2 })) => {}
                Err(err) => panic!("{err}"),
            }
        }
        assert_eq!(open.len(), 2, "{}", engine.name);
        store.settle(open.pop().unwrap(), y("0.001")).await.unwrap();
        let next = store.reserve(request(c, "0.001", NOON)).await.unwrap();
        store.settle(next, y("0.001")).await.unwrap();
        store.settle(open.pop().unwrap(), y("0.001")).await.unwrap();
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_days() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let today = Day::of(NOON);
        let (two_ago, yesterday) = (today.add_days(-2), today.add_days(-1));
        let rows = [
            row(two_ago.start_ms(), None, "0.1", Outcome::Done),
            row(yesterday.start_ms() - 1, None, "0.2", Outcome::Done),
            row(yesterday.start_ms(), None, "0.3", Outcome::Done),
            row(today.start_ms() - 1, None, "0.4", Outcome::Done),
            row(NOON * 1000, None, "0.5", Outcome::Done),
        ];
        store.insert_ledger_rows(&rows).await.unwrap();
        let r = store.reserve(request(None, "0.01", NOON)).await.unwrap();
        let dropped = store.drop_days_before(yesterday).await.unwrap();
        assert_eq!(
            (dropped.ledger_rows, dropped.rollup_rows),
            (2, 1),
            "{}",
            engine.name
        );
        let usage = store.daily_usage(None, 10, today).await.unwrap();
        let days: Vec<(Day, Yuan)> = usage.iter().map(|u| (u.day, u.cost)).collect();
        assert_eq!(days, [(yesterday, y("0.7")), (today, y("0.5"))]);
        let left: Vec<Yuan> = store
            .recent(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.row.cost)
            .collect();
        assert_eq!(left, [y("0.5"), y("0.4"), y("0.3")]);
        // Today's budget counters survive.
        store.settle(r, y("0.01")).await.unwrap();
        assert_eq!(
            store.spending(None, NOON).await.unwrap().day_spent,
            y("0.01")
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_has_a_header_and_exact_yuan() {
    use futures::TryStreamExt;
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        let (code, _) = store.create_code(new_code("研发, team", Limits::default()), NOON).await.unwrap();
        let c = Some(code.id);
        let mut rows = vec![
            row(NOON * 1000, c, "0.000123", Outcome::Done),
            row(NOON * 1000 + 1, c, "1.5", Outcome::error(ErrorCode::Timeout)),
            LedgerRow {
                model: "odd,\"model\"".into(),
                first_token_ms: None,
                ..row(NOON * 1000 + 2, None, "0.000000000001", Outcome::Stopped)
            },
        ];
        // 2500 more rows sharing one millisecond: pages must neither skip nor repeat rows.
        rows.extend((0..2500).map(|_| row(NOON * 1000 + 3, None, "0.000001", Outcome::Done)));
        // And one the day before, outside the range.
        rows.push(row(NOV_26 * 1000 - 1, None, "9", Outcome::Done));
        store.insert_ledger_rows(&rows).await.unwrap();

        let chunks: Vec<String> = store.export_csv(None, Day::of(NOON), Day::of(NOON)).try_collect().await.unwrap();
        let csv = chunks.concat();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(format!("{}\n", lines[0]), streamai::store::ledger::CSV_HEADER);
        assert_eq!(lines.len(), 1 + 3 + 2500, "{}", engine.name);
        assert_eq!(
            lines[1],
            format!(
                "2026-11-26T12:00:00.000+08:00,2026-11-26,{},\"研发, team\",deepseek,deepseek-chat,key#1,123,45,6,provider,0.000123,250,1500,1,done",
                code.id
            )
        );
        assert!(lines[2].contains(",1.5,") && lines[2].ends_with(",error:timeout"));
        assert!(lines[3].contains(",\"odd,\"\"model\"\"\",") && lines[3].contains(",0.000000000001,,1500,1,stopped"), "{}", lines[3]);
        let total: u128 = lines[1..]
            .iter()
            .map(|l| {
                let yuan = l.rsplit(',').nth(4).unwrap();
                Yuan::parse(yuan).unwrap().0
            })
            .sum();
        assert_eq!(Yuan(total), y("1.502623000001"));

        let one_code: Vec<String> = store.export_csv(c, Day::of(NOON), Day::of(NOON)).try_collect().await.unwrap();
        assert_eq!(one_code.concat().lines().count(), 1 + 2);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_percentiles_come_from_the_rollup() {
    on_every_engine(async |engine: &Engine| {
        let store = engine.store().await;
        // 100 requests with first tokens at 10, 20, … 1000 ms, in two batches.
        let rows: Vec<LedgerRow> = (1..=100)
            .map(|i| LedgerRow {
                first_token_ms: Some(i * 10),
                ..row(NOON * 1000 + i as i64, None, "0.001", Outcome::Done)
            })
            .collect();
        store.insert_ledger_rows(&rows[..37]).await.unwrap();
        store.insert_ledger_rows(&rows[37..]).await.unwrap();
        let usage = store.daily_usage(None, 1, Day::of(NOON)).await.unwrap();
        let u = &usage[0];
        assert_eq!((u.requests, u.ttft_count, u.ttft_ms_max), (100, 100, 1000));
        assert_eq!(u.ttft_avg_ms(), Some(505));
        // p50 = 500 ms (bucket ≤ 500), p95 = 950 ms (bucket ≤ 1000).
        assert_eq!(u.ttft_percentile_ms(0.5), Some(500));
        assert_eq!(u.ttft_percentile_ms(0.95), Some(1000));
        assert_eq!(u.ttft_histogram.iter().sum::<u64>(), 100);
        store.close().await;
    })
    .await;
}
