//! Fallback chains (`fallback = [...]` per model in the settings): a model that cannot
//! answer hands over to the next, a `fallback` frame says so, and the answer is billed at
//! the prices of the model that gave it. A request at fault never moves on.

use streamai::fake_upstream::ANSWER;
use streamai::llm::cost::Price;
use streamai::protocol::{ErrorCode, Frame, Yuan};

use crate::support::{harness, Harness, Streamed};

const KEY: &str = "sk-chain-test-key-0123456789";

/// The fake plays both providers of the chain; DeepSeek gets its own key.
async fn chain_harness(key: &str) -> Harness {
    let vars = [
        ("DEEPSEEK_API_KEY", "sk-chain-deepseek-key-0123456789"),
        ("DEEPSEEK_BASE_URL", "{fake}"),
        ("LLM_MAX_RETRIES", "1"),
    ];
    harness(&[key], &vars).await
}

async fn ask_model(h: &Harness, model: &str, prompt: &str) -> Streamed {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    h.post(&body.to_string()).await
}

/// Every `fallback` frame: (provider, model, reason).
fn fallbacks(streamed: &Streamed) -> Vec<(String, String, String)> {
    streamed
        .frames
        .iter()
        .filter_map(|f| match f {
            Frame::Fallback {
                provider,
                model,
                reason,
                ..
            } => Some((provider.clone(), model.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

/// The models the fake was asked for, in order.
fn asked(h: &Harness) -> Vec<String> {
    h.fake
        .records()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_chain_of_three_answers_from_the_third_with_two_fallback_frames_and_its_prices() {
    let h = chain_harness(KEY).await;
    let prompt = "[[fake:openai fail=fake-chain-a:503,fake-chain-b:empty]]";
    let streamed = ask_model(&h, "fake-chain-a", prompt).await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
    assert_eq!(
        fallbacks(&streamed),
        [
            (
                "custom".into(),
                "fake-chain-b".into(),
                "服务不可用，HTTP 503".into()
            ),
            ("deepseek".into(), "fake-chain-c".into(), "空回答".into()),
        ]
    );
    // The 503 was retried once on the first model before the chain moved on.
    assert_eq!(
        asked(&h),
        [
            "fake-chain-a",
            "fake-chain-a",
            "fake-chain-b",
            "fake-chain-c"
        ]
    );
    // Billed at the third model's prices (¥1 / ¥2 per million), exactly.
    let done = streamed.done();
    let expected = Price::new(1_000_000, 2_000_000).cost(done.usage);
    assert_eq!(done.cost, &expected);

    h.state.ledger.flush().await.unwrap();
    let rows = h.state.store.recent(None, 10).await.unwrap();
    let row = &rows.first().expect("one ledger row").row;
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("deepseek", "fake-chain-c")
    );
    assert_eq!(row.cost, Yuan::parse(&expected.total).unwrap());
}

#[tokio::test]
async fn a_request_at_fault_never_falls_back() {
    let h = chain_harness(KEY).await;
    let streamed = ask_model(&h, "fake-chain-a", "[[fake:openai fail=fake-chain-a:400]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.error().code, ErrorCode::Upstream);
    assert!(fallbacks(&streamed).is_empty());
    assert_eq!(asked(&h), ["fake-chain-a"]);
}

#[tokio::test]
async fn a_rejected_key_is_a_configuration_to_fix_not_a_reason_to_move_on() {
    let h = chain_harness("sk-chain-bad-key-0123456789").await;
    let streamed = ask_model(&h, "fake-chain-a", "[[fake:openai]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.error().code, ErrorCode::AuthFailed);
    assert!(fallbacks(&streamed).is_empty());
}

#[tokio::test]
async fn when_every_model_of_the_chain_fails_the_last_error_is_reported() {
    let h = chain_harness(KEY).await;
    let prompt = "[[fake:openai fail=fake-chain-a:502,fake-chain-b:503,fake-chain-c:500]]";
    let streamed = ask_model(&h, "fake-chain-a", prompt).await;
    streamed.assert_well_formed();
    assert_eq!(fallbacks(&streamed).len(), 2);
    let failed = streamed.error();
    assert_eq!(failed.code, ErrorCode::Upstream);
    assert!(failed.message.contains("500"), "{}", failed.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_answers_cut_at_random_points_are_finished_by_the_next_model_without_a_seam() {
    let h = chain_harness(KEY).await;
    let mut rng = crate::cuts::Rng::seeded();
    let pieces = streamai::fake_upstream::pieces(ANSWER).len();
    // Cut after 1 … all-but-one chunks.
    let plans: Vec<usize> = (0..100).map(|_| 1 + rng.below(pieces - 1)).collect();
    for (batch, plans) in plans.chunks(5).enumerate() {
        let runs = plans.iter().enumerate().map(|(j, cut)| {
            let prompt = format!("第{batch}-{j}问 [[fake:openai fail=fake-cont-a:drop{cut}]]");
            let h = &h;
            async move { (*cut, ask_model(h, "fake-cont-a", &prompt).await) }
        });
        for (cut, streamed) in futures::future::join_all(runs).await {
            streamed.assert_well_formed();
            assert_eq!(streamed.text(), ANSWER, "cut after {cut} chunks");
            let switched: Vec<_> = streamed
                .frames
                .iter()
                .filter_map(|f| match f {
                    Frame::Fallback {
                        model, continues, ..
                    } => Some((model.as_str(), *continues)),
                    _ => None,
                })
                .collect();
            assert_eq!(switched, [("fake-cont-prefix", true)]);
        }
    }
    // The continuation was asked with DeepSeek's prefix completion: the text so far as a
    // trailing assistant message marked `prefix`, at the beta base URL's model.
    let records = h.fake.records();
    let continued = records
        .iter()
        .find(|r| r.body["model"] == "fake-cont-prefix")
        .expect("a continuation was asked");
    let last = continued.body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["prefix"], true);
    assert!(ANSWER.starts_with(last["content"].as_str().unwrap()));
}

#[tokio::test]
async fn both_legs_of_a_continued_answer_are_billed() {
    let h = chain_harness(KEY).await;
    let streamed = ask_model(&h, "fake-cont-a", "[[fake:openai fail=fake-cont-a:drop20]]").await;
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
    let done = streamed.done();
    let (input, output) = (
        Yuan::parse(&done.cost.input).unwrap(),
        Yuan::parse(&done.cost.output).unwrap(),
    );
    assert_eq!(Yuan::parse(&done.cost.total), Some(input + output));
    // More than the second leg alone at its prices: the first leg is billed too.
    let records = h.fake.records();
    let second = records.last().unwrap();
    assert_eq!(second.body["model"], "fake-cont-prefix");
    let second_alone = Price::new(1_000_000, 2_000_000).charge(
        done.usage.prompt_tokens / 2,
        streamai::llm::tokens::count_text(ANSWER) / 2,
    );
    assert!(input + output > second_alone);
    h.state.ledger.flush().await.unwrap();
    let rows = h.state.store.recent(None, 10).await.unwrap();
    assert_eq!(rows[0].row.cost, input + output);
    assert_eq!(rows[0].row.model, "fake-cont-prefix");
}

#[tokio::test]
async fn a_cut_answer_without_a_model_that_can_continue_fails_keeping_its_text() {
    let h = chain_harness(KEY).await;
    // fake-chain-a's chain has no model that continues.
    let streamed = ask_model(
        &h,
        "fake-chain-a",
        "[[fake:openai fail=fake-chain-a:drop5]]",
    )
    .await;
    streamed.assert_well_formed();
    assert_eq!(streamed.error().code, ErrorCode::Disconnected);
    assert!(fallbacks(&streamed).is_empty());
    assert!(ANSWER.starts_with(&streamed.text()) && !streamed.text().is_empty());
}
