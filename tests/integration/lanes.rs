//! The connections to a provider: HTTP/2 when asked for, and answers spread over
//! connections so that a server's cap on one connection's streams never holds one back.

use streamai::fake_upstream::{FakeUpstream, Mode, Outcome};

use crate::cuts::start_answer;
use crate::support::{fake, harness_with, test_store};

#[tokio::test]
async fn http2_without_tls_only_when_asked() {
    for (http2, expected) in [("1", "HTTP/2.0"), ("0", "HTTP/1.1")] {
        let h = harness_with(
            fake().await,
            test_store().await,
            &["k"],
            &[("CUSTOM_HTTP2", http2)],
        )
        .await;
        let answer = h.ask("[[fake:openai]] 你好").await;
        assert_eq!(answer.text(), streamai::fake_upstream::ANSWER);
        let records = h.fake.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].http, expected, "CUSTOM_HTTP2={http2}");
    }
}

/// A provider allowing 100 streams per connection (nginx allows 128): 105 answers open
/// at once each start streaming, none waits for another to end. Every answer stalls after
/// its first chunk (for longer than the test runs), so an answer held back by the cap
/// could only start once another had ended.
#[tokio::test]
async fn answers_past_one_connections_stream_cap_all_start() {
    let mode = Mode::Scripted("openai".into());
    let fake = FakeUpstream::start_with(([127, 0, 0, 1], 0).into(), mode, 100)
        .await
        .unwrap();
    let h = harness_with(
        fake,
        test_store().await,
        &["k"],
        &[("CUSTOM_HTTP2", "1"), ("LLM_TIMEOUT_SECS", "20")],
    )
    .await;
    let base = h.url("");
    let http = reqwest::Client::new();
    // One after another, as answers accrue: the first connection is up before the rest
    // ask (all at once, a client may race to open several before it knows the protocol).
    let mut answers = Vec::new();
    for i in 0..105 {
        let prompt = format!("[[fake:openai stall_after=1]] 第{i}个");
        answers.push(start_answer(&http, &base, &prompt).await);
    }
    assert_eq!(answers.len(), 105);
    let records = h.fake.records();
    assert_eq!(records.len(), 105, "no answer was retried");
    assert!(records.iter().all(|r| r.http == "HTTP/2.0"));
    let ended = records
        .iter()
        .filter(|r| r.outcome != Outcome::Streaming)
        .count();
    assert_eq!(ended, 0, "every answer started while all were open");
}
