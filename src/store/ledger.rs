//! The usage ledger and its daily rollup.
//!
//! One [`LedgerRow`] per request that reached the provider or was refused by a limit. The
//! relay hands rows to a [`LedgerWriter`], which never blocks: a background task batches
//! them (up to 256 rows or 200 ms) into one transaction that inserts the rows and adds them
//! to `usage_daily` (Shanghai day x code x provider x model), so the rollup always equals
//! the sum of the ledger. Dashboard queries read the rollup only; first-token times are kept
//! there as a fixed 16-bucket histogram, so p50/p95 need no ledger scan.
//!
//! Also here: the latest rows, the CSV export, and retention (dropping whole old days).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::shanghai::{self, Day};
use super::{col, pico, yuan, Backend, Db, Store, StoreError};
use crate::protocol::{ErrorCode, UsageSource, Yuan};

/// Upper bounds (inclusive, ms) of the first 15 first-token-time buckets; the 16th holds
/// everything slower than 30 s. Roughly logarithmic, in round numbers.
pub const TTFT_BUCKETS_MS: [u64; 15] = [
    100, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 5000, 7000, 10_000, 15_000, 30_000,
];
const BUCKETS: usize = TTFT_BUCKETS_MS.len() + 1;

/// Rows per batch of the writer.
const BATCH_ROWS: usize = 256;
/// The longest a row waits in the writer before its batch is written.
const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Rows the writer's channel holds; beyond that `record` drops rows (and counts them).
const QUEUE_ROWS: usize = 16_384;
/// Rows per INSERT statement (14 parameters each; SQLite allows 32 766 per statement).
const INSERT_CHUNK: usize = 1000;
/// Rollup rows per upsert statement (32 parameters each).
const ROLLUP_CHUNK: usize = 500;

/// How a request ended. Stored as text: `done`, `error:<code>`, `stopped`,
/// `refused:<reason>` (`budget`, `rpm`, `concurrent`, `code`, …).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Done,
    /// The error code of the `error` frame (`rate_limited`, `upstream`, …).
    Error(String),
    /// The user stopped the stream (or went away).
    Stopped,
    Refused(String),
}

impl Outcome {
    /// The outcome of a stream that ended in an `error` frame with `code`.
    pub fn error(code: ErrorCode) -> Outcome {
        let code = match serde_json::to_value(code) {
            Ok(serde_json::Value::String(code)) => code,
            _ => format!("{code:?}"),
        };
        Outcome::Error(code)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done => f.write_str("done"),
            Outcome::Error(code) => write!(f, "error:{code}"),
            Outcome::Stopped => f.write_str("stopped"),
            Outcome::Refused(reason) => write!(f, "refused:{reason}"),
        }
    }
}

impl FromStr for Outcome {
    type Err = std::convert::Infallible;
    /// Anything unknown reads as an error with that text.
    fn from_str(text: &str) -> Result<Outcome, Self::Err> {
        Ok(match text {
            "done" => Outcome::Done,
            "stopped" => Outcome::Stopped,
            _ => match text.split_once(':') {
                Some(("refused", reason)) => Outcome::Refused(reason.into()),
                Some(("error", code)) => Outcome::Error(code.into()),
                _ => Outcome::Error(text.into()),
            },
        })
    }
}

/// One request as the ledger keeps it. Never the API key: `key_id` is the ring's `key#N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// When the request arrived, unix milliseconds. Picks the Shanghai day of the rollup.
    pub at_ms: i64,
    pub code_id: Option<i64>,
    pub provider: String,
    pub model: String,
    pub key_id: Option<String>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub reasoning_tokens: u32,
    pub usage_source: UsageSource,
    pub cost: Yuan,
    pub first_token_ms: Option<u64>,
    pub duration_ms: u64,
    pub retries: u32,
    pub outcome: Outcome,
}

/// A ledger row with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub row: LedgerRow,
}

/// One rollup line: a Shanghai day, provider and model (for one code, or all codes summed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyUsage {
    pub day: Day,
    pub provider: String,
    pub model: String,
    pub requests: u64,
    pub errors: u64,
    pub stopped: u64,
    pub refused: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: Yuan,
    pub duration_ms_sum: u64,
    /// Requests that had a first token.
    pub ttft_count: u64,
    pub ttft_ms_sum: u64,
    pub ttft_ms_max: u64,
    /// Counts per bucket of [`TTFT_BUCKETS_MS`] (the last bucket: slower than 30 s).
    pub ttft_histogram: [u64; BUCKETS],
}

impl DailyUsage {
    pub fn ttft_avg_ms(&self) -> Option<u64> {
        (self.ttft_count > 0).then(|| self.ttft_ms_sum / self.ttft_count)
    }

    /// The `p`-quantile (`0.5`, `0.95`) of first-token times: the upper bound of the bucket
    /// that holds it, capped by the slowest time seen. Within a bucket's width (≤ 2x) of the
    /// exact value; exact for the slowest bucket.
    pub fn ttft_percentile_ms(&self, p: f64) -> Option<u64> {
        ttft_percentile(&self.ttft_histogram, self.ttft_ms_max, p)
    }

    /// Adds another line's counts (to merge days or models; percentiles stay valid).
    pub fn merge(&mut self, other: &DailyUsage) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.stopped += other.stopped;
        self.refused += other.refused;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost = self.cost + other.cost;
        self.duration_ms_sum += other.duration_ms_sum;
        self.ttft_count += other.ttft_count;
        self.ttft_ms_sum += other.ttft_ms_sum;
        self.ttft_ms_max = self.ttft_ms_max.max(other.ttft_ms_max);
        for (mine, theirs) in self.ttft_histogram.iter_mut().zip(other.ttft_histogram) {
            *mine += theirs;
        }
    }
}

/// See [`DailyUsage::ttft_percentile_ms`].
pub fn ttft_percentile(histogram: &[u64; BUCKETS], max_ms: u64, p: f64) -> Option<u64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: ceil(p * total), at least 1.
    let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let bound = TTFT_BUCKETS_MS.get(bucket).copied().unwrap_or(max_ms);
            return Some(bound.min(max_ms));
        }
    }
    Some(max_ms)
}

fn ttft_bucket(ms: u64) -> usize {
    TTFT_BUCKETS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(BUCKETS - 1)
}

/// One code's totals over some days ([`Store::usage_by_code`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeUsage {
    /// `0`: requests without a code.
    pub code_id: i64,
    pub requests: u64,
    pub errors: u64,
    pub stopped: u64,
    pub refused: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: Yuan,
}

const CODE_USAGE_SUMS: [&str; 8] = [
    "requests",
    "errors",
    "stopped",
    "refused",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost_pico",
];

/// The condition on a ledger `code_id` column, and the id to bind as `$param`: `None` all
/// rows, `Some(0)` rows without a code (NULL in the ledger), `Some(id)` one code.
fn code_filter(code_id: Option<i64>, column: &str, param: usize) -> (String, Option<i64>) {
    match code_id {
        None => (String::new(), None),
        Some(0) => (format!(" AND {column} IS NULL"), None),
        Some(id) => (format!(" AND {column} = ${param}"), Some(id)),
    }
}

/// What [`Store::drop_days_before`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub ledger_rows: u64,
    pub rollup_rows: u64,
}

/// A cheap handle to the batching writer. Clone it freely.
#[derive(Clone)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

enum Msg {
    Row(Box<LedgerRow>),
    Flush(oneshot::Sender<Result<(), String>>),
}

impl fmt::Debug for LedgerWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerWriter")
            .field("queued", &(QUEUE_ROWS - self.tx.capacity()))
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl LedgerWriter {
    fn spawn(db: Db) -> LedgerWriter {
        let (tx, rx) = mpsc::channel(QUEUE_ROWS);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(run_writer(db, rx, dropped.clone()));
        LedgerWriter { tx, dropped }
    }

    /// Queues a row; returns at once. If the queue is full (the database has been failing
    /// for a while) the row is dropped, logged and counted in [`LedgerWriter::dropped`]:
    /// budgets do not depend on the ledger, only the report would miss it.
    pub fn record(&self, row: LedgerRow) {
        match self.tx.try_send(Msg::Row(Box::new(row))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Msg::Row(row))) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(model = %row.model, cost = %row.cost, "ledger queue full; row dropped");
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("ledger writer has stopped; row dropped");
            }
        }
    }

    /// Waits until every row recorded before this call is written (tests, shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| StoreError::Ledger("the writer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Ledger("the writer has stopped".into()))?
            .map_err(StoreError::Ledger)
    }

    /// Rows lost because the queue was full or a batch kept failing.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn run_writer(db: Db, mut rx: mpsc::Receiver<Msg>, dropped: Arc<AtomicU64>) {
    let mut batch: Vec<LedgerRow> = Vec::with_capacity(BATCH_ROWS);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Msg::Row(row)) => batch.push(*row),
                Some(Msg::Flush(done)) => flushes.push(done),
                None => break,
            }
            if batch.len() >= BATCH_ROWS || !flushes.is_empty() {
                break;
            }
            next = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten();
        }
        let mut result = Ok(());
        if !batch.is_empty() {
            result = write_with_retries(&db, &batch).await;
            if let Err(err) = &result {
                dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(rows = batch.len(), "ledger batch lost: {err}");
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(result.clone());
        }
    }
}

async fn write_with_retries(db: &Db, rows: &[LedgerRow]) -> Result<(), String> {
    let mut wait = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match write_rows(db, rows).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt >= 4 => return Err(err.to_string()),
            Err(err) => {
                tracing::warn!(attempt, "writing ledger rows failed, retrying: {err}");
                tokio::time::sleep(wait).await;
                wait *= 4;
                attempt += 1;
            }
        }
    }
}

/// Inserts rows and adds them to the rollup, in one transaction.
async fn write_rows(db: &Db, rows: &[LedgerRow]) -> Result<(), StoreError> {
    let mut tx = db.begin_write().await?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        insert_ledger(&mut tx, db.backend, chunk).await?;
    }
    let rollup = aggregate(rows)?;
    for chunk in rollup.chunks(ROLLUP_CHUNK) {
        upsert_rollup(&mut tx, db.backend, chunk).await?;
    }
    tx.commit().await?;
    Ok(())
}

const LEDGER_COLUMNS: [&str; 14] = [
    "at_ms",
    "code_id",
    "provider",
    "model",
    "key_id",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_pico",
    "first_token_ms",
    "duration_ms",
    "retries",
    "outcome",
];

/// `($1, $2, …), ($15, …)`: `rows` groups of `width` numbered placeholders. SQLite gets
/// plain `?` instead (each parameter appears once, in order): SQLite keeps numbered and named
/// parameters in a list searched linearly, and sqlx asks for each one's name when binding,
/// which made a 14,000-parameter insert quadratic (0.4 ms per row instead of microseconds).
fn placeholders(backend: Backend, rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", row * width + c + 1)),
            }
        }
        sql.push(')');
    }
    sql
}

fn source_text(source: UsageSource) -> &'static str {
    match source {
        UsageSource::Provider => "provider",
        UsageSource::Tiktoken => "tiktoken",
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn insert_ledger(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    rows: &[LedgerRow],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO ledger ({}) VALUES {}",
        LEDGER_COLUMNS.join(", "),
        placeholders(backend, rows.len(), LEDGER_COLUMNS.len())
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = query
            .bind(row.at_ms)
            .bind(row.code_id)
            .bind(row.provider.as_str())
            .bind(row.model.as_str())
            .bind(row.key_id.as_deref())
            .bind(i64::from(row.prompt_tokens))
            .bind(i64::from(row.completion_tokens))
            .bind(i64::from(row.reasoning_tokens))
            .bind(source_text(row.usage_source))
            .bind(pico(row.cost)?)
            .bind(row.first_token_ms.map(int))
            .bind(int(row.duration_ms))
            .bind(i64::from(row.retries))
            .bind(row.outcome.to_string());
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

#[derive(Default)]
struct Totals {
    requests: i64,
    errors: i64,
    stopped: i64,
    refused: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    reasoning_tokens: i64,
    cost: i64,
    duration_ms_sum: i64,
    ttft_count: i64,
    ttft_ms_sum: i64,
    ttft_ms_max: i64,
    histogram: [i64; BUCKETS],
}

type RollupKey = (String, i64, String, String);

fn aggregate(rows: &[LedgerRow]) -> Result<Vec<(RollupKey, Totals)>, StoreError> {
    let mut totals: HashMap<RollupKey, Totals> = HashMap::new();
    for row in rows {
        let key = (
            Day::of_ms(row.at_ms).to_string(),
            row.code_id.unwrap_or(0),
            row.provider.clone(),
            row.model.clone(),
        );
        let t = totals.entry(key).or_default();
        t.requests += 1;
        match row.outcome {
            Outcome::Done => {}
            Outcome::Error(_) => t.errors += 1,
            Outcome::Stopped => t.stopped += 1,
            Outcome::Refused(_) => t.refused += 1,
        }
        t.prompt_tokens += i64::from(row.prompt_tokens);
        t.completion_tokens += i64::from(row.completion_tokens);
        t.reasoning_tokens += i64::from(row.reasoning_tokens);
        t.cost = t
            .cost
            .checked_add(pico(row.cost)?)
            .ok_or(StoreError::TooMuch(row.cost))?;
        t.duration_ms_sum += int(row.duration_ms);
        if let Some(ms) = row.first_token_ms {
            t.ttft_count += 1;
            t.ttft_ms_sum += int(ms);
            t.ttft_ms_max = t.ttft_ms_max.max(int(ms));
            t.histogram[ttft_bucket(ms)] += 1;
        }
    }
    // Sorted, so that two instances' writers lock rollup rows in the same order (Postgres
    // would otherwise find the odd deadlock between their upserts).
    let mut lines: Vec<(RollupKey, Totals)> = totals.into_iter().collect();
    lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(lines)
}

/// The rollup's counting columns, in table order.
fn rollup_sums() -> Vec<String> {
    let mut cols: Vec<String> = [
        "requests",
        "errors",
        "stopped",
        "refused",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cost_pico",
        "duration_ms_sum",
        "ttft_count",
        "ttft_ms_sum",
    ]
    .map(String::from)
    .to_vec();
    cols.extend((0..BUCKETS).map(|b| format!("ttft_h{b:02}")));
    cols
}

async fn upsert_rollup(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    lines: &[(RollupKey, Totals)],
) -> Result<(), StoreError> {
    let sums = rollup_sums();
    let mut columns = vec!["day", "code_id", "provider", "model"];
    columns.extend(sums.iter().map(String::as_str));
    columns.push("ttft_ms_max");
    let updates: Vec<String> = sums
        .iter()
        .map(|c| format!("{c} = usage_daily.{c} + excluded.{c}"))
        .chain(std::iter::once(
            "ttft_ms_max = CASE WHEN excluded.ttft_ms_max > usage_daily.ttft_ms_max \
             THEN excluded.ttft_ms_max ELSE usage_daily.ttft_ms_max END"
                .to_string(),
        ))
        .collect();
    let sql = format!(
        "INSERT INTO usage_daily ({}) VALUES {} \
         ON CONFLICT (day, code_id, provider, model) DO UPDATE SET {}",
        columns.join(", "),
        placeholders(backend, lines.len(), columns.len()),
        updates.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for ((day, code_id, provider, model), t) in lines {
        query = query
            .bind(day.as_str())
            .bind(*code_id)
            .bind(provider.as_str())
            .bind(model.as_str());
        for n in [
            t.requests,
            t.errors,
            t.stopped,
            t.refused,
            t.prompt_tokens,
            t.completion_tokens,
            t.reasoning_tokens,
            t.cost,
            t.duration_ms_sum,
            t.ttft_count,
            t.ttft_ms_sum,
        ]
        .into_iter()
        .chain(t.histogram)
        {
            query = query.bind(n);
        }
        query = query.bind(t.ttft_ms_max);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

fn count(row: &AnyRow, name: &str) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(col::<i64>(row, name)?).unwrap_or(0))
}

fn bad_data(err: impl fmt::Display) -> StoreError {
    StoreError::Invalid(format!("unexpected data in the ledger: {err}"))
}

fn ledger_entry(row: &AnyRow) -> Result<LedgerEntry, StoreError> {
    let tokens = |name: &str| -> Result<u32, StoreError> {
        Ok(u32::try_from(col::<i64>(row, name)?).unwrap_or(u32::MAX))
    };
    let usage_source = match col::<String>(row, "usage_source")?.as_str() {
        "tiktoken" => UsageSource::Tiktoken,
        _ => UsageSource::Provider,
    };
    let outcome: Outcome = col::<String>(row, "outcome")?.parse().map_err(bad_data)?;
    Ok(LedgerEntry {
        id: col(row, "id")?,
        row: LedgerRow {
            at_ms: col(row, "at_ms")?,
            code_id: col(row, "code_id")?,
            provider: col(row, "provider")?,
            model: col(row, "model")?,
            key_id: col(row, "key_id")?,
            prompt_tokens: tokens("prompt_tokens")?,
            completion_tokens: tokens("completion_tokens")?,
            reasoning_tokens: tokens("reasoning_tokens")?,
            usage_source,
            cost: yuan(col(row, "cost_pico")?),
            first_token_ms: col::<Option<i64>>(row, "first_token_ms")?
                .map(|ms| u64::try_from(ms).unwrap_or(0)),
            duration_ms: count(row, "duration_ms")?,
            retries: tokens("retries")?,
            outcome,
        },
    })
}

/// The CSV header of [`Store::export_csv`].
pub const CSV_HEADER: &str = "time,day,code_id,code_name,provider,model,key_id,prompt_tokens,\
completion_tokens,reasoning_tokens,usage_source,cost_yuan,first_token_ms,duration_ms,retries,outcome\n";

/// Rows per page of the CSV export.
const CSV_PAGE: i64 = 1000;

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv_field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn csv_line(out: &mut String, entry: &LedgerEntry, code_name: Option<&str>) {
    let r = &entry.row;
    let opt = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    let fields = [
        shanghai::format_rfc3339_ms(r.at_ms),
        Day::of_ms(r.at_ms).to_string(),
        opt(r.code_id),
        code_name.unwrap_or_default().to_string(),
        r.provider.clone(),
        r.model.clone(),
        r.key_id.clone().unwrap_or_default(),
        r.prompt_tokens.to_string(),
        r.completion_tokens.to_string(),
        r.reasoning_tokens.to_string(),
        source_text(r.usage_source).to_string(),
        r.cost.to_string(),
        opt(r.first_token_ms.map(int)),
        r.duration_ms.to_string(),
        r.retries.to_string(),
        r.outcome.to_string(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field);
    }
    out.push('\n');
}

/// The rollup's columns summed over codes, for `daily_usage`.
fn usage_select() -> String {
    let sums: Vec<String> = rollup_sums()
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT) AS {c}"))
        .collect();
    format!(
        "SELECT day, provider, model, {}, CAST(MAX(ttft_ms_max) AS BIGINT) AS ttft_ms_max \
         FROM usage_daily",
        sums.join(", ")
    )
}

fn daily_usage_row(row: &AnyRow) -> Result<DailyUsage, StoreError> {
    let mut histogram = [0; BUCKETS];
    for (b, slot) in histogram.iter_mut().enumerate() {
        *slot = count(row, &format!("ttft_h{b:02}"))?;
    }
    Ok(DailyUsage {
        day: col::<String>(row, "day")?.parse().map_err(bad_data)?,
        provider: col(row, "provider")?,
        model: col(row, "model")?,
        requests: count(row, "requests")?,
        errors: count(row, "errors")?,
        stopped: count(row, "stopped")?,
        refused: count(row, "refused")?,
        prompt_tokens: count(row, "prompt_tokens")?,
        completion_tokens: count(row, "completion_tokens")?,
        reasoning_tokens: count(row, "reasoning_tokens")?,
        cost: yuan(col(row, "cost_pico")?),
        duration_ms_sum: count(row, "duration_ms_sum")?,
        ttft_count: count(row, "ttft_count")?,
        ttft_ms_sum: count(row, "ttft_ms_sum")?,
        ttft_ms_max: count(row, "ttft_ms_max")?,
        ttft_histogram: histogram,
    })
}

impl Store {
    /// The writer of this store (started on the first call; later calls share it). Needs a
    /// Tokio runtime.
    pub fn ledger_writer(&self) -> LedgerWriter {
        self.inner
            .ledger
            .get_or_init(|| LedgerWriter::spawn(self.db().clone()))
            .clone()
    }

    /// Writes rows and their rollup at once, in one transaction, bypassing the writer's
    /// queue (the writer uses the same path; the benchmark seeds with it).
    pub async fn insert_ledger_rows(&self, rows: &[LedgerRow]) -> Result<(), StoreError> {
        write_rows(self.db(), rows).await
    }

    /// The rollup for the `days` Shanghai days ending with `today`, per day, provider and
    /// model, oldest first; one code's (`Some(id)`; `Some(0)` for requests without a code)
    /// or all codes summed (`None`).
    pub async fn daily_usage(
        &self,
        code_id: Option<i64>,
        days: u32,
        today: Day,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        let first = today.add_days(1 - i64::from(days.max(1)));
        let filter = if code_id.is_some() {
            " AND code_id = $3"
        } else {
            ""
        };
        let sql = format!(
            "{} WHERE day >= $1 AND day <= $2{filter} GROUP BY day, provider, model \
             ORDER BY day, provider, model",
            usage_select()
        );
        let mut query = sqlx::query(&sql)
            .bind(first.to_string())
            .bind(today.to_string());
        if let Some(id) = code_id {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.read_pool()).await?;
        rows.iter().map(daily_usage_row).collect()
    }

    /// Totals per code (`0`: requests without a code) over Shanghai days `from..=to`,
    /// from the rollup.
    pub async fn usage_by_code(&self, from: Day, to: Day) -> Result<Vec<CodeUsage>, StoreError> {
        let sums: Vec<String> = CODE_USAGE_SUMS
            .iter()
            .map(|c| format!("CAST(SUM({c}) AS BIGINT) AS {c}"))
            .collect();
        let sql = format!(
            "SELECT code_id, {} FROM usage_daily WHERE day >= $1 AND day <= $2 \
             GROUP BY code_id ORDER BY code_id",
            sums.join(", ")
        );
        let rows = sqlx::query(&sql)
            .bind(from.to_string())
            .bind(to.to_string())
            .fetch_all(self.read_pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CodeUsage {
                    code_id: col(row, "code_id")?,
                    requests: count(row, "requests")?,
                    errors: count(row, "errors")?,
                    stopped: count(row, "stopped")?,
                    refused: count(row, "refused")?,
                    prompt_tokens: count(row, "prompt_tokens")?,
                    completion_tokens: count(row, "completion_tokens")?,
                    reasoning_tokens: count(row, "reasoning_tokens")?,
                    cost: yuan(col(row, "cost_pico")?),
                })
            })
            .collect()
    }

    /// The latest ledger rows, newest first: all (`None`), one code's (`Some(id)`), or those
    /// without a code (`Some(0)`).
    pub async fn recent(
        &self,
        code_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let (filter, code) = code_filter(code_id, "code_id", 2);
        let sql = format!(
            "SELECT id, {} FROM ledger WHERE 1 = 1{filter} ORDER BY at_ms DESC, id DESC LIMIT $1",
            LEDGER_COLUMNS.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(i64::from(limit));
        if let Some(id) = code {
            query = query.bind(id);
        }
        let rows = query.fetch_all(self.read_pool()).await?;
        rows.iter().map(ledger_entry).collect()
    }

    /// The ledger rows of Shanghai days `from..=to` (codes chosen as in [`Store::recent`])
    /// as CSV, in time order: the header, then
    /// one chunk per 1000 rows, read page by page (constant memory; feed it to an HTTP body).
    /// Costs are exact decimal yuan (`0.000123`), times RFC 3339 in +08:00.
    pub fn export_csv(
        &self,
        code_id: Option<i64>,
        from: Day,
        to: Day,
    ) -> impl Stream<Item = Result<String, StoreError>> + Send + 'static {
        struct Page {
            store: Store,
            cursor: Option<(i64, i64)>,
            header: bool,
            done: bool,
        }
        let columns: Vec<String> = LEDGER_COLUMNS.iter().map(|c| format!("l.{c}")).collect();
        let (filter, code) = code_filter(code_id, "l.code_id", 6);
        let sql = format!(
            "SELECT l.id, {}, c.name AS code_name FROM ledger l \
             LEFT JOIN access_codes c ON c.id = l.code_id \
             WHERE l.at_ms >= $1 AND l.at_ms < $2 AND (l.at_ms > $3 OR (l.at_ms = $3 AND l.id > $4)){filter} \
             ORDER BY l.at_ms, l.id LIMIT $5",
            columns.join(", ")
        );
        let (start, end) = (from.start_ms(), to.next().start_ms());
        let state = Page {
            store: self.clone(),
            cursor: None,
            header: false,
            done: false,
        };
        futures::stream::try_unfold(state, move |mut page| {
            let sql = sql.clone();
            async move {
                if !page.header {
                    page.header = true;
                    return Ok(Some((CSV_HEADER.to_string(), page)));
                }
                if page.done {
                    return Ok(None);
                }
                let (after_at, after_id) = page.cursor.unwrap_or((start - 1, i64::MAX));
                let mut query = sqlx::query(&sql)
                    .bind(start)
                    .bind(end)
                    .bind(after_at)
                    .bind(after_id)
                    .bind(CSV_PAGE);
                if let Some(id) = code {
                    query = query.bind(id);
                }
                let rows = query.fetch_all(page.store.read_pool()).await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                page.done = (rows.len() as i64) < CSV_PAGE;
                let mut out = String::with_capacity(rows.len() * 160);
                for row in &rows {
                    let entry = ledger_entry(row)?;
                    let name: Option<String> = col(row, "code_name")?;
                    csv_line(&mut out, &entry, name.as_deref());
                    page.cursor = Some((entry.row.at_ms, entry.id));
                }
                Ok(Some((out, page)))
            }
        })
    }

    /// Retention: deletes whole Shanghai days before `first_kept` from the ledger and the
    /// rollup (and the budget counters of finished periods that no reservation holds).
    pub async fn drop_days_before(&self, first_kept: Day) -> Result<Retention, StoreError> {
        let mut tx = self.begin_write().await?;
        let ledger_rows = sqlx::query("DELETE FROM ledger WHERE at_ms < $1")
            .bind(first_kept.start_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let rollup_rows = sqlx::query("DELETE FROM usage_daily WHERE day < $1")
            .bind(first_kept.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Day periods are 10 characters, months 7; as text '2026-11' < '2026-11-05', so the
        // lengths keep the current month's counter.
        sqlx::query(
            "DELETE FROM budget_counters WHERE reserved_pico = 0 AND \
             ((LENGTH(period) = 10 AND period < $1) OR (LENGTH(period) = 7 AND period < $2))",
        )
        .bind(first_kept.to_string())
        .bind(first_kept.month().to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Retention {
            ledger_rows,
            rollup_rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for outcome in [
            Outcome::Done,
            Outcome::Stopped,
            Outcome::error(ErrorCode::RateLimited),
            Outcome::Refused("budget".into()),
        ] {
            assert_eq!(outcome.to_string().parse::<Outcome>().unwrap(), outcome);
        }
        assert_eq!(
            Outcome::error(ErrorCode::RateLimited).to_string(),
            "error:rate_limited"
        );
    }

    #[test]
    fn percentiles_come_from_buckets() {
        let mut h = [0u64; BUCKETS];
        assert_eq!(ttft_percentile(&h, 0, 0.5), None);
        // 90 fast (≤100 ms), 10 slow (1.2 s): p50 100, p95 1500 capped by max 1200.
        h[ttft_bucket(80)] = 90;
        h[ttft_bucket(1200)] = 10;
        assert_eq!(ttft_percentile(&h, 1200, 0.5), Some(100));
        assert_eq!(ttft_percentile(&h, 1200, 0.95), Some(1200));
        assert_eq!(ttft_percentile(&h, 1200, 0.90), Some(100));
        assert_eq!(ttft_bucket(30_000), 14);
        assert_eq!(ttft_bucket(30_001), 15);
        assert_eq!(placeholders(Backend::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(Backend::Sqlite, 1, 3), "(?, ?, ?)");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut out = String::new();
        csv_field(&mut out, "a,\"b\"");
        assert_eq!(out, "\"a,\"\"b\"\"\"");
    }
}
