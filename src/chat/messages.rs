//! The message list: user bubbles and answers with their reasoning, retry countdown,
//! reconnection notice, error, figures and actions. Render-only: every action goes
//! through [`ChatSession`].

use leptos::prelude::*;

use super::platform;
use super::session::{ChatSession, Msg, RetryNotice};
use super::state::{Failure, MessageStoreFields, Stats, Status, Switch};
use crate::app::SyncHydrate;
use crate::protocol::Role;

/// All messages, in an aria-live log. Code-block copy buttons are handled here by
/// delegation, since their HTML comes from the markdown renderer.
#[component]
pub(crate) fn MessageList() -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let on_click = move |ev: leptos::ev::MouseEvent| copy_code_block(&ev);
    view! {
        <div class="messages" role="log" aria-live="polite" aria-label="对话内容" on:click=on_click>
            <Show when=move || session.messages.with(Vec::is_empty)>
                <EmptyState/>
            </Show>
            <For each=move || session.messages.get() key=|msg| msg.id let:msg>
                {match msg.role() {
                    Role::User => SyncHydrate(view! { <UserMessage msg/> }).into_any(),
                    _ => SyncHydrate(view! { <AnswerMessage msg/> }).into_any(),
                }}
            </For>
        </div>
    }
}

#[component]
fn EmptyState() -> impl IntoView {
    view! {
        <div class="empty">
            <p class="empty-title">"开始一段对话"</p>
            <p class="muted">"回答会逐字流式显示；可随时停止，刷新页面不会丢失对话。"</p>
        </div>
    }
}

#[component]
fn UserMessage(msg: Msg) -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let editing = move || session.editing.get() == Some(msg.id);
    let draft = RwSignal::new(String::new());
    let start_edit = move |_| {
        draft.set(msg.data.content().get_untracked());
        session.editing.set(Some(msg.id));
    };
    let busy = move || session.streaming.get().is_some();
    view! {
        <article class="msg user" data-testid="user-message">
            <Show
                when=editing
                fallback=move || view! {
                    <div class="bubble plain">{move || msg.data.content().get()}</div>
                    <div class="actions">
                        <button type="button" on:click=start_edit disabled=busy>"编辑"</button>
                        <button type="button" on:click=move |_| platform::copy_text(&msg.data.content().get_untracked())>"复制"</button>
                    </div>
                }
            >
                <textarea
                    class="edit"
                    aria-label="编辑消息"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(event_target_value(&ev))
                ></textarea>
                <div class="actions">
                    <button type="button" class="primary" on:click=move |_| session.resend_edited(msg.id, draft.get_untracked())>"保存并重新发送"</button>
                    <button type="button" on:click=move |_| session.editing.set(None)>"取消"</button>
                </div>
            </Show>
        </article>
    }
}

/// An answer: its reasoning, retry countdown, text, warnings, failure, figures, actions.
#[component]
fn AnswerMessage(msg: Msg) -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let is_last = move || is_last(session, msg.id);
    let status = move || msg.data.status().get();
    let status_name = move || format!("{:?}", status()).to_lowercase();
    let busy = move || session.streaming.get().is_some();
    let has_gap = move || msg.missing.get() != 0;
    view! {
        <article class="msg assistant" data-testid="answer" data-status=status_name>
            <Show when=move || !msg.data.reasoning().with(String::is_empty)>
                <details class="reasoning">
                    <summary>"思考过程"</summary>
                    <div class="plain">{move || msg.data.reasoning().get()}</div>
                </details>
            </Show>
            {move || msg.retry.get().map(|notice| view! { <RetryLine notice/> })}
            <For
                each=move || msg.data.switches().get().into_iter().enumerate()
                key=|(index, _)| *index
                let((_, switch))
            >
                <SwitchLine switch/>
            </For>
            <Show when=move || msg.reconnecting.get()>
                <p class="reconnecting" role="status" data-testid="reconnecting">"重新连接中…"</p>
            </Show>
            <AnswerText msg/>
            <Show when=has_gap>
                <p class="warning">{move || format!("有 {} 段内容在传输中丢失", msg.missing.get())}</p>
            </Show>
            <Show when=move || status() == Status::Stopped>
                <p class="muted stopped" data-testid="stopped">"已停止生成"</p>
            </Show>
            {move || msg.data.failure().get().map(|failure| view! { <FailureBox failure id=msg.id/> })}
            {move || msg.data.stats().get().map(|stats| view! { <StatsLine stats/> })}
            <Show when=move || !matches!(status(), Status::Waiting | Status::Streaming)>
                <div class="actions">
                    <button type="button" on:click=move |_| platform::copy_text(&msg.data.content().get_untracked())>"复制"</button>
                    <Show when=is_last>
                        <button type="button" on:click=move |_| session.regenerate() disabled=busy>"重新生成"</button>
                    </Show>
                </div>
            </Show>
        </article>
    }
}

/// 已切换到 X（原因）: the answer moved along the server's fallback chain.
#[component]
fn SwitchLine(switch: Switch) -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let label = session
        .info
        .with_value(|info| info.provider(&switch.provider).map(|p| p.label.clone()));
    let text = switch.notice(label.as_deref());
    view! { <p class="switched" role="status" data-testid="fallback-notice">{text}</p> }
}

/// Whether message `id` is the conversation's last: only the last answer can be redone.
fn is_last(session: ChatSession, id: u64) -> bool {
    session
        .messages
        .with(|m| m.last().map(|last| last.id) == Some(id))
}

/// The answer's markdown (finished blocks, each rendered once, then the tail), with a
/// waiting note and a cursor while it streams. The tail's element is kept by
/// [`show_tail`], not by the view: it grows by the text that arrived, not re-rendered.
#[component]
fn AnswerText(msg: Msg) -> impl IntoView {
    let status = move || msg.data.status().get();
    let tail = NodeRef::<leptos::html::Div>::new();
    show_tail(msg, tail);
    view! {
        <div class="bubble markdown" data-testid="answer-text">
            <For
                each=move || msg.blocks.get().into_iter().enumerate()
                key=|(index, _)| *index
                children=|(_, html)| view! { <div class="block" inner_html=html></div> }
            />
            <div class="block tail" node_ref=tail></div>
            <Show when=move || status() == Status::Waiting && msg.retry.with(Option::is_none)>
                <span class="muted">"正在等待模型响应…"</span>
            </Show>
            <Show when=move || matches!(status(), Status::Streaming | Status::Waiting)>
                <span class="cursor" aria-hidden="true">"▍"</span>
            </Show>
        </div>
    }
}

/// Applies the tail's patches to its element, once per frame that changed it: the whole
/// tail's HTML, or text inserted before the open line's marker (a text node: the model's
/// text is never parsed as HTML here), in new pieces as the patch says, and at the end
/// the marker removed. The effect keeps the marker between frames.
#[cfg(feature = "hydrate")]
fn show_tail(msg: Msg, tail: NodeRef<leptos::html::Div>) {
    use super::markdown::{TailPatch, OPEN_LINE_SELECTOR};
    // This element starts empty: its first patch must be the whole tail.
    msg.forget_tail();
    Effect::new(move |marker: Option<Option<web_sys::Element>>| {
        msg.tail_version.track();
        let marker = marker.flatten();
        let element = tail.get()?;
        let patch = match (msg.take_tail_patch(), marker) {
            (None, marker) => return marker,
            (Some(TailPatch::Grow { pieces, line }), Some(marker)) => {
                grow(&marker, &pieces, line.as_deref());
                return Some(marker);
            }
            // Finished in its pieces: only the open line goes.
            (Some(TailPatch::Settle { pieces }), Some(marker)) => {
                grow(&marker, &pieces, None);
                marker.remove();
                return None;
            }
            // No marker to grow from (it cannot happen, but the page can be changed
            // under us): show the whole tail.
            (Some(TailPatch::Grow { .. } | TailPatch::Settle { .. }), None) => {
                msg.forget_tail();
                msg.take_tail_patch()?
            }
            (Some(html), _) => html,
        };
        if let TailPatch::Html(html) = patch {
            element.set_inner_html(&html);
        }
        element.query_selector(OPEN_LINE_SELECTOR).ok().flatten()
    });
}

/// Appends `pieces` before `marker` (the open line), each after the first in a new
/// piece that the marker moves into, then shows `line` in it.
#[cfg(feature = "hydrate")]
fn grow(marker: &web_sys::Element, pieces: &[String], line: Option<&str>) {
    use super::markdown::PIECE;
    for (index, text) in pieces.iter().enumerate() {
        if index > 0 {
            let Some(piece) = marker.parent_element() else {
                return;
            };
            let _ = piece.insert_adjacent_html("afterend", &format!("{PIECE}</span>"));
            if let Some(next) = piece.next_element_sibling() {
                let _ = next.append_with_node_1(marker);
            }
        }
        if !text.is_empty() {
            let _ = marker.before_with_str_1(text);
        }
    }
    if let Some(line) = line {
        marker.set_text_content(Some(line));
    }
}

/// On the server nothing streams: the tail stays empty.
#[cfg(not(feature = "hydrate"))]
fn show_tail(msg: Msg, tail: NodeRef<leptos::html::Div>) {
    let _ = (msg, tail);
}

/// What went wrong, a hint, and 重试 on the last answer when it may help.
#[component]
fn FailureBox(failure: Failure, id: u64) -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let busy = move || session.streaming.get().is_some();
    let retryable = failure.retryable;
    view! {
        <div class="failure" role="alert" data-testid="failure">
            <p>{failure.message}</p>
            {failure.hint.map(|hint| view! { <p class="muted">{hint}</p> })}
            <Show when=move || is_last(session, id) && retryable>
                <button type="button" class="primary" on:click=move |_| session.regenerate() disabled=busy>"重试"</button>
            </Show>
        </div>
    }
}

/// 「限流，3 秒后重试（第 1/3 次）」 with a live countdown.
#[component]
fn RetryLine(notice: RetryNotice) -> impl IntoView {
    let session = expect_context::<ChatSession>();
    let text = move || {
        let left = ((notice.until_ms - session.now_ms.get()) / 1000.0)
            .ceil()
            .max(0.0);
        format!(
            "{}，{} 秒后重试（第 {}/{} 次）",
            notice.reason, left, notice.attempt, notice.max_retries
        )
    };
    view! { <p class="retry" role="status" data-testid="retry">{text}</p> }
}

/// Tokens, their source, cost, time to first token, speed, finish reason.
#[component]
fn StatsLine(stats: Stats) -> impl IntoView {
    let usage = &stats.usage;
    let mut parts = vec![
        format!(
            "输入 {} · 输出 {} tokens（{}）",
            usage.prompt_tokens,
            usage.completion_tokens,
            stats.source_label()
        ),
        stats.cost_label(),
    ];
    if let Some(first) = stats.timing.as_ref().and_then(|t| t.first_token_ms) {
        parts.push(format!("首字 {first} ms"));
    }
    if let Some(speed) = stats.tokens_per_second() {
        parts.push(format!("{speed:.1} tokens/s"));
    }
    if let Some(reason) = &stats.finish_reason {
        parts.push(format!("结束原因 {reason}"));
    }
    let exact = format!(
        "精确费用 ¥{}（输入 ¥{} + 输出 ¥{}）",
        stats.cost.total, stats.cost.input, stats.cost.output
    );
    let note = stats.finish_note();
    view! {
        <p class="stats" data-testid="stats" title=exact>{parts.join(" · ")}</p>
        {note.map(|note| view! { <p class="warning">{note}</p> })}
    }
}

/// Copies the code of a code block whose copy button was clicked.
fn copy_code_block(ev: &leptos::ev::MouseEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(button) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        if !button.class_list().contains("copy-code") {
            return;
        }
        let code = button
            .next_element_sibling()
            .and_then(|pre| pre.text_content());
        if let Some(code) = code {
            platform::copy_text(&code);
            button.set_text_content(Some("已复制"));
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ev;
}
