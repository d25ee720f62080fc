//! Logs in Redis (`REDIS_URL`), read through any instance. Per answer `id`:
//! - `streamai:log:{id}`: a Stream, one entry per frame with the entry id `0-<index+1>`
//!   (`d`: the frame's JSON, `t`: `1` on the terminal frame), `XADD … MAXLEN ~ <cap>`;
//! - `streamai:owner:{id}`: who may read and stop it (`-` for the open server);
//! - `streamai:read:{id}`: set (for 3 s) by each reader while it reads;
//! - `streamai:stop:{id}`: a stop asked for on any instance, seen by the one running it;
//! - `streamai:end:{id}`: the terminal frame's index, once it is written.
//!
//! Every key expires: while the answer runs, after its longest run plus `keep`; after
//! its end, after `keep`.

use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::time::Instant;

use super::{first_wanted, LogLimits, Logged, Owner, Polled, Reader, StreamsError};

/// How long one blocking read waits for new frames before checking on the log.
const BLOCK: Duration = Duration::from_secs(1);
/// How long a reader's mark lasts: it renews it at least every `BLOCK`.
const READ_MARK: Duration = Duration::from_secs(3);
/// Frames read at once, at most.
const READ_BATCH: usize = 512;
/// How long a write of an answer's frames is tried again before they are given up.
const APPEND_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(super) struct Logs {
    client: Client,
    /// Shared by every writer and for the short commands of readers.
    conn: ConnectionManager,
    limits: LogLimits,
}

fn log_key(id: &str) -> String {
    format!("streamai:log:{id}")
}
fn owner_key(id: &str) -> String {
    format!("streamai:owner:{id}")
}
fn read_key(id: &str) -> String {
    format!("streamai:read:{id}")
}
fn stop_key(id: &str) -> String {
    format!("streamai:stop:{id}")
}
fn end_key(id: &str) -> String {
    format!("streamai:end:{id}")
}

fn owner_value(owner: Owner) -> String {
    owner.map_or_else(|| "-".to_owned(), |code| code.to_string())
}

fn unavailable(err: &RedisError) -> StreamsError {
    StreamsError::Unavailable(err.to_string())
}

/// Whole seconds, at least one (an `EXPIRE` of 0 deletes).
fn secs(duration: Duration) -> u64 {
    duration.as_secs().max(1)
}

impl Logs {
    pub(super) async fn connect(url: &str, limits: LogLimits) -> Result<Logs, StreamsError> {
        let client = Client::open(url).map_err(|e| unavailable(&e))?;
        let conn = client
            .get_connection_manager()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Logs {
            client,
            conn,
            limits,
        })
    }

    /// While the answer runs, its keys outlive its longest run.
    fn running_ttl(&self) -> u64 {
        secs(self.limits.max_stream + self.limits.keep)
    }

    pub(super) async fn create(&self, id: &str, owner: Owner) -> Result<Writer, StreamsError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(owner_key(id))
            .arg(owner_value(owner))
            .arg("EX")
            .arg(self.running_ttl())
            .exec_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Writer {
            conn,
            id: id.to_owned(),
            limits: self.limits,
            ttl: self.running_ttl(),
            expiring: false,
            failed: false,
        })
    }

    /// Fails with `NotFound` unless the log exists and is `owner`'s.
    async fn check_owner(&self, id: &str, owner: Owner) -> Result<(), StreamsError> {
        let mut conn = self.conn.clone();
        let stored: Option<String> = redis::cmd("GET")
            .arg(owner_key(id))
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        match stored {
            Some(stored) if stored == owner_value(owner) => Ok(()),
            _ => Err(StreamsError::NotFound),
        }
    }

    pub(super) async fn request_stop(&self, id: &str, owner: Owner) -> Result<(), StreamsError> {
        self.check_owner(id, owner).await?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(stop_key(id))
            .arg(1)
            .arg("EX")
            .arg(self.running_ttl())
            .exec_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))
    }

    pub(super) async fn read(
        &self,
        id: &str,
        owner: Owner,
        after: Option<u64>,
    ) -> Result<Reader, StreamsError> {
        self.check_owner(id, owner).await?;
        let next = first_wanted(after);
        if next > 0 && next < self.first_kept(id).await? {
            return Err(StreamsError::Trimmed);
        }
        // A blocking read holds its connection: each reader has its own.
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK * 3));
        let blocking = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| unavailable(&e))?;
        let reading = Reading {
            blocking,
            conn: self.conn.clone(),
            id: id.to_owned(),
            next,
            marked: None,
            ended: false,
            check_end: true,
        };
        let reader = futures::stream::unfold(reading, |mut reading| async move {
            let batch = reading.next_batch().await?;
            Some((batch, reading))
        });
        Ok(reader.boxed())
    }

    /// The index of the oldest frame kept (0 for a log not yet written).
    async fn first_kept(&self, id: &str) -> Result<u64, StreamsError> {
        let mut conn = self.conn.clone();
        let first: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(log_key(id))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(first
            .ids
            .first()
            .and_then(|entry| index_of(&entry.id))
            .unwrap_or(0))
    }
}

/// The frame index of stream entry id `0-<index+1>`.
fn index_of(entry_id: &str) -> Option<u64> {
    entry_id
        .strip_prefix("0-")?
        .parse::<u64>()
        .ok()?
        .checked_sub(1)
}

/// One reader's position in a log.
struct Reading {
    blocking: MultiplexedConnection,
    conn: ConnectionManager,
    id: String,
    next: u64,
    marked: Option<Instant>,
    ended: bool,
    /// Whether to look for the end before the next blocking read: at first (a resume
    /// after the terminal frame has nothing to wait for) and after an empty read.
    check_end: bool,
}

impl Reading {
    /// The next frames, waiting for them; `None` after the terminal frame, when the log
    /// is gone, or when Redis fails (the browser resumes).
    async fn next_batch(&mut self) -> Option<Vec<Logged>> {
        loop {
            if self.ended || (self.check_end && self.past_the_end().await) {
                return None;
            }
            self.check_end = false;
            self.mark().await;
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(log_key(&self.id))
                .arg(format!("0-{}", self.next))
                .query_async(&mut self.blocking)
                .await
                .inspect_err(|err| tracing::warn!("reading an answer from Redis failed: {err}"))
                .ok()?;
            let batch: Vec<Logged> = reply
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|key| key.ids)
                .filter_map(|entry| {
                    Some(Logged::new(
                        index_of(&entry.id)?,
                        &entry.get::<String>("d")?,
                        entry.get::<String>("t").as_deref() == Some("1"),
                    ))
                })
                .collect();
            if let Some(last) = batch.last() {
                self.next = last.index + 1;
                self.ended = last.terminal;
                return Some(batch);
            }
            self.check_end = true;
        }
    }

    /// Tells the running instance that someone reads (at most once a second).
    async fn mark(&mut self) {
        if self.marked.is_some_and(|at| at.elapsed() < BLOCK) {
            return;
        }
        self.marked = Some(Instant::now());
        let _ = redis::cmd("SET")
            .arg(read_key(&self.id))
            .arg(1)
            .arg("PX")
            .arg(READ_MARK.as_millis() as u64)
            .exec_async(&mut self.conn)
            .await;
    }

    /// True when nothing more can come: the log is gone, or its terminal frame is
    /// before the next one wanted.
    async fn past_the_end(&mut self) -> bool {
        let checked: Result<(bool, Option<u64>), _> = redis::pipe()
            .cmd("EXISTS")
            .arg(owner_key(&self.id))
            .cmd("GET")
            .arg(end_key(&self.id))
            .query_async(&mut self.conn)
            .await;
        match checked {
            Ok((exists, end)) => !exists || end.is_some_and(|last| self.next > last),
            Err(_) => true,
        }
    }
}

/// Writes one answer's frames.
pub(super) struct Writer {
    conn: ConnectionManager,
    id: String,
    limits: LogLimits,
    ttl: u64,
    /// The log's key has its expiry.
    expiring: bool,
    /// A write failed (logged once).
    failed: bool,
}

impl Writer {
    /// One round trip per batch, however many frames it holds; `batch` is left empty. A
    /// failed write (Redis stalled, failing over) is tried again, for up to
    /// [`APPEND_PATIENCE`], with what it did not write: the readers miss nothing, and the
    /// answer waits meanwhile.
    pub(super) async fn append(&mut self, batch: &mut Vec<Logged>) {
        let end = batch.last().filter(|f| f.terminal).map(|f| f.index);
        let deadline = Instant::now() + APPEND_PATIENCE;
        let mut wait = Duration::from_millis(50);
        loop {
            let written = self.pipeline(batch, end).exec_async(&mut self.conn).await;
            let err = match written {
                Ok(()) => {
                    self.expiring = true;
                    break;
                }
                Err(err) => err,
            };
            if Instant::now() + wait >= deadline {
                if !self.failed {
                    self.failed = true;
                    tracing::error!(
                        "writing an answer to Redis failed (readers will miss it): {err}"
                    );
                }
                break;
            }
            tracing::warn!("writing an answer to Redis failed, trying again: {err}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
            // A round trip that failed may still have written (a reply too late).
            if let Some(last) = self.last_written().await {
                batch.retain(|f| f.index > last);
                if batch.is_empty() && end.is_none() && self.expiring {
                    break;
                }
            }
        }
        batch.clear();
    }

    /// The frames of `batch`, then the log's expiry and, with `end`, where it ends.
    fn pipeline(&self, batch: &[Logged], end: Option<u64>) -> redis::Pipeline {
        let key = log_key(&self.id);
        let mut pipe = redis::pipe();
        for frame in batch {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.limits.max_frames)
                .arg(format!("0-{}", frame.index + 1))
                .arg("d")
                .arg(frame.data())
                .arg("t")
                .arg(u8::from(frame.terminal))
                .ignore();
        }
        if !self.expiring {
            pipe.cmd("EXPIRE").arg(&key).arg(self.ttl).ignore();
        }
        if let Some(last) = end {
            let keep = secs(self.limits.keep);
            pipe.cmd("SET")
                .arg(end_key(&self.id))
                .arg(last)
                .arg("EX")
                .arg(keep)
                .ignore();
        }
        pipe
    }

    /// The index of the last frame in the log, if Redis answers.
    async fn last_written(&mut self) -> Option<u64> {
        let last: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
            .arg(log_key(&self.id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .ok()?;
        index_of(&last.first()?.0)
    }

    pub(super) async fn poll(&mut self) -> Polled {
        let polled: Result<(bool, bool), _> = redis::pipe()
            .cmd("EXISTS")
            .arg(read_key(&self.id))
            .cmd("EXISTS")
            .arg(stop_key(&self.id))
            .query_async(&mut self.conn)
            .await;
        // Without Redis nobody can read: the idle timer runs.
        let (read, stop) = polled.unwrap_or((false, false));
        Polled { read, stop }
    }

    /// The log stays for `keep`.
    pub(super) async fn end(mut self) {
        let keep = secs(self.limits.keep);
        let _ = redis::pipe()
            .cmd("EXPIRE")
            .arg(log_key(&self.id))
            .arg(keep)
            .ignore()
            .cmd("EXPIRE")
            .arg(owner_key(&self.id))
            .arg(keep)
            .ignore()
            .exec_async(&mut self.conn)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_map_to_frame_indexes() {
        assert_eq!(index_of("0-1"), Some(0));
        assert_eq!(index_of("0-42"), Some(41));
        assert_eq!(index_of("0-0"), None);
        assert_eq!(index_of("17-1"), None);
        assert_eq!(index_of("0-x"), None);
    }
}
