//! The 管理 tab (`/admin`): access codes listed with their limits and spending, created
//! (the plaintext shown once), limited and revoked. Its server functions answer 403 unless
//! the caller is an admin (an admin code, or anyone while the server has no code yet).
//!
//! Nothing of it is rendered on the server: the list is read after hydration, with the
//! browser's code, so no page HTML ever holds a code or the list.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use super::access::{error_text, Access};

/// One access code as the admin page shows it; never the code itself. Money in yuan as
/// `Yuan` writes it (`"0.0012"`), times in Beijing time (`2026-11-27 09:30`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct CodeRow {
    pub id: i64,
    pub name: String,
    /// The first characters of the code (`sk-liu-3f9a`).
    pub prefix: String,
    pub admin: bool,
    pub daily_limit: Option<String>,
    pub monthly_limit: Option<String>,
    pub rpm: Option<u32>,
    pub concurrent: Option<u32>,
    /// `None`: every model.
    pub models: Option<Vec<String>>,
    pub expires_at: Option<String>,
    pub expired: bool,
    pub spent_today: String,
    /// Held for answers still streaming.
    pub reserved_today: String,
    pub spent_month: String,
    pub reserved_month: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The code this browser is using.
    pub current: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CodeList {
    pub codes: Vec<CodeRow>,
}

/// A new code: its plaintext travels this once and is never stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CreatedCode {
    pub code: CodeRow,
    pub plaintext: String,
    /// The server had no code before: from now on it asks for one, this browser included.
    pub was_open: bool,
}

/// The limit fields of the create and edit forms, as typed. Blank means no limit; money is
/// exact yuan (at most 12 decimals); `models` is a comma-separated list of model ids;
/// `expires_days` counts from now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct LimitsInput {
    pub daily_yuan: String,
    pub monthly_yuan: String,
    pub rpm: String,
    pub concurrent: String,
    pub models: String,
    pub expires_days: String,
}

/// Every access code, oldest first, with today's and this month's spending.
#[server(prefix = "/api", endpoint = "admin/list_codes", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn list_codes() -> Result<CodeList, ServerFnError> {
    let (state, caller) = ssr::admin().await?;
    let now = crate::store::unix_now();
    let infos = state.store.list_codes().await.map_err(ssr::failed)?;
    let mut codes = Vec::with_capacity(infos.len());
    for info in infos {
        codes.push(ssr::row(&state, &caller, info, now).await?);
    }
    Ok(CodeList { codes })
}

/// Creates a code; a blank `expires_days` means it never expires. The first code of a
/// server is an admin code whatever `admin` says.
#[server(prefix = "/api", endpoint = "admin/create_code", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn create_code(
    name: String,
    admin: bool,
    limits: LimitsInput,
) -> Result<CreatedCode, ServerFnError> {
    use crate::store::{unix_now, NewCode};

    let (state, caller) = ssr::admin().await?;
    let now = unix_now();
    let name = name.trim();
    if name.is_empty() {
        return Err(ssr::bad_request("请填写名称".into()));
    }
    if name.chars().count() > 64 {
        return Err(ssr::bad_request("名称最多 64 个字".into()));
    }
    let expires_at = ssr::expiry(&limits.expires_days, now).map_err(ssr::bad_request)?;
    let limits = ssr::Limits {
        expires_at,
        ..ssr::parse(&limits, &state).map_err(ssr::bad_request)?
    };
    // `ssr::admin` let a caller without a code through only because the database had no
    // code just now.
    let was_open = caller.code().is_none();
    let new = NewCode {
        name: name.to_owned(),
        admin,
        limits,
    };
    let (info, plaintext) = state
        .store
        .create_code(new, now)
        .await
        .map_err(ssr::failed)?;
    tracing::info!(code = info.id, admin = info.admin, "access code created");
    Ok(CreatedCode {
        code: ssr::row(&state, &caller, info, now).await?,
        plaintext,
        was_open,
    })
}

/// Replaces a code's limits. A blank `expires_days` keeps the expiry; `never_expires`
/// removes it.
#[server(prefix = "/api", endpoint = "admin/update_code_limits", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn update_code_limits(
    id: i64,
    limits: LimitsInput,
    never_expires: bool,
) -> Result<CodeRow, ServerFnError> {
    use crate::store::unix_now;

    let (state, caller) = ssr::admin().await?;
    let now = unix_now();
    let Some(current) = state.store.code(id).await.map_err(ssr::failed)? else {
        return Err(ssr::not_found());
    };
    let expires_at = if never_expires {
        None
    } else {
        ssr::expiry(&limits.expires_days, now)
            .map_err(ssr::bad_request)?
            .or(current.limits.expires_at)
    };
    let limits = ssr::Limits {
        expires_at,
        ..ssr::parse(&limits, &state).map_err(ssr::bad_request)?
    };
    let info = state
        .store
        .update_limits(id, &limits)
        .await
        .map_err(ssr::failed)?;
    tracing::info!(code = id, "access code limits changed");
    ssr::row(&state, &caller, info, now).await
}

/// Revokes a code: its next request is refused. Not the caller's own code.
#[server(prefix = "/api", endpoint = "admin/revoke_code", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn revoke_code(id: i64) -> Result<CodeRow, ServerFnError> {
    use crate::store::unix_now;

    let (state, caller) = ssr::admin().await?;
    if caller.code_id() == Some(id) {
        return Err(ssr::bad_request(
            "不能停用你正在使用的访问码：请用另一个管理员访问码操作".into(),
        ));
    }
    let now = unix_now();
    let info = state.store.revoke(id, now).await.map_err(ssr::failed)?;
    tracing::info!(code = id, "access code revoked");
    ssr::row(&state, &caller, info, now).await
}

/// The server side of the admin functions: the admin check, the form's parsing (exact
/// money, Chinese messages), and a stored code as a row.
#[cfg(feature = "ssr")]
mod ssr {
    use axum::http::StatusCode;
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;

    use super::{CodeRow, LimitsInput};
    use crate::protocol::Yuan;
    use crate::server::auth::Caller;
    use crate::server::AppState;
    pub(super) use crate::store::Limits;
    use crate::store::{shanghai::format_minute, CodeInfo, StoreError};

    /// The largest limit accepted, in yuan: well inside what the ledger's BIGINT holds.
    const MAX_YUAN: u128 = 9_000_000;
    const MAX_DAYS: i64 = 36_500;

    fn status(code: StatusCode) {
        if let Some(response) = use_context::<ResponseOptions>() {
            response.set_status(code);
        }
    }

    /// The app state and the caller, if the caller is an admin; else 403. Without a
    /// code the caller is admin only while no code exists, asked of the database now:
    /// the first code may have just been made by the CLI or another instance.
    pub(super) async fn admin() -> Result<(AppState, Caller), ServerFnError> {
        let caller = super::super::access::caller().await?;
        let state = expect_context::<AppState>();
        let open_until_now =
            matches!(caller, Caller::Open) && state.store.has_codes_now().await.map_err(failed)?;
        if !caller.is_admin() || open_until_now {
            status(StatusCode::FORBIDDEN);
            return Err(ServerFnError::ServerError(
                "需要管理员访问码才能管理访问码".into(),
            ));
        }
        Ok((state, caller))
    }

    pub(super) fn bad_request(message: String) -> ServerFnError {
        status(StatusCode::BAD_REQUEST);
        ServerFnError::Args(message)
    }

    pub(super) fn not_found() -> ServerFnError {
        status(StatusCode::NOT_FOUND);
        ServerFnError::Args("没有这个访问码".into())
    }

    pub(super) fn failed(err: StoreError) -> ServerFnError {
        match err {
            StoreError::NoSuchCode(_) => not_found(),
            StoreError::Invalid(reason) => bad_request(reason),
            StoreError::TooMuch(_) => bad_request("金额太大".into()),
            err => {
                tracing::error!("admin page: {err}");
                status(StatusCode::INTERNAL_SERVER_ERROR);
                ServerFnError::ServerError("数据库出错，请稍后重试".into())
            }
        }
    }

    /// The limits of a form (the expiry apart: blank means "never" or "unchanged"), or
    /// what is wrong, in words for the admin.
    pub(super) fn parse(form: &LimitsInput, state: &AppState) -> Result<Limits, String> {
        Ok(Limits {
            daily: money(&form.daily_yuan, "每日额度")?,
            monthly: money(&form.monthly_yuan, "每月额度")?,
            rpm: count(&form.rpm, "每分钟请求数")?,
            concurrent: count(&form.concurrent, "并发数")?,
            models: models(&form.models, state)?,
            expires_at: None,
        })
    }

    /// Blank: no limit. Else exact yuan, an optional `¥` in front.
    fn money(text: &str, what: &str) -> Result<Option<Yuan>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let amount = text.trim_start_matches(['¥', '￥']).trim();
        let yuan = Yuan::parse(amount)
            .ok_or_else(|| format!("{what}必须是不超过 12 位小数的金额（元），例如 10 或 0.5"))?;
        if yuan > Yuan::parse(&MAX_YUAN.to_string()).unwrap_or_default() {
            return Err(format!("{what}不能超过 {MAX_YUAN} 元"));
        }
        Ok(Some(yuan))
    }

    /// Blank: no limit. Else a whole number from 1.
    fn count(text: &str, what: &str) -> Result<Option<u32>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        match text.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!("{what}必须是正整数（留空为不限）")),
        }
    }

    /// Blank: every model. Else model ids the server offers, separated by commas or spaces.
    fn models(text: &str, state: &AppState) -> Result<Option<Vec<String>>, String> {
        let offered: Vec<&str> = state
            .llm
            .config()
            .providers
            .iter()
            .flat_map(|p| p.models.iter().map(|m| m.id.as_str()))
            .collect();
        let mut chosen: Vec<String> = Vec::new();
        for id in text.split([',', '，', '、', ' ', '\n']).map(str::trim) {
            if id.is_empty() || chosen.iter().any(|c| c == id) {
                continue;
            }
            if !offered.contains(&id) {
                return Err(format!(
                    "没有这个模型：{id}（可用：{}）",
                    offered.join("、")
                ));
            }
            chosen.push(id.to_owned());
        }
        Ok((!chosen.is_empty()).then_some(chosen))
    }

    /// Blank: `None`. Else that many days from `now`, in unix seconds.
    pub(super) fn expiry(text: &str, now: i64) -> Result<Option<i64>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        match text.parse::<i64>() {
            Ok(days) if (1..=MAX_DAYS).contains(&days) => Ok(Some(now + days * 86_400)),
            _ => Err(format!("有效天数必须是 1 到 {MAX_DAYS} 之间的整数")),
        }
    }

    /// A stored code as the page shows it, with its spending now.
    pub(super) async fn row(
        state: &AppState,
        caller: &Caller,
        info: CodeInfo,
        now: i64,
    ) -> Result<CodeRow, ServerFnError> {
        let spending = state
            .store
            .spending(Some(info.id), now)
            .await
            .map_err(failed)?;
        let expired = info.is_expired(now);
        let limits = info.limits;
        Ok(CodeRow {
            id: info.id,
            current: caller.code_id() == Some(info.id),
            name: info.name,
            prefix: info.prefix,
            admin: info.admin,
            daily_limit: limits.daily.map(|y| y.to_string()),
            monthly_limit: limits.monthly.map(|y| y.to_string()),
            rpm: limits.rpm,
            concurrent: limits.concurrent,
            models: limits.models,
            expires_at: limits.expires_at.map(format_minute),
            expired,
            spent_today: spending.day_spent.to_string(),
            reserved_today: spending.day_reserved.to_string(),
            spent_month: spending.month_spent.to_string(),
            reserved_month: spending.month_reserved.to_string(),
            created_at: format_minute(info.created_at),
            last_used_at: info.last_used_at.map(format_minute),
            revoked_at: info.revoked_at.map(format_minute),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn money_is_exact_and_says_what_is_wrong() {
            assert_eq!(money(" ", "每日额度"), Ok(None));
            assert_eq!(money("¥0.5", "每日额度"), Ok(Yuan::parse("0.5")));
            assert_eq!(money("0.000000000001", "每日额度"), Ok(Some(Yuan(1))));
            for bad in ["1.0000000000001", "-1", "1e3", "abc", "1,5"] {
                let err = money(bad, "每日额度").unwrap_err();
                assert!(
                    err.starts_with("每日额度必须是不超过 12 位小数的金额"),
                    "{bad}: {err}"
                );
            }
            assert!(money("9000001", "每月额度")
                .unwrap_err()
                .contains("不能超过"));
        }

        #[test]
        fn counts_and_days_are_positive() {
            assert_eq!(count("", "并发数"), Ok(None));
            assert_eq!(count(" 3 ", "并发数"), Ok(Some(3)));
            assert!(count("0", "并发数").is_err());
            assert!(count("1.5", "并发数").is_err());
            assert_eq!(expiry("", 100), Ok(None));
            assert_eq!(expiry("2", 100), Ok(Some(100 + 2 * 86_400)));
            assert!(expiry("0", 100).is_err());
            assert!(expiry("36501", 100).is_err());
        }
    }
}

/// The admin page.
#[component]
pub(crate) fn AdminPage() -> impl IntoView {
    let access = expect_context::<Access>();
    let rows = RwSignal::new(Vec::<CodeRow>::new());
    let loaded = RwSignal::new(false);
    let load_error = RwSignal::new(None::<String>);
    let created = RwSignal::new(None::<CreatedCode>);
    // In the browser, after hydration, and again whenever a code has been entered.
    Effect::new(move |_| {
        access.epoch.track();
        leptos::task::spawn_local(async move {
            match list_codes().await {
                Ok(list) => {
                    rows.set(list.codes);
                    load_error.set(None);
                }
                Err(err) => load_error.set(Some(error_text(&err))),
            }
            loaded.set(true);
        });
    });
    let on_created = move |new: CreatedCode| {
        rows.update(|rows| rows.push(new.code.clone()));
        created.set(Some(new));
    };
    let replace = move |row: CodeRow| {
        rows.update(|rows| {
            if let Some(old) = rows.iter_mut().find(|r| r.id == row.id) {
                *old = row;
            }
        });
    };
    view! {
        <section class="admin" aria-labelledby="admin-title" data-testid="admin-page">
            <div class="card">
                <h2 id="admin-title">"访问码管理"</h2>
                <p class="muted">
                    "访问码只在创建时显示一次，服务器只保存它的哈希。第一个访问码总是管理员访问码，"
                    "创建之后本服务的每个请求都需要访问码。时间均为北京时间。"
                </p>
                {move || load_error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            </div>
            {move || created.get().map(|new| view! { <NewCodeBox new on_close=move || created.set(None)/> })}
            <CreateCodeForm on_created/>
            <h2 class="section-title">"全部访问码"</h2>
            <Show
                when=move || loaded.get()
                fallback=|| view! { <p class="muted">"正在读取访问码…"</p> }
            >
                <Show
                    when=move || !rows.with(Vec::is_empty)
                    fallback=|| view! { <p class="muted" data-testid="no-codes">"还没有访问码：服务对能访问它的所有人开放。"</p> }
                >
                    // Keyed by the whole row: a changed code is drawn afresh.
                    <For each=move || rows.get() key=|row| row.clone() let:row>
                        <CodeCard row on_changed=replace/>
                    </For>
                </Show>
            </Show>
        </section>
    }
    .into_any()
}

/// The plaintext of a new code, once, with a copy button.
#[component]
fn NewCodeBox(new: CreatedCode, on_close: impl Fn() + Send + Sync + 'static) -> impl IntoView {
    let access = expect_context::<Access>();
    let copied = RwSignal::new(false);
    let plaintext = new.plaintext.clone();
    let copy = {
        let plaintext = plaintext.clone();
        move |_| {
            copy_text(&plaintext);
            copied.set(true);
        }
    };
    let use_here = {
        let plaintext = plaintext.clone();
        move |_| leptos::task::spawn_local(access.sign_in(plaintext.clone()))
    };
    view! {
        <div class="card new-code" role="status" data-testid="new-code">
            <h3>"新访问码：" {new.code.name.clone()}</h3>
            <p><strong>"只显示这一次"</strong>"：请现在复制并交给使用者。关闭或刷新页面后无法再次查看，服务器上也只有它的哈希。"</p>
            <div class="secret">
                <code class="mono" data-testid="new-code-value">{plaintext}</code>
                <button type="button" on:click=copy>{move || if copied.get() { "已复制" } else { "复制" }}</button>
            </div>
            {new.was_open.then(|| view! {
                <p class="notice">
                    "这是本服务的第一个访问码（管理员）：从现在起每个请求都需要访问码，本浏览器也一样。"
                    <button type="button" on:click=use_here>"在本浏览器使用此访问码"</button>
                </p>
            })}
            <div class="actions">
                <button type="button" on:click=move |_| on_close()>"我已保存，关闭"</button>
            </div>
        </div>
    }
    .into_any()
}

/// The limit fields shared by the create and edit forms, as typed.
#[derive(Clone, Copy)]
struct LimitDraft {
    daily: RwSignal<String>,
    monthly: RwSignal<String>,
    rpm: RwSignal<String>,
    concurrent: RwSignal<String>,
    models: RwSignal<String>,
    expires_days: RwSignal<String>,
}

impl LimitDraft {
    fn new() -> LimitDraft {
        LimitDraft {
            daily: RwSignal::new(String::new()),
            monthly: RwSignal::new(String::new()),
            rpm: RwSignal::new(String::new()),
            concurrent: RwSignal::new(String::new()),
            models: RwSignal::new(String::new()),
            expires_days: RwSignal::new(String::new()),
        }
    }

    /// The current limits of `row`, to edit.
    fn of(row: &CodeRow) -> LimitDraft {
        let draft = LimitDraft::new();
        let text = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
        draft.daily.set(row.daily_limit.clone().unwrap_or_default());
        draft
            .monthly
            .set(row.monthly_limit.clone().unwrap_or_default());
        draft.rpm.set(text(row.rpm));
        draft.concurrent.set(text(row.concurrent));
        draft.models.set(
            row.models
                .as_ref()
                .map(|m| m.join(", "))
                .unwrap_or_default(),
        );
        draft
    }

    fn input(&self) -> LimitsInput {
        LimitsInput {
            daily_yuan: self.daily.get_untracked(),
            monthly_yuan: self.monthly.get_untracked(),
            rpm: self.rpm.get_untracked(),
            concurrent: self.concurrent.get_untracked(),
            models: self.models.get_untracked(),
            expires_days: self.expires_days.get_untracked(),
        }
    }

    fn clear(&self) {
        for field in [
            self.daily,
            self.monthly,
            self.rpm,
            self.concurrent,
            self.models,
            self.expires_days,
        ] {
            field.set(String::new());
        }
    }
}

/// One labelled text input bound to `value`.
#[component]
fn Field(
    label: &'static str,
    value: RwSignal<String>,
    #[prop(optional)] placeholder: &'static str,
    #[prop(optional)] inputmode: &'static str,
    #[prop(optional)] testid: &'static str,
) -> impl IntoView {
    view! {
        <label>
            <span>{label}</span>
            <input
                type="text"
                placeholder=placeholder
                inputmode=(!inputmode.is_empty()).then_some(inputmode)
                data-testid=(!testid.is_empty()).then_some(testid)
                prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))
            />
        </label>
    }
    .into_any()
}

/// The limit fields; `expiry_hint` says what a blank 有效天数 means in this form.
#[component]
fn LimitFields(draft: LimitDraft, expiry_hint: &'static str) -> impl IntoView {
    view! {
        <Field label="每日额度（元）" value=draft.daily placeholder="不限" inputmode="decimal" testid="daily"/>
        <Field label="每月额度（元）" value=draft.monthly placeholder="不限" inputmode="decimal" testid="monthly"/>
        <Field label="每分钟请求数" value=draft.rpm placeholder="不限" inputmode="numeric" testid="rpm"/>
        <Field label="同时进行的回答数" value=draft.concurrent placeholder="不限" inputmode="numeric" testid="concurrent"/>
        <Field label="可用模型（逗号分隔）" value=draft.models placeholder="全部模型" testid="models"/>
        <Field label="有效天数（从现在起）" value=draft.expires_days placeholder=expiry_hint inputmode="numeric" testid="expires-days"/>
    }
    .into_any()
}

/// 新建访问码.
#[component]
fn CreateCodeForm(
    on_created: impl Fn(CreatedCode) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let admin = RwSignal::new(false);
    let draft = LimitDraft::new();
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        leptos::task::spawn_local(async move {
            let result =
                create_code(name.get_untracked(), admin.get_untracked(), draft.input()).await;
            match result {
                Ok(new) => {
                    error.set(None);
                    name.set(String::new());
                    admin.set(false);
                    draft.clear();
                    on_created(new);
                }
                Err(err) => error.set(Some(error_text(&err))),
            }
            busy.set(false);
        });
    };
    view! {
        <form class="card admin-form" on:submit=submit aria-labelledby="create-title" data-testid="create-code">
            <h3 id="create-title">"新建访问码"</h3>
            <div class="form-grid">
                <Field label="名称（使用者或用途）" value=name placeholder="例如：张三" testid="name"/>
                <LimitFields draft expiry_hint="永不过期"/>
                <label class="check">
                    <input type="checkbox" data-testid="admin" prop:checked=move || admin.get() on:change=move |ev| admin.set(event_target_checked(&ev))/>
                    <span>"管理员（可打开本页）"</span>
                </label>
            </div>
            {move || error.get().map(|message| view! { <p class="error" role="alert" data-testid="form-error">{message}</p> })}
            <div class="actions">
                <button type="submit" class="primary" disabled=move || busy.get() || name.with(|n| n.trim().is_empty())>"创建"</button>
            </div>
        </form>
    }
    .into_any()
}

/// One code: its limits, spending and dates; 修改限额 and 停用.
#[component]
fn CodeCard(
    row: CodeRow,
    on_changed: impl Fn(CodeRow) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let editing = RwSignal::new(false);
    let confirming = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let id = row.id;
    let revoked = row.revoked_at.is_some();
    let revoke = move |_| {
        leptos::task::spawn_local(async move {
            match revoke_code(id).await {
                Ok(row) => on_changed(row),
                Err(err) => error.set(Some(error_text(&err))),
            }
            confirming.set(false);
        });
    };
    let limit = |limit: &Option<String>, spent: &str, reserved: &str, period: &str| {
        let limit = limit
            .as_ref()
            .map_or_else(|| "不限".to_owned(), |y| format!("¥{y}"));
        let held = if reserved == "0" {
            String::new()
        } else {
            format!("，进行中 ¥{reserved}")
        };
        format!("{limit}（{period}已用 ¥{spent}{held}）")
    };
    let count = |n: Option<u32>| n.map_or_else(|| "不限".to_owned(), |n| n.to_string());
    let status = if let Some(at) = &row.revoked_at {
        format!("已停用（{at}）")
    } else if row.expired {
        "已过期".to_owned()
    } else {
        "有效".to_owned()
    };
    let expires = match (&row.expires_at, row.expired) {
        (None, _) => "永不过期".to_owned(),
        (Some(at), true) => format!("{at} 已过期"),
        (Some(at), false) => format!("{at} 过期"),
    };
    let draft = LimitDraft::of(&row);
    let flagged = revoked || row.expired;
    let on_saved = move |row: CodeRow| {
        editing.set(false);
        on_changed(row);
    };
    view! {
        <article class="card code" data-testid="code-row" data-prefix=row.prefix.clone() class:revoked=revoked>
            <header class="code-head">
                <strong data-testid="code-name">{row.name.clone()}</strong>
                <span class="mono muted">{format!("{}…", row.prefix)}</span>
                {row.admin.then(|| view! { <span class="badge">"管理员"</span> })}
                {row.current.then(|| view! { <span class="badge current">"本浏览器正在使用"</span> })}
                <span class="badge" class:danger=flagged data-testid="code-status">{status}</span>
            </header>
            <dl class="facts">
                <dt>"每日额度"</dt><dd>{limit(&row.daily_limit, &row.spent_today, &row.reserved_today, "今日")}</dd>
                <dt>"每月额度"</dt><dd>{limit(&row.monthly_limit, &row.spent_month, &row.reserved_month, "本月")}</dd>
                <dt>"每分钟请求"</dt><dd>{count(row.rpm)}</dd>
                <dt>"同时回答"</dt><dd>{count(row.concurrent)}</dd>
                <dt>"可用模型"</dt><dd class="mono">{row.models.as_ref().map_or_else(|| "全部".to_owned(), |m| m.join("、"))}</dd>
                <dt>"有效期"</dt><dd>{expires}</dd>
                <dt>"创建"</dt><dd>{row.created_at.clone()}</dd>
                <dt>"最近使用"</dt><dd>{row.last_used_at.clone().unwrap_or_else(|| "从未".to_owned())}</dd>
            </dl>
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            {(!revoked).then(|| view! {
                <div class="actions">
                    <button type="button" on:click=move |_| editing.update(|e| *e = !*e)>"修改限额"</button>
                    <Show
                        when=move || confirming.get()
                        fallback=move || view! { <button type="button" class="danger" on:click=move |_| confirming.set(true)>"停用"</button> }
                    >
                        <button type="button" class="danger" data-testid="confirm-revoke" on:click=revoke>"确认停用"</button>
                        <button type="button" on:click=move |_| confirming.set(false)>"取消"</button>
                    </Show>
                </div>
            })}
            <Show when=move || editing.get()>
                <EditLimits id draft on_saved/>
            </Show>
        </article>
    }
    .into_any()
}

/// The edit form of one code's limits.
#[component]
fn EditLimits(
    id: i64,
    draft: LimitDraft,
    on_saved: impl Fn(CodeRow) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let never = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        leptos::task::spawn_local(async move {
            let result = update_code_limits(id, draft.input(), never.get_untracked()).await;
            busy.set(false);
            match result {
                Ok(row) => on_saved(row),
                Err(err) => error.set(Some(error_text(&err))),
            }
        });
    };
    view! {
        <form class="admin-form edit-limits" on:submit=submit data-testid="edit-limits">
            <div class="form-grid">
                <LimitFields draft expiry_hint="留空则不变"/>
                <label class="check">
                    <input type="checkbox" prop:checked=move || never.get() on:change=move |ev| never.set(event_target_checked(&ev))/>
                    <span>"永不过期"</span>
                </label>
            </div>
            {move || error.get().map(|message| view! { <p class="error" role="alert" data-testid="form-error">{message}</p> })}
            <div class="actions">
                <button type="submit" class="primary" disabled=move || busy.get()>"保存限额"</button>
            </div>
        </form>
    }
    .into_any()
}

fn copy_text(text: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(window) = web_sys::window() {
        let _ = window.navigator().clipboard().write_text(text);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = text;
}
