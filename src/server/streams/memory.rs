//! Logs in this process's memory (no `REDIS_URL`): one instance.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use super::{first_wanted, lock, LogLimits, Logged, Owner, Reader, StreamsError};

/// Every log of this instance, by answer id.
#[derive(Clone)]
pub(super) struct Logs {
    logs: Arc<Mutex<HashMap<String, Arc<Log>>>>,
    limits: LogLimits,
}

/// One answer's frames.
pub(super) struct Log {
    owner: Owner,
    state: Mutex<State>,
    /// Notified on every append and at the end: wakes the readers. (A `Notify`, not a
    /// `watch`: a watch wakes through eight lists, a lock each, on every frame.)
    grew: Arc<Notify>,
    logs: Logs,
    id: String,
}

struct State {
    frames: VecDeque<Logged>,
    /// The index of `frames[0]`.
    first: u64,
    ended: bool,
    readers: usize,
}

impl Logs {
    pub(super) fn new(limits: LogLimits) -> Logs {
        Logs {
            logs: Arc::default(),
            limits,
        }
    }

    pub(super) fn create(&self, id: &str, owner: Owner) -> Arc<Log> {
        let log = Arc::new(Log {
            owner,
            state: Mutex::new(State {
                frames: VecDeque::new(),
                first: 0,
                ended: false,
                readers: 0,
            }),
            grew: Arc::default(),
            logs: self.clone(),
            id: id.to_owned(),
        });
        lock(&self.logs).insert(id.to_owned(), log.clone());
        log
    }

    fn find(&self, id: &str, owner: Owner) -> Result<Arc<Log>, StreamsError> {
        lock(&self.logs)
            .get(id)
            .filter(|log| log.owner == owner)
            .cloned()
            .ok_or(StreamsError::NotFound)
    }

    pub(super) fn exists(&self, id: &str, owner: Owner) -> Result<(), StreamsError> {
        self.find(id, owner).map(drop)
    }

    pub(super) fn read(
        &self,
        id: &str,
        owner: Owner,
        after: Option<u64>,
    ) -> Result<Reader, StreamsError> {
        let log = self.find(id, owner)?;
        let next = first_wanted(after);
        if next < lock(&log.state).first {
            return Err(StreamsError::Trimmed);
        }
        let reader = LogReader {
            grew: Box::pin(log.grew.clone().notified_owned()),
            look: true,
            next,
            attached: Attached::new(log),
        };
        Ok(reader.boxed())
    }
}

/// Frames handed to a reader at once, at most.
const READ_BATCH: usize = 512;

impl Log {
    /// Takes `batch`'s frames, leaving it empty.
    pub(super) fn append(&self, batch: &mut Vec<Logged>) {
        {
            let mut state = lock(&self.state);
            state.ended |= batch.last().is_some_and(|f| f.terminal);
            state.frames.extend(batch.drain(..));
            while state.frames.len() > self.logs.limits.max_frames {
                state.frames.pop_front();
                state.first += 1;
            }
        }
        self.grew.notify_waiters();
    }

    pub(super) fn is_read(&self) -> bool {
        lock(&self.state).readers > 0
    }

    /// The answer has ended: readers finish, and the log goes after `keep`.
    pub(super) fn end(self: Arc<Self>) {
        lock(&self.state).ended = true;
        self.grew.notify_waiters();
        let keep = self.logs.limits.keep;
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            lock(&self.logs.logs).remove(&self.id);
        });
    }

    /// Frames from index `next` on, and whether the log has ended; `None` if they are
    /// no longer kept.
    fn take(&self, next: u64) -> Option<(Vec<Logged>, bool)> {
        let state = lock(&self.state);
        if next < state.first {
            return None;
        }
        let skip = usize::try_from(next - state.first).unwrap_or(usize::MAX);
        let batch = state
            .frames
            .iter()
            .skip(skip)
            .take(READ_BATCH)
            .cloned()
            .collect();
        Some((batch, state.ended))
    }
}

/// A reader attached to a log, counted while it lives.
struct Attached(Arc<Log>);

impl Attached {
    fn new(log: Arc<Log>) -> Attached {
        lock(&log.state).readers += 1;
        Attached(log)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        lock(&self.0.state).readers -= 1;
    }
}

/// One reader of a log: the frames from `next` on, in batches, then each append as it
/// comes. Written out by hand: a chunk costs one look at the log (an `unfold` over an
/// async block looked twice and made a new waiter each time).
struct LogReader {
    /// Registered before each look, so an append in between is not missed.
    grew: Pin<Box<OwnedNotified>>,
    /// Whether the log may hold more than the reader has seen: at the start, after a
    /// notification, after a full batch or at the end.
    look: bool,
    next: u64,
    attached: Attached,
}

impl Stream for LogReader {
    type Item = Vec<Logged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<Logged>>> {
        let this = self.get_mut();
        loop {
            if !this.look {
                if this.grew.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let log = &this.attached.0;
                this.grew.set(log.grew.clone().notified_owned());
            }
            this.grew.as_mut().enable();
            let Some((batch, ended)) = this.attached.0.take(this.next) else {
                return Poll::Ready(None);
            };
            this.look = ended || batch.len() == READ_BATCH;
            match batch.last() {
                Some(last) => {
                    this.next = last.index + 1;
                    return Poll::Ready(Some(batch));
                }
                None if ended => return Poll::Ready(None),
                None => {}
            }
        }
    }
}
