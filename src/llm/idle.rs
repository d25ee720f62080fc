//! A deadline some time after the last activity, on one timer that is moved only when it
//! fires: noting activity costs a clock read, where re-arming a timer on every event cost
//! a timer-wheel insert and removal per chunk. The relay's silence limit on a provider
//! and the SSE keep-alive both use it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::client::later;

pub(crate) struct IdleTimer {
    timer: Pin<Box<Sleep>>,
    last: Instant,
}

impl IdleTimer {
    /// Counts from now, first due after `limit`.
    pub(crate) fn new(limit: Duration) -> IdleTimer {
        let now = Instant::now();
        IdleTimer {
            timer: Box::pin(tokio::time::sleep_until(later(now, limit))),
            last: now,
        }
    }

    /// Something happened now.
    pub(crate) fn active(&mut self) {
        self.last = Instant::now();
    }

    /// Resolves once `limit` has passed since the last activity. Cancel-safe; `limit` may
    /// change from call to call (a shorter one takes effect at once).
    pub(crate) async fn idle(&mut self, limit: Duration) {
        std::future::poll_fn(|cx| self.poll_idle(cx, limit)).await;
    }

    /// [`IdleTimer::idle`] as a poll: reads the clock only when the timer has fired or
    /// would fire too late, so waiting on it between events costs no clock read.
    pub(crate) fn poll_idle(&mut self, cx: &mut Context<'_>, limit: Duration) -> Poll<()> {
        loop {
            let due = later(self.last, limit);
            if !self.timer.is_elapsed() && self.timer.deadline() <= due {
                ready!(self.timer.as_mut().poll(cx));
                continue;
            }
            if due <= Instant::now() {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
        }
    }

    /// `work`'s output, counted as activity, or `None` if `limit` passed first.
    pub(crate) async fn watch<F: Future>(&mut self, limit: Duration, work: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = work => {
                self.active();
                Some(out)
            }
            () = self.idle(limit) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn due_after_the_last_activity_and_a_shorter_limit_counts_at_once() {
        let start = Instant::now();
        let mut quiet = IdleTimer::new(Duration::from_millis(120));
        tokio::time::sleep(Duration::from_millis(80)).await;
        quiet.active();
        quiet.idle(Duration::from_millis(120)).await;
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );

        let mut long = IdleTimer::new(Duration::from_secs(60));
        let start = Instant::now();
        long.idle(Duration::from_millis(30)).await;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn work_that_keeps_coming_is_never_idle() {
        let mut quiet = IdleTimer::new(Duration::from_millis(100));
        for _ in 0..8 {
            let work = tokio::time::sleep(Duration::from_millis(40));
            assert_eq!(
                quiet.watch(Duration::from_millis(100), work).await,
                Some(())
            );
        }
        let stuck = std::future::pending::<()>();
        assert_eq!(quiet.watch(Duration::from_millis(100), stuck).await, None);
    }
}
