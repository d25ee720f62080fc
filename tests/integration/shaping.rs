//! Request shaping through the real server: the 深度思考 switch reaches the provider as
//! that provider's own parameter (the per-provider fixtures are in `llm::shape`).

use serde_json::{json, Value};

use crate::support::harness;

const KEY: &str = "sk-fake-integration-key-0001";

#[tokio::test]
async fn thinking_reaches_each_provider_as_its_own_parameter() {
    // The fake plays DeepSeek, DashScope and Ark: each provider's base URL is the fake.
    let h = harness(
        &[KEY],
        &[
            ("DEEPSEEK_API_KEY", KEY),
            ("DEEPSEEK_BASE_URL", "{fake}"),
            ("QWEN_API_KEY", KEY),
            ("QWEN_BASE_URL", "{fake}"),
            ("DOUBAO_API_KEY", KEY),
            ("DOUBAO_BASE_URL", "{fake}"),
        ],
    )
    .await;
    let ask = |provider: &str, thinking: bool| {
        json!({
            "provider": provider,
            "thinking": thinking,
            "top_p": 0.9,
            "messages": [
                {"role": "user", "content": "9.11 和 9.8 哪个大？"},
                {"role": "assistant", "content": "9.8 更大。", "reasoning_content": "比较十分位"},
                {"role": "user", "content": "为什么？"},
                {"role": "user", "content": "请详细说明。"},
            ],
        })
        .to_string()
    };
    for (provider, thinking) in [("deepseek", true), ("qwen", true), ("doubao", false)] {
        let streamed = h.post(&ask(provider, thinking)).await;
        assert_eq!(streamed.status, 200, "{provider}: {}", streamed.raw);
        streamed.assert_well_formed();
    }
    let bodies: Vec<Value> = h.fake.records().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), 3);

    // DeepSeek: the reasoner, no sampling parameters, alternating roles, no reasoning.
    let deepseek = &bodies[0];
    assert_eq!(deepseek["model"], "deepseek-reasoner");
    assert!(deepseek.get("temperature").is_none() && deepseek.get("top_p").is_none());
    assert_eq!(
        deepseek["messages"],
        json!([
            {"role": "user", "content": "9.11 和 9.8 哪个大？"},
            {"role": "assistant", "content": "9.8 更大。"},
            {"role": "user", "content": "为什么？\n\n请详细说明。"},
        ])
    );
    assert_eq!(deepseek["stream_options"], json!({"include_usage": true}));

    // DashScope: `enable_thinking`, the history as sent (no merge), still no reasoning.
    let qwen = &bodies[1];
    assert_eq!(qwen["model"], "qwen-plus");
    assert_eq!(qwen["enable_thinking"], json!(true));
    assert_eq!(qwen["top_p"], json!(0.9));
    assert_eq!(qwen["messages"].as_array().unwrap().len(), 4);
    assert!(!qwen.to_string().contains("reasoning_content"));

    // Ark: `thinking.type`.
    let doubao = &bodies[2];
    assert_eq!(doubao["model"], "doubao-seed-1.6-flash");
    assert_eq!(doubao["thinking"], json!({"type": "disabled"}));
    assert!(doubao.get("enable_thinking").is_none());
}

#[tokio::test]
async fn thinking_on_a_model_that_cannot_think_is_a_400_before_the_provider() {
    let h = harness(&[KEY], &[]).await;
    let body = json!({"thinking": true, "messages": [{"role": "user", "content": "hi"}]});
    let streamed = h.post(&body.to_string()).await;
    assert_eq!(streamed.status, 400, "{}", streamed.raw);
    let rejection: Value = serde_json::from_str(&streamed.raw).unwrap();
    assert!(
        rejection.to_string().contains("thinking_unsupported"),
        "{rejection}"
    );
    assert!(h.fake.records().is_empty());
}
