//! A work queue of object keys, in the manner of client-go's: a key waits at most once however
//! often it is added, is never worked on by two workers at once (added while in progress, it runs
//! again after), can be added after a delay, and carries a per-key failure backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug)]
struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Added while active: queue again when done.
    again: HashSet<K>,
    failures: HashMap<K, u32>,
    closed: bool,
}

/// Cloneable handle to one queue.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Arc<Mutex<State<K>>>,
    notify: Arc<Notify>,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            notify: self.notify.clone(),
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// A queue whose failure backoff doubles from `min_backoff` up to `max_backoff`.
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                again: HashSet::new(),
                failures: HashMap::new(),
                closed: false,
            })),
            notify: Arc::new(Notify::new()),
            min_backoff,
            max_backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.closed || s.queued.contains(&key) {
            return;
        }
        if s.active.contains(&key) {
            s.again.insert(key);
            return;
        }
        s.queued.insert(key.clone());
        s.ready.push_back(key);
        drop(s);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` after its next failure backoff (doubling per consecutive failure).
    pub fn retry(&self, key: K) -> Duration {
        let delay = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            let delay = self
                .min_backoff
                .saturating_mul(1u32 << (*n).min(16))
                .min(self.max_backoff);
            *n += 1;
            delay
        };
        self.add_after(key, delay);
        delay
    }

    /// Clears the failure count of `key` (it succeeded).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to work on; `None` once closed. Call [`WorkQueue::done`] after.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    if !s.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; it runs again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.lock();
            s.active.remove(key);
            s.again.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Keys waiting (not counting those in progress).
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every worker with `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(Duration::from_millis(10), Duration::from_millis(40))
    }

    #[tokio::test]
    async fn a_key_waits_once_however_often_added() {
        let q = queue();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_in_progress_runs_again_after() {
        let q = queue();
        q.add("a");
        let k = q.next().await.unwrap();
        q.add("a");
        assert!(q.is_empty(), "not handed to a second worker");
        q.done(&k);
        assert_eq!(q.next().await, Some("a"));
    }

    #[tokio::test]
    async fn retry_backs_off_doubling_to_the_cap_and_forget_resets() {
        let q = queue();
        let delays: Vec<Duration> = (0..4).map(|_| q.retry("a")).collect();
        assert_eq!(delays, [10, 20, 40, 40].map(Duration::from_millis).to_vec());
        q.forget(&"a");
        assert_eq!(q.retry("a"), Duration::from_millis(10));
        assert_eq!(q.next().await, Some("a"));
    }

    #[tokio::test]
    async fn close_ends_waiting_workers() {
        let q = queue();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
