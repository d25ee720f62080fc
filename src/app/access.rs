//! Access codes in the browser: the code is asked for once, kept in `localStorage`
//! (`streamai.access_code`) and sent as `Authorization: Bearer …` on every API call —
//! never as a cookie, so another website cannot make the browser send it.
//!
//! Two senders carry it: the chat's stream fetch (`chat::platform`, through [`bearer`]) and
//! every server function, through [`BearerClient`], named in each `#[server(client = …)]`.
//! Whatever answers 401 clears the stored code and opens the [`AccessPrompt`] with the
//! server's message ([`refused`]); entering a code bumps [`Access::epoch`], which is what
//! failed loads and a question bounced by a 401 wait for to try again.
//!
//! Also [`whoami`], the one server function the header asks after hydration: whether this
//! browser's code (or the open server) may see the 管理 tab.

use std::future::Future;

use leptos::prelude::*;
use leptos::server_fn::client::{browser::BrowserClient, Client};
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use leptos::server_fn::request::browser::BrowserRequest;
use leptos::server_fn::response::{browser::BrowserResponse, ClientRes};
use leptos::server_fn::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::RejectBody;

/// The code this browser keeps, if any (always `None` on the server).
pub(crate) fn stored_code() -> Option<String> {
    storage::load().filter(|code| well_formed(code.trim()))
}

/// Whether `code` can travel in a header at all: visible ASCII, no spaces. (`fetch` throws
/// on anything else, so a code typed with a Chinese comma must be refused here.)
fn well_formed(code: &str) -> bool {
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_graphic())
}

/// The `Authorization` header value for the stored code.
pub(crate) fn bearer() -> Option<String> {
    stored_code().map(|code| format!("Bearer {}", code.trim()))
}

#[cfg(feature = "hydrate")]
mod storage {
    /// Where the browser keeps the code.
    const STORAGE_KEY: &str = "streamai.access_code";

    fn local() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok().flatten()
    }

    pub(super) fn load() -> Option<String> {
        local()?.get_item(STORAGE_KEY).ok().flatten()
    }

    pub(super) fn save(code: &str) {
        if let Some(storage) = local() {
            let _ = storage.set_item(STORAGE_KEY, code);
        }
    }

    pub(super) fn clear() {
        if let Some(storage) = local() {
            let _ = storage.remove_item(STORAGE_KEY);
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod storage {
    pub(super) fn load() -> Option<String> {
        None
    }
    pub(super) fn save(_code: &str) {}
    pub(super) fn clear() {}
}

/// The prompt is open; `message` is the server's reason when a request was refused.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Prompt {
    pub message: Option<String>,
}

/// Who this browser is to the server, as [`whoami`] answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WhoAmI {
    /// May open the admin page: an admin code, or anyone while the server has no code.
    pub admin: bool,
    /// The code's name; `None` while the server has no code.
    pub name: Option<String>,
}

/// The browser's access state, shared through context as one `Copy` handle.
#[derive(Clone, Copy)]
pub(crate) struct Access {
    pub prompt: RwSignal<Option<Prompt>>,
    /// Bumped after the prompt closes: what failed for want of a code loads again.
    pub epoch: RwSignal<u64>,
    /// What [`whoami`] last said (known only after hydration).
    pub who: RwSignal<Option<WhoAmI>>,
    /// A code is stored in this browser (known only after hydration).
    pub has_code: RwSignal<bool>,
}

#[cfg(feature = "hydrate")]
thread_local! {
    /// The page's [`Access`], for [`BearerClient`], which runs outside any component.
    static CURRENT: std::cell::Cell<Option<Access>> = const { std::cell::Cell::new(None) };
}

impl Access {
    /// Creates the state and provides it as context (called once, by `App`).
    pub fn provide() -> Access {
        let access = Access {
            prompt: RwSignal::new(None),
            epoch: RwSignal::new(0),
            who: RwSignal::new(None),
            has_code: RwSignal::new(false),
        };
        #[cfg(feature = "hydrate")]
        CURRENT.with(|current| current.set(Some(access)));
        provide_context(access);
        access
    }

    /// Browser only, after hydration: notes whether a code is stored and asks the server
    /// who we are (a 401 opens the prompt).
    pub fn start(&self) {
        self.has_code.set(stored_code().is_some());
        let access = *self;
        leptos::task::spawn_local(async move {
            if let Ok(who) = whoami().await {
                access.who.set(Some(who));
            }
        });
    }

    pub fn is_admin(&self) -> bool {
        self.who.with(|who| who.as_ref().is_some_and(|w| w.admin))
    }

    /// Opens the prompt without a message, unless it is open already (with one).
    pub fn ask(&self) {
        if self.prompt.with_untracked(Option::is_none) {
            self.prompt.set(Some(Prompt { message: None }));
        }
    }

    /// Keeps `code` and asks the server whose it is: on success the prompt closes and
    /// what failed for want of a code loads again; a refusal leaves the prompt open with
    /// the server's reason (the client has already put it there).
    pub async fn sign_in(self, code: String) {
        if !well_formed(code.trim()) {
            self.prompt.set(Some(Prompt {
                message: Some("访问码只能包含英文字母、数字和符号，不含空格".into()),
            }));
            return;
        }
        storage::save(code.trim());
        self.has_code.set(true);
        match whoami().await {
            Ok(who) => {
                self.who.set(Some(who));
                self.close();
            }
            Err(_) if !self.has_code.get_untracked() => {}
            Err(err) => self.prompt.set(Some(Prompt {
                message: Some(error_text(&err)),
            })),
        }
    }

    /// 退出/更换访问码: forgets the code and asks for another.
    pub fn sign_out(&self) {
        storage::clear();
        self.has_code.set(false);
        self.who.set(None);
        self.prompt.set(Some(Prompt { message: None }));
    }

    #[cfg(feature = "hydrate")]
    fn refused(&self, message: String) {
        storage::clear();
        self.has_code.set(false);
        self.who.set(None);
        self.prompt.set(Some(Prompt {
            message: Some(message),
        }));
    }

    /// Closes the prompt; what failed meanwhile loads again.
    fn close(&self) {
        self.prompt.set(None);
        self.epoch.update(|n| *n += 1);
    }
}

/// The server refused this browser's code (or its lack of one) with `message`: forget the
/// code and ask for one, showing why. Does nothing on the server.
pub(crate) fn refused(message: String) {
    #[cfg(feature = "hydrate")]
    if let Some(access) = CURRENT.with(std::cell::Cell::get) {
        access.refused(message);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = message;
}

/// The message of a 401 body (`RejectBody`), or a plain one.
pub(crate) fn refusal_message(body: &str) -> String {
    serde_json::from_str::<RejectBody>(body)
        .map(|body| body.error.message)
        .unwrap_or_else(|_| "访问码无效或已失效，请重新输入".to_owned())
}

/// A server function's error as a person reads it: the server's own words without
/// server_fn's English prefix.
pub(crate) fn error_text(err: &ServerFnError) -> String {
    match err {
        ServerFnError::ServerError(message)
        | ServerFnError::Args(message)
        | ServerFnError::MiddlewareError(message) => message.clone(),
        ServerFnError::Request(_) => "无法连接到服务器".to_owned(),
        other => other.to_string(),
    }
}

/// The server-function client of this app: the default browser `fetch` client, plus the
/// stored code as `Authorization: Bearer …`, and a 401 turned into the access prompt.
/// Used by every `#[server]` of the app (`client = crate::app::access::BearerClient`).
/// Compiled on the server too (the macro names it there), where it never runs.
pub struct BearerClient;

impl<E, IS, OS> Client<E, IS, OS> for BearerClient
where
    E: FromServerFnError + Send,
    IS: FromServerFnError,
    OS: FromServerFnError,
{
    type Request = BrowserRequest;
    type Response = BrowserResponse;

    fn send(req: BrowserRequest) -> impl Future<Output = Result<BrowserResponse, E>> + Send {
        if let Some(bearer) = bearer() {
            req.headers().set("Authorization", &bearer);
        }
        let sent = <BrowserClient as Client<E, IS, OS>>::send(req);
        async move {
            let response = sent.await?;
            if <BrowserResponse as ClientRes<E>>::status(&response) != 401 {
                return Ok(response);
            }
            let body = <BrowserResponse as ClientRes<E>>::try_into_string(response).await?;
            let message = refusal_message(&body);
            refused(message.clone());
            Err(E::from_server_fn_error(ServerFnErrorErr::ServerError(
                message,
            )))
        }
    }

    #[allow(clippy::type_complexity)]
    fn open_websocket(
        path: &str,
    ) -> impl Future<
        Output = Result<
            (
                impl futures::Stream<Item = Result<Bytes, Bytes>> + Send + 'static,
                impl futures::Sink<Bytes> + Send + 'static,
            ),
            E,
        >,
    > + Send {
        <BrowserClient as Client<E, IS, OS>>::open_websocket(path)
    }

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        <BrowserClient as Client<E, IS, OS>>::spawn(future)
    }
}

/// Whether this browser may see the admin page, and the name of its code.
#[server(prefix = "/api", endpoint = "whoami", input = server_fn::codec::Json, client = crate::app::access::BearerClient)]
pub async fn whoami() -> Result<WhoAmI, ServerFnError> {
    let caller = caller().await?;
    Ok(WhoAmI {
        admin: caller.is_admin(),
        name: caller.code().map(|code| code.name.clone()),
    })
}

/// The caller the access middleware found (server functions only; SSR has none).
#[cfg(feature = "ssr")]
pub(crate) async fn caller() -> Result<crate::server::auth::Caller, ServerFnError> {
    let axum::Extension(caller) =
        leptos_axum::extract::<axum::Extension<crate::server::auth::Caller>>()
            .await
            .map_err(|_| ServerFnError::new("无法确认访问码"))?;
    Ok(caller)
}

/// The dialog that asks for the code: the server's message when it refused one, a
/// password field, 确定 and 取消. Rendered by `App`, shown while [`Access::prompt`] is set.
#[component]
pub(crate) fn AccessPrompt() -> impl IntoView {
    let access = expect_context::<Access>();
    let code = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if access.prompt.with(Option::is_some) {
            if let Some(input) = input.get() {
                let _ = input.focus();
            }
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = code.get_untracked().trim().to_owned();
        if text.is_empty() || busy.get_untracked() {
            return;
        }
        busy.set(true);
        leptos::task::spawn_local(async move {
            access.sign_in(text).await;
            if access.prompt.with_untracked(Option::is_none) {
                code.set(String::new());
            }
            busy.set(false);
        });
    };
    move || {
        access.prompt.get().map(|prompt| {
            view! {
                <div class="access-backdrop">
                    <form
                        class="access-prompt card"
                        role="dialog"
                        aria-modal="true"
                        aria-labelledby="access-title"
                        data-testid="access-prompt"
                        on:submit=submit
                    >
                        <h2 id="access-title">"请输入访问码"</h2>
                        {prompt.message.map(|message| view! {
                            <p class="error" role="alert" data-testid="access-message">{message}</p>
                        })}
                        <p class="muted">"访问码由管理员发放，只保存在本浏览器中，随每次请求发送。"</p>
                        <input
                            type="password"
                            name="access-code"
                            autocomplete="off"
                            aria-label="访问码"
                            placeholder="sk-liu-…"
                            node_ref=input
                            prop:value=move || code.get()
                            on:input=move |ev| code.set(event_target_value(&ev))
                        />
                        <div class="actions">
                            <button type="submit" class="primary" disabled=move || busy.get() || code.with(|c| c.trim().is_empty())>
                                "确定"
                            </button>
                            <button type="button" on:click=move |_| access.close()>"取消"</button>
                        </div>
                    </form>
                </div>
            }
        })
    }
}

/// The header's control: the code's name and 退出/更换访问码, while a code is stored.
#[component]
pub(crate) fn AccessControl() -> impl IntoView {
    let access = expect_context::<Access>();
    let name = move || access.who.get().and_then(|who| who.name);
    view! {
        <Show when=move || access.has_code.get()>
            <div class="access-control">
                <span class="muted who" data-testid="access-name">{name}</span>
                <button type="button" on:click=move |_| access.sign_out()>"退出/更换访问码"</button>
            </div>
        </Show>
    }
}
