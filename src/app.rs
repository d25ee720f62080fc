//! The page: the HTML shell, the header with its tab bar, and the table of routes.
//! Each tab is a route, so the URL names the tab and a reload keeps it.

pub(crate) mod access;
mod admin;
pub(crate) mod server_info;
mod settings;
mod sync_hydrate;
mod tabs;
mod usage;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    Lazy, SsrMode, StaticSegment,
};

use crate::chat::ChatPage;
use access::{Access, AccessControl, AccessPrompt};
pub(crate) use sync_hydrate::SyncHydrate;
use tabs::{AdminTab, SettingsTab, UsageTab};

/// The HTML document around the app, rendered on the server. Its scripts (hydration,
/// live reload, resolved resources) carry the nonce of the page's CSP header.
#[cfg(feature = "ssr")]
pub(crate) fn shell(options: LeptosOptions) -> impl IntoView {
    use leptos_meta::MetaTags;

    crate::server::security::provide_request_nonce();
    view! {
        <!DOCTYPE html>
        <html lang="zh-CN">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.ico"/>
                <meta name="description" content="流式AI：用 OpenAI 兼容接口流式调用国内大模型的参考实现"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The root component: header, tab bar, and the current tab.
#[component]
pub(crate) fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser: this flips once hydration has happened, which
    // tests (and CSS) can wait for.
    let hydrated = RwSignal::new(false);
    Effect::new(move || hydrated.set(true));
    // The access code lives in the browser: who we are is known only after hydration.
    let access = Access::provide();
    Effect::new(move || access.start());
    view! {
        <Stylesheet id="leptos" href="/pkg/streamai.css"/>
        <Title text="流式AI"/>
        <Router>
            // The header and the access prompt load no code on demand: they hydrate
            // synchronously ([`SyncHydrate`]); only the routes between them wait for chunks.
            {SyncHydrate(view! {
            <header class="top" data-hydrated=move || hydrated.get().to_string()>
                <h1 class="brand">"流式AI"</h1>
                <nav class="tabs" aria-label="功能">
                    <A href="/" exact=true>"流式AI"</A>
                    <A href="/settings">"服务配置"</A>
                    <A href="/usage">"用量"</A>
                    {move || access.is_admin().then(|| view! { <A href="/admin">"管理"</A> })}
                </nav>
                <AccessControl/>
            </header>
            })}
            <main class="page">
                // The chat's route is in the main WASM; the other tabs are lazy routes
                // (`tabs`), each a chunk of its own, loaded when first opened.
                <Routes fallback=NotFound>
                    // `Async`: the server waits for the configuration before sending the page,
                    // so it is complete even where JavaScript never runs.
                    <Route path=StaticSegment("") view=ChatPage ssr=SsrMode::Async/>
                    <Route path=StaticSegment("settings") view={Lazy::<SettingsTab>::new()} ssr=SsrMode::Async/>
                    // The usage needs the access code, which only the browser has: it loads there.
                    <Route path=StaticSegment("usage") view={Lazy::<UsageTab>::new()}/>
                    // Admins only; like the usage, it loads in the browser, with the code.
                    <Route path=StaticSegment("admin") view={Lazy::<AdminTab>::new()}/>
                </Routes>
            </main>
            {SyncHydrate(view! { <AccessPrompt/> })}
        </Router>
    }
}

/// Shown for an unknown path, with a 404 status on the server.
#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        let response = expect_context::<leptos_axum::ResponseOptions>();
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    SyncHydrate(view! {
        <section class="card">
            <h2>"页面不存在"</h2>
            <p><A href="/">"回到 流式AI"</A></p>
        </section>
    })
}
