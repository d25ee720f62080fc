//! The 流式AI tab: the toolbar with conversation totals, the parameters panel, the
//! message list and the composer, wired to one [`ChatSession`].

use leptos::prelude::*;

use super::messages::MessageList;
use super::session::ChatSession;
use super::state::{totals, yuan_label, Settings};
use crate::api::{get_server_info, ServerInfo};

/// The chat tab: reads the server's configuration, then shows the chat.
#[component]
pub fn ChatPage() -> impl IntoView {
    let info = Resource::new_blocking(|| (), |_| get_server_info());
    view! {
        <Suspense fallback=|| view! { <p class="muted">"正在连接服务…"</p> }>
            {move || Suspend::new(async move {
                match info.await {
                    Ok(info) => view! { <Chat info/> }.into_any(),
                    Err(err) => view! { <p class="error">"读取服务配置失败：" {err.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
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
    // after its cleanup), stops the answer being streamed and saves it.
    let pagehide = window_event_listener(leptos::ev::pagehide, move |_| session.leave());
    on_cleanup(move || {
        pagehide.remove();
        session.leave();
    });
    view! {
        <section class="chat" aria-label="流式AI 对话">
            {demo.then(|| view! {
                <p class="notice" data-testid="demo-notice">
                    "当前是离线演示模式：服务端没有配置 API 密钥，回答来自内置的演示模型。"
                    "在 .env 中设置 SILICONFLOW_API_KEY 等密钥后重启即可使用真实模型。"
                </p>
            })}
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
        let stats: Vec<_> = messages.iter().filter_map(|m| m.stats.get()).collect();
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
fn ParamsPanel() -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let settings = session.settings;
    let info = session.info;
    let update = move |f: &dyn Fn(&mut Settings)| settings.update(|s| f(s));

    let providers = move || {
        info.with_value(|i| {
            i.providers
                .iter()
                .map(|p| (p.id.clone(), p.label.clone()))
                .collect::<Vec<_>>()
        })
    };
    let models = move || {
        let provider = settings.with(|s| s.provider.clone());
        info.with_value(|i| {
            i.provider(&provider)
                .map(|p| p.models.clone())
                .unwrap_or_default()
        })
    };
    let model_limit = move || {
        let model = settings.with(|s| s.model.clone());
        models()
            .into_iter()
            .find(|m| m.id == model)
            .map_or(65535, |m| m.max_output_tokens)
    };
    let on_provider = move |ev| {
        let id = event_target_value(&ev);
        let (model, limit) = info.with_value(|i| {
            let p = i.provider(&id);
            let model = p.map(|p| p.default_model.clone()).unwrap_or_default();
            let limit = p
                .and_then(|p| p.models.iter().find(|m| m.id == model))
                .map_or(65535, |m| m.max_output_tokens);
            (model, limit)
        });
        let default_max = info.with_value(|i| i.max_tokens);
        update(&|s| {
            s.provider = id.clone();
            s.model = model.clone();
            s.max_tokens = default_max.min(limit);
        });
    };
    let on_model = move |ev| {
        let id = event_target_value(&ev);
        let limit = models()
            .into_iter()
            .find(|m| m.id == id)
            .map_or(65535, |m| m.max_output_tokens);
        update(&|s| {
            s.model = id.clone();
            s.max_tokens = s.max_tokens.clamp(1, limit);
        });
    };
    let on_temperature = move |ev| {
        if let Ok(t) = event_target_value(&ev).parse::<f32>() {
            update(&|s| s.temperature = (t * 10.0).round() / 10.0);
        }
    };
    let on_max_tokens = move |ev| {
        if let Ok(n) = event_target_value(&ev).parse::<u32>() {
            let limit = model_limit();
            update(&|s| s.max_tokens = n.clamp(1, limit));
        }
    };
    let on_top_p_toggle = move |ev| {
        let on = event_target_checked(&ev);
        update(&|s| s.top_p = on.then_some(1.0));
    };
    let on_top_p = move |ev| {
        if let Ok(p) = event_target_value(&ev).parse::<f32>() {
            update(&|s| s.top_p = Some(p.clamp(0.05, 1.0)));
        }
    };
    let on_seed_toggle = move |ev| {
        let on = event_target_checked(&ev);
        update(&|s| s.seed = on.then_some(42));
    };
    let on_seed = move |ev| {
        if let Ok(n) = event_target_value(&ev).parse::<i64>() {
            update(&|s| s.seed = Some(n));
        }
    };
    let on_system = move |ev| {
        let text = event_target_value(&ev);
        update(&|s| s.system_prompt = text.clone());
    };

    view! {
        <details class="params card">
            <summary>
                "参数 "
                <span class="muted">{move || settings.with(|s| format!("{} · temperature {}", s.model, s.temperature))}</span>
            </summary>
            <div class="params-grid">
                <label>
                    "平台"
                    <select on:change=on_provider prop:value=move || settings.with(|s| s.provider.clone())>
                        {move || providers().into_iter().map(|(id, label)| {
                            let selected = settings.with_untracked(|s| s.provider == id);
                            view! { <option value=id selected=selected>{label}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>
                    "模型"
                    <select on:change=on_model prop:value=move || settings.with(|s| s.model.clone())>
                        {move || models().into_iter().map(|m| {
                            let selected = settings.with_untracked(|s| s.model == m.id);
                            let label = format!("{}（¥{}/¥{} 每百万）", m.id, m.input_price, m.output_price);
                            view! { <option value=m.id.clone() selected=selected>{label}</option> }
                        }).collect_view()}
                    </select>
                </label>
                <label>
                    {move || format!("temperature：{}", settings.with(|s| s.temperature))}
                    <input type="range" min="0" max="2" step="0.1" aria-label="temperature"
                        prop:value=move || settings.with(|s| s.temperature.to_string())
                        on:input=on_temperature/>
                    <small class="muted">"代码、数学、JSON 建议 0；写作建议 0.7–0.9"</small>
                </label>
                <label>
                    "max_tokens"
                    <input type="number" min="1" prop:max=move || model_limit().to_string() aria-label="max_tokens"
                        prop:value=move || settings.with(|s| s.max_tokens.to_string())
                        on:change=on_max_tokens/>
                    <small class="muted">{move || format!("本模型最多 {}", model_limit())}</small>
                </label>
                <div class="field">
                    <label class="check">
                        <input type="checkbox" prop:checked=move || settings.with(|s| s.top_p.is_some()) on:change=on_top_p_toggle/>
                        "解锁 top_p"
                    </label>
                    <Show when=move || settings.with(|s| s.top_p.is_some())>
                        <input type="range" min="0.05" max="1" step="0.05" aria-label="top_p"
                            prop:value=move || settings.with(|s| s.top_p.unwrap_or(1.0).to_string())
                            on:input=on_top_p/>
                        <small>{move || format!("top_p：{}", settings.with(|s| s.top_p.unwrap_or(1.0)))}</small>
                    </Show>
                    <small class="muted">"通常只调 temperature，不要同时调整 top_p"</small>
                </div>
                <div class="field">
                    <label class="check">
                        <input type="checkbox" prop:checked=move || settings.with(|s| s.seed.is_some()) on:change=on_seed_toggle/>
                        "固定 seed（复现调试用）"
                    </label>
                    <Show when=move || settings.with(|s| s.seed.is_some())>
                        <input type="number" aria-label="seed"
                            prop:value=move || settings.with(|s| s.seed.unwrap_or(42).to_string())
                            on:change=on_seed/>
                    </Show>
                </div>
                <label class="wide">
                    "系统提示词"
                    <textarea rows="2" placeholder="例如：你是一名简洁的技术顾问"
                        prop:value=move || settings.with(|s| s.system_prompt.clone())
                        on:change=on_system></textarea>
                </label>
            </div>
        </details>
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
                on:input=move |ev| session.composer.set(event_target_value(&ev))
                on:keydown=on_keydown
            ></textarea>
            <Show
                when=streaming
                fallback=move || view! { <button type="submit" class="primary" disabled=empty>"发送"</button> }
            >
                <button type="button" class="stop" on:click=move |_| session.stop()>"停止"</button>
            </Show>
        </form>
    }
}
