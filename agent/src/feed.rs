//! A bounded history of shared messages in sequence order plus a broadcast to live subscribers, with lag accounting.
//!
//! The producer never waits for a subscriber: one that falls behind the broadcast buffer is told
//! how many messages it missed, and the others go on. A new subscriber gets the history after
//! the sequence number it names and then (follow) the live messages, taken under one lock so
//! nothing falls between the two. Used by the kernel log pipeline; any other event channel of
//! the agent can reuse it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// A message of a feed.
pub trait Sequenced {
    /// The sequence number it belongs to; a feed's messages come in non-decreasing order.
    fn seq(&self) -> u64;
    /// Kept in the long history too (important messages outlive the noise around them).
    fn important(&self) -> bool;
}

/// Sizes of a feed.
#[derive(Debug, Clone, Copy)]
pub struct FeedCapacity {
    /// Messages kept for late subscribers, per history (all messages / important ones).
    pub history: usize,
    /// Messages a live subscriber may fall behind before it is told it lagged.
    pub broadcast: usize,
}

#[derive(Debug)]
struct Histories<T> {
    all: VecDeque<Arc<T>>,
    important: VecDeque<Arc<T>>,
}

/// The history and the broadcast; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Feed<T> {
    histories: Mutex<Histories<T>>,
    tx: broadcast::Sender<Arc<T>>,
    capacity: usize,
}

/// What a new subscriber gets.
#[derive(Debug)]
pub struct Subscription<T> {
    /// The history after the asked sequence number that the filter keeps.
    pub backlog: Vec<Arc<T>>,
    /// Live messages (follow only).
    pub live: Option<broadcast::Receiver<Arc<T>>>,
    /// Messages after the asked sequence number that the history no longer holds.
    pub missed_before_backlog: u64,
}

impl<T: Sequenced + Send + Sync + 'static> Feed<T> {
    pub fn new(capacity: FeedCapacity) -> Self {
        let (tx, _) = broadcast::channel(capacity.broadcast.max(1));
        Self {
            histories: Mutex::new(Histories {
                all: VecDeque::new(),
                important: VecDeque::new(),
            }),
            tx,
            capacity: capacity.history.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Histories<T>> {
        // A panic while holding the lock leaves consistent deques; keep serving.
        self.histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends messages to the history and sends them to every live subscriber.
    pub fn publish(&self, items: impl IntoIterator<Item = T>) {
        let mut histories = self.lock();
        for item in items {
            let item = Arc::new(item);
            if item.important() {
                if histories.important.len() == self.capacity {
                    histories.important.pop_front();
                }
                histories.important.push_back(item.clone());
            }
            if histories.all.len() == self.capacity {
                histories.all.pop_front();
            }
            histories.all.push_back(item.clone());
            // No receiver is fine; a full channel drops the oldest for the slow receiver only.
            let _ = self.tx.send(item);
        }
    }

    /// Where a subscriber resumes: the sequence number of the newest message of the history
    /// (all messages, or the important ones) that `had` says it had already, and the oldest
    /// message the history holds.
    pub fn locate(&self, all: bool, had: impl Fn(&T) -> bool) -> (Option<u64>, Option<Arc<T>>) {
        let histories = self.lock();
        let deque = if all {
            &histories.all
        } else {
            &histories.important
        };
        (
            deque.iter().rev().find(|i| had(i)).map(|i| i.seq()),
            deque.front().cloned(),
        )
    }

    /// The history after `since_seq` that `wanted` keeps (from the long history of important
    /// messages unless `all`), then, with `follow`, a receiver of live messages.
    pub fn subscribe(
        &self,
        since_seq: u64,
        all: bool,
        follow: bool,
        wanted: impl Fn(&T) -> bool,
    ) -> Subscription<T> {
        let histories = self.lock();
        let deque = if all {
            &histories.all
        } else {
            &histories.important
        };
        let backlog: Vec<Arc<T>> = deque
            .iter()
            .filter(|i| i.seq() > since_seq && wanted(i))
            .cloned()
            .collect();
        let missed_before_backlog = match deque.front().map(|i| i.seq()) {
            Some(oldest) if since_seq > 0 && oldest > since_seq.saturating_add(1) => {
                oldest - since_seq - 1
            }
            _ => 0,
        };
        let live = follow.then(|| self.tx.subscribe());
        drop(histories);
        Subscription {
            backlog,
            live,
            missed_before_backlog,
        }
    }
}

/// Turns a feed message into a subscriber's, or `None` when the subscriber does not want it.
pub type MessageFn<T, M> = Box<dyn Fn(&T) -> Option<M> + Send>;

/// How a forwarded stream turns feed messages into its own.
pub struct Forward<T, M> {
    /// Sent before everything else.
    pub first: Vec<M>,
    /// A message of the feed, or `None` when this subscriber does not want it.
    pub message: MessageFn<T, M>,
    /// The message that says `missed` messages were dropped for this subscriber.
    pub lagged: Box<dyn Fn(u64) -> M + Send>,
}

/// Sends a subscription into a bounded channel from a task: first messages, a `lagged` notice
/// for what the history no longer held, the backlog, then live messages until the receiver
/// goes away, the feed closes or `cancel` fires.
pub fn forward<T, M>(
    subscription: Subscription<T>,
    forward: Forward<T, M>,
    buffer: usize,
    cancel: CancellationToken,
) -> mpsc::Receiver<M>
where
    T: Send + Sync + 'static,
    M: Send + 'static,
{
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        for first in forward.first {
            if tx.send(first).await.is_err() {
                return;
            }
        }
        if subscription.missed_before_backlog > 0
            && tx
                .send((forward.lagged)(subscription.missed_before_backlog))
                .await
                .is_err()
        {
            return;
        }
        for item in &subscription.backlog {
            if let Some(message) = (forward.message)(item)
                && tx.send(message).await.is_err()
            {
                return;
            }
        }
        let Some(mut live) = subscription.live else {
            return;
        };
        loop {
            let received = tokio::select! {
                r = live.recv() => r,
                () = tx.closed() => return,
                () = cancel.cancelled() => return,
            };
            let message = match received {
                Ok(item) => match (forward.message)(&item) {
                    Some(message) => message,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => (forward.lagged)(missed),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct N(u64);

    impl Sequenced for N {
        fn seq(&self) -> u64 {
            self.0
        }
        fn important(&self) -> bool {
            self.0.is_multiple_of(2)
        }
    }

    fn feed(history: usize, broadcast: usize) -> Feed<N> {
        Feed::new(FeedCapacity { history, broadcast })
    }

    #[test]
    fn the_history_is_bounded_and_important_messages_live_longer() {
        let f = feed(4, 8);
        f.publish((1..=10).map(N));
        let all = f.subscribe(0, true, false, |_| true);
        assert_eq!(
            all.backlog.iter().map(|n| n.0).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        let important = f.subscribe(0, false, false, |_| true);
        assert_eq!(
            important.backlog.iter().map(|n| n.0).collect::<Vec<_>>(),
            [4, 6, 8, 10]
        );
        // After 2, the history no longer holds 3..=6.
        let resumed = f.subscribe(2, true, false, |_| true);
        assert_eq!(resumed.missed_before_backlog, 4);
        let (had, oldest) = f.locate(false, |n| n.0 <= 8);
        assert_eq!((had, oldest.map(|n| n.0)), (Some(8), Some(4)));
        assert_eq!(f.locate(true, |n| n.0 < 3).0, None);
        assert_eq!(f.subscribe(u64::MAX, true, false, |_| true).backlog, []);
    }

    #[test]
    fn a_stalled_subscriber_lags_and_the_others_lose_nothing() {
        let f = feed(16, 8);
        let mut stalled = f.subscribe(0, true, true, |_| true).live.unwrap();
        let mut active = f.subscribe(0, true, true, |_| true).live.unwrap();
        let mut received = Vec::new();
        for n in 1..=100 {
            f.publish([N(n)]);
            while let Ok(item) = active.try_recv() {
                received.push(item.0);
            }
        }
        assert_eq!(received, (1..=100).collect::<Vec<_>>());
        match stalled.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 92),
            other => panic!("expected lagged, got {other:?}"),
        }
    }
}
