//! The database: access codes, budgets that cannot be overdrawn, and the usage ledger with
//! its daily rollup. It owns the schema (`migrations/`, embedded and run at connect) and
//! every SQL statement of the app; nothing else talks to the database.
//!
//! One code path for both engines: sqlx's `Any` driver, with `$N` placeholders (which
//! SQLite accepts too) and only BIGINT and TEXT columns, so every statement is written once.
//! The engines differ in four places: the migration folder, how a write transaction begins
//! (`Db::begin_write`), on SQLite a one-connection write pool (all in this file), and the
//! placeholders of the ledger's multi-row inserts (`?` on SQLite, see `ledger`).
//!
//! - SQLite (the default, `sqlite://PATH`): a file in WAL mode, `busy_timeout` 10 s, foreign
//!   keys on. Writes go through one connection in `BEGIN IMMEDIATE` transactions, so they are
//!   serialized in the process and, through SQLite's write lock, with any other process on
//!   the same file; reads use a separate pool and never wait for writes.
//! - Postgres (`postgres://…`): one pool; write transactions run at READ COMMITTED and rely on
//!   row locks taken in a fixed order and on conditional upserts (see `budget`).
//!
//! Money is integer pico-yuan (`Yuan`, 10⁻¹² ¥) in BIGINT columns; a value is at most about
//! 9.2 million yuan. Days and months are Shanghai's ([`shanghai`]).
//!
//! Sub-modules: [`codes`] (access codes), [`budget`] (reserve, settle, refunds, RPM and
//! concurrency), [`ledger`] (the batched ledger writer, the rollup, dashboard queries, CSV,
//! retention), [`shanghai`] (calendar).

pub mod budget;
pub mod codes;
pub mod ledger;
pub mod shanghai;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Connection, Transaction};

use crate::protocol::Yuan;

pub use budget::{
    BudgetRefusal, BudgetScope, Maintenance, Refunded, Refusal, Reservation, ReserveError,
    ReserveRequest, Spending,
};
pub use codes::{AuthError, CodeInfo, Limits, NewCode, CODE_PREFIX};
pub use ledger::{
    CodeUsage, DailyUsage, LedgerEntry, LedgerRow, LedgerWriter, Outcome, Retention,
    TTFT_BUCKETS_MS,
};
pub use shanghai::{Day, Month};

/// Which engine a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Everything that can fail in the store. Refusals (budget, limits, bad codes) are not
/// here: they are answers, in [`ReserveError::Refused`] and [`AuthError`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no access code with id {0}")]
    NoSuchCode(i64),
    /// An amount of money above what a BIGINT column holds (about 9.2 million yuan).
    #[error("amount too large for the ledger: ¥{0}")]
    TooMuch(Yuan),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("the ledger writer could not write: {0}")]
    Ledger(String),
}

/// The handle to the database. Cheap to clone: clones share the pools, the instance id and
/// the ledger writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// The deployment-wide daily limit in pico-yuan, if any.
    global_daily_limit: Option<i64>,
}

struct Inner {
    db: Db,
    /// This process's id in `instances` and on its reservations (random per connect).
    instance_id: String,
    /// Started by the first [`Store::ledger_writer`] call.
    ledger: OnceLock<LedgerWriter>,
    /// Whether access codes exist, as far as this process knows.
    codes: codes::CodesSeen,
}

/// The pools. The ledger writer's task holds a clone of this, not of the `Store`, so that
/// dropping the last `Store` (and writer handle) ends the task.
#[derive(Clone)]
pub(crate) struct Db {
    backend: Backend,
    /// Write transactions. SQLite: one connection; Postgres: the same pool as `read`.
    write: AnyPool,
    read: AnyPool,
}

impl Db {
    /// A write transaction. SQLite: `BEGIN IMMEDIATE` takes the database's write lock at
    /// once (waiting up to `busy_timeout`), so no transaction can find its snapshot stale
    /// when it first writes. Postgres: READ COMMITTED, stated so a server default of
    /// SERIALIZABLE cannot turn lock waits into serialization failures; correctness comes
    /// from row locks and conditional upserts, which re-check the latest row version.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => {
                self.write
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.db.backend)
            .field("instance_id", &self.inner.instance_id)
            .field("global_daily_limit", &self.global_daily_limit)
            .finish()
    }
}

impl Store {
    /// Opens the database and brings its schema up to date.
    ///
    /// `sqlite://PATH` (relative or absolute; the file and its directory are created) or
    /// `postgres://…` / `postgresql://…` (the database must exist). Registers this process
    /// as a new instance; see [`Store::spawn_maintenance`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, write, read) = if let Some(path) = sqlite_path(url) {
            if path == ":memory:" || url.contains("mode=memory") {
                // Each pool would get a database of its own.
                return Err(StoreError::Url(url.into()));
            }
            connect_sqlite(&path).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            connect_postgres(url).await?
        } else {
            return Err(StoreError::Url(redact_url(url)));
        };
        let instance_id = format!("i-{}", codes::random_hex(8));
        let store = Store {
            inner: Arc::new(Inner {
                db: Db {
                    backend,
                    write,
                    read,
                },
                instance_id,
                ledger: OnceLock::new(),
                codes: Default::default(),
            }),
            global_daily_limit: None,
        };
        store.heartbeat(unix_now()).await?;
        Ok(store)
    }

    /// The deployment-wide daily limit (Shanghai days), checked by every [`Store::reserve`].
    /// Limits above about 9.2 million yuan count as unlimited.
    pub fn with_global_daily_limit(mut self, limit: Option<Yuan>) -> Store {
        self.global_daily_limit = limit.map(|y| i64::try_from(y.0).unwrap_or(i64::MAX));
        self
    }

    pub fn global_daily_limit(&self) -> Option<Yuan> {
        self.global_daily_limit.map(yuan)
    }

    pub fn backend(&self) -> Backend {
        self.inner.db.backend
    }

    /// This process's instance id (on its reservations; see [`Store::refund_stale`]).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// Writes what the ledger writer holds, then closes the pools. Other clones of this
    /// store fail from then on.
    pub async fn close(&self) {
        if let Some(writer) = self.inner.ledger.get() {
            if let Err(err) = writer.flush().await {
                tracing::error!("ledger rows lost at shutdown: {err}");
            }
        }
        self.inner.db.write.close().await;
        self.inner.db.read.close().await;
    }

    /// See [`Db::begin_write`].
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.inner.db.begin_write().await
    }

    pub(crate) fn read_pool(&self) -> &AnyPool {
        &self.inner.db.read
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }
}

/// The `sqlite://` URL of a database file (for a path under the app's data directory).
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for ch in path.to_string_lossy().chars() {
        match ch {
            '%' | '?' | '#' | ' ' => url.push_str(&format!("%{:02X}", ch as u32)),
            _ => url.push(ch),
        }
    }
    url
}

/// The current time in unix seconds.
pub fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}

/// The current time in unix milliseconds.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Pico-yuan as stored. Negative values never occur; they read as zero.
pub(crate) fn yuan(pico: i64) -> Yuan {
    Yuan(u128::try_from(pico).unwrap_or(0))
}

/// A [`Yuan`] as a BIGINT.
pub(crate) fn pico(amount: Yuan) -> Result<i64, StoreError> {
    i64::try_from(amount.0).map_err(|_| StoreError::TooMuch(amount))
}

/// Reads a column of a row.
pub(crate) fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, sqlx::Error>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    sqlx::Row::try_get(row, name)
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    let mut out = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|p| !p.is_empty())
}

/// The URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn connect_sqlite(path: &str) -> Result<(Backend, AnyPool, AnyPool), StoreError> {
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let url = format!("{}?mode=rwc", sqlite_url(Path::new(path)));
    // WAL is a property of the file; set it once, alone, before the pools open: switching
    // needs an exclusive lock that busy_timeout does not wait for.
    let mut conn = sqlx::AnyConnection::connect(&url).await?;
    sqlx::raw_sql("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")
        .execute(&mut conn)
        .await?;
    SQLITE_MIGRATIONS.run(&mut conn).await?;
    conn.close().await?;

    let pool = |max: u32| {
        AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            // A file in this process does not go stale as a network connection can; the
            // check before each use would be a round trip through the connection's thread
            // for every query (every chat asks whether access codes exist).
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // sqlx's SQLite defaults already turn foreign keys on; say it anyway.
                    for pragma in [
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA synchronous = NORMAL",
                        "PRAGMA foreign_keys = ON",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
    };
    let write = pool(1).await?;
    let read = pool(4).await?;
    Ok((Backend::Sqlite, write, read))
}

async fn connect_postgres(url: &str) -> Result<(Backend, AnyPool, AnyPool), StoreError> {
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?;
    POSTGRES_MIGRATIONS.run(&pool).await?;
    Ok((Backend::Postgres, pool.clone(), pool))
}

/// The migrations, embedded at compile time: `include_str!` makes cargo rebuild when a file
/// changes. (`sqlx::migrate!` would need sqlx's `macros` feature, which compiles sqlx and the
/// bundled SQLite a second time for the proc-macro.) A new migration is a new line here.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

struct EmbeddedMigrator(&'static [(i64, &'static str, &'static str)]);

impl EmbeddedMigrator {
    async fn run<'a, A>(&self, to: A) -> Result<(), sqlx::migrate::MigrateError>
    where
        A: sqlx::Acquire<'a>,
        <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
    {
        let migrator = Migrator::new(Embedded(self.0)).await?;
        migrator.run(to).await
    }
}

static SQLITE_MIGRATIONS: EmbeddedMigrator = EmbeddedMigrator(&[(
    1,
    "store",
    include_str!("../migrations/sqlite/0001_store.sql"),
)]);

static POSTGRES_MIGRATIONS: EmbeddedMigrator = EmbeddedMigrator(&[(
    1,
    "store",
    include_str!("../migrations/postgres/0001_store.sql"),
)]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_round_trip() {
        for path in ["data/streamai.db", "/tmp/a b/x?.db", "/tmp/100%.db"] {
            assert_eq!(
                sqlite_path(&sqlite_url(Path::new(path))).as_deref(),
                Some(path)
            );
        }
        assert_eq!(sqlite_path("sqlite:x.db?mode=rwc").as_deref(), Some("x.db"));
        assert_eq!(sqlite_path("postgres://x"), None);
        assert_eq!(
            redact_url("postgres://app:secret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
    }
}
