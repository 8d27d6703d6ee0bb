//! Start-up order on the harness: records are listed after the Domains and KubeFedClusters after
//! their Secrets, so a start logs no warning about a Domain or token Secret that merely had not
//! been listed yet. This test binary captures fedns's log (a process-wide subscriber), so it holds
//! only this test.

mod common;
mod harness;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::federation::{G, federation, join, service, until};
use common::{Server, namespace};
use harness::{Clusters, FakeCluster};

/// Where the log goes: WARN and above, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_warns_about_nothing_that_is_only_listed_later() {
    if Clusters::kubeconfigs_from_env().is_some() {
        eprintln!("skipping: this test delays listings on the harness");
        return;
    }
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let host_cluster = FakeCluster::start("host").await;
    let host = host_cluster.client().await;
    federation(&host).await;
    let c1 = FakeCluster::start("c1").await;
    let client = c1.client().await;
    namespace(&client, "test").await;
    service(&client, "10.0.0.1", true).await;
    join(&host, "c1", &c1.url(), &c1.token()).await;
    // The first listings of Domains and Secrets fail once, so they come later than the
    // records' and KubeFedClusters' would if nothing ordered them.
    host_cluster.fail_next(1, 500, "/domains?");
    host_cluster.fail_next(1, 500, "/secrets?");

    let kubeconfig = host_cluster.kubeconfig_path();
    let server = Server::start_configured(
        |_, _| {},
        |args| {
            args.source = None;
            args.kubeconfig = Some(kubeconfig);
            args.sync_timeout = Some(Duration::from_secs(10));
            args.propagation = Some(false);
            args.leader_elect = Some(false);
        },
    )
    .await;
    until(&server, G, Duration::from_secs(10), |a| {
        a == "NoError A 10.0.0.1"
    })
    .await;
    let text = log.text();
    // The delays happened (each failing watcher says so once)...
    for resource in ["resource=\"domains\"", "resource=\"secrets\""] {
        assert!(
            text.lines()
                .any(|l| l.contains("watch failing") && l.contains(resource)),
            "{resource} did not fail first:\n{text}"
        );
    }
    // ...and nothing was reported missing because of them.
    for spurious in ["record problem", "member not connected", "DomainNotFound"] {
        assert!(
            !text.contains(spurious),
            "spurious {spurious:?} at start:\n{text}"
        );
    }
    server.stop().await;
}
