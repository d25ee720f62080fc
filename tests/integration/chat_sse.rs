//! `POST /api/chat/stream` against the fake upstream over real sockets: every provider
//! shape, framing, retries, key rotation, failures mid-stream, cancellation, bad input.

use std::time::{Duration, Instant};

use streamai::fake_upstream::{pieces, ANSWER, REASONING};
use streamai::protocol::{ErrorCode, Frame, UsageSource};

use crate::support::{harness, Failed, Finished, Streamed};

const KEY: &str = "sk-fake-integration-key-0001";

fn done_usage(streamed: &Streamed) -> (u32, u32, UsageSource) {
    let usage = streamed.done().usage;
    (usage.prompt_tokens, usage.completion_tokens, usage.source)
}

#[tokio::test]
async fn every_provider_shape_reassembles_byte_for_byte() {
    let h = harness(&[KEY], &[]).await;
    for shape in [
        "openai",
        "deepseek",
        "siliconflow",
        "dashscope",
        "ark",
        "hunyuan",
        "reasoner",
    ] {
        let prompt = format!("hello [[fake:{shape}]]");
        let streamed = h.ask(&prompt).await;
        assert_eq!(streamed.status, 200, "{shape}");
        streamed.assert_well_formed();
        assert_eq!(streamed.text(), ANSWER, "{shape}");
        let (prompt_tokens, completion_tokens, source) = done_usage(&streamed);
        assert_eq!(
            source,
            UsageSource::Provider,
            "{shape}: usage reported by the provider wins"
        );
        assert_eq!(prompt_tokens, prompt.chars().count() as u32, "{shape}");
        let expected_chunks = pieces(ANSWER).len()
            + if shape == "reasoner" {
                pieces(REASONING).len()
            } else {
                0
            };
        // SiliconFlow repeats a cumulative usage on every chunk: the last one, not the sum.
        assert_eq!(completion_tokens, expected_chunks as u32, "{shape}");
    }
    let reasoner = h.ask("hi [[fake:reasoner]]").await;
    assert_eq!(reasoner.reasoning(), REASONING);
    assert!(
        matches!(reasoner.frames[1], Frame::Reasoning { seq: 0, .. }),
        "reasoning comes first"
    );
}

#[tokio::test]
async fn crlf_keep_alives_and_reads_split_inside_characters() {
    let h = harness(&[KEY], &[]).await;
    for marker in [
        "deepseek crlf",
        "openai split",
        "deepseek crlf split keepalive=3",
        "hunyuan split",
    ] {
        let streamed = h.ask(&format!("[[fake:{marker}]]")).await;
        streamed.assert_well_formed();
        assert_eq!(streamed.text(), ANSWER, "{marker}");
    }
}

/// A keep-alive comment goes out whenever the interval passes without a frame, and
/// never while frames flow faster than that.
#[tokio::test]
async fn keep_alive_comments_only_in_silences() {
    let h = harness(
        &[KEY],
        &[("STREAMAI_KEEP_ALIVE_SECS", "1"), ("LLM_TIMEOUT_SECS", "5")],
    )
    .await;
    let slow = h.ask("[[fake:openai chunks=2 delay=2300]]").await;
    slow.assert_well_formed();
    let comments = slow.raw.matches("keep-alive").count();
    assert!(
        (2..=5).contains(&comments),
        "two silences of 2.3 s with a 1 s interval: {comments} keep-alives in {:?}",
        slow.raw
    );
    let flowing = h.ask("[[fake:openai chunks=25 delay=100]]").await;
    flowing.assert_well_formed();
    assert_eq!(
        flowing.raw.matches("keep-alive").count(),
        0,
        "frames every 100 ms: {:?}",
        flowing.raw
    );
}

#[tokio::test]
async fn response_headers_and_wire_framing() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai]]").await;
    let header = |name: &str| {
        streamed
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/event-stream");
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("x-accel-buffering"), "no");
    assert_eq!(header("content-encoding"), "");
    assert!(
        streamed.raw.starts_with("id: 0\ndata: {\"type\":\"start\""),
        "{}",
        &streamed.raw[..60]
    );
    // Each frame: its index in the answer as the event id (for resuming), one data line.
    for (index, event) in streamed.raw.split_terminator("\n\n").enumerate() {
        let expected = format!("id: {index}\ndata: {{");
        assert!(
            event.starts_with(&expected) && event.matches('\n').count() == 1,
            "one id and one data line per frame: {event:?}"
        );
    }
}

#[tokio::test]
async fn missing_usage_falls_back_to_tiktoken_and_cost_is_exact() {
    let h = harness(&[KEY], &[]).await;
    let prompt = "[[fake:openai no_usage]]";
    let streamed = h.ask(prompt).await;
    let (prompt_tokens, completion_tokens, source) = done_usage(&streamed);
    assert_eq!(source, UsageSource::Tiktoken);
    assert_eq!(completion_tokens, streamai::llm::tokens::count_text(ANSWER));
    // Counted only now (a short prompt fits its window uncounted), and exactly.
    let message = streamai::protocol::ChatMessage {
        role: streamai::protocol::Role::User,
        content: prompt.into(),
    };
    assert_eq!(
        prompt_tokens,
        streamai::llm::tokens::count_prompt(&[message])
    );
    let Finished {
        cost,
        timing,
        finish_reason,
        ..
    } = streamed.done();
    assert_eq!(cost.currency, "CNY");
    assert_eq!(finish_reason, "stop");
    assert!(timing.first_token_ms.is_some());
    // `fake-model` is declared free by the deployer (CUSTOM_FREE_MODELS).
    assert_eq!(cost.total, "0");
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_is_waited_out() {
    let h = harness(&[KEY], &[]).await;
    let started = Instant::now();
    let streamed = h
        .ask("[[fake:deepseek status=429 times=1 retry_after=1]]")
        .await;
    let elapsed = started.elapsed();
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
    let retries = streamed.retries();
    assert_eq!(retries.len(), 1);
    let first = &retries[0];
    assert_eq!(
        (first.attempt, first.max_retries, first.wait_ms),
        (1, 3, 1000),
        "{retries:?}"
    );
    assert!(elapsed >= Duration::from_secs(1), "waited {elapsed:?}");
    assert_eq!(h.fake.records().len(), 2);
}

#[tokio::test]
async fn a_429_with_retry_after_as_a_date_is_waited_out() {
    let h = harness(&[KEY], &[]).await;
    let started = Instant::now();
    let streamed = h
        .ask("[[fake:openai status=429 times=1 retry_after_date=1]]")
        .await;
    assert_eq!(streamed.text(), ANSWER);
    let wait_ms = streamed.retry_waits()[0];
    // The date is rounded to whole seconds: between one and two seconds ahead.
    assert!((500..=2100).contains(&wait_ms), "{wait_ms}");
    assert!(started.elapsed() >= Duration::from_millis(wait_ms));
}

#[tokio::test]
async fn a_429_without_retry_after_uses_the_backoff() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:siliconflow status=429 times=2]]").await;
    assert_eq!(streamed.text(), ANSWER);
    let waits = streamed.retry_waits();
    assert_eq!(waits.len(), 2);
    assert!(
        waits.iter().all(|w| (50..=200).contains(w)),
        "{waits:?} within LLM_RETRY_MIN_MS..MAX_MS"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_at_once_saying_when() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai status=429 retry_after=120]]").await;
    streamed.assert_well_formed();
    assert!(streamed.retries().is_empty());
    let Failed {
        code,
        message,
        retryable,
    } = streamed.error();
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(message.contains("120 秒"), "{message}");
    assert!(retryable);
    assert_eq!(h.fake.records().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:siliconflow status=503 times=2]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
    assert_eq!(streamed.retries().len(), 2);
    let html = h.ask("[[fake:openai status=502 html times=1]]").await;
    assert_eq!(html.text(), ANSWER);
    let reason = html.retries()[0].reason;
    assert!(reason.contains("502"), "{reason}");
}

#[tokio::test]
async fn retries_are_bounded_then_one_error() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai status=500]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.retries().len(), 3, "LLM_MAX_RETRIES = 3");
    assert_eq!(streamed.error().code, ErrorCode::Upstream);
    assert_eq!(h.fake.records().len(), 4);
    let bad_request = h.ask("[[fake:openai status=400]]").await;
    assert!(bad_request.retries().is_empty(), "a 400 is not retried");
}

#[tokio::test]
async fn a_drop_mid_stream_keeps_the_text_and_is_never_retried() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai drop_after=5]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), pieces(ANSWER)[..5].concat());
    let Frame::Error {
        code,
        usage,
        cost,
        retryable,
        ..
    } = streamed.last()
    else {
        panic!("expected error, got {:?}", streamed.last())
    };
    assert_eq!(*code, ErrorCode::Disconnected);
    assert!(retryable);
    assert_eq!(
        usage.as_ref().map(|u| u.source),
        Some(UsageSource::Tiktoken),
        "partial usage is reported"
    );
    assert!(cost.is_some());
    assert_eq!(h.fake.records().len(), 1, "text reached the user: no retry");
}

#[tokio::test]
async fn a_drop_before_any_text_is_retried() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai drop_after=0]]").await;
    assert_eq!(streamed.retries().len(), 3);
    assert_eq!(streamed.error().code, ErrorCode::Disconnected);
}

#[tokio::test]
async fn a_stall_ends_after_the_idle_timeout() {
    let h = harness(&[KEY], &[]).await;
    let started = Instant::now();
    let streamed = h.ask("[[fake:deepseek stall_after=3]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), pieces(ANSWER)[..3].concat());
    assert_eq!(streamed.error().code, ErrorCode::Timeout);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "LLM_TIMEOUT_SECS = 2"
    );
}

#[tokio::test]
async fn an_error_object_inside_a_200_stream_ends_it() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai error_after=4]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), pieces(ANSWER)[..4].concat());
    let Failed { code, message, .. } = streamed.error();
    assert_eq!(code, ErrorCode::Upstream);
    assert!(message.contains("overloaded"), "{message}");
}

#[tokio::test]
async fn a_malformed_line_is_skipped() {
    let h = harness(&[KEY], &[]).await;
    let streamed = h.ask("[[fake:openai malformed]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_an_error_frame() {
    let h = harness(&[KEY], &[]).await;
    let state = h.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        state.begin_shutdown();
    });
    let streamed = h.ask("[[fake:openai delay=50]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.error().code, ErrorCode::Shutdown);
    assert!(!streamed.text().is_empty());
}

#[tokio::test]
async fn refused_keys_rotate_and_rest() {
    let keys = [
        "sk-bad-key-aaaaaaaa1",
        "sk-good-key-bbbbbbb2",
        "sk-good-key-ccccccc3",
    ];
    let h = harness(&keys, &[]).await;
    for n in 0..3 {
        let streamed = h.ask(&format!("question {n} [[fake:openai]]")).await;
        assert_eq!(streamed.text(), ANSWER);
        assert!(
            !streamed.raw.contains("sk-bad-key"),
            "no key in any response"
        );
    }
    let used: Vec<String> = h.fake.records().iter().map(|r| r.key.clone()).collect();
    // The refused key is tried once, then parked; the others take turns.
    assert_eq!(used, [keys[0], keys[1], keys[2], keys[1]]);
}

#[tokio::test]
async fn a_rate_limited_account_cools_down_and_another_accounts_key_answers_at_once() {
    let keys = ["sk-busy-key-aaaaaaa1", "sk-good-key-bbbbbbb2"];
    let accounts = [
        ("CUSTOM_API_KEY_1_ACCOUNT", "a"),
        ("CUSTOM_API_KEY_2_ACCOUNT", "b"),
    ];
    let h = harness(&keys, &accounts).await;
    let first = h.ask("one [[fake:openai]]").await;
    assert_eq!(first.text(), ANSWER);
    assert_eq!(
        first.retry_waits(),
        [0],
        "another account's key is ready: rotate without waiting"
    );
    let second = h.ask("two [[fake:openai]]").await;
    assert!(second.retries().is_empty(), "the cooling key is skipped");
    let used: Vec<String> = h.fake.records().iter().map(|r| r.key.clone()).collect();
    assert_eq!(used, [keys[0], keys[1], keys[1]]);
}

#[tokio::test]
async fn when_no_key_is_usable_the_error_says_so_without_the_key() {
    let h = harness(&["sk-bad-key-only-one-1", "sk-broke-key-quota-02"], &[]).await;
    let streamed = h.ask("[[fake:openai]]").await;
    streamed.assert_well_formed();
    let failed = streamed.error();
    assert_eq!(failed.code, ErrorCode::AuthFailed);
    assert!(!failed.retryable);
    assert!(!streamed.raw.contains("sk-bad-key-only-one-1"));
    assert!(!streamed.raw.contains("sk-broke-key-quota-02"));
    assert_eq!(
        h.fake.records().len(),
        2,
        "each key tried once, then parked"
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_streaming_with_its_reason() {
    let h = harness(&[KEY], &[("STREAMAI_MAX_BODY_BYTES", "4096")]).await;
    let hi = r#"[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "invalid_json"),
        (r#"{"messages":[]}"#.into(), 400, "no_messages"),
        (
            r#"{"messages":[{"role":"bot","content":"x"}]}"#.into(),
            400,
            "unknown_role",
        ),
        (
            r#"{"messages":[{"role":"user","content":""}]}"#.into(),
            400,
            "empty_content",
        ),
        (
            format!(r#"{{"messages":{hi},"temperature":2.5}}"#),
            400,
            "invalid_temperature",
        ),
        (
            format!(r#"{{"messages":{hi},"top_p":0}}"#),
            400,
            "invalid_top_p",
        ),
        (
            format!(r#"{{"messages":{hi},"max_tokens":0}}"#),
            400,
            "invalid_max_tokens",
        ),
        (
            format!(r#"{{"messages":{hi},"max_tokens":70000}}"#),
            400,
            "invalid_max_tokens",
        ),
        (
            format!(r#"{{"messages":{hi},"provider":"nope"}}"#),
            400,
            "unknown_provider",
        ),
        (
            format!(
                r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
                "长".repeat(2000)
            ),
            413,
            "body_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let streamed = h.post(&body).await;
        assert_eq!(streamed.status, status, "{code}: {}", streamed.raw);
        let json: serde_json::Value = serde_json::from_str(&streamed.raw).unwrap();
        assert_eq!(json["error"]["code"], code, "{}", streamed.raw);
        assert!(json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let response = h
        .raw_client()
        .post(h.url("/api/chat/stream"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    assert!(
        h.fake.records().is_empty(),
        "nothing bad reached the provider"
    );
}

#[tokio::test]
async fn the_one_shot_chat_function_uses_the_same_path() {
    let h = harness(&[KEY], &[]).await;
    let body = serde_json::json!({"request": {"messages": [{"role": "user", "content": "[[fake:deepseek status=503 times=1]]"}], "temperature": 0}});
    let response = h
        .raw_client()
        .post(h.url("/api/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let completion: streamai::api::Completion = response.json().await.unwrap();
    assert_eq!(completion.content, ANSWER);
    assert_eq!(completion.usage.source, UsageSource::Provider);
    assert_eq!(h.fake.records()[1].body["temperature"], 0.0);

    let bad = serde_json::json!({"request": {"messages": []}});
    let response = h
        .raw_client()
        .post(h.url("/api/chat"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("no_messages"));
}

#[tokio::test]
async fn requests_carry_the_configured_parameters() {
    let h = harness(&[KEY], &[]).await;
    h.ask("[[fake:openai]]").await;
    let with_seed = serde_json::json!({"messages": [{"role": "user", "content": "x"}], "seed": 42, "top_p": 0.9, "max_tokens": 100});
    h.post(&with_seed.to_string()).await;
    let records = h.fake.records();
    let sent = &records[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["temperature"].as_f64().map(|t| (t * 10.0).round()),
        Some(8.0)
    );
    assert_eq!(sent["max_tokens"], 65535);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert!(
        sent.get("seed").is_none() && sent.get("top_p").is_none(),
        "off unless set: {sent}"
    );
    assert_eq!(records[0].key, KEY);
    let sent = &records[1].body;
    assert_eq!(
        (sent["seed"].as_i64(), sent["max_tokens"].as_u64()),
        (Some(42), Some(100))
    );
}

#[tokio::test]
async fn with_no_key_the_offline_demo_answers() {
    let mut config = crate::support::llm_config(&[]);
    let _demo = streamai::server::start_demo_if_needed(&mut config)
        .await
        .unwrap()
        .expect("demo starts");
    let state = crate::support::state_with(config).await;
    let job = state
        .llm
        .resolve(
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"你好"}]}"#).unwrap(),
        )
        .await
        .unwrap();
    use futures::StreamExt;
    let frames: Vec<Frame> = state
        .llm
        .stream(job, state.shutdown_signal())
        .collect()
        .await;
    let text: String = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Chunk { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        text.contains("离线演示模型") && text.contains("你好"),
        "{text}"
    );
    let Some(Frame::Done { cost, usage, .. }) = frames.last() else {
        panic!("{:?}", frames.last())
    };
    assert_eq!(usage.source, UsageSource::Provider);
    assert_ne!(cost.total, "0", "the demo is priced like DeepSeek-V3.2");
}
