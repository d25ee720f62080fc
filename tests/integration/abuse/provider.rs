//! Item 5: a misbehaving provider ends one stream with a clear frame, never the server.
//! Oversized lines, events and error bodies are `protocol` errors; keys are redacted
//! before any truncation; a provider that lingers after `finish_reason` gets a short
//! grace; an answer streaming past the total cap is ended.

use std::time::{Duration, Instant};

use streamai::fake_upstream::ANSWER;
use streamai::protocol::ErrorCode;

use crate::support::{harness, Failed, Harness};

const KEY: &str = "sk-abuse-provider-key-0000000001";

async fn still_serves(h: &Harness) {
    let streamed = h.ask("after the fault [[fake:deepseek]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
}

#[tokio::test]
async fn an_oversized_line_or_event_is_a_protocol_error() {
    let h = harness(&[KEY], &[]).await;
    for marker in [
        "hugeline=2000000",
        "hugeline=1100000 huge_after=3",
        "hugeevent=1100000",
    ] {
        let started = Instant::now();
        let streamed = h.ask(&format!("{marker} [[fake:openai {marker}]]")).await;
        streamed.assert_well_formed();
        let Failed { code, message, .. } = streamed.error();
        assert_eq!(code, ErrorCode::Protocol, "{marker}: {message}");
        assert!(message.contains("1024 KiB"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(2), "{marker}");
        assert!(streamed.retries().is_empty(), "{marker}: not retried");
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn an_oversized_error_body_is_a_protocol_error() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai errbody=500:100000]]").await;
    streamed.assert_well_formed();
    let Failed { code, message, .. } = streamed.error();
    assert_eq!(code, ErrorCode::Protocol, "{message}");
    assert!(message.contains("64 KiB"), "{message}");
    assert!(!streamed.raw.contains(KEY));
    still_serves(&h).await;
}

#[tokio::test]
async fn keys_are_redacted_before_the_message_is_cut() {
    let h = harness(&[KEY], &[]).await;
    // A 400-byte error body whose message ends with the key, around the 300-char cut.
    for bytes in [330, 340, 350, 360] {
        let streamed = h
            .ask(&format!("{bytes} [[fake:openai errbody=400:{bytes}]]"))
            .await;
        streamed.assert_well_formed();
        // Not even a prefix of the key may reach the client.
        assert!(
            !streamed.raw.contains(&KEY[..12]),
            "{bytes}: {}",
            streamed.raw
        );
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn a_provider_lingering_after_finish_gets_a_short_grace() {
    let extra = [
        ("LLM_TIMEOUT_SECS", "20"),
        ("STREAMAI_FINISH_GRACE_MS", "300"),
    ];
    let h = harness(&[KEY], &extra).await;
    let started = Instant::now();
    let streamed = h.ask("[[fake:deepseek linger]]").await;
    let elapsed = started.elapsed();
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
    assert_eq!(streamed.done().finish_reason, "stop");
    assert!(
        elapsed < Duration::from_secs(3),
        "done after {elapsed:?}, not the idle timeout"
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn an_answer_longer_than_the_cap_is_ended() {
    let h = harness(&[KEY], &[("STREAMAI_MAX_STREAM_SECS", "1")]).await;
    let started = Instant::now();
    let streamed = h.ask("[[fake:openai chunks=1000 delay=20]]").await;
    streamed.assert_well_formed();
    let Failed { code, message, .. } = streamed.error();
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(message.contains("1 秒"), "{message}");
    assert!(!streamed.text().is_empty(), "the text sent so far stays");
    assert!(started.elapsed() < Duration::from_secs(3));
    still_serves(&h).await;
}
