//! The connections to a provider: HTTP/2 when asked for, and answers spread over
//! connections so that a server's cap on one connection's streams never holds one back.

use std::collections::BTreeSet;
use std::time::Duration;

use streamai::fake_upstream::{Outcome, Record};

use crate::cuts::start_answer;
use crate::support::{fake, fake_with, harness_with, test_store, Harness};

#[tokio::test]
async fn http2_without_tls_only_when_asked() {
    for (http2, expected) in [("1", "HTTP/2.0"), ("0", "HTTP/1.1")] {
        let vars = [("CUSTOM_HTTP2", http2)];
        let h = harness_with(fake().await, test_store().await, &["k"], &vars).await;
        let answer = h.ask("[[fake:openai]] 你好").await;
        assert_eq!(answer.text(), streamai::fake_upstream::ANSWER);
        let records = h.fake.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].http, expected, "CUSTOM_HTTP2={http2}");
    }
}

/// Opens `count` answers one after another, as answers accrue (all at once, a client may
/// race to open several connections before it knows the protocol), each stalling after
/// its first chunk for longer than the test runs. Each must start within 5 s: one held
/// back by a connection's stream cap could only start once another had ended.
async fn open_stalled(h: &Harness, count: usize) -> Vec<(String, reqwest::Response)> {
    let (http, base) = (h.raw_client(), h.url(""));
    let mut answers = Vec::new();
    for i in 0..count {
        let prompt = format!("[[fake:openai stall_after=1]] 第{i}个");
        let started =
            tokio::time::timeout(Duration::from_secs(5), start_answer(http, &base, &prompt));
        let answer = started.await.unwrap_or_else(|_| {
            panic!("answer {i} did not start: held back by a connection's stream cap?")
        });
        answers.push(answer);
    }
    answers
}

fn connections(records: &[Record]) -> BTreeSet<u16> {
    records.iter().map(|r| r.client_port).collect()
}

/// A provider allowing 100 streams per connection (nginx allows 128): 105 answers open at
/// once each start, over two connections. Stopped, they give their places back: 105 more
/// use the same two connections.
#[tokio::test]
async fn answers_past_one_connections_stream_cap_all_start() {
    let fake = fake_with(100).await;
    let vars = [("CUSTOM_HTTP2", "1"), ("LLM_TIMEOUT_SECS", "60")];
    let h = harness_with(fake, test_store().await, &["k"], &vars).await;

    let answers = open_stalled(&h, 105).await;
    let records = h.fake.records();
    assert_eq!(records.len(), 105, "no answer was retried");
    assert!(records.iter().all(|r| r.http == "HTTP/2.0"));
    assert!(records.iter().all(|r| r.outcome == Outcome::Streaming));
    let first = connections(&records);
    assert_eq!(
        first.len(),
        2,
        "100 answers on one connection, 5 on a second"
    );

    for (id, _) in &answers {
        assert_eq!(h.stop_answer(id).await, 200);
    }
    drop(answers);
    // Each stopped answer lets go of its provider stream, and gives its place back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h
        .fake
        .records()
        .iter()
        .any(|r| r.outcome == Outcome::Streaming)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answers did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _again = open_stalled(&h, 105).await;
    assert_eq!(
        connections(&h.fake.records()),
        first,
        "places were given back"
    );
}

/// `{ID}_STREAMS_PER_CONNECTION` for a server allowing fewer streams than 100: 7 answers
/// on a server allowing 3 per connection open three connections.
#[tokio::test]
async fn a_lower_cap_is_configurable() {
    let fake = fake_with(3).await;
    let vars = [
        ("CUSTOM_HTTP2", "1"),
        ("CUSTOM_STREAMS_PER_CONNECTION", "3"),
        ("LLM_TIMEOUT_SECS", "60"),
    ];
    let h = harness_with(fake, test_store().await, &["k"], &vars).await;
    let _answers = open_stalled(&h, 7).await;
    assert_eq!(connections(&h.fake.records()).len(), 3);
}
