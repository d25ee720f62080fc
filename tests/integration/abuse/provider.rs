//! Item 5: a misbehaving provider ends one stream with a clear frame, never the server.
//! Oversized lines, events and error bodies are `protocol` errors; keys are redacted
//! before any truncation; a provider that lingers after `finish_reason` gets a short
//! grace; an answer streaming past the total cap is ended. Each over HTTP/1.1 and over
//! HTTP/2 (h2c), where a stream is cut by a reset and its connection carries on.

use std::time::{Duration, Instant};

use streamai::fake_upstream::ANSWER;
use streamai::protocol::ErrorCode;

use crate::support::{harness, Failed, Harness};

const KEY: &str = "sk-abuse-provider-key-0000000001";

/// A server over each protocol to the provider, with `extra`, and the protocol's name as
/// the fake records it.
async fn over_each_protocol(extra: &[(&str, &str)]) -> Vec<(&'static str, Harness)> {
    let mut servers = Vec::new();
    for (http2, name) in [("0", "HTTP/1.1"), ("1", "HTTP/2.0")] {
        let mut vars = extra.to_vec();
        vars.push(("CUSTOM_HTTP2", http2));
        servers.push((name, harness(&[KEY], &vars).await));
    }
    servers
}

/// The next answer is whole, and every request went over `http`: over HTTP/2 on the one
/// connection, each fault having cut only its own stream.
async fn still_serves(h: &Harness, http: &str) {
    let streamed = h.ask("after the fault [[fake:deepseek]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
    let records = h.fake.records();
    assert!(records.iter().all(|r| r.http == http), "{http}");
    if http == "HTTP/2.0" {
        let ports: std::collections::BTreeSet<_> = records.iter().map(|r| r.client_port).collect();
        assert_eq!(
            ports.len(),
            1,
            "one connection for every request: {ports:?}"
        );
    }
}

#[tokio::test]
async fn an_oversized_line_or_event_is_a_protocol_error() {
    for (http, h) in over_each_protocol(&[]).await {
        oversized_line_or_event(&h, http).await;
        still_serves(&h, http).await;
    }
}

async fn oversized_line_or_event(h: &Harness, http: &str) {
    for marker in [
        "hugeline=2000000",
        "hugeline=1100000 huge_after=3",
        "hugeevent=1100000",
    ] {
        let started = Instant::now();
        let streamed = h.ask(&format!("{marker} [[fake:openai {marker}]]")).await;
        streamed.assert_well_formed();
        let Failed { code, message, .. } = streamed.error();
        assert_eq!(code, ErrorCode::Protocol, "{http} {marker}: {message}");
        assert!(message.contains("1024 KiB"), "{http}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{http} {marker}"
        );
        assert!(
            streamed.retries().is_empty(),
            "{http} {marker}: not retried"
        );
    }
}

#[tokio::test]
async fn an_oversized_error_body_is_a_protocol_error() {
    for (http, h) in over_each_protocol(&[]).await {
        let streamed = h.ask("[[fake:openai errbody=500:100000]]").await;
        streamed.assert_well_formed();
        let Failed { code, message, .. } = streamed.error();
        assert_eq!(code, ErrorCode::Protocol, "{http}: {message}");
        assert!(message.contains("64 KiB"), "{http}: {message}");
        assert!(!streamed.raw.contains(KEY));
        still_serves(&h, http).await;
    }
}

#[tokio::test]
async fn keys_are_redacted_before_the_message_is_cut() {
    for (http, h) in over_each_protocol(&[]).await {
        // A 400-byte error body whose message ends with the key, around the 300-char cut.
        for bytes in [330, 340, 350, 360] {
            let streamed = h
                .ask(&format!("{bytes} [[fake:openai errbody=400:{bytes}]]"))
                .await;
            streamed.assert_well_formed();
            // Not even a prefix of the key may reach the client.
            assert!(
                !streamed.raw.contains(&KEY[..12]),
                "{http} {bytes}: {}",
                streamed.raw
            );
        }
        still_serves(&h, http).await;
    }
}

#[tokio::test]
async fn a_provider_lingering_after_finish_gets_a_short_grace() {
    let extra = [
        ("LLM_TIMEOUT_SECS", "20"),
        ("STREAMAI_FINISH_GRACE_MS", "300"),
    ];
    for (http, h) in over_each_protocol(&extra).await {
        let started = Instant::now();
        let streamed = h.ask("[[fake:deepseek linger]]").await;
        let elapsed = started.elapsed();
        streamed.assert_well_formed();
        assert_eq!(streamed.text(), ANSWER);
        assert_eq!(streamed.done().finish_reason, "stop");
        assert!(
            elapsed < Duration::from_secs(3),
            "{http}: done after {elapsed:?}, not the idle timeout"
        );
        still_serves(&h, http).await;
    }
}

#[tokio::test]
async fn an_answer_longer_than_the_cap_is_ended() {
    for (http, h) in over_each_protocol(&[("STREAMAI_MAX_STREAM_SECS", "1")]).await {
        let started = Instant::now();
        let streamed = h.ask("[[fake:openai chunks=1000 delay=20]]").await;
        streamed.assert_well_formed();
        let Failed { code, message, .. } = streamed.error();
        assert_eq!(code, ErrorCode::Timeout, "{http}: {message}");
        assert!(message.contains("1 秒"), "{http}: {message}");
        assert!(!streamed.text().is_empty(), "the text sent so far stays");
        assert!(started.elapsed() < Duration::from_secs(3));
        still_serves(&h, http).await;
    }
}
