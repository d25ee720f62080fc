//! The 服务配置 tab: what the server is configured with (provider, model, parameters),
//! and per provider its models (prices, limits, 深度思考, fallback chain) and its keys'
//! live state.
//!
//! The configuration comes from the `server_info` server function and is rendered on the
//! server. The keys' state comes from `key_states`, asked by the browser after hydration
//! (the access code travels in a header only the browser has), every 5 s and on 刷新;
//! until then each card shows the masked keys alone, saying it is reading their state.
//! It is held in a signal, not a resource: a resource read inside the page's `Suspense`
//! would hold the whole page back on the server (a `LocalResource` never resolves there),
//! and a nested `Transition` does not hydrate.

use std::time::Duration;

use leptos::prelude::*;

use super::access::{error_text, Access};
use super::server_info::{DemoNotice, WithServerInfo};
use crate::api::{
    get_key_states, KeyStateKind, KeyStatus, ModelInfo, ProviderInfo, ProviderKeys, ServerInfo,
};

/// How often the keys' state is read again while the tab is open.
const REFRESH: Duration = Duration::from_secs(5);

/// What `key_states` answered.
type Reading = Result<Vec<ProviderKeys>, ServerFnError>;

/// The keys' state as last read, shared by every provider card.
#[derive(Clone, Copy)]
struct KeyStates {
    /// `None` until the first answer; a new reading replaces it only when it arrives.
    last: RwSignal<Option<Reading>>,
    /// Bumped to read again; an answer to an older ask is dropped.
    asks: RwSignal<u64>,
}

/// The settings tab.
#[component]
pub(crate) fn SettingsPage() -> impl IntoView {
    view! {
        <WithServerInfo loading="正在读取服务配置…" let:info>
            <ServerSummary info=info.clone()/>
            <ProviderTable info/>
        </WithServerInfo>
    }
}

/// Provider, model and request parameters in one card. (Views here end in `into_any`:
/// the page's whole type is otherwise too deep for the WASM build.)
#[component]
fn ServerSummary(info: ServerInfo) -> impl IntoView {
    let provider = info.provider(&info.default_provider).cloned();
    let (label, model, base_url) = provider
        .map(|p| (p.label, p.default_model, p.base_url))
        .unwrap_or_default();
    let seed = info
        .seed
        .map_or_else(|| "关闭".to_owned(), |s| s.to_string());
    view! {
        <section class="card" aria-labelledby="summary-title">
            <h2 id="summary-title">"当前服务配置"</h2>
            <DemoNotice demo=info.demo/>
            <dl class="facts">
                <dt>"平台"</dt><dd data-testid="provider">{label}</dd>
                <dt>"模型"</dt><dd data-testid="model">{model}</dd>
                <dt>"接口地址"</dt><dd class="mono">{base_url}</dd>
                <dt>"temperature"</dt><dd>{info.temperature.to_string()}</dd>
                <dt>"max_tokens"</dt><dd>{info.max_tokens.to_string()}</dd>
                <dt>"seed"</dt><dd>{seed}</dd>
                <dt>"超时"</dt><dd>{format!("{} 秒（首字及两段输出之间）", info.timeout_secs)}</dd>
                <dt>"最多重试"</dt><dd>{format!("{} 次", info.max_retries)}</dd>
            </dl>
        </section>
    }
    .into_any()
}

/// Every usable provider: one card each, all fed by one reading of the keys' state.
#[component]
fn ProviderTable(info: ServerInfo) -> impl IntoView {
    let states = KeyStates::start();
    let cards = info
        .providers
        .into_iter()
        .map(|provider| view! { <ProviderCard provider states/> })
        .collect_view();
    view! { <h2 class="section-title">"可用平台与价格"</h2> {cards} }.into_any()
}

impl KeyStates {
    /// Reads the keys' state after hydration, again when a code is entered and on
    /// [`KeyStates::refresh`], and every [`REFRESH`] while the last reading succeeded (a
    /// refusal is not asked again and again). Effects run in the browser only.
    fn start() -> KeyStates {
        let access = expect_context::<Access>();
        let states = KeyStates {
            last: RwSignal::new(None),
            asks: RwSignal::new(0),
        };
        Effect::new(move |_| {
            access.epoch.track();
            let ask = states.asks.get();
            leptos::task::spawn_local(async move {
                let reading = get_key_states().await;
                if states.asks.try_get_untracked() == Some(ask) {
                    states.last.try_set(Some(reading));
                }
            });
        });
        Effect::new(move |_| {
            let tick = move || {
                let ok = states
                    .last
                    .try_with_untracked(|last| matches!(last, Some(Ok(_))));
                if ok == Some(true) {
                    states.refresh();
                }
            };
            // The interval ends with the tab.
            if let Ok(handle) = set_interval_with_handle(tick, REFRESH) {
                on_cleanup(move || handle.clear());
            }
        });
        states
    }

    fn refresh(&self) {
        self.asks.try_update(|n| *n += 1);
    }
}

/// One provider: its models, then its keys.
#[component]
fn ProviderCard(provider: ProviderInfo, states: KeyStates) -> impl IntoView {
    let models = provider
        .models
        .into_iter()
        .map(|model| {
            let is_default = model.id == provider.default_model;
            view! { <ModelRow model is_default/> }
        })
        .collect_view();
    let card_id = provider.id.clone();
    view! {
        <section class="card provider" data-testid="provider-card" data-provider=card_id>
            <h3>{provider.label}</h3>
            <p class="mono">{provider.base_url}</p>
            <div class="table-scroll">
                <table class="settings-table">
                    <caption>"模型"</caption>
                    <thead>
                        <tr>
                            <th scope="col">"模型"</th>
                            <th scope="col" class="num">"输入 ¥/百万 tokens"</th>
                            <th scope="col" class="num">"输出 ¥/百万 tokens"</th>
                            <th scope="col" class="num">"最多输出"</th>
                            <th scope="col" class="num">"上下文"</th>
                            <th scope="col">"深度思考"</th>
                            <th scope="col">"备用链"</th>
                            <th scope="col">"续写"</th>
                        </tr>
                    </thead>
                    <tbody>{models}</tbody>
                </table>
            </div>
            <KeySection provider=provider.id keys=provider.keys states/>
        </section>
    }
    .into_any()
}

/// One model: prices, limits, thinking, fallback chain, continuation.
#[component]
fn ModelRow(model: ModelInfo, is_default: bool) -> impl IntoView {
    let chain = if model.fallback.is_empty() {
        "—".to_owned()
    } else {
        model.fallback.join(" → ")
    };
    let row_id = model.id.clone();
    view! {
        <tr data-testid="model-row" data-model=row_id>
            <td class="mono">
                {model.id}
                {is_default.then(|| view! { " " <span class="badge">"默认"</span> })}
            </td>
            <td class="num">{model.input_price}</td>
            <td class="num">{model.output_price}</td>
            <td class="num">{grouped(model.max_output_tokens)}</td>
            <td class="num">{grouped(model.context_tokens)}</td>
            <td>{thinking_text(model.thinking, model.thinking_budget)}</td>
            <td class="mono" data-testid="fallback-chain">{chain}</td>
            <td>{model.continuation.unwrap_or_else(|| "否".to_owned())}</td>
        </tr>
    }
    .into_any()
}

/// The keys of `provider`: their masked forms (`keys`, as `server_info` gave them) until
/// the live state arrives, then a table of it, with a 刷新 button.
#[component]
fn KeySection(provider: String, keys: Vec<String>, states: KeyStates) -> impl IntoView {
    if keys.is_empty() {
        return view! { <p>"密钥：" <span data-testid="keys">"未设置"</span></p> }.into_any();
    }
    let masked = keys.join("，");
    let table = move || key_view(states.last.get(), &provider, &masked);
    view! {
        <div class="key-head">
            <h4>"密钥"</h4>
            <span class="muted">"每 5 秒自动刷新"</span>
            <button type="button" data-testid="refresh-keys" on:click=move |_| states.refresh()>"刷新"</button>
        </div>
        {table}
    }
    .into_any()
}

/// What the key section shows for a reading of the keys' state (`None`: not read yet).
fn key_view(reading: Option<Reading>, provider: &str, masked: &str) -> AnyView {
    match reading {
        None => view! {
            <p>"密钥：" <span data-testid="keys">{masked.to_owned()}</span>
            " " <span class="muted">"（正在读取密钥状态…）"</span></p>
        }
        .into_any(),
        Some(Ok(all)) => {
            let keys = all.into_iter().find(|p| p.provider == provider);
            view! { <KeyTable keys=keys.map(|p| p.keys).unwrap_or_default()/> }.into_any()
        }
        Some(Err(err)) => view! {
            <p class="error" data-testid="key-states-error">"读取密钥状态失败：" {error_text(&err)}</p>
        }
        .into_any(),
    }
}

/// The keys' live state, one row each.
#[component]
fn KeyTable(keys: Vec<KeyStatus>) -> impl IntoView {
    let rows = keys
        .into_iter()
        .map(|key| {
            let state = key.state.as_str();
            let account = if key.account.is_empty() {
                "默认".to_owned()
            } else {
                key.account.clone()
            };
            view! {
                <tr data-testid="key-row" data-state=state class=format!("key-{state}")>
                    <td class="mono">{key.id_masked.clone()}</td>
                    <td>{account}</td>
                    <td class="key-state">{state_text(&key)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-scroll">
            <table class="settings-table keys">
                <thead>
                    <tr><th scope="col">"密钥"</th><th scope="col">"账户"</th><th scope="col">"状态"</th></tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// `轮换中`, `冷却中，至 14:03:05（北京时间）`, `已停用：余额不足，至 14:08:00（北京时间）`.
fn state_text(key: &KeyStatus) -> String {
    let until = key
        .until_unix_ms
        .map(|ms| format!("，至 {}（北京时间）", beijing_clock(ms)))
        .unwrap_or_default();
    match key.state {
        KeyStateKind::Rotation => "轮换中".to_owned(),
        KeyStateKind::Cooling => format!("冷却中{until}"),
        KeyStateKind::Parked => {
            let reason = key.reason.map_or("", |r| r.label());
            format!("已停用：{reason}{until}")
        }
    }
}

/// The time of day in Beijing (UTC+8, no daylight saving) of a unix millisecond.
fn beijing_clock(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000) + 8 * 3600;
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// `切换模型 deepseek-reasoner`, `enable_thinking（预算 4096 tokens）`, `不支持`.
fn thinking_text(thinking: Option<String>, budget: Option<u32>) -> String {
    match (thinking, budget) {
        (None, _) => "不支持".to_owned(),
        (Some(how), None) => how,
        (Some(how), Some(budget)) => format!("{how}（预算 {} tokens）", grouped(budget)),
    }
}

/// `131072` as `131,072`.
fn grouped(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ParkedBecause;

    #[test]
    fn beijing_clock_is_utc_plus_eight() {
        // 2024-01-01T00:00:00Z is 08:00:00 in Beijing; 16:30:05.999Z is 00:30:05 the
        // next day.
        let midnight = 1_704_067_200_000;
        assert_eq!(beijing_clock(midnight), "08:00:00");
        let evening = (16 * 3600 + 30 * 60 + 5) * 1000 + 999;
        assert_eq!(beijing_clock(midnight + evening), "00:30:05");
        assert_eq!(beijing_clock(0), "08:00:00");
    }

    #[test]
    fn key_states_read_as_words() {
        let key = |state, until_unix_ms, reason| KeyStatus {
            id_masked: "key#1 ••••".into(),
            account: String::new(),
            state,
            until_unix_ms,
            reason,
        };
        let at = Some(1_704_067_200_000 + 3_723_000);
        assert_eq!(
            state_text(&key(KeyStateKind::Rotation, None, None)),
            "轮换中"
        );
        assert_eq!(
            state_text(&key(KeyStateKind::Cooling, at, None)),
            "冷却中，至 09:02:03（北京时间）"
        );
        assert_eq!(
            state_text(&key(
                KeyStateKind::Parked,
                at,
                Some(ParkedBecause::OutOfBalance)
            )),
            "已停用：余额不足，至 09:02:03（北京时间）"
        );
    }

    #[test]
    fn numbers_and_thinking_read_as_words() {
        assert_eq!(grouped(131_072), "131,072");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(0), "0");
        assert_eq!(thinking_text(None, Some(1)), "不支持");
        assert_eq!(
            thinking_text(Some("enable_thinking".into()), Some(4096)),
            "enable_thinking（预算 4,096 tokens）"
        );
    }
}
