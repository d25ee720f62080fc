//! Answers read with their connection cut at random points and resumed from the last
//! whole frame, through one server or through several instances. Shared by the in-memory
//! tests (`resume`) and the multi-instance test (`tests/scale.rs`).

use std::time::{Duration, Instant};

use streamai::fake_upstream::REASONING;
use streamai::protocol::Frame;
use streamai::sse::Parser;

/// A small deterministic generator (xorshift64*), seeded and printed by each test.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let seed = std::env::var("CUTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("cuts: CUTS_SEED={seed}");
        Rng(seed.max(1))
    }

    /// A generator of its own, seeded from this one.
    #[allow(dead_code)] // only the multi-instance test
    pub fn child(&mut self) -> Rng {
        Rng(self.below(usize::MAX) as u64 | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// The answer of `[[fake:reasoner chunks=N …]]`: its reasoning, then `第i段。` N times.
pub fn expected_text(chunks: usize) -> String {
    (0..chunks).map(|i| format!("第{i}段。")).collect()
}

/// Where one leg's connection is cut.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// After this many bytes of the body (usually inside a frame, often inside a
    /// character).
    Bytes(usize),
    /// Never: the leg reads to the end (then one more resume, after the terminal frame).
    None,
}

/// One leg: a response read until its cut.
struct Leg {
    /// Whole events received: (SSE id, frame).
    frames: Vec<(u64, Frame)>,
    /// Time to the first byte of the body, or to its end if it had none.
    first_byte: Duration,
}

async fn read_leg(response: reqwest::Response, cut: Cut, sent: Instant) -> Leg {
    assert_eq!(response.status(), 200, "a leg is answered 200");
    let mut response = response;
    let mut parser = Parser::new();
    let mut frames = Vec::new();
    let mut read = 0usize;
    let mut first_byte = None;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => break,
        };
        first_byte.get_or_insert_with(|| sent.elapsed());
        let limit = match cut {
            Cut::Bytes(at) => (at - read).min(chunk.len()),
            Cut::None => chunk.len(),
        };
        read += limit;
        for event in parser.feed(&chunk[..limit]) {
            let id = event.id.as_deref().expect("every event has an id");
            let frame: Frame = serde_json::from_str(&event.data).expect("a frame");
            frames.push((id.parse().expect("a numeric id"), frame));
        }
        if matches!(cut, Cut::Bytes(at) if read >= at) {
            break; // dropping the response cuts the connection
        }
    }
    Leg {
        frames,
        first_byte: first_byte.unwrap_or_else(|| sent.elapsed()),
    }
}

/// POSTs `prompt` to `base`'s stream endpoint and reads until the first chunk: the
/// answer's id (from its `start` frame) and the still open response.
pub async fn start_answer(
    http: &reqwest::Client,
    base: &str,
    prompt: &str,
) -> (String, reqwest::Response) {
    let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
    let mut response = http
        .post(format!("{base}/api/chat/stream"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"type\":\"chunk\"") {
        let bytes = response.chunk().await.unwrap().expect("the answer streams");
        seen.extend_from_slice(&bytes);
    }
    let id = Parser::new()
        .feed(&seen)
        .into_iter()
        .find_map(|event| match serde_json::from_str(&event.data) {
            Ok(Frame::Start { id, .. }) => Some(id),
            _ => None,
        })
        .expect("the start frame names the answer");
    (id, response)
}

/// What one cut answer gave.
pub struct Outcome {
    pub text: String,
    pub reasoning: String,
    pub frames: Vec<(u64, Frame)>,
    /// Each resume's time to its first byte.
    pub resumes: Vec<Duration>,
    pub cuts: usize,
}

/// Asks `prompt` at `post_url` (a `…/api/chat/stream`), cutting each leg as `cuts` says
/// (then cutting nowhere), resuming each time at `resume_base()` (a server's base URL,
/// e.g. a random instance's).
pub async fn cut_and_resume(
    http: &reqwest::Client,
    post_url: &str,
    prompt: &str,
    cuts: &[Cut],
    mut resume_base: impl FnMut() -> String,
) -> Outcome {
    let body = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
    let sent = Instant::now();
    let response = http
        .post(post_url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the POST is answered");
    let mut cuts = cuts.iter().copied().chain(std::iter::repeat(Cut::None));
    let mut leg = read_leg(response, cuts.next().unwrap_or(Cut::None), sent).await;
    let mut frames = Vec::new();
    let mut resumes = Vec::new();
    let mut id: Option<String> = None;
    let mut count = 0;
    loop {
        if id.is_none() {
            id = leg.frames.iter().find_map(|(_, f)| match f {
                Frame::Start { id, .. } => Some(id.clone()),
                _ => None,
            });
        }
        frames.append(&mut leg.frames);
        let ended = frames.last().is_some_and(|(_, f)| f.is_terminal());
        let Some(id) = id.clone() else {
            // Cut inside the start frame: nothing names the answer. The client asks again
            // (as the browser would); this test only cuts after the start frame's bytes.
            panic!("a cut before the start frame leaves nothing to resume");
        };
        let after = frames.last().map(|(i, _)| *i);
        let url = match after {
            Some(after) => format!("{}/api/chat/stream/{id}?after={after}", resume_base()),
            None => format!("{}/api/chat/stream/{id}", resume_base()),
        };
        let cut = if ended {
            Cut::None
        } else {
            cuts.next().unwrap_or(Cut::None)
        };
        let sent = Instant::now();
        let response = http.get(&url).send().await.expect("the resume is answered");
        leg = read_leg(response, cut, sent).await;
        resumes.push(leg.first_byte);
        count += 1;
        if ended {
            // The resume after the terminal frame must bring nothing.
            assert!(leg.frames.is_empty(), "after the end: {:?}", leg.frames);
            break;
        }
    }
    let text = frames.iter().filter_map(|(_, f)| f.text()).filter(|t| !t.2);
    let reasoning = frames.iter().filter_map(|(_, f)| f.text()).filter(|t| t.2);
    Outcome {
        text: text.map(|t| t.1).collect(),
        reasoning: reasoning.map(|t| t.1).collect(),
        resumes,
        cuts: count,
        frames,
    }
}

/// 0 duplicated and 0 missing frames, one terminal frame last, and the exact text.
pub fn assert_exact(outcome: &Outcome, chunks: usize) {
    let ids: Vec<u64> = outcome.frames.iter().map(|(i, _)| *i).collect();
    let expected: Vec<u64> = (0..ids.len() as u64).collect();
    assert_eq!(ids, expected, "frame ids: each once, none missing");
    let terminals = outcome
        .frames
        .iter()
        .filter(|(_, f)| f.is_terminal())
        .count();
    assert_eq!(terminals, 1);
    assert!(
        matches!(outcome.frames.last(), Some((_, Frame::Done { .. }))),
        "{:?}",
        outcome.frames.last()
    );
    assert_eq!(outcome.text, expected_text(chunks));
    assert_eq!(outcome.reasoning, REASONING);
}

/// Cuts for one answer: the first inside or just after the start frame, inside the
/// reasoning, or anywhere; then a few anywhere.
pub fn random_cuts(rng: &mut Rng, answer: usize, legs: usize) -> Vec<Cut> {
    (0..legs)
        .map(|leg| match (leg, answer % 3) {
            // Just past the start frame (~190 bytes): before the first chunk.
            (0, 0) => Cut::Bytes(200 + rng.below(60)),
            // Inside the reasoning (its frames follow the start).
            (0, 1) => Cut::Bytes(260 + rng.below(1500)),
            (0, _) => Cut::Bytes(200 + rng.below(4000)),
            _ => Cut::Bytes(1 + rng.below(4000)),
        })
        .collect()
}

/// The p-th percentile of `durations` (sorted in place).
pub fn percentile(durations: &mut [Duration], p: f64) -> Duration {
    durations.sort();
    let index = ((durations.len() as f64 - 1.0) * p).round() as usize;
    durations.get(index).copied().unwrap_or_default()
}
