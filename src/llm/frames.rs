//! A chat's frames on their way from its relay to their reader (the log's pump): a
//! bounded queue behind one lock. The relay and the pump share a task, so a frame costs
//! a push and a pop; a channel built for many senders and tasks paid a semaphore permit
//! (its release takes a lock), a box and its block list for each.
//!
//! **Rule:** only the relay future sends, while it is being polled; it stays in that
//! future (never moved to another task), because the log's pump, polled right after the
//! relay in the same task, takes frames without being woken ([`Frames::poll_sent`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::protocol::Frame;

/// Frames that may wait for the reader: beyond them the relay waits (the pump is held
/// up by a slow log, e.g. Redis).
const CAPACITY: usize = 64;

/// The relay's end.
pub(crate) struct FrameTx(Arc<Shared>);

/// The reading end of a chat's frames.
pub struct Frames(Arc<Shared>);

struct Shared(Mutex<State>);

#[derive(Default)]
struct State {
    queue: VecDeque<Frame>,
    sender_gone: bool,
    reader_gone: bool,
    /// The reader waiting for a frame.
    reader: Option<Waker>,
    /// The relay waiting for room.
    room: Option<Waker>,
    /// The relay's watch for the reader leaving.
    gone: Option<Waker>,
}

/// Why a frame was not taken at once.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    Full(Frame),
    ReaderGone,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Frames {
    /// A frame channel: the relay's end and the reader's.
    pub(crate) fn channel() -> (FrameTx, Frames) {
        let shared = Arc::new(Shared(Mutex::default()));
        (FrameTx(shared.clone()), Frames(shared))
    }

    /// The next frame, once it is sent; `None` after the last.
    pub async fn next(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_next(Some(cx))).await
    }

    /// A frame sent already, or `Pending` without asking to be woken: for a reader that
    /// polls in the relay's own task, right after the relay (`server::streams`), where
    /// waking for each frame would make the task poll itself again per chunk.
    /// `Ready(None)` once the relay has ended and every frame was taken.
    pub fn poll_sent(&mut self) -> Poll<Option<Frame>> {
        self.poll_next(None)
    }

    fn poll_next(&mut self, cx: Option<&mut Context<'_>>) -> Poll<Option<Frame>> {
        let mut state = self.0.lock();
        if let Some(frame) = state.queue.pop_front() {
            if let Some(room) = state.room.take() {
                room.wake();
            }
            return Poll::Ready(Some(frame));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        if let Some(cx) = cx {
            state.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.reader_gone = true;
        state.queue.clear();
        let wakers = [state.room.take(), state.gone.take()];
        drop(state);
        wakers.into_iter().flatten().for_each(Waker::wake);
    }
}

impl FrameTx {
    /// Queues `frame` if there is room; gives it back if there is none.
    #[allow(clippy::result_large_err, reason = "the frame goes back to its sender")]
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), Refused> {
        self.offer(frame, None)
    }

    /// Queues `frame` once there is room.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), SendFailed> {
        let mut frame = Some(frame);
        std::future::poll_fn(|cx| {
            let Some(next) = frame.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.offer(next, Some(cx)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(Refused::ReaderGone) => Poll::Ready(Err(SendFailed::ReaderGone)),
                Err(Refused::Full(next)) => {
                    frame = Some(next);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Queues `frame` and wakes a waiting reader; with `cx`, a full queue wakes it once
    /// there is room (looked at and registered under one lock, so no room is missed).
    #[allow(clippy::result_large_err, reason = "the frame goes back to its sender")]
    fn offer(&self, frame: Frame, cx: Option<&mut Context<'_>>) -> Result<(), Refused> {
        let mut state = self.0.lock();
        if state.reader_gone {
            return Err(Refused::ReaderGone);
        }
        if state.queue.len() >= CAPACITY {
            if let Some(cx) = cx {
                state.room = Some(cx.waker().clone());
            }
            return Err(Refused::Full(frame));
        }
        state.queue.push_back(frame);
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
        Ok(())
    }

    /// [`FrameTx::send`], given up after `limit`.
    pub(crate) async fn send_timeout(
        &self,
        frame: Frame,
        limit: Duration,
    ) -> Result<(), SendFailed> {
        tokio::time::timeout(limit, self.send(frame))
            .await
            .unwrap_or(Err(SendFailed::Timeout))
    }

    /// Resolves once the reader has gone.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut state = self.0.lock();
            if state.reader_gone {
                return Poll::Ready(());
            }
            state.gone = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

impl Drop for FrameTx {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.sender_gone = true;
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// Why [`FrameTx::send_timeout`] failed.
#[derive(Debug, PartialEq)]
pub(crate) enum SendFailed {
    Timeout,
    ReaderGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64) -> Frame {
        Frame::Chunk {
            seq,
            content: format!("{seq}"),
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order_then_none_once_the_relay_has_gone() {
        let (tx, mut frames) = Frames::channel();
        assert_eq!(frames.poll_sent(), Poll::Pending);
        for seq in 0..3 {
            tx.try_send(chunk(seq)).unwrap();
        }
        drop(tx);
        for seq in 0..3 {
            assert_eq!(frames.next().await, Some(chunk(seq)));
        }
        assert_eq!(frames.next().await, None);
        assert_eq!(frames.poll_sent(), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_relay_until_the_reader_takes_one() {
        let (tx, mut frames) = Frames::channel();
        for seq in 0..CAPACITY as u64 {
            tx.try_send(chunk(seq)).unwrap();
        }
        let extra = CAPACITY as u64;
        assert_eq!(tx.try_send(chunk(extra)), Err(Refused::Full(chunk(extra))));
        let limit = Duration::from_millis(30);
        assert_eq!(
            tx.send_timeout(chunk(extra), limit).await,
            Err(SendFailed::Timeout)
        );
        let relay = tokio::spawn(async move {
            tx.send(chunk(extra)).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(frames.next().await, Some(chunk(0)));
        let tx = relay.await.unwrap();
        drop(tx);
        let mut rest = Vec::new();
        while let Some(Frame::Chunk { seq, .. }) = frames.next().await {
            rest.push(seq);
        }
        assert_eq!(rest, (1..=extra).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_relay_learns_that_the_reader_has_gone() {
        let (tx, frames) = Frames::channel();
        for seq in 0..CAPACITY as u64 {
            tx.try_send(chunk(seq)).unwrap();
        }
        let waiting = tokio::spawn(async move {
            let sent = tx.send(chunk(99)).await;
            tx.closed().await;
            (sent, tx.try_send(chunk(100)))
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(frames);
        let (sent, after) = waiting.await.unwrap();
        assert_eq!(sent, Err(SendFailed::ReaderGone));
        assert_eq!(after, Err(Refused::ReaderGone));
    }
}
