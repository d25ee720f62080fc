//! Other websites: the one middleware ([`guard`]) that stands between every request and
//! the app. In order:
//!
//! 1. **Host** (DNS rebinding): with `allowed_hosts` set (`[limits]` in Leptos.toml or
//!    `STREAMAI_ALLOWED_HOSTS`), a request whose `Host` names another host is answered
//!    421 Misdirected Request. A port after the name is ignored unless the list entry
//!    names one. Without the list a page on `evil.example` whose DNS is rebound to our
//!    address would be same-origin with us in the browser's eyes.
//! 2. **Cross-site writes** (CSRF): every request that is not GET, HEAD or OPTIONS is
//!    refused 403 when the browser says it came from elsewhere: `Sec-Fetch-Site` other
//!    than `same-origin` or `none`, or an `Origin` whose host and port differ from `Host`
//!    (`Origin: null` included). `same-site` is refused too: a sibling subdomain may be
//!    someone else's, and the page never posts across subdomains. Clients that send
//!    neither header (curl, SDKs) are not browsers riding a user's session and pass.
//!    Behind a reverse proxy, the proxy must pass `Host` through (nginx:
//!    `proxy_set_header Host $host;`), or every browser POST is refused.
//! 3. **JSON only**: a POST whose `Content-Type` is missing or is not `application/json`
//!    (parameters such as `; charset=utf-8` allowed) is answered 415. HTML forms cannot
//!    send that type and a cross-origin `fetch` with it needs a CORS preflight, which we
//!    never grant: a second lock on the same door as 2.
//! 4. **Headers on every response**: `X-Content-Type-Options: nosniff`,
//!    `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, and a Content Security
//!    Policy. HTML pages get [`page_policy`] with a fresh nonce per request; everything
//!    else (JSON, the event stream, static files) gets `default-src 'none'`.
//!
//! The nonce reaches Leptos through the request: the middleware stores it in the request
//! extensions, and the shell calls [`provide_request_nonce`], which hands it to Leptos as
//! its [`Nonce`] context. `HydrationScripts`, `AutoReload`, leptos_meta's `<Script>` and
//! `<Style>` and the `<script>` chunks that carry resolved resources all read that
//! context, so the header and every script on the page name the same nonce.
//!
//! Each refusal is a [`RejectBody`] with a machine-readable `code`, the header at fault
//! in `field`, and a message in Chinese.

use std::sync::LazyLock;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{request::Parts, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use leptos::nonce::Nonce;

use super::AppState;
use crate::protocol::{RejectBody, Rejection};

/// The CSP of everything that is not an HTML page: nothing may load, nobody may frame it.
pub const STRICT_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The middleware: checks the request (host, cross-site, content type), runs the app,
/// and adds the security headers to whatever comes back, refusals included.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let nonce = Nonce::new();
    let mut response = match check(&state.llm.config().limits.allowed_hosts, &request) {
        Ok(()) => {
            request.extensions_mut().insert(nonce.clone());
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    };
    let reload_port = LIVE_RELOAD.then(|| {
        let options = &state.leptos_options;
        options.reload_external_port.unwrap_or(options.reload_port)
    });
    add_headers(response.headers_mut(), &nonce, reload_port);
    response
}

/// Called by the shell while it renders: gives Leptos the nonce of this request's CSP
/// header, replacing the one leptos_axum generated (which no header names).
pub fn provide_request_nonce() {
    let nonce = leptos::prelude::use_context::<Parts>()
        .and_then(|parts| parts.extensions.get::<Nonce>().cloned());
    if let Some(nonce) = nonce {
        leptos::prelude::provide_context(nonce);
    }
}

/// The CSP of an HTML page. `reload_port` is cargo-leptos's live-reload WebSocket
/// (`cargo leptos watch` only; its script connects to the page's host on that port).
pub fn page_policy(nonce: &str, reload_port: Option<u32>) -> String {
    let live_reload = reload_port
        .map(|port| format!(" ws://*:{port} wss://*:{port}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'{live_reload}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// `cargo leptos watch` sets this; `AutoReload` emits its script only then.
static LIVE_RELOAD: LazyLock<bool> = LazyLock::new(|| std::env::var_os("LEPTOS_WATCH").is_some());

fn add_headers(headers: &mut HeaderMap, nonce: &Nonce, reload_port: Option<u32>) {
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| media_type(ct).eq_ignore_ascii_case("text/html"));
    let policy = if is_html {
        HeaderValue::from_str(&page_policy(nonce, reload_port))
            .unwrap_or(HeaderValue::from_static(STRICT_POLICY))
    } else {
        HeaderValue::from_static(STRICT_POLICY)
    };
    let fixed: [(HeaderName, HeaderValue); 4] = [
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    for (name, value) in fixed {
        headers.entry(name).or_insert(value);
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Refusal {
    HostNotAllowed,
    CrossSite { field: &'static str },
    NotJson,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, field, message) = match self {
            Refusal::HostNotAllowed => (
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "host",
                "请求的主机名不在允许列表中（allowed_hosts / STREAMAI_ALLOWED_HOSTS），\
                 请用配置的域名访问本服务",
            ),
            Refusal::CrossSite { field } => (
                StatusCode::FORBIDDEN,
                "cross_site_request",
                field,
                "拒绝来自其他网站的请求：只接受本站页面发出的请求",
            ),
            Refusal::NotJson => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content-type",
                "请求体必须是 JSON，并带上请求头 Content-Type: application/json",
            ),
        };
        tracing::info!(code, "request refused: {message}");
        let rejection = Rejection {
            code: code.to_owned(),
            field: Some(field.to_owned()),
            message: message.to_owned(),
        };
        (status, Json(RejectBody { error: rejection })).into_response()
    }
}

fn check<B>(allowed_hosts: &[String], request: &axum::http::Request<B>) -> Result<(), Refusal> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    if !allowed_hosts.is_empty()
        && !host
            .as_deref()
            .is_some_and(|h| host_allowed(allowed_hosts, h))
    {
        return Err(Refusal::HostNotAllowed);
    }
    let method = request.method();
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(Refusal::CrossSite {
                field: "sec-fetch-site",
            });
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .zip(host.as_deref())
            .is_some_and(|(origin, host)| same_origin(origin, host));
        if !same {
            return Err(Refusal::CrossSite { field: "origin" });
        }
    }
    if *method == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| media_type(ct).eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Refusal::NotJson);
        }
    }
    Ok(())
}

/// `text/html; charset=utf-8` → `text/html`.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// `Host` against the list: the name alone (any port) or, when the entry has a port,
/// name and port. Case and a trailing dot do not matter.
fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = split_port(&host);
    let name = name.strip_suffix('.').unwrap_or(name);
    allowed.iter().any(|entry| {
        let (entry_name, entry_port) = split_port(entry);
        entry_name == name && (entry_port.is_none() || entry_port == port)
    })
}

/// Whether `Origin` (`scheme://host[:port]`) names the same host and port as `Host`.
/// A `Host` without a port is taken to use the default port of the origin's scheme.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null`, or not an origin at all
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let origin = authority.to_ascii_lowercase();
    let host = host.trim().to_ascii_lowercase();
    let (origin_name, origin_port) = split_port(&origin);
    let (host_name, host_port) = split_port(&host);
    !origin_name.is_empty()
        && origin_name == host_name
        && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port)
}

/// `name:port` → (`name`, `Some(port)`); IPv6 literals keep their brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let name_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    let (name, rest) = authority.split_at(name_end);
    (name, rest.strip_prefix(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> axum::http::Request<()> {
        let mut builder = axum::http::Request::builder()
            .method(method)
            .uri("/api/chat");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn check_post(headers: &[(&str, &str)], expected: Result<(), Refusal>) {
        let mut all = vec![
            ("host", "127.0.0.1:3000"),
            ("content-type", "application/json"),
        ];
        all.extend_from_slice(headers);
        let got = check(&[], &request(Method::POST, &all));
        assert_eq!(got, expected, "{headers:?}");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let origin = Err(Refusal::CrossSite { field: "origin" });
        let fetch_site = Err(Refusal::CrossSite {
            field: "sec-fetch-site",
        });
        check_post(&[], Ok(()));
        check_post(&[("origin", "http://127.0.0.1:3000")], Ok(()));
        check_post(&[("origin", "HTTP://127.0.0.1:3000")], Ok(()));
        check_post(&[("origin", "https://evil.example")], origin);
        check_post(&[("origin", "http://127.0.0.1:3001")], origin);
        check_post(&[("origin", "http://127.0.0.1")], origin);
        check_post(&[("origin", "null")], origin);
        check_post(&[("sec-fetch-site", "same-origin")], Ok(()));
        check_post(&[("sec-fetch-site", "none")], Ok(()));
        check_post(&[("sec-fetch-site", "same-site")], fetch_site);
        check_post(&[("sec-fetch-site", "cross-site")], fetch_site);
    }

    #[test]
    fn origin_ports_default_by_scheme() {
        assert!(same_origin("https://chat.example.com", "chat.example.com"));
        assert!(same_origin(
            "https://chat.example.com",
            "chat.example.com:443"
        ));
        assert!(same_origin(
            "http://chat.example.com:80",
            "chat.example.com"
        ));
        assert!(!same_origin(
            "https://chat.example.com",
            "chat.example.com:80"
        ));
        assert!(same_origin("http://[::1]:3000", "[::1]:3000"));
        assert!(!same_origin("http://[::1]:3000", "[::2]:3000"));
        assert!(!same_origin("ftp://chat.example.com", "chat.example.com"));
    }

    #[test]
    fn only_json_posts_pass() {
        let post = |ct: Option<&str>| {
            let mut headers = vec![("host", "h")];
            headers.extend(ct.map(|ct| ("content-type", ct)));
            check(&[], &request(Method::POST, &headers))
        };
        assert_eq!(post(Some("application/json")), Ok(()));
        assert_eq!(post(Some("application/json; charset=utf-8")), Ok(()));
        assert_eq!(post(Some("Application/JSON")), Ok(()));
        assert_eq!(post(None), Err(Refusal::NotJson));
        assert_eq!(post(Some("text/plain")), Err(Refusal::NotJson));
        assert_eq!(post(Some("application/jsonp")), Err(Refusal::NotJson));
        assert_eq!(
            post(Some("application/x-www-form-urlencoded")),
            Err(Refusal::NotJson)
        );
        let get = check(
            &[],
            &request(Method::GET, &[("origin", "https://evil.example")]),
        );
        assert_eq!(get, Ok(()), "reads are not checked for origin or type");
    }

    #[test]
    fn hosts_match_by_name_and_optional_port() {
        let allowed = ["chat.example.com".to_owned(), "localhost:3000".to_owned()];
        for (host, ok) in [
            ("chat.example.com", true),
            ("CHAT.example.com:8443", true),
            ("chat.example.com.", true),
            ("localhost:3000", true),
            ("localhost:3001", false),
            ("localhost", false),
            ("evil.example", false),
            ("chat.example.com.evil.example", false),
        ] {
            assert_eq!(host_allowed(&allowed, host), ok, "{host}");
        }
        let refused = check(&allowed, &request(Method::GET, &[("host", "evil.example")]));
        assert_eq!(refused, Err(Refusal::HostNotAllowed));
        let no_host = check(&allowed, &request(Method::GET, &[]));
        assert_eq!(no_host, Err(Refusal::HostNotAllowed));
    }

    #[test]
    fn page_policy_names_the_nonce() {
        let policy = page_policy("abc", None);
        assert!(policy.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval'"));
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(!policy.contains("ws:"));
        assert!(page_policy("abc", Some(3001)).contains("connect-src 'self' ws://*:3001"));
    }
}
