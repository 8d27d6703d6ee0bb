//! The engine's heavy work stays off the async runtime: while a large federation is recomputed
//! over and over (a member's readiness flips, which recomputes every record) and `/metrics` is
//! scraped without pause, `/healthz` and TCP DNS keep answering promptly on the same 2-thread
//! runtime `fedns serve` uses.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::generated::{kubefed_cluster, programming, write_federation};
use common::*;
use hickory_proto::rr::RecordType;

const CLUSTERS: usize = 20;
const SERVICES: usize = 2_000;
/// Far above a prompt answer (a few ms), far below one full recompute of this federation in a
/// debug build (seconds), which is how long a request used to wait behind the engine.
const PROMPT: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_tcp_dns_answer_promptly_while_the_engine_recomputes_everything() {
    // Every service in every cluster: each flip recomputes 40,000 shards.
    let server = Arc::new(
        Server::start_with(|source, _| {
            write_federation(source, CLUSTERS, SERVICES, CLUSTERS).unwrap()
        })
        .await,
    );
    let name = "s1.load.load.svc.example.com.";
    let mut tcp = server.tcp_client().await;
    let first = summary(&ask(&mut tcp, name, RecordType::A).await);
    assert!(first.starts_with("NoError A "), "{first}");
    let before = programming(&server.admin_get("/metrics").await.1);

    let stop = Arc::new(AtomicBool::new(false));
    // Every flip of c0's readiness recomputes all records.
    let flipper = {
        let (stop, flip) = (stop.clone(), server.source().join("flip.json"));
        tokio::spawn(async move {
            let mut ready = false;
            while !stop.load(Ordering::Relaxed) {
                tokio::fs::write(&flip, kubefed_cluster("c0", 0, ready))
                    .await
                    .unwrap();
                ready = !ready;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    // Scrapes used to wait on the engine's lock from an async handler.
    let scraper = {
        let (stop, server) = (stop.clone(), server.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                server.admin_get("/metrics").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut healthz = Vec::new();
    let mut dns = Vec::new();
    let start = Instant::now();
    while start.elapsed() < WINDOW {
        let t = Instant::now();
        let (code, _) = server.admin_get("/healthz").await;
        assert_eq!(code, 200);
        healthz.push(t.elapsed());
        let t = Instant::now();
        let answer = summary(&ask(&mut tcp, name, RecordType::A).await);
        assert!(answer.starts_with("NoError"), "{answer}");
        dns.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    flipper.await.unwrap();
    scraper.await.unwrap();

    // The engine really was busy: full recomputations took at least a second of the window.
    let after = programming(&server.admin_get("/metrics").await.1);
    let (flushes, busy) = (after.0 - before.0, after.1 - before.1);
    assert!(
        flushes >= 1.0 && busy >= 1.0,
        "the engine flushed {flushes} times in {busy:.2}s"
    );
    let worst = |samples: &[Duration]| samples.iter().max().copied().unwrap_or_default();
    assert!(
        worst(&healthz) < PROMPT,
        "slowest /healthz of {}: {:?}",
        healthz.len(),
        worst(&healthz)
    );
    assert!(
        worst(&dns) < PROMPT,
        "slowest TCP DNS answer of {}: {:?}",
        dns.len(),
        worst(&dns)
    );
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}
