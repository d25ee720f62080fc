//! Access codes at the door: one middleware checks every `/api/*` request, server
//! functions included. The code travels as `Authorization: Bearer …` (never a cookie, so
//! another website cannot ride on it) and is looked up by its hash on every request, so a
//! revocation takes effect at once. While no code exists the server is open — the
//! two-command start on loopback; `server::run` refuses a non-loopback address in that
//! state unless the deployer opts out. Whether one exists is remembered
//! (`Store::has_codes`): the first code closes the server at once when made here, within
//! a second when made by the CLI or another instance — except code management, which
//! asks the database again before it trusts an open caller (`app::admin`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::protocol::{RejectBody, Rejection};
use crate::store::{unix_now, AuthError, CodeInfo};

/// Who is calling, as the middleware found out. Handlers read it from the request's
/// extensions (`Extension<Caller>`).
#[derive(Clone, Debug)]
pub enum Caller {
    /// No access code exists yet: anyone who reaches the server may use it, and may
    /// create the first code (which becomes the admin's).
    Open,
    Code(Box<CodeInfo>),
}

impl Caller {
    pub fn code_id(&self) -> Option<i64> {
        match self {
            Caller::Open => None,
            Caller::Code(code) => Some(code.id),
        }
    }

    pub fn code(&self) -> Option<&CodeInfo> {
        match self {
            Caller::Open => None,
            Caller::Code(code) => Some(code),
        }
    }

    /// May open the admin page: an admin code, or anyone while no code exists.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Code(code) => code.admin,
        }
    }
}

/// The middleware: `/api/*` needs a valid code once any code exists.
pub async fn require_code(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/api/") {
        return next.run(request).await;
    }
    let bearer = bearer(&request).map(str::to_owned);
    match caller(&state, bearer.as_deref()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The caller behind `bearer`, or why not.
pub async fn caller(state: &AppState, bearer: Option<&str>) -> Result<Caller, Refusal> {
    let store = &state.store;
    match bearer {
        Some(code) => match store.authenticate(code, unix_now()).await {
            Ok(info) => Ok(Caller::Code(Box::new(info))),
            Err(AuthError::Unknown) => {
                Err(Refusal::new("auth_invalid", "访问码无效，请检查后重新输入"))
            }
            Err(err @ (AuthError::Revoked { .. } | AuthError::Expired { .. })) => {
                let code = match err {
                    AuthError::Revoked { .. } => "auth_revoked",
                    _ => "auth_expired",
                };
                Err(Refusal::new(
                    code,
                    &format!("{err}，请向管理员索取新的访问码"),
                ))
            }
            Err(AuthError::Store(err)) => Err(Refusal::unavailable(&err)),
        },
        None => match store.has_codes().await {
            Ok(false) => Ok(Caller::Open),
            Ok(true) => Err(Refusal::new(
                "auth_required",
                "此服务需要访问码：请输入管理员发给你的访问码",
            )),
            Err(err) => Err(Refusal::unavailable(&err)),
        },
    }
}

/// The bearer token of a request, if it carries one.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A request turned away at the door: 401 with a message in Chinese (or 503 when the
/// database cannot answer).
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    rejection: Rejection,
}

impl Refusal {
    fn new(code: &str, message: &str) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            rejection: Rejection {
                code: code.to_owned(),
                field: Some("authorization".into()),
                message: message.to_owned(),
            },
        }
    }

    fn unavailable(err: &dyn std::fmt::Display) -> Refusal {
        tracing::error!("cannot check the access code: {err}");
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            rejection: Rejection {
                code: "store_unavailable".into(),
                field: None,
                message: "服务器暂时无法校验访问码，请稍后重试".into(),
            },
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(RejectBody {
                error: self.rejection,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
