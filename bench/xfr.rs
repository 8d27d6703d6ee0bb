//! Zone transfers at scale: fedns (in process, on a 2-thread runtime like `fedns serve`) serves a
//! generated federation from the directory source with transfers allowed (TSIG hmac-sha256) and
//! NOTIFY to a real secondary (Knot or NSD, started here on loopback with the recipe of
//! `deploy/secondaries/`). Measures:
//!
//! - a full AXFR of example.com: time and bytes (`--repeat` times);
//! - IXFR after one changed Service address, and after 50 Services changed at once: time, bytes;
//! - `--changes` edits one after another, each timed from the file rename to the secondary
//!   answering the SOA with fedns's new serial (p50/p99/max), then the IXFR spanning all of them.
//!
//! `cargo bench --bench xfr -- [--clusters 100] [--services 10000] [--changes 50] [--secondary knot]`
//! Everything listens on 127.0.0.1; the tree is written to a temporary directory.

#[path = "../tests/common/generated.rs"]
#[allow(dead_code)]
mod generated;
#[path = "../tests/common/secondary.rs"]
#[allow(dead_code)]
mod secondary;
#[path = "../tests/common/tools.rs"]
#[allow(dead_code)]
mod tools;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use fedns::dns::tsig;

use crate::generated::{write_cluster_services, write_federation};
use crate::secondary::{Kind, Received, SECRET, free_port, soa_serial, start_secondary, transfer};

const ZONE: &str = "example.com.";

/// AXFR/IXFR time and size, and change → secondary latency.
#[derive(Debug, Parser)]
struct Options {
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Services (one ServiceDNSRecord each), each placed in 3 clusters.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Edits timed to the secondary, one after another.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Runs of each AXFR/IXFR measurement.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// The secondary: knot or nsd.
    #[arg(long, default_value = "knot")]
    secondary: String,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

/// Polls `check` every millisecond until it gives a value; fails after `limit`.
fn until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `repeat` transfers: the time of each, and the last answer.
fn timed_transfers(
    dns: SocketAddr,
    from: Option<u32>,
    key: &tsig::Key,
    repeat: usize,
) -> Result<(Vec<Duration>, Received)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let received = transfer(dns, ZONE, from, Some(key))
            .map_err(|rc| anyhow::anyhow!("transfer refused, rcode {rc}"))?;
        times.push(start.elapsed());
        last = Some(received);
    }
    Ok((times, last.unwrap()))
}

fn report(label: &str, times: &mut [Duration], r: &Received) -> String {
    times.sort();
    // An incremental answer: current SOA, then old SOA … new SOA … per serial, current SOA.
    let soas = r
        .messages
        .iter()
        .flat_map(|m| &m.answers)
        .filter(|a| a.record_type() == hickory_proto::rr::RecordType::SOA)
        .count();
    let serials = if r.records() > soas && soas > 2 {
        format!("  {} serials", (soas - 2) / 2)
    } else {
        String::new()
    };
    format!(
        "{label:<34} {:>9.1?} (min {:>9.1?}, max {:>9.1?}, n={})  {:>11} bytes  {:>5} messages  {:>8} records{serials}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len(),
        r.bytes,
        r.messages.len(),
        r.records()
    )
}

fn percentiles(label: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    format!(
        "{label:<34} n={:<4} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn write_config(path: &Path, notify: SocketAddr) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "tsigKeys: [{{name: fedns-xfr, algorithm: hmac-sha256, secret: '{SECRET}'}}]\n\
             transfer:\n  allow: [{{network: 127.0.0.0/8, key: fedns-xfr}}]\n  \
             notify: [{{address: '{notify}', key: fedns-xfr}}]\n  notifySource: 127.0.0.1\n\
             # This benchmark polls the SOA every millisecond from loopback: response rate\n\
             # limiting (200 a second per client by default) would drop most of those answers\n\
             # and each drop would cost the 2 s timeout of the poll.\n\
             rrlExempt: [127.0.0.0/8]\n"
        ),
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let opts = Options::parse();
    let kind = match opts.secondary.as_str() {
        "knot" => Kind::Knot,
        "nsd" => Kind::Nsd,
        other => bail!("--secondary {other}: use knot or nsd"),
    };
    let (clusters, services) = (opts.clusters, opts.services);
    let mut out = vec![format!(
        "xfr: {clusters} clusters × {services} services, secondary {kind:?}, load average {} at start",
        loadavg()
    )];
    println!("{}", out[0]);
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source)?;
    let started = Instant::now();
    write_federation(&source, clusters, services, 3)?;
    println!("generated in {:.1?}", started.elapsed());
    let port = free_port();
    let config = dir.path().join("fedns.yaml");
    write_config(&config, SocketAddr::from(([127, 0, 0, 1], port)))?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let args = fedns::config::ServeArgs {
        source: Some(source.clone()),
        config: Some(config),
        dns_listen: vec!["127.0.0.1:0".parse()?],
        admin_listen: Some("127.0.0.1:0".parse()?),
        udp_workers: Some(1),
        ..Default::default()
    };
    let started = Instant::now();
    let running = server_rt.block_on(fedns::app::start(args.resolve()?))?;
    let dns = running.dns_addrs[0];
    let serial = until(Duration::from_secs(600), "fedns serving the zone", || {
        soa_serial(dns, ZONE)
    })?;
    println!("serving after {:.1?}, serial {serial}", started.elapsed());
    let key = tsig::Key::new("fedns-xfr", "hmac-sha256", SECRET).map_err(anyhow::Error::msg)?;

    // Full AXFR, before the secondary exists (nothing else transfers meanwhile).
    let (mut times, axfr) = timed_transfers(dns, None, &key, opts.repeat)?;
    out.push(report("AXFR", &mut times, &axfr));
    println!("{}", out.last().unwrap());

    let secondary = start_secondary(kind, port, dns, SECRET);
    let started = Instant::now();
    until(
        Duration::from_secs(600),
        "the secondary's first transfer",
        || (soa_serial(secondary.addr, ZONE) == Some(serial)).then_some(()),
    )
    .with_context(|| format!("secondary log:\n{}", secondary.log()))?;
    out.push(format!(
        "{:<34} {:>9.1?}",
        format!("{kind:?} first AXFR to serving"),
        started.elapsed()
    ));
    println!("{}", out.last().unwrap());

    // An edit of c0's services file: the first `changed` services placed there move to another
    // address (each edit changes exactly those; earlier edits stay).
    let mut moved = vec![0usize; services];
    let mut edit = |changed: usize| -> Result<()> {
        for (s, m) in moved.iter_mut().enumerate() {
            if placed_rank(s, clusters) < changed {
                *m += 1;
            }
        }
        write_cluster_services(&source, clusters, services, 3, 0, |s| moved[s])?;
        Ok(())
    };
    let next_serial = |after: u32| {
        until(Duration::from_secs(60), "a new serial", || {
            soa_serial(dns, ZONE).filter(|s| *s != after)
        })
    };
    // The secondary has the new serial: the transfer side has committed it too (the SOA query
    // can see a new serial a moment before it is transferable).
    let followed = |serial: u32| {
        until(Duration::from_secs(60), "the secondary following", || {
            (soa_serial(secondary.addr, ZONE) == Some(serial)).then_some(())
        })
        .with_context(|| format!("secondary log:\n{}", secondary.log()))
    };
    let before = serial;
    edit(1)?;
    let one = next_serial(before)?;
    followed(one)?;
    let (mut times, ixfr) = timed_transfers(dns, Some(before), &key, opts.repeat)?;
    out.push(report("IXFR, 1 Service changed", &mut times, &ixfr));
    println!("{}", out.last().unwrap());
    edit(50)?;
    // The engine may publish a file's 50 changes over two flushes (two serials): the serial
    // that holds still for 2 s (longer than the one-second serial step) has all of them.
    let mut fifty = next_serial(one)?;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        if let Some(now) = soa_serial(dns, ZONE).filter(|s| *s != fifty) {
            (fifty, since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    followed(fifty)?;
    let (mut times, ixfr) = timed_transfers(dns, Some(one), &key, opts.repeat)?;
    out.push(report(
        "IXFR, 50 Services changed at once",
        &mut times,
        &ixfr,
    ));
    println!("{}", out.last().unwrap());

    // Edits one after another: rename → the secondary serves the new serial.
    let base = fifty;
    let mut previous = fifty;
    let (mut to_fedns, mut to_secondary) = (Vec::new(), Vec::new());
    for _ in 0..opts.changes {
        let start = Instant::now();
        edit(1)?;
        let new = next_serial(previous)?;
        to_fedns.push(start.elapsed());
        followed(new)?;
        to_secondary.push(start.elapsed());
        previous = new;
    }
    if !to_secondary.is_empty() {
        out.push(percentiles("change → fedns new serial", &mut to_fedns));
        out.push(percentiles(
            &format!("change → {kind:?} new serial"),
            &mut to_secondary,
        ));
        println!("{}\n{}", out[out.len() - 2], out[out.len() - 1]);
        let (mut times, ixfr) = timed_transfers(dns, Some(base), &key, opts.repeat)?;
        out.push(report(
            &format!("IXFR across the {} edits", opts.changes),
            &mut times,
            &ixfr,
        ));
        println!("{}", out.last().unwrap());
    }
    out.push(format!("load average {} at end", loadavg()));
    println!("{}", out.last().unwrap());
    drop(secondary);
    server_rt.block_on(running.stop(Duration::ZERO));
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out/xfr");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("results.txt"), out.join("\n") + "\n")?;
    Ok(())
}

/// The position of service `s` among the services placed in cluster 0 (in file order), or
/// `usize::MAX` when it is not placed there.
fn placed_rank(s: usize, clusters: usize) -> usize {
    let in_c0 = |s: usize| (0..3).any(|k| (s + k).is_multiple_of(clusters));
    if !in_c0(s) {
        return usize::MAX;
    }
    (0..s).filter(|t| in_c0(*t)).count()
}
