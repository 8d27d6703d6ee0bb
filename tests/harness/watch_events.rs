//! A kube-rs watcher as a stream of short event strings, for tests and benches that check what a
//! watcher sees (`Init`, `InitApply(name)`, `InitDone`, `Apply(name)`, `Delete(name)`, `Error`).

use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

/// Runs a kube-rs watcher (with its default backoff) and reports events as short strings:
/// `Init`, `InitApply(name)`, `InitDone`, `Apply(name)`, `Delete(name)`, `Error`.
pub fn spawn_watcher<K>(api: Api<K>, config: watcher::Config) -> mpsc::UnboundedReceiver<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let text = match event {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitApply(o)) => format!("InitApply({})", o.name_any()),
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::Apply(o)) => format!("Apply({})", o.name_any()),
                Ok(watcher::Event::Delete(o)) => format!("Delete({})", o.name_any()),
                Err(_) => "Error".to_string(),
            };
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for an event equal to `wanted`, returning the events seen before it.
pub async fn expect_event(
    rx: &mut mpsc::UnboundedReceiver<String>,
    wanted: &str,
    within: Duration,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if event == wanted => return seen,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("watcher ended while waiting for {wanted}; saw {seen:?}"),
            Err(_) => panic!("no {wanted} within {within:?}; saw {seen:?}"),
        }
    }
}
