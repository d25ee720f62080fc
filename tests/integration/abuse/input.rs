//! Item 2 (the request's content): too many messages and prompts beyond the model's
//! context window are refused with a 400 naming the limit in Chinese, before any
//! provider call. (Body size and transport limits: `connections`.)

use streamai::fake_upstream::ANSWER;
use streamai::protocol::RejectBody;

use crate::support::{harness, Harness};

const KEY: &str = "sk-abuse-input-key-00001";

/// The JSON refusal in `raw`; nothing may have reached the provider.
fn refusal(h: &Harness, raw: &str) -> RejectBody {
    assert!(h.fake.records().is_empty(), "nothing reached the provider");
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("not a JSON refusal ({e}): {raw}"))
}

async fn still_serves(h: &Harness) {
    let streamed = h.ask("after the refusal [[fake:openai]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
}

#[tokio::test]
async fn too_many_messages_are_refused_naming_the_limit() {
    let h = harness(&[KEY], &[("STREAMAI_MAX_MESSAGES", "20")]).await;
    let message = serde_json::json!({"role": "user", "content": "hi"});
    let body = serde_json::json!({ "messages": vec![message; 21] });
    let streamed = h.post(&body.to_string()).await;
    assert_eq!(streamed.status, 400);
    let refusal = refusal(&h, &streamed.raw);
    assert_eq!(refusal.error.code, "too_many_messages");
    assert!(
        refusal.error.message.contains("最多 20 条"),
        "{}",
        refusal.error.message
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn a_prompt_beyond_the_context_window_is_refused() {
    let h = harness(&[KEY], &[]).await;
    // `fake-model` (declared free) has a 131072-token window; " a" is one token each.
    let prompt = " a".repeat(140_000);
    let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
    let streamed = h.post(&body.to_string()).await;
    assert_eq!(
        streamed.status,
        400,
        "{}",
        &streamed.raw[..streamed.raw.len().min(300)]
    );
    let refusal = refusal(&h, &streamed.raw);
    assert_eq!(refusal.error.code, "context_too_long");
    assert!(
        refusal.error.message.contains("131072"),
        "{}",
        refusal.error.message
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn a_long_prompt_within_the_window_shrinks_max_tokens_to_fit() {
    let h = harness(&[KEY], &[]).await;
    let prompt = " a".repeat(100_000);
    let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
    let streamed = h.post(&body.to_string()).await;
    streamed.assert_well_formed();
    let sent = &h.fake.records()[0].body;
    let max_tokens = sent["max_tokens"].as_u64().unwrap();
    assert!(max_tokens < 65535 && max_tokens > 20_000, "{max_tokens}");
    still_serves(&h).await;
}
