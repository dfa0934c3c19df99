//! A request's work that runs to its end even when its client stops waiting, without a task of
//! its own while the client waits.
//!
//! hyper drops a handler's future when the client hangs up, but the gateway's work must go on: an
//! upstream that answers bills for it, so the answer is still read, priced and recorded (see
//! `handlers::messages`). That work used to run in a spawned task the handler awaited, which cost
//! every request a task, a cross-thread wake-up and a join. [`Detachable`] polls the work in the
//! handler's own future instead, and moves it into a task only when it is dropped unfinished,
//! which is when the client has gone.

use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

type Work<T> = Pin<Box<dyn Future<Output = std::thread::Result<T>> + Send>>;

pub(super) struct Detachable<T: Send + 'static> {
    /// None once finished
    work: Option<Work<T>>,
}

impl<T: Send + 'static> Detachable<T> {
    /// `work`, whose panic is returned as an `Err` (as a task's would be) rather than unwinding
    /// through the connection.
    pub(super) fn new(work: impl Future<Output = T> + Send + 'static) -> Self {
        Detachable { work: Some(Box::pin(AssertUnwindSafe(work).catch_unwind())) }
    }
}

impl<T: Send + 'static> Future for Detachable<T> {
    type Output = std::thread::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(work) = self.work.as_mut() else { return Poll::Pending };
        let out = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for Detachable<T> {
    /// Unfinished: the rest runs in a task. Outside a runtime (it is shutting down) the work is
    /// dropped, as the runtime would have dropped its task.
    fn drop(&mut self) {
        if let (Some(work), Ok(rt)) = (self.work.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                if work.await.is_err() {
                    tracing::error!("a request's work panicked after its client left");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Detachable;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn dropped_unfinished_it_runs_to_its_end() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let work = Detachable::new(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            d.store(true, Ordering::SeqCst);
        });
        // the caller gives up after one poll
        assert!(tokio::time::timeout(Duration::from_millis(1), work).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.load(Ordering::SeqCst), "the work went on after its caller left");
    }

    #[tokio::test]
    async fn awaited_it_returns_the_output_or_the_panic() {
        assert_eq!(Detachable::new(async { 7 }).await.unwrap(), 7);
        let panicked = Detachable::new(async {
            if true {
                panic!("boom");
            }
        })
        .await;
        assert!(panicked.is_err());
    }
}
