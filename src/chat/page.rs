//! The 流式AI tab: the toolbar with conversation totals, the parameters panel, the
//! message list and the composer, wired to one [`ChatSession`].

use leptos::prelude::*;

use super::markdown::prefetch_renderer;
use super::messages::MessageList;
use super::params::ParamsPanel;
use super::session::ChatSession;
use super::state::{totals, yuan_label, MessageStoreFields};
use crate::api::ServerInfo;
use crate::app::access::Access;
use crate::app::server_info::{DemoNotice, WithServerInfo};
use crate::app::SyncHydrate;

/// The chat tab: reads the server's configuration, then shows the chat. Its hydration
/// waits for no code (the markdown renderer comes later, when an answer needs it): it
/// hydrates synchronously.
#[component]
pub(crate) fn ChatPage() -> impl IntoView {
    SyncHydrate(view! {
        <WithServerInfo loading="正在连接服务…" let:info>
            <Chat info/>
        </WithServerInfo>
    })
}

#[component]
fn Chat(info: ServerInfo) -> impl IntoView {
    let demo = info.demo;
    let session = ChatSession::new(info);
    provide_context(session);
    // Runs only in the browser, after hydration: bring back the saved conversation.
    Effect::new(move |_| session.restore());
    // Settings are saved as they change (the conversation at the end of each turn).
    Effect::new(move |_| {
        session.settings.track();
        session.persist();
    });
    // Closing or reloading the page, or leaving the tab (which disposes the session right
    // after its cleanup), drops the local connection and saves the answer as it stands;
    // the server goes on, and the next page follows it. Back from the page cache, the
    // answer is followed again.
    let pagehide = window_event_listener(leptos::ev::pagehide, move |_| session.leave());
    let pageshow = window_event_listener(leptos::ev::pageshow, move |_| session.rejoin());
    // Another tab saved: this one shows it, so its own next save keeps the other's turns.
    let storage = window_event_listener(leptos::ev::storage, move |e| {
        session.saved_elsewhere(e.key());
    });
    on_cleanup(move || {
        pagehide.remove();
        pageshow.remove();
        storage.remove();
        session.leave();
    });
    // A question refused for want of an access code is sent again once one is entered.
    if let Some(access) = use_context::<Access>() {
        Effect::watch(
            move || access.epoch.get(),
            move |_, _, _| session.resend_held(),
            false,
        );
    }
    view! {
        <section class="chat" aria-label="流式AI 对话">
            <DemoNotice demo/>
            <Toolbar/>
            <ParamsPanel/>
            <MessageList/>
            <Composer/>
        </section>
    }
}

#[component]
fn Toolbar() -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let summary = move || {
        let messages = session.messages.get();
        let stats: Vec<_> = messages
            .iter()
            .filter_map(|m| m.data.stats().get())
            .collect();
        let (input, output, cost) = totals(stats.iter());
        format!(
            "本次对话：输入 {input} · 输出 {output} tokens · {}",
            yuan_label(cost)
        )
    };
    view! {
        <div class="toolbar">
            <p class="totals" data-testid="totals">{summary}</p>
            <button type="button" on:click=move |_| session.clear()>"新对话"</button>
        </div>
    }
}

#[component]
fn Composer() -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let streaming = move || session.streaming.get().is_some();
    let empty = move || session.composer.with(|t| t.trim().is_empty());
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        // Enter sends; Shift+Enter is a newline; Enter that confirms an IME candidate
        // (composing, or the legacy keyCode 229) must not send.
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() && ev.key_code() != 229 {
            ev.prevent_default();
            session.send();
        }
    };
    view! {
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); session.send(); }>
            <textarea
                data-testid="composer"
                aria-label="输入消息"
                placeholder="输入消息，Enter 发送，Shift+Enter 换行"
                rows="2"
                prop:value=move || session.composer.get()
                // A question is being written: its answer will need the markdown renderer.
                on:focus=move |_| prefetch_renderer()
                on:input=move |ev| session.composer.set(event_target_value(&ev))
                on:keydown=on_keydown
            ></textarea>
            <Show
                when=streaming
                fallback=move || view! { <button type="submit" class="primary" disabled=empty>"发送"</button> }
            >
                <button type="button" class="stop" on:click=move |_| session.stop() disabled=move || session.stopping.get()>
                    {move || if session.stopping.get() { "正在停止…" } else { "停止" }}
                </button>
            </Show>
        </form>
    }
}
