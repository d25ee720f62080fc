//! Item 0: a 429 is waited out as the provider asks. Keys of one account share one
//! cooldown (Chinese providers limit per account), so rotation never dodges a 429; only a
//! key of another account may answer at once.

use std::time::{Duration, Instant};

use streamai::fake_upstream::ANSWER;

use crate::support::{harness, Harness, Streamed};

const ONE_ACCOUNT: [&str; 3] = [
    "sk-retry-wait-key-aaaa1",
    "sk-retry-wait-key-aaaa2",
    "sk-retry-wait-key-aaaa3",
];

fn keys_used(h: &Harness) -> Vec<String> {
    h.fake.records().into_iter().map(|r| r.key).collect()
}

/// Asks, timing the whole answer; checks it is complete and still byte-exact.
async fn ask_timed(h: &Harness, prompt: &str) -> (Streamed, Duration) {
    let started = Instant::now();
    let streamed = h.ask(prompt).await;
    let elapsed = started.elapsed();
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER, "{prompt}");
    (streamed, elapsed)
}

async fn still_serves(h: &Harness) {
    ask_timed(h, "after the fault [[fake:deepseek]]").await;
}

#[tokio::test]
async fn retry_after_seconds_is_waited_even_with_other_keys_of_the_account() {
    let h = harness(&ONE_ACCOUNT, &[]).await;
    let (streamed, elapsed) =
        ask_timed(&h, "[[fake:openai status=429 times=1 retry_after=2]]").await;
    assert_eq!(
        streamed.retry_waits(),
        [2000],
        "the retry frame announces the real wait"
    );
    assert!(
        elapsed >= Duration::from_secs(2),
        "retried after {elapsed:?}"
    );
    // Rotation still spreads the load: the retry goes to the next key, after the wait.
    assert_eq!(keys_used(&h), [ONE_ACCOUNT[0], ONE_ACCOUNT[1]]);
    still_serves(&h).await;
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited() {
    let h = harness(&ONE_ACCOUNT, &[]).await;
    let (streamed, elapsed) =
        ask_timed(&h, "[[fake:openai status=429 times=1 retry_after_date=2]]").await;
    let waits = streamed.retry_waits();
    // An HTTP-date has whole seconds: "two seconds ahead" is one to three seconds away.
    assert!((1000..=3000).contains(&waits[0]), "{waits:?}");
    assert!(
        elapsed >= Duration::from_millis(waits[0]),
        "{elapsed:?} < {waits:?}"
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn without_retry_after_the_backoff_is_at_least_the_minimum() {
    let extra = [("LLM_RETRY_MIN_MS", "700"), ("LLM_RETRY_MAX_MS", "1400")];
    let h = harness(&ONE_ACCOUNT, &extra).await;
    let (streamed, elapsed) = ask_timed(&h, "[[fake:siliconflow status=429 times=1]]").await;
    let waits = streamed.retry_waits();
    assert_eq!(waits.len(), 1);
    assert!((700..=1400).contains(&waits[0]), "{waits:?}");
    assert!(
        elapsed >= Duration::from_millis(700),
        "retried after {elapsed:?}"
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn a_key_of_another_account_answers_at_once() {
    let extra = [
        ("CUSTOM_API_KEY_1_ACCOUNT", "team-a"),
        ("CUSTOM_API_KEY_2_ACCOUNT", "team-a"),
        ("CUSTOM_API_KEY_3_ACCOUNT", "team-b"),
    ];
    let h = harness(&ONE_ACCOUNT, &extra).await;
    let (streamed, elapsed) =
        ask_timed(&h, "[[fake:openai status=429 times=1 retry_after=2]]").await;
    assert_eq!(streamed.retry_waits(), [0]);
    assert!(
        elapsed < Duration::from_secs(1),
        "switched after {elapsed:?}"
    );
    // key#2 shares team-a's cooldown and is skipped; team-b's key answers.
    assert_eq!(keys_used(&h), [ONE_ACCOUNT[0], ONE_ACCOUNT[2]]);
    // While team-a cools, every request goes to team-b.
    ask_timed(&h, "next [[fake:openai]]").await;
    assert_eq!(keys_used(&h)[2], ONE_ACCOUNT[2]);
    still_serves(&h).await;
}

#[tokio::test]
async fn a_malformed_or_absurd_retry_after_never_panics() {
    let h = harness(&ONE_ACCOUNT, &[]).await;
    // Unreadable: treated as absent, so the backoff applies and the retry succeeds.
    for value in ["-1", "soon"] {
        let prompt = format!("{value} [[fake:openai status=429 times=1 retry_after_raw={value}]]");
        let (streamed, _) = ask_timed(&h, &prompt).await;
        assert_eq!(streamed.retry_waits().len(), 1, "{value}");
    }
    // 10^19 s and more: clamped with checked arithmetic; beyond the cap it fails at once.
    for value in ["10000000000000000000", "99999999999999999999999"] {
        let h = harness(&ONE_ACCOUNT, &[]).await;
        let prompt = format!("[[fake:openai status=429 retry_after_raw={value}]]");
        let started = Instant::now();
        let streamed = h.ask(&prompt).await;
        streamed.assert_well_formed();
        assert!(streamed.retries().is_empty(), "{value}");
        streamed.error();
        assert!(started.elapsed() < Duration::from_secs(2), "{value}");
    }
    still_serves(&h).await;
}
