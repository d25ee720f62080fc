//! The parameters panel: provider, model, 深度思考, temperature, max_tokens, top_p, seed
//! and the system prompt, each a small component editing the session's [`Settings`].
//!
//! [`Settings`]: super::state::Settings

use leptos::prelude::*;

use super::session::{model_defaults, ChatSession};
use crate::app::SyncHydrate;

/// A folded card with every request parameter; its summary names the model.
#[component]
pub(crate) fn ParamsPanel() -> AnyView {
    let settings = expect_context::<ChatSession>().settings;
    let panel = view! {
        <details class="params card">
            <summary>
                "参数 "
                <span class="muted">{move || settings.with(|s| format!("{} · temperature {}", s.model, s.temperature))}</span>
            </summary>
            <div class="params-grid">
                <ProviderSelect/>
                <ModelSelect/>
                <ThinkingField/>
                <TemperatureField/>
                <MaxTokensField/>
                <TopPField/>
                <SeedField/>
                <SystemPromptField/>
            </div>
        </details>
    };
    // Erased: the chat page's view type is otherwise too deep for the compiler.
    SyncHydrate(panel).into_any()
}

/// Choosing a provider takes its default model, and the default max_tokens within it.
#[component]
fn ProviderSelect() -> impl IntoView {
    let ChatSession { settings, info, .. } = expect_context();
    let providers = move || {
        info.with_value(|i| {
            i.providers
                .iter()
                .map(|p| (p.id.clone(), p.label.clone()))
                .collect::<Vec<_>>()
        })
    };
    let on_change = move |ev| {
        let id = event_target_value(&ev);
        let (model, max_tokens) = info.with_value(|i| model_defaults(i, &id));
        settings.update(|s| {
            s.provider = id;
            s.model = model;
            s.max_tokens = max_tokens;
        });
    };
    view! {
        <label>
            "平台"
            <select on:change=on_change prop:value=move || settings.with(|s| s.provider.clone())>
                {move || providers().into_iter().map(|(id, label)| {
                    let selected = settings.with_untracked(|s| s.provider == id);
                    view! { <option value=id selected=selected>{label}</option> }
                }).collect_view()}
            </select>
        </label>
    }
}

/// The provider's models with their prices; max_tokens is kept within the new model's limit.
#[component]
fn ModelSelect() -> impl IntoView {
    let ChatSession { settings, info, .. } = expect_context();
    let models = move || {
        let provider = settings.with(|s| s.provider.clone());
        info.with_value(|i| {
            i.provider(&provider)
                .map(|p| p.models.clone())
                .unwrap_or_default()
        })
    };
    let on_change = move |ev| {
        let id = event_target_value(&ev);
        let limit =
            settings.with_untracked(|s| info.with_value(|i| i.output_limit(&s.provider, &id)));
        settings.update(|s| {
            s.model = id;
            s.max_tokens = s.max_tokens.clamp(1, limit);
        });
    };
    view! {
        <label>
            "模型"
            <select on:change=on_change prop:value=move || settings.with(|s| s.model.clone())>
                {move || models().into_iter().map(|m| {
                    let selected = settings.with_untracked(|s| s.model == m.id);
                    let label = format!("{}（¥{}/¥{} 每百万）", m.id, m.input_price, m.output_price);
                    view! { <option value=m.id.clone() selected=selected>{label}</option> }
                }).collect_view()}
            </select>
        </label>
    }
}

/// 深度思考, beside the model: shown only when the model can think.
#[component]
fn ThinkingField() -> impl IntoView {
    let ChatSession { settings, info, .. } = expect_context();
    let can_think =
        move || settings.with(|s| info.with_value(|i| i.can_think(&s.provider, &s.model)));
    let on_toggle = move |ev| {
        let on = event_target_checked(&ev);
        settings.update(|s| s.thinking = on);
    };
    view! {
        <Show when=can_think>
            <div class="field">
                <label class="check">
                    <input type="checkbox" aria-label="深度思考"
                        prop:checked=move || settings.with(|s| s.thinking)
                        on:change=on_toggle/>
                    "深度思考"
                </label>
                <small class="muted">"先推理再回答：更准，但更慢、用量更多"</small>
            </div>
        </Show>
    }
}

#[component]
fn TemperatureField() -> impl IntoView {
    let settings = expect_context::<ChatSession>().settings;
    let on_input = move |ev| {
        if let Ok(t) = event_target_value(&ev).parse::<f32>() {
            settings.update(|s| s.temperature = (t * 10.0).round() / 10.0);
        }
    };
    view! {
        <label>
            {move || format!("temperature：{}", settings.with(|s| s.temperature))}
            <input type="range" min="0" max="2" step="0.1" aria-label="temperature"
                prop:value=move || settings.with(|s| s.temperature.to_string())
                on:input=on_input/>
            <small class="muted">"代码、数学、JSON 建议 0；写作建议 0.7–0.9"</small>
        </label>
    }
}

/// max_tokens, kept within the chosen model's output limit.
#[component]
fn MaxTokensField() -> impl IntoView {
    let ChatSession { settings, info, .. } = expect_context();
    let limit =
        move || settings.with(|s| info.with_value(|i| i.output_limit(&s.provider, &s.model)));
    let on_change = move |ev| {
        if let Ok(n) = event_target_value(&ev).parse::<u32>() {
            let limit = limit();
            settings.update(|s| s.max_tokens = n.clamp(1, limit));
        }
    };
    view! {
        <label>
            "max_tokens"
            <input type="number" min="1" prop:max=move || limit().to_string() aria-label="max_tokens"
                prop:value=move || settings.with(|s| s.max_tokens.to_string())
                on:change=on_change/>
            <small class="muted">{move || format!("本模型最多 {}", limit())}</small>
        </label>
    }
}

/// top_p is left to the provider unless unlocked.
#[component]
fn TopPField() -> impl IntoView {
    let settings = expect_context::<ChatSession>().settings;
    let on_toggle = move |ev| {
        let on = event_target_checked(&ev);
        settings.update(|s| s.top_p = on.then_some(1.0));
    };
    let on_input = move |ev| {
        if let Ok(p) = event_target_value(&ev).parse::<f32>() {
            settings.update(|s| s.top_p = Some(p.clamp(0.05, 1.0)));
        }
    };
    let top_p = move || settings.with(|s| s.top_p.unwrap_or(1.0));
    view! {
        <div class="field">
            <label class="check">
                <input type="checkbox" prop:checked=move || settings.with(|s| s.top_p.is_some()) on:change=on_toggle/>
                "解锁 top_p"
            </label>
            <Show when=move || settings.with(|s| s.top_p.is_some())>
                <input type="range" min="0.05" max="1" step="0.05" aria-label="top_p"
                    prop:value=move || top_p().to_string()
                    on:input=on_input/>
                <small>{move || format!("top_p：{}", top_p())}</small>
            </Show>
            <small class="muted">"通常只调 temperature，不要同时调整 top_p"</small>
        </div>
    }
}

/// A fixed seed, off unless asked for (reproducible debugging).
#[component]
fn SeedField() -> impl IntoView {
    let settings = expect_context::<ChatSession>().settings;
    let on_toggle = move |ev| {
        let on = event_target_checked(&ev);
        settings.update(|s| s.seed = on.then_some(42));
    };
    let on_change = move |ev| {
        if let Ok(n) = event_target_value(&ev).parse::<i64>() {
            settings.update(|s| s.seed = Some(n));
        }
    };
    view! {
        <div class="field">
            <label class="check">
                <input type="checkbox" prop:checked=move || settings.with(|s| s.seed.is_some()) on:change=on_toggle/>
                "固定 seed（复现调试用）"
            </label>
            <Show when=move || settings.with(|s| s.seed.is_some())>
                <input type="number" aria-label="seed"
                    prop:value=move || settings.with(|s| s.seed.unwrap_or(42).to_string())
                    on:change=on_change/>
            </Show>
        </div>
    }
}

#[component]
fn SystemPromptField() -> impl IntoView {
    let settings = expect_context::<ChatSession>().settings;
    let on_change = move |ev| {
        let text = event_target_value(&ev);
        settings.update(|s| s.system_prompt = text);
    };
    view! {
        <label class="wide">
            "系统提示词"
            <textarea rows="2" placeholder="例如：你是一名简洁的技术顾问"
                prop:value=move || settings.with(|s| s.system_prompt.clone())
                on:change=on_change></textarea>
        </label>
    }
}
