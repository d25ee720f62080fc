//! Abuse suite: the offline demo model (issue "Hardening", item 7). Its `[[fake:…]]`
//! markers are test machinery: a visitor of a deployed server who types one gets the demo
//! answer like anyone else. Whatever it is sent, the fake keeps a bounded number of
//! records, and in scripted mode (the tests' upstream) an absurd count is clamped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use streamai::fake_upstream::scenario::MAX_CHUNKS;
use streamai::fake_upstream::{demo_answer, FakeUpstream, Outcome, ANSWER, MAX_RECORDS};
use streamai::protocol::Frame;

use crate::support::{harness, Streamed};

/// A stream that runs longer than this is taken for a marker that was obeyed.
const PATIENCE: Duration = Duration::from_secs(30);

/// The app with no key configured, so the offline demo answers, on a loopback port.
struct Demo {
    addr: SocketAddr,
    fake: FakeUpstream,
    http: reqwest::Client,
}

async fn demo() -> Demo {
    let mut config = crate::support::llm_config(&[]);
    let fake = streamai::server::start_demo_if_needed(&mut config)
        .await
        .unwrap()
        .expect("with no key the demo starts");
    let state = crate::support::state_with(config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = streamai::server::routes::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Demo {
        addr,
        fake,
        http: reqwest::Client::new(),
    }
}

impl Demo {
    /// Streams one user message and reads the whole answer (within [`PATIENCE`]).
    async fn ask(&self, prompt: &str) -> Streamed {
        let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
        let exchange = async {
            let response = self
                .http
                .post(format!("http://{}/api/chat/stream", self.addr))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let raw = response.text().await.unwrap();
            (status, headers, raw)
        };
        let (status, headers, raw) = tokio::time::timeout(PATIENCE, exchange)
            .await
            .unwrap_or_else(|_| panic!("{prompt:?} did not finish in {PATIENCE:?}"));
        Streamed::new(status, headers, raw)
    }

    /// The demo's exact answer to `prompt`, ending in `done`.
    async fn assert_demo_answer(&self, prompt: &str) {
        let answer = self.ask(prompt).await;
        assert_eq!(answer.status, 200, "{prompt:?}: {}", answer.raw);
        answer.assert_well_formed();
        assert_eq!(answer.text(), demo_answer(prompt), "{prompt:?}");
        assert!(
            matches!(answer.last(), Frame::Done { finish_reason, .. } if finish_reason == "stop"),
            "{prompt:?}: {:?}",
            answer.last()
        );
    }
}

#[tokio::test]
async fn a_visitor_typing_a_marker_gets_the_demo_answer() {
    let demo = demo().await;
    // Each of these, obeyed, would refuse, hang, flood or never finish.
    let prompts = [
        "[[fake:status=500]]",
        "试试 [[fake:openai status=429 times=99 retry_after=999999]]",
        "[[fake:deepseek stall_after=0]]",
        "[[fake:openai drop_after=1]]",
        "[[fake:openai hugeline=2000000]]",
        "[[fake:openai errbody=500:100000 linger]]",
        "[[fake:openai linger]]",
        "[[fake:openai chunks=99999999999 delay=60000]]",
        "[[fake:reasoner answer=xss]]",
    ];
    let answers = futures::stream::iter(prompts)
        .map(|prompt| demo.assert_demo_answer(prompt))
        .buffer_unordered(prompts.len());
    answers.collect::<Vec<()>>().await;
    let records = demo.fake.records();
    assert_eq!(records.len(), prompts.len());
    for record in &records {
        assert_eq!(
            (record.scenario.as_str(), record.status, record.outcome),
            ("demo", 200, Outcome::Completed)
        );
        assert!(record.body.is_null(), "the demo keeps no visitor's text");
    }
    demo.assert_demo_answer("你好").await;
}

#[tokio::test]
async fn the_demo_keeps_a_bounded_number_of_records() {
    let demo = demo().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", demo.fake.base_url());
    let many = MAX_RECORDS + 50;
    // Straight at the fake, as fast as it takes requests: only the headers are awaited.
    let requests = futures::stream::iter(0..many)
        .map(|i| {
            let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": format!("问题 {i} [[fake:openai chunks=20000]]")}]});
            http.post(&url).json(&body).send()
        })
        .buffer_unordered(16);
    let statuses: Vec<u16> = requests
        .map(|response| response.unwrap().status().as_u16())
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    let records = demo.fake.records();
    assert_eq!(records.len(), MAX_RECORDS);
    assert!(records.iter().all(|r| r.body.is_null()));
    // Nor does the demo list what it was asked.
    let listing = http
        .get(format!("http://{}/__fake/requests", demo.fake.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 404);
    demo.assert_demo_answer("你好").await;
    let last = demo.fake.records().pop().unwrap();
    assert_eq!(last.outcome, Outcome::Completed);
    assert_eq!(demo.fake.records().len(), MAX_RECORDS);
}

#[tokio::test]
async fn the_scripted_fake_forgets_its_oldest_records_first() {
    let h = harness(&["sk-test-demo-ring"], &[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", h.fake.base_url());
    let many = MAX_RECORDS + 50;
    for i in 0..many {
        // One at a time, so the records are in this order.
        let body = serde_json::json!({"messages": [{"role": "user", "content": format!("r{i}")}]});
        let response = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let records = h.fake.records();
    assert_eq!(records.len(), MAX_RECORDS);
    let content = |i: usize| records[i].body["messages"][0]["content"].clone();
    assert_eq!(content(0), "r50");
    assert_eq!(content(MAX_RECORDS - 1), format!("r{}", many - 1));
    // The newest record still follows its stream to the end.
    let answer = h.ask("[[fake:openai]]").await;
    answer.assert_well_formed();
    assert_eq!(answer.text(), ANSWER);
    let records = h.fake.records();
    assert_eq!(records.len(), MAX_RECORDS);
    let last = records.last().unwrap();
    assert_eq!(
        (last.scenario.as_str(), last.outcome),
        ("openai", Outcome::Completed)
    );
}

#[tokio::test]
async fn absurd_counts_are_clamped_in_scripted_mode() {
    let h = harness(&["sk-test-demo-clamp"], &[]).await;
    let absurd = "9".repeat(40); // more than a u64 holds
    let started = Instant::now();
    let rss_before = resident_bytes();
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        h.ask(&format!(
            "[[fake:openai chunks={absurd} keepalive={absurd} delay=0]]"
        )),
    )
    .await
    .expect("a clamped answer finishes");
    let took = started.elapsed();
    answer.assert_well_formed();
    let expected: String = (0..MAX_CHUNKS).map(|i| format!("第{i}段。")).collect();
    assert!(
        answer.text() == expected,
        "{} chunks were expected",
        MAX_CHUNKS
    );
    assert!(matches!(answer.last(), Frame::Done { .. }));
    if let (Some(before), Some(after)) = (rss_before, resident_bytes()) {
        // Unclamped, the fake would try to build 10^40 chunks; clamped, it builds a few
        // MB. The bound is loose because other tests share this process.
        let grown = after.saturating_sub(before);
        assert!(grown < 512 << 20, "resident memory grew {grown} bytes");
    }
    eprintln!("{MAX_CHUNKS} clamped chunks took {took:?}");
    let answer = h.ask("[[fake:openai split]]").await;
    answer.assert_well_formed();
    assert_eq!(answer.text(), ANSWER);
}

/// This process's resident memory, where `/proc` says it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
