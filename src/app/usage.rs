//! The 用量 tab: what was spent, on what, and how fast it answered. A code's holder sees
//! that code's usage; an admin (or anyone while no code exists) sees everything, plus a
//! table per code.
//!
//! Everything is computed on the server: the numbers from the daily rollup
//! (`Store::daily_usage`, never a ledger scan; `report`), the charts as finished SVG drawn
//! with plotters (`charts`), money as exact decimal strings — [`get_usage`] answers that
//! as data ([`UsageView`]). The page asks [`get_usage_panel`] instead, which renders the same
//! view to HTML on the server (`panel`): the report reacts to nothing, so the browser gets
//! no code for it and the chat's WASM does not grow with this tab. It asks after hydration
//! (a `LocalResource`): the access code travels in a request header that only the browser
//! has (`access::BearerClient`), so the server cannot render the page with the report.
//!
//! The CSV export is a server function too ([`export_usage_csv`]); the browser turns its
//! text into a file with a Blob URL (a download is a navigation, which the page's CSP
//! does not restrict).

#[cfg(feature = "ssr")]
mod charts;
#[cfg(feature = "ssr")]
mod panel;
#[cfg(feature = "ssr")]
mod report;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use super::access::{error_text, Access};

/// The day ranges the tab offers.
pub const RANGES: [u32; 2] = [7, 30];

/// Everything the tab shows for one range of days.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UsageView {
    /// Whose usage this is, in words (`访问码「设计组」的用量`, `全部用量`).
    pub scope_label: String,
    /// The caller sees every code's usage.
    pub admin: bool,
    pub days: u32,
    /// The first and last Shanghai day shown, `YYYY-MM-DD`.
    pub from: String,
    pub to: String,
    pub totals: Totals,
    /// Empty when there is no usage in the range.
    pub charts: Vec<Chart>,
    /// Today's (and this month's) spending against the limits that apply.
    pub budgets: Vec<BudgetBar>,
    /// Admins only: one row per code, most spent first.
    pub by_code: Vec<CodeRow>,
    /// The latest requests, newest first (at most 50; not limited to the range).
    pub recent: Vec<RecentRow>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub stopped: u64,
    pub refused: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Exact yuan (`0.000246`).
    pub cost: String,
}

/// One chart: finished SVG (no styles, no scripts) and a sentence that says what it shows,
/// for screen readers. `svg` is empty when there is nothing to draw.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Chart {
    /// A stable name for tests and anchors (`spend`, `tokens`, `requests`, `ttft`).
    pub key: String,
    pub title: String,
    pub summary: String,
    pub svg: String,
}

/// Spending against one limit, for a `<meter>`. Money as exact strings; `value` and
/// `max` are the same amounts in yuan as floats, for the meter only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BudgetBar {
    /// `今日额度`, `本月额度`, `全站今日额度`.
    pub label: String,
    /// Spent plus reserved by streams still running.
    pub spent: String,
    pub limit: String,
    pub remaining: String,
    pub value: f64,
    pub max: f64,
}

/// One code's totals (admins only).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CodeRow {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: String,
}

/// One request of the ledger, ready to show.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RecentRow {
    /// Beijing time, `11-27 14:03:05`.
    pub time: String,
    /// The code's name; admins only (`None` for others).
    pub code: Option<String>,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Exact yuan.
    pub cost: String,
    /// `850 毫秒`, `1.2 秒`, `—`.
    pub ttft: String,
    /// In Chinese: `完成`, `出错：上游错误`, `已拒绝：额度不足`, ….
    pub outcome: String,
    /// `ok`, `stopped`, `error` or `refused`, for the row's class.
    pub outcome_kind: String,
}

/// The report as the page shows it: HTML rendered on the server from a [`UsageView`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UsagePanel {
    pub days: u32,
    /// Escaped by Leptos; the charts' SVG sanitized (`charts::sanitize`).
    pub html: String,
}

/// A CSV file for the browser to save.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CsvFile {
    pub filename: String,
    pub text: String,
}

/// The caller's usage over the last `days` Shanghai days (today included).
#[server(prefix = "/api", endpoint = "usage", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn get_usage(days: u32) -> Result<UsageView, ServerFnError> {
    let state = expect_context::<crate::server::AppState>();
    let caller = crate::app::access::caller().await?;
    report::build(&state.store, &caller, days, crate::store::unix_now_ms())
        .await
        .map_err(report::failed)
}

/// [`get_usage`] rendered to HTML, for the page.
#[server(prefix = "/api", endpoint = "usage_panel", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn get_usage_panel(days: u32) -> Result<UsagePanel, ServerFnError> {
    let view = get_usage(days).await?;
    Ok(UsagePanel {
        days: view.days,
        html: panel::render(view),
    })
}

/// The caller's ledger rows of the last `days` Shanghai days as CSV (exact yuan, times in
/// +08:00), the same rows the tab's numbers come from.
#[server(prefix = "/api", endpoint = "usage_csv", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn export_usage_csv(days: u32) -> Result<CsvFile, ServerFnError> {
    let state = expect_context::<crate::server::AppState>();
    let caller = crate::app::access::caller().await?;
    report::csv(&state.store, &caller, days, crate::store::unix_now_ms())
        .await
        .map_err(report::failed)
}

/// `?days=30` picks 30 days; anything else the first range.
fn days_from_query(value: Option<String>) -> u32 {
    value
        .and_then(|v| v.parse().ok())
        .filter(|d| RANGES.contains(d))
        .unwrap_or(RANGES[0])
}

/// The 用量 tab.
#[component]
pub(crate) fn UsagePage() -> impl IntoView {
    let query = use_query_map();
    let days = Memo::new(move |_| days_from_query(query.read().get("days")));
    // Loaded again when a code is entered (after a 401 opened the prompt).
    let access = expect_context::<Access>();
    let usage = LocalResource::new(move || {
        access.epoch.track();
        get_usage_panel(days.get())
    });
    let loading = || view! { <p class="muted usage-loading">"正在读取用量…"</p> };
    view! {
        <section class="card usage-head">
            <h2>"用量"</h2>
            <nav class="usage-range" aria-label="时间范围">
                {RANGES.map(|n| view! {
                    <a
                        href=format!("/usage?days={n}")
                        aria-current=move || (days.get() == n).then_some("true")
                    >
                        {format!("近 {n} 天")}
                    </a>
                })}
            </nav>
            <CsvButton days/>
        </section>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                match usage.await {
                    Ok(panel) => view! { <div class="usage-panel" inner_html=panel.html></div> }.into_any(),
                    Err(err) => view! {
                        <p class="error" data-testid="usage-error">"读取用量失败：" {error_text(&err)}</p>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// Asks the server for the range's CSV and saves it as a file.
#[component]
fn CsvButton(days: Memo<u32>) -> impl IntoView {
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let export = move |_| {
        busy.set(true);
        leptos::task::spawn_local(async move {
            let result = match export_usage_csv(days.get_untracked()).await {
                Ok(file) => save_file(&file.filename, &file.text),
                Err(err) => Err(error_text(&err)),
            };
            error.set(result.err().map(|err| format!("导出失败：{err}")));
            busy.set(false);
        });
    };
    view! {
        <button type="button" class="usage-csv" data-testid="usage-csv" on:click=export disabled=move || busy.get()>
            "导出 CSV"
        </button>
        {move || error.get().map(|err| view! { <p class="error">{err}</p> })}
    }
}

/// Saves `text` as the file `name`: a Blob URL on a `download` link, clicked. A UTF-8 BOM
/// goes first so that spreadsheet programs read the Chinese names right.
#[cfg(feature = "hydrate")]
fn save_file(name: &str, text: &str) -> Result<(), String> {
    use wasm_bindgen::{JsCast, JsValue};

    let describe = |err: JsValue| err.as_string().unwrap_or_else(|| format!("{err:?}"));
    // Bytes, not a JS string: decoding a string from WASM would drop the BOM.
    let bytes = [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat();
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes.as_slice()));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/csv;charset=utf-8");
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .map_err(describe)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(describe)?;
    let link = document()
        .create_element("a")
        .map_err(describe)?
        .dyn_into::<web_sys::HtmlAnchorElement>()
        .map_err(|_| "not a link".to_owned())?;
    link.set_href(&url);
    link.set_download(name);
    link.click();
    // Revoking at once could cancel the download before the browser has read the blob.
    set_timeout(
        move || {
            let _ = web_sys::Url::revoke_object_url(&url);
        },
        std::time::Duration::from_secs(60),
    );
    Ok(())
}

/// The server never saves files (the button only works after hydration).
#[cfg(not(feature = "hydrate"))]
fn save_file(_name: &str, _text: &str) -> Result<(), String> {
    Err("请在浏览器中导出".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_picks_a_known_range() {
        assert_eq!(days_from_query(None), 7);
        assert_eq!(days_from_query(Some("30".into())), 30);
        assert_eq!(days_from_query(Some("365".into())), 7);
        assert_eq!(days_from_query(Some("x".into())), 7);
    }
}
