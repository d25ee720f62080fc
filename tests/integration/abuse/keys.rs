//! Item 6: only 401 and explicit invalid-key errors park a key; a 403 (SiliconFlow: this
//! account may not use this model) fails that request and leaves the key in rotation; a
//! model without a known price is refused unless the deployer declared it free.

use streamai::fake_upstream::ANSWER;
use streamai::protocol::{ErrorCode, RejectBody};

use crate::support::{harness, Failed};

const KEY: &str = "sk-abuse-keys-key-000001";

#[tokio::test]
async fn a_403_fails_the_request_and_keeps_the_key() {
    let h = harness(&[KEY], &[]).await;
    let prompt = "[[fake:siliconflow status=403 times=1]]";
    let refused = h.ask(prompt).await;
    refused.assert_well_formed();
    assert!(refused.retries().is_empty(), "a 403 is not retried");
    let Failed {
        code,
        message,
        retryable,
    } = refused.error();
    assert_eq!(code, ErrorCode::Upstream);
    assert!(message.contains("实名认证"), "{message}");
    assert!(!retryable);
    // The same key answers the next request: it was not parked.
    let next = h.ask(prompt).await;
    next.assert_well_formed();
    assert_eq!(next.text(), ANSWER);
    let keys: Vec<String> = h.fake.records().into_iter().map(|r| r.key).collect();
    assert_eq!(keys, [KEY, KEY]);
}

#[tokio::test]
async fn an_unpriced_model_is_refused_before_any_call() {
    let h = harness(&[KEY], &[]).await;
    let body = serde_json::json!({
        "model": "llama3-unpriced",
        "messages": [{"role": "user", "content": "hi"}],
    });
    let refused = h.post(&body.to_string()).await;
    assert_eq!(refused.status, 400);
    let body: RejectBody = serde_json::from_str(&refused.raw).unwrap();
    assert_eq!(body.error.code, "unknown_model");
    assert!(h.fake.records().is_empty());
    // The model the deployer declared free (CUSTOM_FREE_MODELS=fake-model) is served.
    let served = h.ask("[[fake:openai]]").await;
    served.assert_well_formed();
    assert_eq!(served.text(), ANSWER);
}
