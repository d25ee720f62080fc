//! Team use through the real server: access codes at the door, budgets that cannot be
//! overdrawn by concurrent streams (on SQLite, and on Postgres shared by two servers),
//! and ledger rows exact to the pico-yuan for done, error, stop and refusal.

use std::time::Duration;

use futures::future::join_all;
use sqlx::Connection;
use streamai::fake_upstream::ANSWER;
use streamai::protocol::{Frame, RejectBody, Yuan};
use streamai::store::{unix_now, Limits, NewCode, Outcome, Store};

use crate::support::{harness, harness_on, Harness, Streamed};

const KEY: &str = "sk-team-test-key-000000001";

/// A code with `limits`; returns its id and plaintext.
async fn code(h: &Harness, name: &str, limits: Limits) -> (i64, String) {
    let new = NewCode {
        name: name.into(),
        admin: false,
        limits,
    };
    let (info, plaintext) = h.state.store.create_code(new, unix_now()).await.unwrap();
    (info.id, plaintext)
}

fn refusal(streamed: &Streamed) -> RejectBody {
    serde_json::from_str(&streamed.raw)
        .unwrap_or_else(|e| panic!("not a JSON refusal ({e}): {}", streamed.raw))
}

/// A priced question whose worst case is `max_tokens` of output at ¥3 per million.
fn priced(prompt: &str, max_tokens: u32) -> String {
    serde_json::json!({
        "model": "fake-priced",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string()
}

fn done_cost(streamed: &Streamed) -> Yuan {
    Yuan::parse(&streamed.done().cost.total).unwrap()
}

#[tokio::test]
async fn codes_are_checked_at_the_door() {
    let h = harness(&[KEY], &[]).await;
    // No code yet: the two-command start stays open on loopback.
    assert_eq!(h.ask("[[fake:openai]]").await.text(), ANSWER);

    let (id, good) = code(&h, "小王", Limits::default()).await;
    let check = |streamed: &Streamed, code: &str| {
        assert_eq!(streamed.status, 401, "{}", streamed.raw);
        let body = refusal(streamed);
        assert_eq!(body.error.code, code);
        assert!(
            body.error.message.contains("访问码"),
            "{}",
            body.error.message
        );
    };
    let body = priced("hi [[fake:openai]]", 100);
    check(&h.post_as(None, &body).await, "auth_required");
    check(
        &h.post_as(Some("sk-liu-wrong"), &body).await,
        "auth_invalid",
    );
    let served = h.post_as(Some(&good), &body).await;
    served.assert_well_formed();
    assert_eq!(served.text(), ANSWER);

    // A server function is behind the same door.
    let info = h
        .raw_client()
        .post(h.url("/api/server_info"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401);

    // Revoked: refused on the very next request.
    h.state.store.revoke(id, unix_now()).await.unwrap();
    check(&h.post_as(Some(&good), &body).await, "auth_revoked");

    let expired = Limits {
        expires_at: Some(unix_now() - 1),
        ..Limits::default()
    };
    let (_, old) = code(&h, "过期", expired).await;
    check(&h.post_as(Some(&old), &body).await, "auth_expired");
}

/// Fires `n` slow priced streams at once with `code`; returns (admitted, refused).
async fn flood(servers: &[&Harness], code: &str, n: usize) -> (Vec<Streamed>, Vec<Streamed>) {
    let asks = (0..n).map(|i| {
        let h = servers[i % servers.len()];
        let body = priced(&format!("第{i:02}问 [[fake:openai delay=80]]"), 1000);
        async move { h.post_as(Some(code), &body).await }
    });
    join_all(asks)
        .await
        .into_iter()
        .partition(|s| s.status == 200)
}

/// Checks a flood against a ¥0.05 daily budget: each worst case is ≈ ¥0.00302 (about 10
/// prompt tokens at ¥2/M plus 1000 at ¥3/M), so exactly 16 fit, and what was charged —
/// the sum of the answers' exact costs — never exceeds the budget.
async fn check_budget_flood(store: &Store, servers: &[&Harness], code_id: i64, code: &str) {
    let (admitted, refused) = flood(servers, code, 50).await;
    assert_eq!(admitted.len(), 16, "admitted while the reservations fit");
    for streamed in &refused {
        assert_eq!(streamed.status, 402, "{}", streamed.raw);
        let message = refusal(streamed).error.message;
        assert!(
            message.contains("上限 ¥0.05") && message.contains("重置"),
            "{message}"
        );
    }
    let charged = admitted
        .iter()
        .map(done_cost)
        .fold(Yuan(0), |sum, cost| sum + cost);
    // Each settle runs just after its stream's last frame: wait for the last one.
    let mut spending = store.spending(Some(code_id), unix_now()).await.unwrap();
    for _ in 0..40 {
        if spending.day_reserved == Yuan(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        spending = store.spending(Some(code_id), unix_now()).await.unwrap();
    }
    assert_eq!(spending.day_reserved, Yuan(0), "every reservation settled");
    assert_eq!(
        spending.day_spent, charged,
        "the budget holds exactly what was charged"
    );
    assert!(charged <= Yuan::parse("0.05").unwrap());
}

fn fifty_fen() -> Limits {
    Limits {
        daily: Yuan::parse("0.05"),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_never_overdraw_a_daily_budget() {
    let h = harness(&[KEY], &[]).await;
    let (id, plaintext) = code(&h, "预算", fifty_fen()).await;
    check_budget_flood(&h.state.store, &[&h], id, &plaintext).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_share_one_budget() {
    let Some(url) = fresh_postgres().await else {
        return; // TEST_DATABASE_URL is not set: the SQLite tests above still ran.
    };
    let a = harness_on(Store::connect(&url).await.unwrap(), &[KEY], &[]).await;
    let b = harness_on(Store::connect(&url).await.unwrap(), &[KEY], &[]).await;
    let (id, plaintext) = code(&a, "共享预算", fifty_fen()).await;
    check_budget_flood(&b.state.store, &[&a, &b], id, &plaintext).await;
}

/// A database of its own on the `TEST_DATABASE_URL` server, if one is given.
async fn fresh_postgres() -> Option<String> {
    let server = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    sqlx::any::install_default_drivers();
    let name = format!("team_{}_{}", std::process::id(), unix_now());
    let mut conn = sqlx::AnyConnection::connect(&server).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = &server[..server.rfind('/').expect("a database in TEST_DATABASE_URL")];
    Some(format!("{base}/{name}"))
}

#[tokio::test]
async fn ledger_rows_are_exact_for_done_error_stop_and_refusal() {
    let h = harness(&[KEY], &[]).await;
    let limits = Limits {
        daily: Yuan::parse("0.01"),
        ..Limits::default()
    };
    let (id, plaintext) = code(&h, "账本", limits).await;
    let code = Some(plaintext.as_str());
    let done = h.post_as(code, &priced("一 [[fake:openai]]", 100)).await;
    let error = h
        .post_as(code, &priced("二 [[fake:openai drop_after=3]]", 100))
        .await;
    let Frame::Error { cost, .. } = error.last() else {
        panic!("{:?}", error.last());
    };
    let error_cost = Yuan::parse(&cost.as_ref().unwrap().total).unwrap();
    stop_mid_answer(&h, &plaintext).await;
    let refused = h.post_as(code, &priced("四 [[fake:openai]]", 5000)).await;
    assert_eq!(refused.status, 402);

    h.state.ledger.flush().await.unwrap();
    let rows = h.state.store.recent(Some(id), 10).await.unwrap();
    let mut rows: Vec<_> = rows.into_iter().map(|e| e.row).collect();
    rows.sort_by_key(|r| r.at_ms);
    let outcomes: Vec<String> = rows.iter().map(|r| r.outcome.to_string()).collect();
    assert_eq!(
        outcomes,
        ["done", "error:disconnected", "stopped", "refused:budget"]
    );
    assert_eq!(rows[0].cost, done_cost(&done));
    assert_eq!(rows[1].cost, error_cost);
    assert!(
        rows[2].cost > Yuan(0),
        "a stopped answer is billed for what it used"
    );
    assert_eq!(rows[3].cost, Yuan(0));
    assert!(rows
        .iter()
        .all(|r| r.code_id == Some(id) && r.model == "fake-priced"));
    assert_eq!(rows[0].key_id.as_deref(), Some("key#1"));
    assert_eq!(rows[3].outcome, Outcome::Refused("budget".into()));
    let spending = h.state.store.spending(Some(id), unix_now()).await.unwrap();
    let billed = rows.iter().fold(Yuan(0), |sum, r| sum + r.cost);
    assert_eq!(
        spending.day_spent, billed,
        "the budget and the ledger agree"
    );
}

/// Starts a slow answer, reads a little of it, and stops it.
async fn stop_mid_answer(h: &Harness, code: &str) {
    let mut response = h
        .raw_client()
        .post(h.url("/api/chat/stream"))
        .header("content-type", "application/json")
        .bearer_auth(code)
        .body(priced("三 [[fake:openai delay=100 chunks=50]]", 100))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("\"chunk\"") {
        let bytes = response.chunk().await.unwrap().expect("the answer streams");
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    let id = seen
        .split('"')
        .find(|part| part.starts_with("chat-"))
        .expect("the start frame names the answer");
    assert_eq!(h.stop_answer_as(Some(code), id).await, 200);
    let rest = response.text().await.unwrap();
    assert!(rest.contains("\"finish_reason\":\"stopped\""), "{rest}");
    // The relay reports, and the settle task records the row.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let open = h.state.store.open_reservations(None).await.unwrap();
        if open == 0 {
            return;
        }
    }
    panic!("the stopped answer's reservation was never settled");
}
