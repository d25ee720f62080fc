//! Budgets that cannot be overdrawn, and the per-code RPM and concurrency limits.
//!
//! Before a request goes to the provider, [`Store::reserve`] books its worst-case cost in one
//! write transaction that checks everything at once: the code is still valid, fewer than
//! `concurrent` of its streams are open, fewer than `rpm` were admitted in the last minute,
//! and the code's day, the code's month and the deployment's day each have room for the
//! amount. [`Store::settle`] then turns the reservation into the real cost. A process that
//! dies leaves its reservations behind; another instance refunds them once the dead one's
//! heartbeat is old ([`Store::refund_stale`]).
//!
//! Why no limit can be overdrawn, on either engine:
//! - Each limit is one row of `budget_counters` (code, period), changed only by a
//!   conditional upsert `… reserved = reserved + $a WHERE spent + reserved + $a <= $limit`.
//!   Postgres evaluates that WHERE on the newest committed version of the row while holding
//!   its row lock (an upsert is atomic even at READ COMMITTED), and SQLite runs the whole
//!   transaction under its single write lock (`BEGIN IMMEDIATE`). Two reservations can
//!   therefore never both see the same room. A refused upsert rolls the whole transaction
//!   back, so a request never holds part of its reservation.
//! - The transaction first updates the code's own row (`last_used_at`), which locks it: the
//!   reservations of one code are serialized, so the counts of open streams and of the last
//!   minute's admissions that follow are exact.
//! - Rows are always locked in the same order — code, code's day, code's month, the
//!   deployment's day — and `settle` and refunds take the counters in that order too, so
//!   Postgres cannot deadlock.
//!
//! The counters are kept for every request (with or without limits), so they also answer
//! "spent today / this month" ([`Store::spending`]).

use std::time::Duration;

use sqlx::{Any, Transaction};

use super::shanghai::{self, Day, Month};
use super::{col, pico, unix_now, yuan, Store, StoreError};
use crate::protocol::Yuan;

/// `budget_counters.code_id` of the deployment-wide counter.
const GLOBAL: i64 = 0;

/// What [`Store::reserve`] books.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    /// `None` for a request without an access code: only the global limit applies.
    pub code_id: Option<i64>,
    /// The worst case: the prompt plus `max_tokens` of output at the model's prices.
    pub amount: Yuan,
    /// Unix seconds; picks the Shanghai day and month the money counts to.
    pub now: i64,
}

/// Money booked for one request. Settle it with [`Store::settle`]. If it is dropped
/// instead (a task aborted or panicked), it is settled in the background at its full amount,
/// the worst case, with a warning: the budget stays safe and the stream slot is freed.
#[derive(Debug)]
#[must_use = "a reservation must be settled"]
pub struct Reservation {
    id: i64,
    code_id: Option<i64>,
    amount: i64,
    day: Day,
    month: Month,
    /// Present until settled; used by `Drop`.
    store: Option<Store>,
}

impl Reservation {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn code_id(&self) -> Option<i64> {
        self.code_id
    }

    pub fn amount(&self) -> Yuan {
        yuan(self.amount)
    }

    /// The Shanghai day the cost counts to (the day of the reservation, even when the stream
    /// ends after midnight).
    pub fn day(&self) -> Day {
        self.day
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                id = self.id,
                "reservation dropped outside a runtime; a refund of stale reservations will return it"
            );
            return;
        };
        tracing::warn!(
            id = self.id,
            "reservation dropped without settle; charging its full amount"
        );
        let (id, code_id, amount, day, month) =
            (self.id, self.code_id, self.amount, self.day, self.month);
        runtime.spawn(async move {
            if let Err(err) = store
                .close_reservation(id, code_id, amount, amount, day, month)
                .await
            {
                tracing::error!(id, "settling a dropped reservation failed: {err}");
            }
        });
    }
}

/// Which budget refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetScope {
    /// The code's limit per Shanghai day.
    Daily,
    /// The code's limit per Shanghai month.
    Monthly,
    /// The deployment's limit per Shanghai day.
    GlobalDaily,
}

/// A request that does not fit a budget: the limit, what is spent or reserved already, what
/// the request asked for, and when the budget resets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetRefusal {
    pub scope: BudgetScope,
    pub limit: Yuan,
    pub spent_and_reserved: Yuan,
    pub requested: Yuan,
    /// Unix seconds: the next Shanghai midnight (or month start for `Monthly`).
    pub resets_at: i64,
}

impl std::fmt::Display for BudgetRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.scope {
            BudgetScope::Daily => "此访问码今日额度",
            BudgetScope::Monthly => "此访问码本月额度",
            BudgetScope::GlobalDaily => "本服务今日总额度",
        };
        write!(
            f,
            "{what}不足：上限 ¥{}，已用及预留 ¥{}，本次最多需要 ¥{}；将于 {}（北京时间）重置",
            self.limit,
            self.spent_and_reserved,
            self.requested,
            shanghai::format_minute(self.resets_at)
        )
    }
}

/// Why [`Store::reserve`] did not admit a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Budget(BudgetRefusal),
    #[error("请求过于频繁：此访问码每分钟最多 {limit} 次，请 {retry_after} 秒后再试")]
    Rpm { limit: u32, retry_after: u64 },
    #[error("此访问码同时进行的对话已达上限（{limit} 个），请等其中一个结束")]
    Concurrent { limit: u32 },
    #[error("访问码已被停用")]
    Revoked,
    #[error("访问码已过期")]
    Expired,
    #[error("访问码无效")]
    UnknownCode,
}

impl Refusal {
    /// The ledger's outcome for this refusal: `refused:budget`, `refused:rpm`, ….
    pub fn outcome(&self) -> super::Outcome {
        let reason = match self {
            Refusal::Budget(_) => "budget",
            Refusal::Rpm { .. } => "rpm",
            Refusal::Concurrent { .. } => "concurrent",
            Refusal::Revoked | Refusal::Expired | Refusal::UnknownCode => "code",
        };
        super::Outcome::Refused(reason.into())
    }

    /// Seconds after which the same request may succeed, where that is known.
    pub fn retry_after(&self, now: i64) -> Option<u64> {
        match self {
            Refusal::Budget(b) => u64::try_from(b.resets_at - now).ok(),
            Refusal::Rpm { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReserveError {
    fn from(err: sqlx::Error) -> Self {
        ReserveError::Store(err.into())
    }
}

/// Money of one budget period: settled costs and open reservations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spending {
    pub day_spent: Yuan,
    pub day_reserved: Yuan,
    /// Zero for the deployment-wide spending (there is no global monthly counter).
    pub month_spent: Yuan,
    pub month_reserved: Yuan,
}

/// What [`Store::refund_stale`] returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refunded {
    pub reservations: u64,
    pub amount: Yuan,
}

/// Settings of [`Store::spawn_maintenance`].
#[derive(Clone, Copy, Debug)]
pub struct Maintenance {
    /// How often to beat the heartbeat and look for dead instances (e.g. 10 s).
    pub every: Duration,
    /// An instance whose heartbeat is older than this is dead (e.g. 60 s; several `every`).
    pub stale_after: Duration,
    /// Keep this many Shanghai days of ledger and rollup (today included); `None` keeps all.
    pub retention_days: Option<u32>,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            every: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            retention_days: None,
        }
    }
}

/// The columns of a code that `reserve` reads under the code's row lock.
struct CodeLimits {
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    daily: Option<i64>,
    monthly: Option<i64>,
    rpm: Option<i64>,
    concurrent: Option<i64>,
}

impl Store {
    /// Books `amount` for one request, or says why not. See the module doc for why this is
    /// atomic. On `Ok`, call [`Store::settle`] when the request ends, whatever the outcome.
    pub async fn reserve(&self, request: ReserveRequest) -> Result<Reservation, ReserveError> {
        let amount = pico(request.amount)?;
        let now = request.now;
        let (day, month) = (Day::of(now), Month::of(now));
        let mut tx = self.begin_write().await?;

        let mut rpm_limited = false;
        if let Some(code_id) = request.code_id {
            // Locks the code's row until commit: one reservation per code at a time.
            let row = sqlx::query(
                "UPDATE access_codes SET last_used_at = $1 WHERE id = $2 RETURNING revoked_at, \
                 expires_at, daily_limit_pico, monthly_limit_pico, rpm, concurrent",
            )
            .bind(now)
            .bind(code_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(ReserveError::Refused(Refusal::UnknownCode));
            };
            let code = CodeLimits {
                revoked_at: col(&row, "revoked_at")?,
                expires_at: col(&row, "expires_at")?,
                daily: col(&row, "daily_limit_pico")?,
                monthly: col(&row, "monthly_limit_pico")?,
                rpm: col(&row, "rpm")?,
                concurrent: col(&row, "concurrent")?,
            };
            if code.revoked_at.is_some() {
                return Err(ReserveError::Refused(Refusal::Revoked));
            }
            if code.expires_at.is_some_and(|at| at <= now) {
                return Err(ReserveError::Refused(Refusal::Expired));
            }
            if let Some(limit) = code.concurrent {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM reservations WHERE code_id = $1")
                    .bind(code_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if col::<i64>(&row, "n")? >= limit {
                    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                    return Err(ReserveError::Refused(Refusal::Concurrent { limit }));
                }
            }
            if let Some(limit) = code.rpm {
                sqlx::query("DELETE FROM rate_events WHERE code_id = $1 AND at <= $2")
                    .bind(code_id)
                    .bind(now - 60)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM rate_events \
                     WHERE code_id = $1 AND at > $2",
                )
                .bind(code_id)
                .bind(now - 60)
                .fetch_one(&mut *tx)
                .await?;
                if col::<i64>(&row, "n")? >= limit {
                    let oldest = col::<Option<i64>>(&row, "oldest")?.unwrap_or(now);
                    let retry_after = u64::try_from(oldest + 60 - now).unwrap_or(0).max(1);
                    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                    tx.commit().await?; // keeps the pruning; admits nothing
                    return Err(ReserveError::Refused(Refusal::Rpm { limit, retry_after }));
                }
                rpm_limited = true;
            }
            let periods = [
                (day.to_string(), code.daily, BudgetScope::Daily),
                (month.to_string(), code.monthly, BudgetScope::Monthly),
            ];
            for (period, limit, scope) in periods {
                if !book(&mut tx, code_id, &period, amount, limit).await? {
                    drop(tx);
                    return Err(self
                        .refusal(scope, code_id, &period, limit, amount, now)
                        .await);
                }
            }
        }
        let day_text = day.to_string();
        if !book(&mut tx, GLOBAL, &day_text, amount, self.global_daily_limit).await? {
            drop(tx);
            let scope = BudgetScope::GlobalDaily;
            let limit = self.global_daily_limit;
            return Err(self
                .refusal(scope, GLOBAL, &day_text, limit, amount, now)
                .await);
        }

        let row = sqlx::query(
            "INSERT INTO reservations (code_id, amount_pico, day, month, instance_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(request.code_id)
        .bind(amount)
        .bind(&day_text)
        .bind(month.to_string())
        .bind(self.instance_id())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id = col::<i64>(&row, "id")?;
        if rpm_limited {
            sqlx::query("INSERT INTO rate_events (code_id, at) VALUES ($1, $2)")
                .bind(request.code_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Reservation {
            id,
            code_id: request.code_id,
            amount,
            day,
            month,
            store: Some(self.clone()),
        })
    }

    /// Ends a reservation: its amount leaves `reserved` and `actual` (the real cost, even if
    /// a provider overshot the worst case) joins `spent`, on the reservation's day and month.
    /// Frees the stream slot. If a refund of stale reservations got there first (this
    /// process was thought dead), only `actual` is added.
    pub async fn settle(
        &self,
        mut reservation: Reservation,
        actual: Yuan,
    ) -> Result<(), StoreError> {
        reservation.store = None;
        let r = &reservation;
        self.close_reservation(r.id, r.code_id, r.amount, pico(actual)?, r.day, r.month)
            .await
    }

    /// Deletes the reservation row and moves its money in the counters, in one transaction.
    /// The reserved amount is released only if the row was still there (not refunded).
    async fn close_reservation(
        &self,
        id: i64,
        code_id: Option<i64>,
        amount: i64,
        actual: i64,
        day: Day,
        month: Month,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM reservations WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let released = if deleted == 1 { amount } else { 0 };
        move_money(&mut tx, code_id, released, actual, day, month).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refunds the reservations of instances whose heartbeat is older than `stale_after`
    /// (processes that died between reserve and settle), then forgets those instances.
    /// Never touches this instance's own reservations.
    pub async fn refund_stale(
        &self,
        now: i64,
        stale_after: Duration,
    ) -> Result<Refunded, StoreError> {
        let cutoff = now - i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT r.id, r.code_id, r.amount_pico, r.day, r.month FROM reservations r \
             LEFT JOIN instances i ON i.id = r.instance_id \
             WHERE r.instance_id <> $1 AND (i.heartbeat_at IS NULL OR i.heartbeat_at < $2) \
             ORDER BY r.id",
        )
        .bind(self.instance_id())
        .bind(cutoff)
        .fetch_all(self.read_pool())
        .await?;
        let mut refunded = Refunded::default();
        for row in rows {
            let id: i64 = col(&row, "id")?;
            let code_id: Option<i64> = col(&row, "code_id")?;
            let amount: i64 = col(&row, "amount_pico")?;
            let bad = |e: shanghai::BadDate| StoreError::Invalid(e.to_string());
            let day: Day = col::<String>(&row, "day")?.parse().map_err(bad)?;
            let month: Month = col::<String>(&row, "month")?.parse().map_err(bad)?;
            let mut tx = self.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM reservations WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 1 {
                move_money(&mut tx, code_id, amount, 0, day, month).await?;
                refunded.reservations += 1;
                refunded.amount = refunded.amount + yuan(amount);
            }
            tx.commit().await?;
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM instances WHERE id <> $1 AND heartbeat_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM reservations r WHERE r.instance_id = instances.id)",
        )
        .bind(self.instance_id())
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if refunded.reservations > 0 {
            tracing::warn!(
                reservations = refunded.reservations,
                amount = %refunded.amount,
                "refunded reservations of dead instances"
            );
        }
        Ok(refunded)
    }

    /// Tells other instances this one is alive (see [`Store::refund_stale`]).
    pub async fn heartbeat(&self, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(self.instance_id())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What a code (or, for `None`, the deployment) has spent and reserved in the Shanghai
    /// day and month of `now`.
    pub async fn spending(&self, code_id: Option<i64>, now: i64) -> Result<Spending, StoreError> {
        let id = code_id.unwrap_or(GLOBAL);
        let (day, month) = (Day::of(now).to_string(), Month::of(now).to_string());
        let rows = sqlx::query(
            "SELECT period, spent_pico, reserved_pico FROM budget_counters \
             WHERE code_id = $1 AND period IN ($2, $3)",
        )
        .bind(id)
        .bind(&day)
        .bind(&month)
        .fetch_all(self.read_pool())
        .await?;
        let mut spending = Spending::default();
        for row in rows {
            let spent = yuan(col(&row, "spent_pico")?);
            let reserved = yuan(col(&row, "reserved_pico")?);
            if col::<String>(&row, "period")? == day {
                (spending.day_spent, spending.day_reserved) = (spent, reserved);
            } else if code_id.is_some() {
                (spending.month_spent, spending.month_reserved) = (spent, reserved);
            }
        }
        Ok(spending)
    }

    /// Reservations still open (all instances).
    pub async fn open_reservations(&self, code_id: Option<i64>) -> Result<u64, StoreError> {
        let row = match code_id {
            Some(id) => {
                sqlx::query("SELECT COUNT(*) AS n FROM reservations WHERE code_id = $1")
                    .bind(id)
                    .fetch_one(self.read_pool())
                    .await?
            }
            None => {
                sqlx::query("SELECT COUNT(*) AS n FROM reservations")
                    .fetch_one(self.read_pool())
                    .await?
            }
        };
        Ok(u64::try_from(col::<i64>(&row, "n")?).unwrap_or(0))
    }

    /// Starts the background upkeep every instance needs: the heartbeat (without it, other
    /// instances refund this one's reservations after `stale_after`), refunds of dead
    /// instances' reservations, and retention of whole old days. Abort the handle to stop.
    pub fn spawn_maintenance(&self, settings: Maintenance) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(settings.every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retained_through: Option<Day> = None;
            loop {
                ticker.tick().await;
                let now = unix_now();
                if let Err(err) = store.heartbeat(now).await {
                    tracing::error!("store heartbeat failed: {err}");
                    continue;
                }
                if let Err(err) = store.refund_stale(now, settings.stale_after).await {
                    tracing::error!("refunding stale reservations failed: {err}");
                }
                let Some(days) = settings.retention_days else {
                    continue;
                };
                let today = Day::of(now);
                if retained_through == Some(today) {
                    continue;
                }
                let first_kept = today.add_days(1 - i64::from(days.max(1)));
                match store.drop_days_before(first_kept).await {
                    Ok(dropped) => {
                        retained_through = Some(today);
                        if dropped.ledger_rows > 0 {
                            tracing::info!(
                                before = %first_kept,
                                ledger_rows = dropped.ledger_rows,
                                "dropped old usage days"
                            );
                        }
                    }
                    Err(err) => tracing::error!("usage retention failed: {err}"),
                }
            }
        })
    }

    /// The refusal for a budget that had no room, with the counter as it is now.
    async fn refusal(
        &self,
        scope: BudgetScope,
        code_id: i64,
        period: &str,
        limit: Option<i64>,
        amount: i64,
        now: i64,
    ) -> ReserveError {
        let current = sqlx::query(
            "SELECT spent_pico + reserved_pico AS used FROM budget_counters \
             WHERE code_id = $1 AND period = $2",
        )
        .bind(code_id)
        .bind(period)
        .fetch_optional(self.read_pool())
        .await;
        let used = match current {
            Ok(Some(row)) => match col::<i64>(&row, "used") {
                Ok(used) => used,
                Err(err) => return err.into(),
            },
            Ok(None) => 0,
            Err(err) => return err.into(),
        };
        let resets_at = match scope {
            BudgetScope::Monthly => shanghai::next_month_start(now),
            BudgetScope::Daily | BudgetScope::GlobalDaily => shanghai::next_midnight(now),
        };
        ReserveError::Refused(Refusal::Budget(BudgetRefusal {
            scope,
            limit: yuan(limit.unwrap_or(0)),
            spent_and_reserved: yuan(used),
            requested: yuan(amount),
            resets_at,
        }))
    }
}

/// Adds `amount` to the reserved money of one counter if it fits `limit`: one conditional
/// upsert, the atomic step. Returns whether it fitted.
async fn book(
    tx: &mut Transaction<'static, Any>,
    code_id: i64,
    period: &str,
    amount: i64,
    limit: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let Some(limit) = limit else {
        sqlx::query(
            "INSERT INTO budget_counters (code_id, period, reserved_pico) VALUES ($1, $2, $3) \
             ON CONFLICT (code_id, period) DO UPDATE \
             SET reserved_pico = budget_counters.reserved_pico + excluded.reserved_pico",
        )
        .bind(code_id)
        .bind(period)
        .bind(amount)
        .execute(&mut **tx)
        .await?;
        return Ok(true);
    };
    if amount > limit {
        return Ok(false);
    }
    let booked = sqlx::query(
        "INSERT INTO budget_counters (code_id, period, reserved_pico) VALUES ($1, $2, $3) \
         ON CONFLICT (code_id, period) DO UPDATE \
         SET reserved_pico = budget_counters.reserved_pico + excluded.reserved_pico \
         WHERE budget_counters.spent_pico + budget_counters.reserved_pico \
         + excluded.reserved_pico <= $4",
    )
    .bind(code_id)
    .bind(period)
    .bind(amount)
    .bind(limit)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(booked == 1)
}

/// Moves money in the counters of a reservation: `released` leaves `reserved`, `spent` joins
/// `spent`. Same row order as `reserve`.
async fn move_money(
    tx: &mut Transaction<'static, Any>,
    code_id: Option<i64>,
    released: i64,
    spent: i64,
    day: Day,
    month: Month,
) -> Result<(), sqlx::Error> {
    let day = day.to_string();
    let mut rows = Vec::with_capacity(3);
    if let Some(code_id) = code_id {
        rows.push((code_id, day.clone()));
        rows.push((code_id, month.to_string()));
    }
    rows.push((GLOBAL, day));
    for (code_id, period) in rows {
        // An upsert, so a counter pruned by retention in between cannot lose the cost.
        sqlx::query(
            "INSERT INTO budget_counters (code_id, period, spent_pico, reserved_pico) \
             VALUES ($1, $2, $3, 0) ON CONFLICT (code_id, period) DO UPDATE \
             SET spent_pico = budget_counters.spent_pico + excluded.spent_pico, \
             reserved_pico = budget_counters.reserved_pico - $4",
        )
        .bind(code_id)
        .bind(&period)
        .bind(spent)
        .bind(released)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
