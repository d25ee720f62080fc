//! Access codes: created by an admin (CLI or admin page), shown once, stored as the SHA-256
//! of the code. A code is 128 random bits, so a plain hash is enough: there is nothing to
//! guess, and the lookup is by hash, so no comparison of secrets happens in this process.
//!
//! The first code ever created is an admin code, and so is `ADMIN_CODE` from the
//! environment ([`Store::ensure_admin_code`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use super::{col, pico, yuan, Store, StoreError};
use crate::protocol::Yuan;

/// Every generated code starts with this.
pub const CODE_PREFIX: &str = "sk-liu-";

/// How long "no code exists yet" is believed without asking the database again.
pub(crate) const NO_CODES_RECHECK: Duration = Duration::from_secs(1);

/// What this process knows of whether any access code exists, so that the open start does
/// not ask the database on every request. Codes are never deleted (a revoked code stays a
/// row), so once one is seen the answer is yes for good. "None yet" is believed for
/// [`NO_CODES_RECHECK`]: a code created by another process (the CLI, another instance)
/// closes this one within a second, and one created through this process at once. A
/// request that arrives in that second is one that a second earlier would have been served
/// anyway, by a server that was open on purpose. The server keeps "none yet" fresh in the
/// background ([`Store::watch_codes`]), so its requests do not ask.
#[derive(Debug, Default)]
pub(crate) struct CodesSeen {
    exist: AtomicBool,
    none_at: Mutex<Option<Instant>>,
}

impl CodesSeen {
    /// The answer without the database, if this process knows it.
    fn known(&self, now: Instant) -> Option<bool> {
        if self.exist.load(Ordering::Acquire) {
            return Some(true);
        }
        let none_at = *self.none_at.lock().unwrap_or_else(|e| e.into_inner());
        none_at
            .is_some_and(|at| now.saturating_duration_since(at) < NO_CODES_RECHECK)
            .then_some(false)
    }

    /// What the database said, asked at `asked`.
    fn saw(&self, exist: bool, asked: Instant) {
        if exist {
            self.exist.store(true, Ordering::Release);
        } else {
            *self.none_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(asked);
        }
    }
}

/// What an admin can set on a code. `None` means no limit (all models, never expires).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Per Shanghai day.
    pub daily: Option<Yuan>,
    /// Per Shanghai calendar month.
    pub monthly: Option<Yuan>,
    /// Requests admitted per sliding minute.
    pub rpm: Option<u32>,
    /// Streams open at once.
    pub concurrent: Option<u32>,
    /// The models this code may use (`model` names as in the request).
    pub models: Option<Vec<String>>,
    /// Unix seconds after which the code is refused.
    pub expires_at: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewCode {
    pub name: String,
    /// Admin codes open the admin page. The first code created is an admin code anyway.
    pub admin: bool,
    pub limits: Limits,
}

/// A code as listed; never the code itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    pub id: i64,
    pub name: String,
    /// The first characters of the code (`sk-liu-3f9a`), to tell codes apart in a list.
    pub prefix: String,
    pub admin: bool,
    pub limits: Limits,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl CodeInfo {
    pub fn allows_model(&self, model: &str) -> bool {
        self.limits
            .models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.limits.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why a code was not accepted. `Unknown`, `Revoked` and `Expired` are answers to the
/// user; `Store` is a failure of ours.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("访问码无效")]
    Unknown,
    #[error("访问码已被停用")]
    Revoked { at: i64 },
    #[error("访问码已于 {} 过期（北京时间）", super::shanghai::format_minute(*.at))]
    Expired { at: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AuthError {
    fn from(err: sqlx::Error) -> Self {
        AuthError::Store(err.into())
    }
}

const COLUMNS: &str = "id, name, code_prefix, is_admin, daily_limit_pico, monthly_limit_pico, \
     rpm, concurrent, models, created_at, expires_at, revoked_at, last_used_at";

impl Store {
    /// Creates a code and returns it with the plaintext, which is not stored and cannot be
    /// shown again. The first code of a deployment is always an admin code.
    pub async fn create_code(
        &self,
        new: NewCode,
        now: i64,
    ) -> Result<(CodeInfo, String), StoreError> {
        let name = new.name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("a code needs a name".into()));
        }
        let plaintext = format!("{CODE_PREFIX}{}", random_hex(16));
        let limits = LimitColumns::of(&new.limits)?;
        // One statement, so "first code" is decided by the same snapshot that inserts.
        let sql = format!(
            "INSERT INTO access_codes (name, code_hash, code_prefix, is_admin, daily_limit_pico, \
             monthly_limit_pico, rpm, concurrent, models, created_at, expires_at) \
             SELECT $1, $2, $3, CASE WHEN $4 = 1 OR NOT EXISTS (SELECT 1 FROM access_codes) \
             THEN 1 ELSE 0 END, $5, $6, $7, $8, $9, $10, $11 RETURNING {COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(hash(&plaintext))
            .bind(&plaintext[..CODE_PREFIX.len() + 4])
            .bind(i64::from(new.admin))
            .bind(limits.daily)
            .bind(limits.monthly)
            .bind(limits.rpm)
            .bind(limits.concurrent)
            .bind(limits.models)
            .bind(now)
            .bind(limits.expires_at)
            .fetch_one(&mut *tx)
            .await?;
        let info = code_info(&row)?;
        tx.commit().await?;
        self.inner.codes.saw(true, Instant::now());
        Ok((info, plaintext))
    }

    /// Makes `plaintext` (from the `ADMIN_CODE` setting) a working admin code: creates it
    /// the first time, and on every later start makes sure it is still admin and not
    /// revoked, since the environment is the deployer's word. Idempotent.
    pub async fn ensure_admin_code(
        &self,
        plaintext: &str,
        now: i64,
    ) -> Result<CodeInfo, StoreError> {
        let plaintext = plaintext.trim();
        if plaintext.chars().count() < 8 {
            return Err(StoreError::Invalid(
                "ADMIN_CODE must have at least 8 characters".into(),
            ));
        }
        let sql = format!(
            "INSERT INTO access_codes (name, code_hash, code_prefix, is_admin, created_at) \
             VALUES ('ADMIN_CODE', $1, 'ADMIN_CODE', 1, $2) \
             ON CONFLICT (code_hash) DO UPDATE SET is_admin = 1, revoked_at = NULL \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(hash(plaintext))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let info = code_info(&row)?;
        tx.commit().await?;
        self.inner.codes.saw(true, Instant::now());
        Ok(info)
    }

    /// Whether any code exists (if none does, the lead's server may run open). Asks the
    /// database only when this process does not know ([`CodesSeen`]).
    pub async fn has_codes(&self) -> Result<bool, StoreError> {
        match self.inner.codes.known(Instant::now()) {
            Some(known) => Ok(known),
            None => self.has_codes_now().await,
        }
    }

    /// While no code exists, asks the database every `every` (half of [`NO_CODES_RECHECK`]
    /// in the server), so that the open start's requests find the answer in memory rather
    /// than each waiting on the database, which was a third of the time a chat request took
    /// to reach the provider. Ends once a code exists: then the answer is yes for good.
    /// An error is left for the next request to meet (it asks, as without the watch).
    pub fn watch_codes(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match store.has_codes_now().await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(err) => tracing::debug!("asking whether codes exist failed: {err}"),
                }
            }
        })
    }

    /// [`Store::has_codes`] asked of the database even when "none yet" is remembered:
    /// for what an open server lets anyone do as its admin, where a second is too long.
    pub async fn has_codes_now(&self) -> Result<bool, StoreError> {
        let asked = Instant::now();
        if self.inner.codes.known(asked) == Some(true) {
            return Ok(true);
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM (SELECT 1 FROM access_codes LIMIT 1) t")
            .fetch_one(self.read_pool())
            .await?;
        let exist = col::<i64>(&row, "n")? > 0;
        self.inner.codes.saw(exist, asked);
        Ok(exist)
    }

    /// All codes, revoked ones included, oldest first.
    pub async fn list_codes(&self) -> Result<Vec<CodeInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM access_codes ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(self.read_pool()).await?;
        rows.iter().map(code_info).collect()
    }

    pub async fn code(&self, id: i64) -> Result<Option<CodeInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM access_codes WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.read_pool())
            .await?;
        row.as_ref().map(code_info).transpose()
    }

    /// Replaces a code's limits (all of them: pass the old values to keep them). Takes
    /// effect with the next [`Store::reserve`].
    pub async fn update_limits(&self, id: i64, limits: &Limits) -> Result<CodeInfo, StoreError> {
        let limits = LimitColumns::of(limits)?;
        let sql = format!(
            "UPDATE access_codes SET daily_limit_pico = $1, monthly_limit_pico = $2, rpm = $3, \
             concurrent = $4, models = $5, expires_at = $6 WHERE id = $7 RETURNING {COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(limits.daily)
            .bind(limits.monthly)
            .bind(limits.rpm)
            .bind(limits.concurrent)
            .bind(limits.models)
            .bind(limits.expires_at)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NoSuchCode(id))?;
        let info = code_info(&row)?;
        tx.commit().await?;
        Ok(info)
    }

    /// Revokes a code: [`Store::authenticate`] and [`Store::reserve`] refuse it from the
    /// moment this returns. Streams already open finish. Revoking twice keeps the first time.
    pub async fn revoke(&self, id: i64, now: i64) -> Result<CodeInfo, StoreError> {
        let sql = format!(
            "UPDATE access_codes SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NoSuchCode(id))?;
        let info = code_info(&row)?;
        tx.commit().await?;
        Ok(info)
    }

    /// The code behind `plaintext`, if it may be used at `now`. One indexed read per call,
    /// no cache, so a revocation is seen by the next request.
    pub async fn authenticate(&self, plaintext: &str, now: i64) -> Result<CodeInfo, AuthError> {
        let sql = format!("SELECT {COLUMNS} FROM access_codes WHERE code_hash = $1");
        let row = sqlx::query(&sql)
            .bind(hash(plaintext.trim()))
            .fetch_optional(self.read_pool())
            .await?
            .ok_or(AuthError::Unknown)?;
        let info = code_info(&row)?;
        if let Some(at) = info.revoked_at {
            return Err(AuthError::Revoked { at });
        }
        if let Some(at) = info.limits.expires_at.filter(|&at| at <= now) {
            return Err(AuthError::Expired { at });
        }
        Ok(info)
    }
}

/// Lower-case hex SHA-256.
fn hash(plaintext: &str) -> String {
    hex(&Sha256::digest(plaintext.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the operating system, as hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex(&bytes)
}

struct LimitColumns {
    daily: Option<i64>,
    monthly: Option<i64>,
    rpm: Option<i64>,
    concurrent: Option<i64>,
    models: Option<String>,
    expires_at: Option<i64>,
}

impl LimitColumns {
    fn of(limits: &Limits) -> Result<LimitColumns, StoreError> {
        Ok(LimitColumns {
            daily: limits.daily.map(pico).transpose()?,
            monthly: limits.monthly.map(pico).transpose()?,
            rpm: limits.rpm.map(i64::from),
            concurrent: limits.concurrent.map(i64::from),
            models: limits
                .models
                .as_ref()
                .map(|m| serde_json::to_string(m).expect("strings serialize")),
            expires_at: limits.expires_at,
        })
    }
}

pub(crate) fn code_info(row: &AnyRow) -> Result<CodeInfo, StoreError> {
    let count = |name: &str| -> Result<Option<u32>, StoreError> {
        Ok(col::<Option<i64>>(row, name)?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    };
    let models = col::<Option<String>>(row, "models")?
        .map(|text| serde_json::from_str::<Vec<String>>(&text))
        .transpose()
        .map_err(|err| StoreError::Invalid(format!("models of a code: {err}")))?;
    Ok(CodeInfo {
        id: col(row, "id")?,
        name: col(row, "name")?,
        prefix: col(row, "code_prefix")?,
        admin: col::<i64>(row, "is_admin")? != 0,
        limits: Limits {
            daily: col::<Option<i64>>(row, "daily_limit_pico")?.map(yuan),
            monthly: col::<Option<i64>>(row, "monthly_limit_pico")?.map(yuan),
            rpm: count("rpm")?,
            concurrent: count("concurrent")?,
            models,
            expires_at: col(row, "expires_at")?,
        },
        created_at: col(row, "created_at")?,
        revoked_at: col(row, "revoked_at")?,
        last_used_at: col(row, "last_used_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_yet_is_believed_for_a_second_and_yes_for_good() {
        let seen = CodesSeen::default();
        let t0 = Instant::now();
        assert_eq!(seen.known(t0), None, "nothing known before the first ask");
        seen.saw(false, t0);
        assert_eq!(seen.known(t0 + NO_CODES_RECHECK / 2), Some(false));
        assert_eq!(seen.known(t0 + NO_CODES_RECHECK), None, "asked again");
        seen.saw(true, t0 + NO_CODES_RECHECK);
        assert_eq!(seen.known(t0 + NO_CODES_RECHECK * 1000), Some(true));
        // A late "none" (asked before the code existed) does not undo a yes.
        seen.saw(false, t0 + NO_CODES_RECHECK * 2);
        assert_eq!(seen.known(t0 + NO_CODES_RECHECK * 2), Some(true));
    }
}
