//! Responsiveness while the engine is busy: fedns (in process, on a 2-thread runtime like
//! `fedns serve`) serves a generated federation from the directory source; one member's
//! KubeFedCluster readiness flips every `--flip-ms` (each flip recomputes every record) and
//! `/metrics` is scraped without pause, while a client on its own thread measures `/healthz` and
//! TCP DNS latency. Prints p50/p99/max of both and how many flushes ran. A Lease election with a
//! 2 s renew deadline runs on the same runtime against an in-process fake API server (the test
//! harness): the leader must never step down while the engine is busy.
//!
//! `cargo bench --bench engine_busy -- [--clusters 100] [--services 10000] [--seconds 20]`
//! Everything listens on 127.0.0.1; the tree is written to a temporary directory.

#[path = "../tests/common/generated.rs"]
mod generated;
// Cargo builds benches with `--cfg test` but without libtest, so the harness's own unit-test
// modules compile with their `#[test]` functions stripped and their imports unused.
#[allow(unused_imports)]
#[path = "../tests/harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::generated::{kubefed_cluster, programming, write_federation};

/// Latency of /healthz and TCP DNS while the engine recomputes continuously.
#[derive(Debug, Parser)]
struct Options {
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Services (one ServiceDNSRecord each), each placed in 3 clusters.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Measuring time.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Readiness flip period of the first member.
    #[arg(long, default_value_t = 200)]
    flip_ms: u64,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// One A query over a fresh TCP connection; returns the response length.
async fn tcp_query(addr: std::net::SocketAddr, packet: &[u8]) -> Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(&(packet.len() as u16).to_be_bytes())
        .await?;
    stream.write_all(packet).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf.len())
}

fn query_packet(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.metadata.id = 7;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn percentiles(label: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    format!(
        "{label:<10} n={:<6} p50={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    )
}

fn main() -> Result<()> {
    let opts = Options::parse();
    // Warnings (a failing Lease renewal, say) on stderr; RUST_LOG for more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source)?;
    let generated = Instant::now();
    write_federation(&source, opts.clusters, opts.services, 3)?;
    println!(
        "generated {} clusters × {} services in {:.1?}",
        opts.clusters,
        opts.services,
        generated.elapsed()
    );

    // The server's runtime: 2 worker threads, as `fedns serve` runs it.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args = fedns::config::ServeArgs {
        source: Some(source.clone()),
        dns_listen: vec!["127.0.0.1:0".parse()?],
        admin_listen: Some("127.0.0.1:0".parse()?),
        udp_workers: Some(1),
        ..Default::default()
    };
    let started = Instant::now();
    let running = server_rt.block_on(fedns::app::start(args.resolve()?))?;
    let (dns, admin) = (running.dns_addrs[0], running.admin_addr);
    println!("serving after {:.1?}", started.elapsed());

    // A leader renewing its Lease on the same runtime, with a 2 s renew deadline.
    let lease_shutdown = fedns::shutdown::Shutdown::new();
    let (_host, leadership) = server_rt.block_on(async {
        let host = harness::FakeCluster::start("host").await;
        host.apply_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "kube-federation-system"},
        }));
        let settings = fedns::k8s::lease::LeaseSettings {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            ..fedns::k8s::lease::LeaseSettings::new("kube-federation-system")
        };
        let mut leadership =
            fedns::k8s::lease::start(host.client().await, settings, lease_shutdown.clone());
        tokio::time::timeout(Duration::from_secs(10), leadership.acquired())
            .await
            .context("the Lease was not acquired within 10 s")?;
        anyhow::Ok((host, leadership))
    })?;
    let step_downs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let _runtime = server_rt.enter();
        let mut flag = leadership.flag();
        let step_downs = step_downs.clone();
        server_rt.spawn(async move {
            while flag.changed().await.is_ok() {
                if !*flag.borrow_and_update() {
                    step_downs.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, flip) = (stop.clone(), source.join("flip.json"));
        let period = Duration::from_millis(opts.flip_ms);
        std::thread::spawn(move || {
            let mut ready = false;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::write(&flip, kubefed_cluster("c0", 0, ready));
                ready = !ready;
                std::thread::sleep(period);
            }
        })
    };
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut healthz, mut answers, flushes, busy) = client_rt.block_on(async {
        let scraper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = http_get(admin, "/metrics").await;
                }
            })
        };
        let before = programming(&http_get(admin, "/metrics").await?);
        let packet = query_packet("s1.load.load.svc.example.com.");
        let (mut healthz, mut answers) = (Vec::new(), Vec::new());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(opts.seconds) {
            let t = Instant::now();
            http_get(admin, "/healthz").await.context("/healthz")?;
            healthz.push(t.elapsed());
            let t = Instant::now();
            tcp_query(dns, &packet).await.context("TCP DNS")?;
            answers.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = scraper.await;
        let after = programming(&http_get(admin, "/metrics").await?);
        anyhow::Ok((healthz, answers, after.0 - before.0, after.1 - before.1))
    })?;
    let _ = flipper.join();
    println!(
        "{} flushes, {busy:.1}s from source event to published answers in total",
        flushes
    );
    println!("{}", percentiles("/healthz", &mut healthz));
    println!("{}", percentiles("TCP DNS", &mut answers));
    let stepped = step_downs.load(Ordering::Relaxed);
    let leading = leadership.is_leader();
    println!(
        "Lease (renew deadline 2 s, retry 500 ms): {stepped} step-downs; leading at the end: {leading}"
    );
    lease_shutdown.trigger();
    server_rt.block_on(running.stop(Duration::ZERO));
    if stepped > 0 || !leading {
        anyhow::bail!("the leader stepped down while the engine was busy");
    }
    Ok(())
}
