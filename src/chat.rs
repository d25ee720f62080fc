//! The 流式AI tab.

use leptos::prelude::*;

use crate::api::get_server_info;
use crate::app::ServerSummary;

/// The chat tab.
#[component]
pub fn ChatPage() -> impl IntoView {
    let info = Resource::new(|| (), |_| get_server_info());
    view! {
        <Suspense fallback=|| view! { <p class="muted">"正在连接服务…"</p> }>
            {move || Suspend::new(async move {
                match info.await {
                    Ok(info) => view! { <ServerSummary info/> }.into_any(),
                    Err(err) => view! { <p class="error">"读取服务配置失败：" {err.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}
