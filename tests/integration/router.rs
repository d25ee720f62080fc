//! The router driven through `oneshot`, with no socket: pages, server functions, 404s.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use streamai::server::routes::router;

use crate::support::{leptos_options, llm_config, state, test_store_and_url};

async fn send(app: axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn home_page_is_server_rendered() {
    let (status, html) = send(router(state(&[]).await), get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<title>流式AI</title>"), "{html}");
    assert!(html.contains(r#"href="/settings""#));
    assert!(
        html.contains("/pkg/streamai.js"),
        "hydration script is linked"
    );
}

#[tokio::test]
async fn settings_page_shows_configuration_with_masked_keys() {
    let key = "sk-integration-secret-0123456789";
    let app = router(state(&[("DEEPSEEK_API_KEY", key)]).await);
    let (status, html) = send(app, get("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("deepseek-chat"), "{html}");
    assert!(html.contains("key#1 ••••6789"));
    assert!(!html.contains(key), "the key itself never reaches the page");
}

#[tokio::test]
async fn server_info_function_answers_json_without_keys() {
    let key = "sk-integration-secret-abcdefghij";
    let app = router(state(&[("QWEN_API_KEY", key)]).await);
    let request = Request::post("/api/server_info")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = send(app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let info: streamai::api::ServerInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(info.default_provider, "qwen");
    assert_eq!(info.temperature, 0.8);
    assert_eq!(info.max_tokens, 65535);
    assert!(!info.demo);
    assert!(!body.contains(key));
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (status, html) = send(router(state(&[]).await), get("/no-such-page")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("页面不存在"));
}

/// While no code exists anyone may manage codes; that ends the moment a code exists, even
/// one made by another process (the CLI) while this server still remembers "none yet".
#[tokio::test]
async fn a_first_code_made_elsewhere_ends_the_open_admin_at_once() {
    let (store, url) = test_store_and_url().await;
    let state = streamai::server::AppState::new(leptos_options(), llm_config(&[]), store)
        .expect("HTTP client builds");
    let app = router(state);
    let list = || {
        Request::post("/api/admin/list_codes")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let (status, body) = send(app.clone(), list()).await;
    assert_eq!(status, StatusCode::OK, "open: {body}");

    let cli = streamai::store::Store::connect(&url).await.unwrap();
    let first = streamai::store::NewCode {
        name: "管理员".into(),
        admin: true,
        limits: Default::default(),
    };
    cli.create_code(first, streamai::store::unix_now())
        .await
        .unwrap();
    let (status, body) = send(app, list()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
