//! Durable answers on one instance (frames logged in memory): cuts resumed exactly once,
//! a dropped connection that does not cancel the provider, stop from another connection,
//! the idle-reader cancel, and refusals.

use std::time::{Duration, Instant};

use streamai::fake_upstream::Outcome;
use streamai::protocol::Frame;

use crate::cuts::{self, assert_exact, cut_and_resume, percentile, Rng};
use crate::support::{harness, parse_frames, Harness, Streamed};

const KEY: &str = "sk-resume-test-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_random_cuts_resume_byte_exact_with_no_frame_twice() {
    let h = harness(&[KEY], &[]).await;
    let http = reqwest::Client::new();
    let mut rng = Rng::seeded();
    let chunks = 300;
    let prompt = format!("[[fake:reasoner chunks={chunks} delay=1]]");
    let (answers, legs) = (40, 5);
    let plans: Vec<_> = (0..answers)
        .map(|a| cuts::random_cuts(&mut rng, a, legs))
        .collect();
    let base = format!("http://{}", h.addr);
    let post = h.url("/api/chat/stream");
    let mut resumes = Vec::new();
    let mut total_cuts = 0;
    for batch in plans.chunks(4) {
        let runs = batch
            .iter()
            .map(|plan| cut_and_resume(&http, &post, &prompt, plan, || base.clone()));
        for outcome in futures::future::join_all(runs).await {
            assert_exact(&outcome, chunks);
            total_cuts += outcome.cuts;
            resumes.extend(outcome.resumes);
        }
    }
    let p50 = percentile(&mut resumes, 0.5);
    let p95 = percentile(&mut resumes, 0.95);
    eprintln!("{total_cuts} resumes: first byte p50 {p50:?}, p95 {p95:?}");
    assert!(total_cuts >= 200, "{total_cuts}");
    assert!(p95 <= Duration::from_millis(300), "resume p95 {p95:?}");
}

/// [`cuts::start_answer`] on `h`.
async fn start(h: &Harness, prompt: &str) -> (String, reqwest::Response) {
    cuts::start_answer(h.raw_client(), &format!("http://{}", h.addr), prompt).await
}

async fn get(h: &Harness, path: &str) -> Streamed {
    let response = h.raw_client().get(h.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Streamed::new(status, headers, response.text().await.unwrap())
}

/// Waits until the fake's only request has ended as `outcome`; panics after `within`.
async fn wait_for_outcome(h: &Harness, outcome: Outcome, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = h.fake.records()[0].outcome;
        if now == outcome {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the fake's request: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_does_not_cancel_the_answer_a_resume_finishes_it() {
    let h = harness(&[KEY], &[("STREAMAI_IDLE_READER_SECS", "2")]).await;
    let (id, response) = start(&h, "[[fake:openai delay=40]]").await;
    drop(response);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(h.fake.records()[0].outcome, Outcome::ClientGone);
    let resumed = get(&h, &format!("/api/chat/stream/{id}")).await;
    resumed.assert_well_formed();
    assert_eq!(resumed.text(), streamai::fake_upstream::ANSWER);
    assert_eq!(resumed.done().finish_reason, "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_reads_is_stopped_after_the_idle_time_and_billed() {
    let h = harness(&[KEY], &[("STREAMAI_IDLE_READER_SECS", "1")]).await;
    let (id, response) = start(&h, "[[fake:openai delay=100]]").await;
    drop(response);
    let after = wait_for_outcome(&h, Outcome::ClientGone, Duration::from_secs(4)).await;
    eprintln!("nobody reading: upstream cancelled {after:?} after the drop");
    assert!(after >= Duration::from_millis(900), "{after:?}");
    let log = get(&h, &format!("/api/chat/stream/{id}")).await;
    log.assert_well_formed();
    let done = log.done();
    assert_eq!(done.finish_reason, "stopped");
    assert!(done.usage.completion_tokens > 0);
    assert!(streamai::fake_upstream::ANSWER.starts_with(&log.text()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_from_another_connection_ends_every_reader_with_the_partial_bill() {
    let h = harness(&[KEY], &[]).await;
    let (id, first) = start(&h, "[[fake:openai delay=60]]").await;
    let second = tokio::spawn({
        let url = h.url(&format!("/api/chat/stream/{id}?after=0"));
        let http = h.raw_client().clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.stop_answer(&id).await, 200);
    let first = first.text().await.unwrap();
    let second = parse_frames(&second.await.unwrap());
    let ended = |frames: &[Frame]| match frames.last() {
        Some(Frame::Done {
            finish_reason,
            cost,
            ..
        }) => (finish_reason.clone(), cost.clone()),
        other => panic!("{other:?}"),
    };
    let (reason, cost) = ended(&parse_frames(&first));
    assert_eq!(reason, "stopped");
    assert_eq!(ended(&second), (reason, cost));
    wait_for_outcome(&h, Outcome::ClientGone, Duration::from_secs(2)).await;
    // Stopping again, after the end, is no error.
    assert_eq!(h.stop_answer(&id).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_answer_keeps_its_stream_slot_until_it_ends() {
    let h = harness(&[KEY], &[("STREAMAI_MAX_STREAMS", "1")]).await;
    let (id, response) = start(&h, "[[fake:openai delay=80]]").await;
    drop(response);
    assert_eq!(h.ask("[[fake:openai]]").await.status, 503);
    assert_eq!(h.stop_answer(&id).await, 200);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let again = h.ask("[[fake:openai]]").await;
        if again.status == 200 {
            again.assert_well_formed();
            break;
        }
        assert!(Instant::now() < deadline, "the slot was not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unknown_trimmed_and_malformed_resumes_are_refused_in_chinese() {
    let h = harness(&[KEY], &[("STREAMAI_RESUME_MAX_FRAMES", "16")]).await;
    let unknown = get(&h, "/api/chat/stream/chat-0-ffff").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.raw.contains("stream_not_found") && unknown.raw.contains("不存在"));
    assert_eq!(h.stop_answer("chat-0-ffff").await, 404);

    let whole = h.ask("[[fake:openai chunks=100]]").await;
    whole.assert_well_formed();
    let Frame::Start { id, .. } = &whole.frames[0] else {
        unreachable!("checked by assert_well_formed")
    };
    let early = get(&h, &format!("/api/chat/stream/{id}?after=3")).await;
    assert_eq!(early.status, 410);
    assert!(early.raw.contains("stream_trimmed"), "{}", early.raw);
    let late = get(&h, &format!("/api/chat/stream/{id}?after=95")).await;
    assert_eq!(late.status, 200);
    assert_eq!(late.frames.len(), 102 - 96);
    assert!(late.last().is_terminal());
    let bad = get(&h, &format!("/api/chat/stream/{id}?after=-1")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.raw.contains("invalid_after"));
}
