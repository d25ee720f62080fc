//! Abuse suite: connections. Oversized and endless uploads, clients that stall on their
//! headers, their body or their reading, too many connections or answers at once, and a
//! shutdown with streams still open. Raw sockets where the attack needs byte control.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streamai::fake_upstream::{Outcome, ANSWER};
use streamai::protocol::{ErrorCode, Frame, RejectBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{harness, parse_frames, Harness};

const KEY: &str = "sk-fake-abuse-connections-0001";
const STREAM: &str = "/api/chat/stream";
/// The one-shot `chat` server function: the same limits apply.
const CHAT_FN: &str = "/api/chat";
const MIB: usize = 1024 * 1024;

/// What a raw socket received before the server closed it or `within` ran out.
struct Raw {
    text: String,
    closed: bool,
}

impl Raw {
    fn status(&self) -> u16 {
        let line = self.text.lines().next().unwrap_or_default();
        let code = line.strip_prefix("HTTP/1.1 ").unwrap_or_default();
        code.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn rejection(&self) -> RejectBody {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a RejectBody ({e}): {body:?}"))
    }
}

async fn read_for(stream: &mut TcpStream, within: Duration) -> Raw {
    let deadline = tokio::time::Instant::now() + within;
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    };
    Raw {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed,
    }
}

fn head(path: &str, framing: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n"
    )
}

fn chat_body(path: &str, prompt: &str) -> String {
    let request = serde_json::json!({"messages": [{"role": "user", "content": prompt}]});
    if path == CHAT_FN {
        serde_json::json!({ "request": request }).to_string()
    } else {
        request.to_string()
    }
}

/// The server still answers a fresh stream, byte-exact.
async fn assert_still_serves(h: &Harness) {
    let streamed = h.ask("你好").await;
    assert_eq!(streamed.status, 200, "{}", streamed.raw);
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
}

/// As [`assert_still_serves`], once the server has noticed that held resources were let go.
async fn assert_serves_again(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while h.ask("你好").await.status != 200 {
        assert!(Instant::now() < deadline, "the server never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_still_serves(h).await;
}

fn assert_body_too_large(raw: &Raw) {
    assert_eq!(raw.status(), 413, "{:?}", raw.text);
    let rejection = raw.rejection().error;
    assert_eq!(rejection.code, "body_too_large");
    assert!(
        rejection.message.contains("1 MiB") && rejection.message.contains("1048576"),
        "{}",
        rejection.message
    );
}

#[tokio::test]
async fn a_declared_20_mb_body_gets_413_at_once_without_100_continue() {
    let h = harness(&[KEY], &[]).await;
    for path in [STREAM, CHAT_FN] {
        let mut socket = TcpStream::connect(h.addr).await.unwrap();
        let framing = format!("Content-Length: {}\r\nExpect: 100-continue\r\n", 20 * MIB);
        socket
            .write_all(head(path, &framing).as_bytes())
            .await
            .unwrap();
        let started = Instant::now();
        let raw = read_for(&mut socket, Duration::from_secs(2)).await;
        assert!(!raw.text.contains("100 Continue"), "{path}: {:?}", raw.text);
        assert_body_too_large(&raw);
        assert!(raw.closed, "{path}: the connection is closed after the 413");
        assert!(started.elapsed() < Duration::from_secs(1), "{path}");
    }
    assert_still_serves(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_upload_without_expect_still_reads_its_413() {
    let h = harness(&[KEY], &[]).await;
    let socket = TcpStream::connect(h.addr).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    let framing = format!("Content-Length: {}\r\n", 20 * MIB);
    let upload = tokio::spawn(async move {
        writer.write_all(head(STREAM, &framing).as_bytes()).await?;
        let piece = vec![b'a'; 64 * 1024];
        for _ in 0..320 {
            writer.write_all(&piece).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut received));
    assert!(read.await.is_ok(), "the server closes after its answer");
    let raw = Raw {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed: true,
    };
    assert_body_too_large(&raw);
    upload.abort();
    assert_still_serves(&h).await;
}

#[tokio::test]
async fn a_chunked_body_growing_past_the_limit_gets_413() {
    let h = harness(&[KEY], &[]).await;
    for path in [STREAM, CHAT_FN] {
        let socket = TcpStream::connect(h.addr).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let head = head(path, "Transfer-Encoding: chunked\r\n");
        let upload = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            let mut chunk = b"10000\r\n".to_vec();
            chunk.extend(vec![b'a'; 0x10000]);
            chunk.extend_from_slice(b"\r\n");
            // 64 KiB at a time, towards 2 MiB; the server stops us past 1 MiB.
            for _ in 0..32 {
                writer.write_all(&chunk).await?;
            }
            writer.write_all(b"0\r\n\r\n").await?;
            // Keep the socket open: the answer must come from the cap, not from the end.
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::io::Error>(())
        });
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut received));
        assert!(
            read.await.is_ok(),
            "{path}: the server closes after its answer"
        );
        let raw = Raw {
            text: String::from_utf8_lossy(&received).into_owned(),
            closed: true,
        };
        assert_body_too_large(&raw);
        upload.abort();
    }
    assert_still_serves(&h).await;
}

#[tokio::test]
async fn half_sent_headers_are_cut_after_the_header_timeout() {
    let h = harness(&[KEY], &[("STREAMAI_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    socket
        .write_all(b"POST /api/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let raw = read_for(&mut socket, Duration::from_secs(3)).await;
    let waited = started.elapsed();
    assert!(raw.closed, "still open after {waited:?}: {:?}", raw.text);
    assert!(raw.text.is_empty() || raw.status() == 408, "{:?}", raw.text);
    assert!(
        Duration::from_millis(900) <= waited && waited < Duration::from_millis(2500),
        "cut after {waited:?}"
    );
    assert_still_serves(&h).await;
}

#[tokio::test]
async fn a_body_that_stalls_gets_408() {
    let h = harness(&[KEY], &[("STREAMAI_BODY_READ_TIMEOUT_SECS", "1")]).await;
    let mut socket = TcpStream::connect(h.addr).await.unwrap();
    let request = head(STREAM, "Content-Length: 100\r\n") + r#"{"messages":"#;
    socket.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let raw = read_for(&mut socket, Duration::from_secs(3)).await;
    let waited = started.elapsed();
    assert_eq!(raw.status(), 408, "{:?}", raw.text);
    let rejection = raw.rejection().error;
    assert_eq!(rejection.code, "body_timeout");
    assert!(rejection.message.contains("1 秒"), "{}", rejection.message);
    assert!(raw.closed, "closed after the 408");
    assert!(
        waited < Duration::from_millis(2500),
        "answered after {waited:?}"
    );
    assert_still_serves(&h).await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_at_once_and_the_server_recovers() {
    let h = harness(&[KEY], &[("STREAMAI_MAX_CONNECTIONS", "4")]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(h.addr).await.unwrap());
    }

    // A fifth connection sends its request and is answered at once.
    let started = Instant::now();
    let mut fifth = TcpStream::connect(h.addr).await.unwrap();
    let request = head(STREAM, "Content-Length: 2\r\n") + "{}";
    fifth.write_all(request.as_bytes()).await.unwrap();
    let raw = read_for(&mut fifth, Duration::from_secs(2)).await;
    let answered = started.elapsed();
    assert_eq!(raw.status(), 503, "{:?}", raw.text);
    assert_eq!(raw.header("retry-after"), Some("1"));
    let rejection = raw.rejection().error;
    assert_eq!(rejection.code, "too_many_connections");
    assert!(rejection.message.contains("4 个"), "{}", rejection.message);
    assert!(raw.closed);
    assert!(
        answered < Duration::from_millis(300),
        "503 after {answered:?}"
    );
    eprintln!("connection cap: 503 read in {answered:?}");

    // A sixth that sends nothing is not left hanging either.
    let started = Instant::now();
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    let raw = read_for(&mut silent, Duration::from_secs(2)).await;
    let answered = started.elapsed();
    assert_eq!(raw.status(), 503, "{:?}", raw.text);
    assert!(raw.closed);
    assert!(
        answered < Duration::from_millis(1500),
        "503 after {answered:?}"
    );
    eprintln!("connection cap: 503 to a silent connection in {answered:?}");

    // An ordinary client that sends its request at once reads the same answer.
    let refused = h.ask("你好").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "1");

    drop(held);
    assert_serves_again(&h).await;
}

#[tokio::test]
async fn answers_over_the_stream_cap_get_503_with_retry_after() {
    // An answer holds its slot while it runs, read or not; unread, it stops after 1 s.
    let vars = [
        ("STREAMAI_MAX_STREAMS", "2"),
        ("STREAMAI_IDLE_READER_SECS", "1"),
    ];
    let h = harness(&[KEY], &vars).await;
    let slow = chat_body(STREAM, "[[fake:openai delay=200]]");
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = h
            .raw_client()
            .post(h.url(STREAM))
            .header("content-type", "application/json")
            .body(slow.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        open.push(response);
    }

    let third = h.ask("你好").await;
    assert_eq!(third.status, 503, "{}", third.raw);
    assert_eq!(third.headers["retry-after"], "2");
    let rejection: RejectBody = serde_json::from_str(&third.raw).unwrap();
    assert_eq!(rejection.error.code, "too_many_streams");
    assert!(
        rejection.error.message.contains("2 个"),
        "{}",
        rejection.error.message
    );

    let one_shot = h
        .raw_client()
        .post(h.url(CHAT_FN))
        .header("content-type", "application/json")
        .body(chat_body(CHAT_FN, "你好"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        one_shot.status(),
        503,
        "the chat server function shares the cap"
    );
    assert!(one_shot.headers().contains_key("retry-after"));

    drop(open);
    assert_serves_again(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_its_upstream_cancelled() {
    // Cut after 1 s of not reading; the answer, read by nobody, stopped 1 s later.
    let vars = [
        ("STREAMAI_CLIENT_STALL_SECS", "1"),
        ("STREAMAI_IDLE_READER_SECS", "1"),
    ];
    let h = harness(&[KEY], &vars).await;
    let mut socket = small_window(h.addr).await;
    // 20,000 chunks (~1.2 MB of frames), and then the provider stays open (`linger`).
    let body = chat_body(STREAM, "[[fake:openai chunks=20000 linger]]");
    let framing = format!("Content-Length: {}\r\n", body.len());
    let request = head(STREAM, &framing) + &body;
    socket.write_all(request.as_bytes()).await.unwrap();

    // Read nothing, and wait for the fake to see its client (our relay) go.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(6);
    loop {
        let records = h.fake.records();
        if records.first().map(|r| r.outcome) == Some(Outcome::ClientGone) {
            break;
        }
        let outcome = records.first().map(|r| r.outcome);
        assert!(
            Instant::now() < deadline,
            "the upstream still runs: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "stalled client: upstream cancelled after {:?}",
        started.elapsed()
    );

    // Our side of the connection is gone too, well before the answer's end: reading now
    // drains what was in flight, then meets the end.
    let raw = read_for(&mut socket, Duration::from_secs(2)).await;
    let chunks = raw.text.matches("\"type\":\"chunk\"").count();
    assert!(raw.closed, "the stalled connection is cut");
    assert_eq!(raw.status(), 200);
    assert!(chunks < 20_000, "cut after {chunks} chunks");
    assert!(!raw.text.contains("\"type\":\"done\""));
    eprintln!("stalled client: cut after {chunks} chunks");
    assert_still_serves(&h).await;
}

/// A connection whose receive window is small, so that a client reading nothing fills
/// it quickly.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_and_cuts_what_outlives_the_grace() {
    let mut h = harness(&[KEY], &[("STREAMAI_SHUTDOWN_GRACE_SECS", "1")]).await;
    // A stream that would run for minutes, being read.
    let endless = chat_body(STREAM, "[[fake:openai chunks=100000 delay=100]]");
    let mut stream = h
        .raw_client()
        .post(h.url(STREAM))
        .header("content-type", "application/json")
        .body(endless)
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("\"type\":\"chunk\"") {
        let bytes = stream.chunk().await.unwrap().expect("the stream runs");
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    // An upload that never finishes (the body timeout is 30 s) and an idle connection.
    let mut upload = TcpStream::connect(h.addr).await.unwrap();
    let request = head(STREAM, "Content-Length: 100\r\n") + "{";
    upload.write_all(request.as_bytes()).await.unwrap();
    let idle = TcpStream::connect(h.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let served = h.shut_down();
    let stopped = tokio::time::timeout(Duration::from_secs(3), served).await;
    let took = started.elapsed();
    assert!(stopped.is_ok(), "serve still runs after {took:?}");
    assert!(took < Duration::from_millis(2000), "stopped after {took:?}");
    eprintln!("graceful shutdown with grace 1 s: serve returned after {took:?}");

    while let Ok(Some(bytes)) = stream.chunk().await {
        seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    let frames = parse_frames(&seen);
    match frames.last() {
        Some(Frame::Error { code, .. }) => assert_eq!(*code, ErrorCode::Shutdown),
        other => panic!("expected the shutdown frame, got {other:?}"),
    }
    let cut = read_for(&mut upload, Duration::from_millis(500)).await;
    assert!(cut.closed, "the hung upload was cut");
    drop(idle);
    assert!(
        TcpStream::connect(h.addr).await.is_err(),
        "no longer accepting"
    );
}
