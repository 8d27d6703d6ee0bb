//! One kube-runtime watcher turned into model changes, shared by the member and host watchers.
//!
//! A relist (first listing, 410 Gone, reconnect) is buffered until complete and handed over as one
//! [`Change::Reset`], so there is no window of missing records. Watch errors, timeouts and 403s are
//! logged and retried with a backoff capped at a few seconds ([`CappedBackoff`]); they never
//! withdraw anything. An *empty* relist of a kind that had objects is not trusted (an API server
//! restored empty, an RBAC slip): the old objects are kept and the event is reported.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::federation::model::SourceEvent;

/// A change of one watched kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<O, I> {
    /// A complete relist: replaces everything of this kind.
    Reset(Vec<O>),
    Apply(O),
    Delete(I),
}

/// What happened to the watch itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A full listing completed (the first one matters for readiness).
    Listed,
    /// The watch failed and will be retried; records are kept.
    Failed(String),
    /// An empty relist was ignored; the old objects are kept.
    EmptyRelistIgnored,
}

/// Exponential backoff from 100 ms, doubling, capped (default 4 s), with ±20% jitter; resets after
/// a success. kube-runtime's default grows to 30 s, which users measured as minute-long recoveries.
#[derive(Debug, Clone)]
pub struct CappedBackoff {
    next: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl CappedBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            | 1;
        Self {
            next: min,
            min,
            max,
            seed,
        }
    }

    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        0.8 + (self.seed % 1000) as f64 / 2500.0
    }
}

impl Default for CappedBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(4))
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next.mul_f64(self.jitter()).min(self.max);
        self.next = (self.next * 2).min(self.max);
        Some(delay)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs a watcher on `api` until `events` closes.
///
/// `strip` turns an object into what the model keeps (`None`: skip it, already logged); `id`
/// names a deleted object. `sink` turns each change into the event to send, if any; `notify`
/// receives the watch's own events.
pub async fn run<K, O, I>(
    api: Api<K>,
    label: &str,
    strip: impl Fn(K) -> Option<O>,
    id: impl Fn(&K) -> Option<I>,
    mut sink: impl FnMut(Change<O, I>) -> Option<SourceEvent>,
    notify: impl Fn(Notice),
    events: &mpsc::Sender<SourceEvent>,
) where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let stream =
        watcher::watcher(api, watcher::Config::default()).backoff(CappedBackoff::default());
    let mut stream = std::pin::pin!(stream);
    let mut relist: Option<Vec<O>> = None;
    let mut had_objects = false;
    let mut send = async |change| match sink(change) {
        Some(event) => events.send(event).await.is_ok(),
        None => !events.is_closed(),
    };
    while let Some(event) = stream.next().await {
        let alive = match event {
            Ok(Event::Init) => {
                relist = Some(Vec::new());
                true
            }
            Ok(Event::InitApply(object)) => {
                if let (Some(buffer), Some(object)) = (&mut relist, strip(object)) {
                    buffer.push(object);
                }
                true
            }
            Ok(Event::InitDone) => {
                let objects = relist.take().unwrap_or_default();
                notify(Notice::Listed);
                if objects.is_empty() && had_objects {
                    tracing::warn!(
                        watch = label,
                        "empty relist ignored: keeping the objects seen before"
                    );
                    notify(Notice::EmptyRelistIgnored);
                    true
                } else {
                    had_objects = !objects.is_empty();
                    send(Change::Reset(objects)).await
                }
            }
            Ok(Event::Apply(object)) => match strip(object) {
                Some(object) => {
                    had_objects = true;
                    send(Change::Apply(object)).await
                }
                None => true,
            },
            Ok(Event::Delete(object)) => match id(&object) {
                Some(id) => send(Change::Delete(id)).await,
                None => true,
            },
            Err(error) => {
                tracing::warn!(watch = label, %error, "watch failed; retrying (records are kept)");
                notify(Notice::Failed(error.to_string()));
                true
            }
        };
        if !alive {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut b = CappedBackoff::new(Duration::from_millis(100), Duration::from_secs(4));
        let delays: Vec<Duration> = (&mut b).take(12).collect();
        assert!(delays[0] <= Duration::from_millis(120));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(4)));
        assert!(delays[11] >= Duration::from_millis(3200), "{delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(120));
    }
}
