//! Money around one chat: before the provider is called, the worst case (the prompt plus
//! `max_tokens` of output, at the model's prices) is reserved against the caller's and the
//! deployment's budgets in one atomic step (`Store::reserve`, which also checks the code's
//! RPM and concurrent-stream limits); when the chat ends — done, error, or stopped — the
//! reservation is settled to the real cost and the ledger gets its row, off the hot path.
//! A refusal gets a ledger row too, and a JSON answer in Chinese that says the limit, what
//! is spent and when it resets.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::oneshot;

use super::auth::Caller;
use super::AppState;
use crate::llm::{ChatJob, Control, Ended, Prepared, Report};
use crate::protocol::{RejectBody, Rejection, UsageSource};
use crate::store::{
    unix_now, unix_now_ms, LedgerRow, Outcome, Refusal, Reservation, ReserveError, ReserveRequest,
};

/// A chat that may not start, with the status and body to answer.
#[derive(Debug)]
pub struct Turned {
    pub status: StatusCode,
    pub rejection: Rejection,
    pub retry_after: Option<u64>,
}

impl IntoResponse for Turned {
    fn into_response(self) -> Response {
        let body = Json(RejectBody {
            error: self.rejection,
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Prepares `job` for `caller` under `control` if its limits and budgets allow it (the
/// caller drives its relay); the answer is billed when it ends.
pub async fn start(
    state: &AppState,
    caller: &Caller,
    job: ChatJob,
    control: Control,
) -> Result<Prepared, Turned> {
    let at_ms = unix_now_ms();
    if let Some(code) = caller.code().filter(|c| !c.allows_model(&job.model.id)) {
        let message = format!("访问码「{}」不能使用模型 {}", code.name, job.model.id);
        return Err(turned(
            StatusCode::FORBIDDEN,
            "model_not_allowed",
            message,
            None,
        ));
    }
    let reservation = if needs_reservation(state, caller) {
        Some(reserve(state, caller, &job, at_ms).await?)
    } else {
        None
    };
    let row = Pending {
        at_ms,
        code_id: caller.code_id(),
    };
    let (prepared, report) = state.llm.prepare(job, control);
    tokio::spawn(settle(state.clone(), reservation, row, report));
    Ok(prepared)
}

/// Whether any limit applies to this chat: the deployment's daily limit, or one of the
/// code's. With none (the open single-user start, or an unlimited code) there is nothing
/// to reserve, and the chat skips the database's one writer on its way to the provider;
/// its ledger row is still written.
fn needs_reservation(state: &AppState, caller: &Caller) -> bool {
    let code_limited = caller.code().is_some_and(|code| {
        let l = &code.limits;
        l.daily.is_some() || l.monthly.is_some() || l.rpm.is_some() || l.concurrent.is_some()
    });
    code_limited || state.store.global_daily_limit().is_some()
}

/// Books the worst case of `job` (the prompt plus `max_tokens` of output), or turns it
/// away, with a ledger row for the refusal.
async fn reserve(
    state: &AppState,
    caller: &Caller,
    job: &ChatJob,
    at_ms: i64,
) -> Result<Reservation, Turned> {
    let request = ReserveRequest {
        code_id: caller.code_id(),
        amount: crate::llm::request::worst_case(state.llm.config(), job),
        now: unix_now(),
    };
    match state.store.reserve(request).await {
        Ok(reservation) => Ok(reservation),
        Err(ReserveError::Refused(refusal)) => {
            let row = refused_row(at_ms, caller, job, &refusal);
            state.ledger.record(row);
            Err(refused(refusal))
        }
        Err(ReserveError::Store(err)) => {
            tracing::error!("cannot reserve the budget: {err}");
            let message = "服务器暂时无法记账，请稍后重试".to_owned();
            let code = "store_unavailable";
            Err(turned(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                message,
                Some(5),
            ))
        }
    }
}

/// What the ledger row of a running chat knows before it ends.
struct Pending {
    at_ms: i64,
    code_id: Option<i64>,
}

/// Waits for the chat's report, settles its reservation and records its row.
async fn settle(
    state: AppState,
    reservation: Option<Reservation>,
    pending: Pending,
    report: oneshot::Receiver<Report>,
) {
    let Ok(report) = report.await else {
        // The relay task died without a report: the reservation's own drop settles it at
        // the worst case, so the budget stays safe.
        tracing::error!("a chat ended without a report; settled at its reservation");
        return;
    };
    if let Some(reservation) = reservation {
        if let Err(err) = state.store.settle(reservation, report.cost).await {
            tracing::error!("cannot settle a reservation: {err}");
        }
    }
    if !state.record_ledger {
        return;
    }
    state.ledger.record(LedgerRow {
        at_ms: pending.at_ms,
        code_id: pending.code_id,
        // The model that answered (the last of a fallback chain that moved on).
        provider: report.provider,
        model: report.model,
        key_id: report.key_id,
        prompt_tokens: report.usage.prompt_tokens,
        completion_tokens: report.usage.completion_tokens,
        reasoning_tokens: report.reasoning_tokens,
        usage_source: report.usage.source,
        cost: report.cost,
        first_token_ms: report.first_token_ms,
        duration_ms: report.duration_ms,
        retries: report.attempts.saturating_sub(1),
        outcome: match report.ended {
            Ended::Done => Outcome::Done,
            Ended::Failed(code) => Outcome::error(code),
            Ended::Stopped => Outcome::Stopped,
        },
    });
}

fn refused_row(at_ms: i64, caller: &Caller, job: &ChatJob, refusal: &Refusal) -> LedgerRow {
    LedgerRow {
        at_ms,
        code_id: caller.code_id(),
        provider: job.provider.clone(),
        model: job.model.id.clone(),
        key_id: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        reasoning_tokens: 0,
        usage_source: UsageSource::Tiktoken,
        cost: Default::default(),
        first_token_ms: None,
        duration_ms: 0,
        retries: 0,
        outcome: refusal.outcome(),
    }
}

/// A refusal as the browser sees it: over budget 402, too fast or too many 429, a code
/// that stopped being valid 401.
fn refused(refusal: Refusal) -> Turned {
    let retry_after = refusal.retry_after(unix_now());
    let (status, code) = match &refusal {
        Refusal::Budget(_) => (StatusCode::PAYMENT_REQUIRED, "over_budget"),
        Refusal::Rpm { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
        Refusal::Concurrent { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
        Refusal::Revoked => (StatusCode::UNAUTHORIZED, "auth_revoked"),
        Refusal::Expired => (StatusCode::UNAUTHORIZED, "auth_expired"),
        Refusal::UnknownCode => (StatusCode::UNAUTHORIZED, "auth_invalid"),
    };
    turned(status, code, refusal.to_string(), retry_after)
}

fn turned(status: StatusCode, code: &str, message: String, retry_after: Option<u64>) -> Turned {
    Turned {
        status,
        rejection: Rejection {
            code: code.to_owned(),
            field: None,
            message,
        },
        retry_after,
    }
}
