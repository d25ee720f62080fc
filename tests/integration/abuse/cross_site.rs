//! Abuse suite: other websites. Posts that are not JSON (415), posts another site makes
//! the browser send (403), a `Host` outside the allowed list (DNS rebinding, 421), and
//! the security headers, with a CSP nonce that every `<script>` of the page carries.

use reqwest::header::HeaderMap;
use serde_json::Value;

use streamai::fake_upstream::ANSWER;
use streamai::server::security::STRICT_POLICY;

use crate::support::{harness, Harness};

const KEY: &str = "sk-fake-cross-site-key-0001";
const ENDPOINTS: [&str; 2] = ["/api/chat/stream", "/api/chat"];

/// What a client saw: status, headers, body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// The refusal's `code`, after checking the body is a `RejectBody` in Chinese.
    fn refusal_code(&self) -> String {
        let json: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message
                .chars()
                .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "the message is in Chinese: {}",
            self.body
        );
        assert!(json["error"]["field"].is_string(), "{}", self.body);
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The body each endpoint accepts: one user message.
fn body_for(path: &str) -> String {
    let request = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
    if path == "/api/chat" {
        serde_json::json!({ "request": request }).to_string()
    } else {
        request.to_string()
    }
}

async fn send(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Answer {
    let mut request = h.raw_client().request(method, h.url(path)).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn post(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(h, reqwest::Method::POST, path, headers, body_for(path)).await
}

async fn get(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(h, reqwest::Method::GET, path, headers, String::new()).await
}

/// The server still answers a normal question completely and byte-exact.
async fn still_serves(h: &Harness) {
    let streamed = h.ask("hi").await;
    assert_eq!(streamed.status, 200, "{}", streamed.raw);
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
}

fn assert_common_headers(answer: &Answer) {
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert_eq!(answer.header("referrer-policy"), "no-referrer");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert!(answer
        .header("content-security-policy")
        .contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn posts_that_are_not_json_are_refused_415() {
    let h = harness(&[KEY], &[]).await;
    for path in ENDPOINTS {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let headers: Vec<(&str, &str)> = content_type
                .map(|ct| ("content-type", ct))
                .into_iter()
                .collect();
            let answer = post(&h, path, &headers).await;
            assert_eq!(
                answer.status, 415,
                "{path} {content_type:?}: {}",
                answer.body
            );
            assert_eq!(answer.refusal_code(), "unsupported_media_type");
            assert_common_headers(&answer);
        }
        let with_charset = post(
            &h,
            path,
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
        assert_eq!(with_charset.status, 200, "{path}: {}", with_charset.body);
    }
    assert_eq!(
        h.fake.records().len(),
        2,
        "only the two JSON posts reached the provider"
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn posts_from_other_sites_are_refused_403() {
    let h = harness(&[KEY], &[]).await;
    let json = ("content-type", "application/json");
    for path in ENDPOINTS {
        for header in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            let answer = post(&h, path, &[json, header]).await;
            assert_eq!(answer.status, 403, "{path} {header:?}: {}", answer.body);
            assert_eq!(answer.refusal_code(), "cross_site_request");
            assert_common_headers(&answer);
        }
        // A same-site origin on another port of the same host is another origin.
        let other_port = format!("http://127.0.0.1:{}", h.addr.port() ^ 1);
        let answer = post(&h, path, &[json, ("origin", &other_port)]).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
    }
    assert!(h.fake.records().is_empty(), "nothing reached the provider");
    still_serves(&h).await;
}

#[tokio::test]
async fn posts_from_our_own_page_are_served() {
    let h = harness(&[KEY], &[]).await;
    let origin = format!("http://{}", h.addr);
    for path in ENDPOINTS {
        let answer = post(
            &h,
            path,
            &[
                ("content-type", "application/json"),
                ("origin", &origin),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        if path == "/api/chat" {
            let completion: streamai::api::Completion = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(completion.content, ANSWER);
        } else {
            let frames = crate::support::parse_frames(&answer.body);
            let text: String = frames
                .iter()
                .filter_map(streamai::protocol::Frame::text)
                .map(|(_, t, _)| t)
                .collect();
            assert_eq!(text, ANSWER);
        }
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn hosts_outside_the_allowed_list_are_refused() {
    // 127.0.0.1 is listed so that the harness's own requests pass.
    let h = harness(
        &[KEY],
        &[("STREAMAI_ALLOWED_HOSTS", "Chat.Example.com, 127.0.0.1")],
    )
    .await;
    let json = ("content-type", "application/json");
    // DNS rebinding: evil.example now resolves to us, so the page is "same-origin".
    let rebound = [("host", "evil.example"), ("origin", "http://evil.example")];
    let answer = get(&h, "/", &rebound[..1]).await;
    assert_eq!(answer.status, 421, "{}", answer.body);
    assert_eq!(answer.refusal_code(), "host_not_allowed");
    assert_common_headers(&answer);
    for path in ENDPOINTS {
        let answer = post(&h, path, &[json, rebound[0], rebound[1]]).await;
        assert_eq!(answer.status, 421, "{path}: {}", answer.body);
        assert_eq!(answer.refusal_code(), "host_not_allowed");
    }
    assert!(h.fake.records().is_empty(), "nothing reached the provider");

    let page = get(&h, "/", &[("host", "chat.example.com")]).await;
    assert_eq!(page.status, 200);
    for host in ["chat.example.com", "chat.example.com:8443"] {
        let origin = format!("https://{host}");
        let answer = post(
            &h,
            "/api/chat/stream",
            &[json, ("host", host), ("origin", &origin)],
        )
        .await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
        let text: String = crate::support::parse_frames(&answer.body)
            .iter()
            .filter_map(streamai::protocol::Frame::text)
            .map(|(_, t, _)| t)
            .collect();
        assert_eq!(text, ANSWER);
    }
    still_serves(&h).await;
}

/// The nonce of a page's CSP header.
fn nonce_of(policy: &str) -> &str {
    let start = policy.find("'nonce-").expect("the policy has a nonce") + "'nonce-".len();
    let len = policy[start..].find('\'').expect("the nonce is quoted");
    &policy[start..start + len]
}

#[tokio::test]
async fn pages_carry_a_csp_whose_nonce_every_script_has() {
    let h = harness(&[KEY], &[]).await;
    let mut nonces = Vec::new();
    for path in ["/", "/settings", "/no-such-page", "/"] {
        let page = get(&h, path, &[]).await;
        assert!(
            page.status == 200 || path == "/no-such-page",
            "{path}: {}",
            page.status
        );
        assert_common_headers(&page);
        let policy = page.header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "'wasm-unsafe-eval'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                policy.contains(directive),
                "{path}: {directive} in {policy}"
            );
        }
        assert!(
            !policy.contains("unsafe-inline") && !policy.contains("'unsafe-eval'"),
            "{policy}"
        );
        let nonce = nonce_of(policy).to_owned();
        assert!(nonce.len() >= 22, "128 bits at least: {nonce}");
        let scripts: Vec<&str> = page
            .body
            .match_indices("<script")
            .map(|(at, _)| &page.body[at..at + page.body[at..].find('>').unwrap()])
            .collect();
        assert!(
            !scripts.is_empty(),
            "{path}: the hydration script is on the page"
        );
        for tag in &scripts {
            assert!(
                tag.contains(&format!("nonce=\"{nonce}\"")),
                "{path}: {tag} lacks {nonce}"
            );
        }
        nonces.push(nonce);
    }
    let mut distinct = nonces.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        nonces.len(),
        "a fresh nonce per response: {nonces:?}"
    );
    still_serves(&h).await;
}

#[tokio::test]
async fn json_and_stream_responses_carry_the_headers_too() {
    let h = harness(&[KEY], &[]).await;
    let json = ("content-type", "application/json");
    let info = send(
        &h,
        reqwest::Method::POST,
        "/api/server_info",
        &[json],
        "{}".into(),
    )
    .await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.header("content-security-policy"), STRICT_POLICY);
    assert_common_headers(&info);

    let chat = post(&h, "/api/chat", &[json]).await;
    assert_eq!(chat.status, 200, "{}", chat.body);
    assert_eq!(chat.header("content-security-policy"), STRICT_POLICY);
    assert_common_headers(&chat);

    let script = get(&h, "/pkg/streamai.js", &[]).await;
    assert_eq!(
        script.header("x-content-type-options"),
        "nosniff",
        "static files and their 404s too"
    );

    let streamed = h.ask("hi").await;
    assert_eq!(streamed.status, 200);
    let header = |name: &str| {
        streamed
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "text/event-stream");
    assert_eq!(header("content-security-policy"), STRICT_POLICY);
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-frame-options"), "DENY");
    streamed.assert_well_formed();
    assert_eq!(streamed.text(), ANSWER);
}
