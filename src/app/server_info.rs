//! What both tabs need of the server's configuration: reading it before they render
//! (one `Suspense` around one blocking resource), and the one notice of demo mode.

use std::sync::Arc;

use leptos::prelude::*;

use super::access::{self, Access};
use super::SyncHydrate;
use crate::api::{get_server_info, ServerInfo};

/// Reads the server's configuration, then renders `children` with it; says so if the
/// reading fails. Blocking: with `SsrMode::Async` the server sends the page complete.
#[component]
pub(crate) fn WithServerInfo<Chil, V>(
    /// Shown while the configuration is read (after a tab switch in the browser).
    loading: &'static str,
    children: Chil,
) -> impl IntoView
where
    Chil: Fn(ServerInfo) -> V + Send + Sync + 'static,
    V: IntoView + 'static,
{
    let info = Resource::new_blocking(|| (), |_| get_server_info());
    let children = Arc::new(children);
    // In the browser: a server that wants a code this browser does not have asks for it
    // at once; a reading refused for want of one (401) is read again once it is entered.
    let access = expect_context::<Access>();
    Effect::new(move |_| {
        if let Some(Ok(info)) = info.get() {
            if info.access_required && access::stored_code().is_none() {
                access.ask();
            }
        }
    });
    Effect::watch(
        move || access.epoch.get(),
        move |_, _, _| {
            if info.with_untracked(|info| matches!(info, Some(Err(_)))) {
                info.refetch();
            }
        },
        false,
    );
    view! {
        <Suspense fallback=move || view! { <p class="muted">{loading}</p> }>
            {move || {
                let children = Arc::clone(&children);
                Suspend::new(async move {
                    match info.await {
                        Ok(info) => SyncHydrate(children(info)).into_any(),
                        Err(err) => SyncHydrate(view! { <p class="error">"读取服务配置失败：" {err.to_string()}</p> }).into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

/// Says that the built-in offline demo model answers (no key is configured), and how to
/// use a real one. Renders nothing unless `demo`.
#[component]
pub(crate) fn DemoNotice(demo: bool) -> impl IntoView {
    demo.then(|| {
        view! {
            <p class="notice" data-testid="demo-notice">
                "当前是离线演示模式：服务端没有配置 API 密钥，回答来自内置的演示模型。"
                "在 .env 中设置 SILICONFLOW_API_KEY（或其他平台的密钥）后重启即可使用真实模型。"
            </p>
        }
    })
}
