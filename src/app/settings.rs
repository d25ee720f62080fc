//! The 服务配置 tab: what the server is configured with (provider, model, parameters,
//! prices, masked keys), read through the `server_info` server function.

use leptos::prelude::*;

use super::server_info::{DemoNotice, WithServerInfo};
use crate::api::ServerInfo;

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

/// Provider, model and request parameters in one card.
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
}

/// Every usable provider with its models, prices and masked keys.
#[component]
fn ProviderTable(info: ServerInfo) -> impl IntoView {
    let rows = info.providers.into_iter().map(|p| {
        let keys = if p.keys.is_empty() { "未设置".to_owned() } else { p.keys.join("，") };
        let models = p.models.into_iter().map(|m| view! {
            <li>
                <span class="mono">{m.id}</span>
                {format!(" 输入 ¥{}/百万 · 输出 ¥{}/百万 · 最多输出 {}", m.input_price, m.output_price, m.max_output_tokens)}
            </li>
        }).collect_view();
        view! {
            <section class="card provider">
                <h3>{p.label}</h3>
                <p class="mono">{p.base_url}</p>
                <p>"密钥：" <span data-testid="keys">{keys}</span></p>
                <ul class="models">{models}</ul>
            </section>
        }
    }).collect_view();
    view! { <h2 class="section-title">"可用平台与价格"</h2> {rows} }
}
