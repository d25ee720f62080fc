//! The 服务配置 tab over HTTP: the keys' live state (`key_states`) after the fake upstream
//! refused, rate limited and emptied keys, and the server-rendered model table with its
//! fallback chain. No key ever appears in either.

use streamai::api::{KeyStateKind, KeyStatus, ParkedBecause, ProviderKeys};
use streamai::fake_upstream::ANSWER;
use streamai::store::{unix_now, Limits, NewCode};

use crate::support::{harness, Harness};

/// Round robin tries them in this order: refused (401), out of balance (429
/// `insufficient_quota`), rate limited (429, `Retry-After: 30`), and one that answers.
const KEYS: [&str; 4] = [
    "sk-settings-bad-0123456789abcdef",
    "sk-settings-broke-0123456789abcd",
    "sk-settings-busy-0123456789abcde",
    "sk-settings-fine-0123456789abcde",
];

/// Each key in an account of its own, so that one key's rest leaves the others ready.
const ACCOUNTS: [(&str, &str); 4] = [
    ("CUSTOM_API_KEY_1_ACCOUNT", "team-a"),
    ("CUSTOM_API_KEY_2_ACCOUNT", "team-b"),
    ("CUSTOM_API_KEY_3_ACCOUNT", "team-c"),
    ("CUSTOM_API_KEY_4_ACCOUNT", "team-d"),
];

/// Calls `key_states` as the browser does; returns the status and the raw body.
async fn key_states(h: &Harness, code: Option<&str>) -> (u16, String) {
    let mut request = h
        .raw_client()
        .post(h.url("/api/key_states"))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(code) = code {
        request = request.bearer_auth(code);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn custom_keys(body: &str) -> Vec<KeyStatus> {
    let providers: Vec<ProviderKeys> =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let custom = providers.into_iter().find(|p| p.provider == "custom");
    custom.expect("the custom provider is listed").keys
}

fn assert_no_secret(text: &str) {
    for key in KEYS {
        assert!(!text.contains(key), "{key} leaked: {text}");
    }
}

#[tokio::test]
async fn key_states_show_rotation_cooldown_and_parking_with_reasons() {
    let h = harness(&KEYS, &ACCOUNTS).await;
    let (status, body) = key_states(&h, None).await;
    assert_eq!(status, 200, "{body}");
    let fresh = custom_keys(&body);
    assert!(fresh.iter().all(|k| k.state == KeyStateKind::Rotation));

    // One question walks the ring: three refusals, then an answer.
    let before = unix_now() * 1000;
    let asked = h.ask("你好").await;
    assert_eq!(asked.text(), ANSWER, "{}", asked.raw);

    let (status, body) = key_states(&h, None).await;
    assert_eq!(status, 200, "{body}");
    assert_no_secret(&body);
    let keys = custom_keys(&body);
    let seen: Vec<(&str, &str, KeyStateKind, Option<ParkedBecause>)> = keys
        .iter()
        .map(|k| (k.id_masked.as_str(), k.account.as_str(), k.state, k.reason))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "key#1 ••••cdef",
                "team-a",
                KeyStateKind::Parked,
                Some(ParkedBecause::Rejected)
            ),
            (
                "key#2 ••••abcd",
                "team-b",
                KeyStateKind::Parked,
                Some(ParkedBecause::OutOfBalance)
            ),
            ("key#3 ••••bcde", "team-c", KeyStateKind::Cooling, None),
            ("key#4 ••••bcde", "team-d", KeyStateKind::Rotation, None),
        ]
    );
    // Parked for `key_park_secs` (300), cooled for the `Retry-After` (30).
    let ends = |k: &KeyStatus| k.until_unix_ms.expect("a rest ends") - before;
    assert!((295_000..=302_000).contains(&ends(&keys[0])), "{keys:?}");
    assert!((25_000..=32_000).contains(&ends(&keys[2])), "{keys:?}");
    assert_eq!(keys[3].until_unix_ms, None);
}

#[tokio::test]
async fn key_states_need_a_code_and_show_tails_to_admins_only() {
    let h = harness(&KEYS[3..], &[]).await;
    // The first code is an admin's.
    let admin = code(&h, "管理员").await;
    let user = code(&h, "小王").await;

    let (status, body) = key_states(&h, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = key_states(&h, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(custom_keys(&body)[0].id_masked, "key#1 ••••bcde");
    let (status, body) = key_states(&h, Some(&user)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(custom_keys(&body)[0].id_masked, "key#1 ••••");
}

#[tokio::test]
async fn the_settings_page_shows_models_with_their_chain() {
    let h = harness(&KEYS[3..], &[]).await;
    let response = h.raw_client().get(h.url("/settings")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert_no_secret(&html);
    let row = model_row(&html, "qwen2.5:7b");
    let chain = cell(row, "fallback-chain");
    assert_eq!(chain, "custom:fake-strict → custom:fake-priced", "{row}");
    assert!(row.contains(">接着助手消息续写<"), "{row}");
    // A model without a chain says so.
    let plain = model_row(&html, "fake-strict");
    assert_eq!(cell(plain, "fallback-chain"), "—", "{plain}");
    assert!(plain.contains(">否<"), "{plain}");
    // The page comes whole (the keys' state is read by the browser, after hydration):
    // until then the masked keys show.
    assert!(!html.contains("正在读取服务配置"), "{html}");
    assert!(html.contains("key#1 ••••bcde"), "{html}");
    assert!(html.contains("正在读取密钥状态"), "{html}");
}

/// A new code named `name`; returns it in plaintext.
async fn code(h: &Harness, name: &str) -> String {
    let new = NewCode {
        name: name.into(),
        admin: false,
        limits: Limits::default(),
    };
    let created = h.state.store.create_code(new, unix_now()).await;
    created.expect("the code is created").1
}

/// The text of the cell marked `data-testid="{testid}"` in `row`.
fn cell<'a>(row: &'a str, testid: &str) -> &'a str {
    let mark = format!(r#"data-testid="{testid}""#);
    let at = row
        .find(&mark)
        .unwrap_or_else(|| panic!("no {testid}: {row}"));
    let start = row[at..].find('>').expect("the tag ends") + at + 1;
    let end = row[start..].find('<').expect("the cell ends") + start;
    &row[start..end]
}

/// The `<tr>` of `model` in the page's model table.
fn model_row<'a>(html: &'a str, model: &str) -> &'a str {
    let start = html
        .find(&format!(r#"data-model="{model}""#))
        .unwrap_or_else(|| panic!("no row for {model}: {html}"));
    let end = html[start..].find("</tr>").expect("the row ends") + start;
    &html[start..end]
}
