//! Fault modes for the fault-tolerance tests, kept apart from the cluster's own controls:
//! a persistent 403 on one resource ([`FakeCluster::forbid`]), Services gone while the cluster
//! was down ([`FakeCluster::empty_services_while_down`]), an address that refuses
//! connections ([`refused_url`]), an API server that accepts connections and never answers
//! ([`Blackhole`]), kubeconfigs pointing at either ([`kubeconfig_for`]), and a recorder of when
//! requests of one verb and resource arrive ([`RequestClock`]), to see how a retry loop spaces
//! them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::FakeCluster;
use super::clusters::{KubeconfigEntry, kubeconfig_yaml};

impl FakeCluster {
    /// Every list and watch of `resource` (a plural: `nodes`, `services`) gets 403 Forbidden
    /// with an RBAC-style message until [`clear_faults`](Self::clear_faults); other resources
    /// are served. The requests are counted as usual ([`requests`](Self::requests)).
    pub fn forbid(&self, resource: &str) {
        // kube-rs always sends a query (`?limit=`, `?watch=`), so `/<plural>?` matches exactly
        // this collection (`/endpoints?` is not `/endpointslices?`).
        self.fail_next(usize::MAX, 403, &format!("/{resource}?"));
    }

    /// Deletes every Service while the cluster is down (stopped, then restarted with a fresh
    /// watch history), so its watchers come back to an empty relist of Services: what a
    /// deletion during a watch outage, or an API server restored empty, looks like.
    pub async fn empty_services_while_down(&self) {
        self.stop().await;
        for service in self.list_json("v1", "Service", None) {
            let namespace = service["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            let name = service["metadata"]["name"].as_str().unwrap_or_default();
            assert!(self.delete("v1", "Service", Some(namespace), name));
        }
        self.restart().await;
    }
}

/// `http://127.0.0.1:<port>` where nothing listens: connections are refused.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().expect("bound address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// A TCP listener on loopback that accepts every connection and never sends a byte: an API
/// server that hangs. Connections are held until it is dropped.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        });
        Blackhole {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes a kubeconfig for `server` (context `name`, any token) into `dir`.
pub fn kubeconfig_for(dir: &Path, name: &str, server: &str) -> PathBuf {
    let path = dir.join(format!("{name}.kubeconfig"));
    let entry = KubeconfigEntry {
        name: name.to_string(),
        server: server.to_string(),
        token: "fedns-harness-unused".to_string(),
        ca_bundle: None,
    };
    std::fs::write(&path, kubeconfig_yaml(&[entry], name)).expect("writing a kubeconfig");
    path
}

/// When requests of one verb and resource reached a cluster, sampled every 5 ms in the
/// background (from [`FakeCluster::requests`]) until dropped.
#[derive(Debug)]
pub struct RequestClock {
    times: Arc<std::sync::Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl RequestClock {
    pub fn start(cluster: &FakeCluster, verb: &str, resource: &str) -> RequestClock {
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let cluster = cluster.clone();
        let (verb, resource) = (verb.to_string(), resource.to_string());
        let seen = times.clone();
        let task = tokio::spawn(async move {
            let mut last = cluster.requests(&verb, &resource);
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let now = cluster.requests(&verb, &resource);
                if now > last {
                    let at = Instant::now();
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.extend(std::iter::repeat_n(at, (now - last) as usize));
                    last = now;
                }
            }
        });
        RequestClock { times, task }
    }

    /// When each request was seen, in order.
    pub fn times(&self) -> Vec<Instant> {
        self.times.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for RequestClock {
    fn drop(&mut self) {
        self.task.abort();
    }
}
