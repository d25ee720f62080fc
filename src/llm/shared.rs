//! Key rests shared between instances (`REDIS_URL`): when one instance cools an account
//! after a 429 (for its `Retry-After`) or parks a refused key, every instance leaves it
//! alone for as long. Each rest is one Redis key holding the unix millisecond it ends,
//! expiring then; an atomic script only ever lengthens it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;

/// `KEYS[1]` rests until unix ms `ARGV[1]` unless it already rests longer; it expires
/// after `ARGV[2]` ms.
const LENGTHEN: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1";

pub(crate) struct SharedRests {
    conn: ConnectionManager,
    lengthen: Script,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SharedRests {
    pub(crate) async fn connect(url: &str) -> Result<SharedRests, redis::RedisError> {
        let client = redis::Client::open(url)?;
        Ok(SharedRests {
            conn: client.get_connection_manager().await?,
            lengthen: Script::new(LENGTHEN),
        })
    }

    /// The rests recorded under `names`, as instants here. Without Redis, none: each
    /// instance still rests what it saw itself.
    pub(crate) async fn pull(&self, names: &[String]) -> Vec<Option<Instant>> {
        if names.is_empty() {
            return Vec::new();
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<u64>> =
            match redis::cmd("MGET").arg(names).query_async(&mut conn).await {
                Ok(values) => values,
                Err(err) => {
                    tracing::warn!("reading shared key rests failed: {err}");
                    return vec![None; names.len()];
                }
            };
        let (now_ms, now) = (unix_ms(), Instant::now());
        values
            .into_iter()
            .map(|until| {
                let left = until?.checked_sub(now_ms).filter(|ms| *ms > 0)?;
                Some(now + Duration::from_millis(left))
            })
            .collect()
    }

    /// Records `rests` for every instance (awaited: the next request anywhere sees them).
    pub(crate) async fn push(&self, rests: Vec<(String, Instant)>) {
        let (now_ms, now) = (unix_ms(), Instant::now());
        for (name, until) in rests {
            let left =
                u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX);
            if left == 0 {
                continue;
            }
            let mut conn = self.conn.clone();
            let pushed: Result<i64, _> = self
                .lengthen
                .key(&name)
                .arg(now_ms.saturating_add(left))
                .arg(left)
                .invoke_async(&mut conn)
                .await;
            if let Err(err) = pushed {
                tracing::warn!("sharing a key rest failed: {err}");
            }
        }
    }
}
