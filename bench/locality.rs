//! Cost of per-client answers on the answer path: the demo federation in process, the global
//! name answered plain (no strategy; also with an EDNS Client Subnet option, the share of the cost
//! that is ECS itself), `nearest` with an EDNS Client Subnet, `nearest` by source
//! address, and `weighted`, each through `respond_from` on one thread; then `nearest` with a
//! GeoIP-sized table (200,000 database networks beside the 200 rows), whose clients are placed
//! by a database network. Prints queries per CPU-second of each and its ratio to the plain one
//! (the issue asks for at least 0.9), and how long the GeoIP rows took to index.
//!
//! `cargo bench --bench locality -- [--queries 2000000] [--only <case name part>]`

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use fedns::dns::responder::{Limits, Transport, respond_from};
use fedns::dns::store::RecordStore;
use fedns::federation::engine::{Engine, Settings};
use fedns::federation::locality::{ClientNetwork, LocationTable, Strategy};
use fedns::federation::model::{FederationObject, ObjectKey, ServiceRecordSpec, SourceEvent};

#[derive(Debug, Parser)]
struct Options {
    /// Queries per case.
    #[arg(long, default_value_t = 2_000_000)]
    queries: u64,
    /// Run only the cases whose name holds this text (and plain, the baseline), e.g. for
    /// `perf record`.
    #[arg(long)]
    only: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const NGINX: &str = "nginx.test.galactic.svc.example.com.";

/// The demo, with nginx's ServiceDNSRecord given `strategy`.
fn demo(table: &Arc<LocationTable>, strategy: Option<Strategy>) -> Arc<RecordStore> {
    let store = Arc::new(RecordStore::new());
    let mut engine = Engine::new(
        store.clone(),
        Settings {
            locality: table.clone(),
            ..Settings::default()
        },
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let snapshot = fedns::source::dir::load(root.join("deploy/demo")).expect("the demo loads");
    let now = Instant::now();
    for event in snapshot.initial_events() {
        engine.apply(event, now);
    }
    let nginx = ServiceRecordSpec {
        key: ObjectKey::new("test", "nginx"),
        domain_ref: "galactic".into(),
        record_ttl: 300,
        dns_prefix: None,
        external_name: None,
        allow_service_without_endpoints: false,
        strategy,
        uid: None,
    };
    engine.apply(
        SourceEvent::ApplyFederation(FederationObject::ServiceRecord(nginx)),
        now,
    );
    engine.flush(now);
    store
}

/// A query for NGINX A with EDNS, and a client subnet option when given.
fn query(ecs: Option<(u16, u8, &[u8])>) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in NGINX.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    match ecs {
        Some((family, source, address)) => {
            let option_len = 4 + address.len() as u16;
            p.extend_from_slice(&(4 + option_len).to_be_bytes());
            p.extend_from_slice(&[0, 8]);
            p.extend_from_slice(&option_len.to_be_bytes());
            p.extend_from_slice(&family.to_be_bytes());
            p.extend_from_slice(&[source, 0]);
            p.extend_from_slice(address);
        }
        None => p.extend_from_slice(&[0, 0]),
    }
    p
}

/// This thread's CPU time.
fn cpu() -> std::time::Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .expect("getrusage");
    let t = usage.user_time();
    let s = usage.system_time();
    std::time::Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        + std::time::Duration::new(s.tv_sec() as u64, s.tv_usec() as u32 * 1000)
}

fn main() {
    let opts = Options::parse();
    let row = |network: &str, zone: &str| ClientNetwork {
        network: network.into(),
        region: "us".into(),
        zone: Some(zone.into()),
    };
    // A table of realistic size: 200 rows, the clients' two near the end.
    let mut rows: Vec<ClientNetwork> = (0..198)
        .map(|i| ClientNetwork {
            network: format!("10.{}.0.0/16", i),
            region: format!("r{}", i % 7),
            zone: None,
        })
        .collect();
    rows.push(row("192.0.2.0/24", "us1"));
    rows.push(row("2001:db8::/32", "us2"));
    let table = Arc::new(LocationTable::new(&rows, Default::default()).expect("valid table"));
    let limits = Limits {
        locality: Some(table.clone()),
        ..Limits::default()
    };
    let plain = demo(&table, None);
    let (geoip_table, indexing) = with_geoip(&table);
    println!(
        "indexed {} GeoIP networks in {indexing:?}",
        GEOIP_V4 + GEOIP_V6
    );
    let geoip_table = Arc::new(geoip_table);
    let geoip_limits = Limits {
        locality: Some(geoip_table.clone()),
        ..Limits::default()
    };
    let geoip_nearest = demo(&geoip_table, Some(Strategy::Nearest));
    let nearest = demo(&table, Some(Strategy::Nearest));
    let weights = [("us-east".to_owned(), 1), ("us-west".to_owned(), 1)];
    let weighted = demo(
        &table,
        Some(Strategy::Weighted {
            weights: weights.into_iter().collect(),
        }),
    );
    let source = Some("192.0.2.1".parse().expect("an address"));
    let cases = [
        ("plain (no strategy)", &plain, query(None), source, &limits),
        (
            "plain, ECS IPv4 /24",
            &plain,
            query(Some((1, 24, &[192, 0, 2]))),
            None,
            &limits,
        ),
        (
            "plain, ECS IPv6 /48",
            &plain,
            query(Some((2, 48, &[0x20, 0x01, 0x0d, 0xb8, 0, 0]))),
            None,
            &limits,
        ),
        (
            "nearest, ECS IPv4 /24",
            &nearest,
            query(Some((1, 24, &[192, 0, 2]))),
            None,
            &limits,
        ),
        (
            "nearest, ECS IPv6 /48",
            &nearest,
            query(Some((2, 48, &[0x20, 0x01, 0x0d, 0xb8, 0, 0]))),
            None,
            &limits,
        ),
        (
            "nearest, source address",
            &nearest,
            query(None),
            source,
            &limits,
        ),
        ("weighted", &weighted, query(None), source, &limits),
        (
            "nearest, GeoIP, ECS IPv4 /24",
            &geoip_nearest,
            query(Some((1, 24, &[20, 1, 2]))),
            None,
            &geoip_limits,
        ),
        (
            "nearest, GeoIP, ECS IPv6 /56",
            &geoip_nearest,
            query(Some((2, 56, &[0x2a, 0, 0, 0x10, 0, 0, 0]))),
            None,
            &geoip_limits,
        ),
    ];
    let selected: Vec<_> = cases
        .iter()
        .enumerate()
        .filter(|(i, (what, ..))| {
            *i == 0 || opts.only.as_ref().is_none_or(|o| what.contains(o.as_str()))
        })
        .map(|(_, case)| case)
        .collect();
    // The cases take turns, a slice of the queries each per round, so that a change in the
    // machine's load (a shared VM) weighs on every case alike instead of on whichever ran then.
    let per_round = (opts.queries / ROUNDS).max(1);
    let mut spent = vec![std::time::Duration::ZERO; selected.len()];
    let mut out = Vec::with_capacity(65_535);
    for _ in 0..ROUNDS {
        for (i, (_, store, packet, client, limits)) in selected.iter().enumerate() {
            let started = cpu();
            for _ in 0..per_round {
                let answered =
                    respond_from(packet, store, Transport::Udp, limits, *client, &mut out);
                std::hint::black_box(answered);
            }
            spent[i] += cpu() - started;
        }
    }
    println!("{:<30} {:>14} {:>10}", "case", "qps/CPU-s", "vs plain");
    let qps = |i: usize| (per_round * ROUNDS) as f64 / spent[i].as_secs_f64();
    for (i, (what, ..)) in selected.iter().enumerate() {
        println!("{what:<30} {:>14.0} {:>10.3}", qps(i), qps(i) / qps(0));
    }
}

/// Rounds the cases take turns in.
const ROUNDS: u64 = 40;

const GEOIP_V4: u32 = 150_000;
const GEOIP_V6: u32 = 50_000;

/// `table` with a GeoIP-sized set of database networks: IPv4 /22 to /24 from 20.0.0.0 and IPv6
/// /48s from 2a00::, in three countries mapped to us, eu and ap. Also how long indexing took.
fn with_geoip(table: &LocationTable) -> (LocationTable, std::time::Duration) {
    use fedns::dns::rrl::Prefix;
    use fedns::federation::geoip::{GeoipCode, GeoipNetwork, GeoipRegions};
    let regions = [("US", "us"), ("DE", "eu"), ("JP", "ap")];
    let codes = regions.map(|(c, _)| GeoipCode {
        continent: false,
        code: c.as_bytes().try_into().expect("two letters"),
    });
    let regions = GeoipRegions::new(
        &regions
            .iter()
            .map(|(c, r)| (c.to_string(), r.to_string()))
            .collect(),
    )
    .expect("valid geoipRegions");
    let v4 = (0..GEOIP_V4).map(|i| GeoipNetwork {
        network: Prefix {
            addr: std::net::Ipv4Addr::from((20u32 << 24) + (i << 8)).into(),
            len: 24 - (i % 3) as u8,
        },
        code: codes[i as usize % 3],
    });
    let v6 = (0..GEOIP_V6).map(|i| GeoipNetwork {
        network: Prefix {
            addr: std::net::Ipv6Addr::from((0x2a00u128 << 112) + ((i as u128) << 80)).into(),
            len: 48,
        },
        code: codes[i as usize % 3],
    });
    let networks: Vec<GeoipNetwork> = v4.chain(v6).collect();
    let started = Instant::now();
    let table = table.clone().with_geoip(&regions, &networks);
    (table, started.elapsed())
}
