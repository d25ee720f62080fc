//! A future polled only once it has woken: a task that is polled for every chunk
//! touches the watchers of a chat's outside ends (stop, shutdown, the time cap, the
//! reader leaving) only when one of them fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::{waker_ref, ArcWake, AtomicWaker};

/// `future`, polled at first and then only after it woke (a set of one future did the
/// same with a set's bookkeeping on every poll).
pub(crate) struct WhenWoken<F: ?Sized> {
    future: Pin<Box<F>>,
    flag: Arc<Flag>,
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Flag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.woken.store(true, Ordering::Release);
        flag.task.wake();
    }
}

impl<F: Future + ?Sized> WhenWoken<F> {
    pub(crate) fn new(future: Pin<Box<F>>) -> WhenWoken<F> {
        WhenWoken {
            future,
            flag: Arc::new(Flag {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future + ?Sized> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let flag = self.flag.clone();
        let waker = waker_ref(&flag);
        self.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::task::Waker;

    /// Counts its polls; ready once opened (which wakes it).
    #[derive(Clone, Default)]
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Gate {
        fn open(&self) {
            self.open.store(true, Ordering::Release);
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            match self.open.load(Ordering::Acquire) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn polled_at_first_and_after_a_wake_only() {
        let gate = Gate::default();
        let mut watched = WhenWoken::new(Box::pin(gate.clone()));
        for _ in 0..5 {
            assert!(futures::poll!(&mut watched).is_pending());
        }
        assert_eq!(gate.polls.load(Ordering::Relaxed), 1);
        gate.open();
        assert!(futures::poll!(&mut watched).is_ready());
        assert_eq!(gate.polls.load(Ordering::Relaxed), 2);
    }
}
