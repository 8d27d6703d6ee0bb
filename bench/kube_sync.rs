//! Kubernetes-source benchmark: fedns (the release binary, in its own process) against the
//! in-process fake multi-cluster API servers of `tests/harness`.
//!
//! `cargo bench --bench kube_sync -- [options]` runs two scenarios, each on a fresh host and fresh
//! members seeded through the harness (see `fixture` for the federation):
//!
//! * `small`: 3 members × 5 services; change → answer latency over 200 EndpointSlice readiness
//!   flips, beside fedns's own `fedns_dns_programming_duration_seconds`;
//! * `scale`: 100 members × 1,000 services (every service in every member: 100,000 Services and
//!   100,000 EndpointSlices); time to `/ready`, fedns's memory and CPU, API requests per member
//!   during the first sync, change → answer latency over 100 flips.
//!
//! Both end with a member's return: stop one member, wait until its zonal names fall back to
//! CNAMEs (at least `--outage` seconds), restart it, and time its names answering addresses
//! again. Results go to stdout and `bench/out/kube-sync/results.{txt,json}`; fedns's logs next to
//! them. See `bench/README.md`.

#[path = "kube_sync/fedns_process.rs"]
mod fedns_process;
#[path = "kube_sync/fixture.rs"]
mod fixture;
// Cargo builds benches with `--cfg test` but without libtest, so the harness's own unit-test
// modules compile with their `#[test]` functions stripped and their imports unused.
#[allow(unused_imports)]
#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "interrupt.rs"]
mod interrupt;
#[path = "kube_sync/probe.rs"]
mod probe;
#[allow(dead_code)] // shared with dns_load, which uses all of it
#[path = "udp_client.rs"]
mod udp_client;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;

use crate::fedns_process::{FednsProcess, Histogram, Launch, Memory};
use crate::fixture::Topology;
use crate::harness::FakeCluster;
use crate::probe::{Probe, Shape};

/// The kinds every member's watcher set lists and watches.
const MEMBER_RESOURCES: [&str; 5] = [
    "services",
    "endpointslices",
    "endpoints",
    "ingresses",
    "nodes",
];
const PROGRAMMING_METRIC: &str = "fedns_dns_programming_duration_seconds";
/// How often a name is re-queried while waiting for a change.
const POLL_EVERY: Duration = Duration::from_micros(200);
/// Longest wait for one change to show.
const CHANGE_LIMIT: Duration = Duration::from_secs(5);
/// Pause after each observed change, so consecutive flips are separate watch events.
const SETTLE_BETWEEN_CHANGES: Duration = Duration::from_millis(20);

/// fedns's Kubernetes source on the fake multi-cluster API harness (all on 127.0.0.1).
#[derive(Debug, Parser)]
#[command(name = "kube_sync")]
struct Options {
    /// Scenarios to run, in order: small, scale.
    #[arg(long, value_delimiter = ',', default_value = "small,scale")]
    steps: Vec<String>,
    /// Members of the scale scenario.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Services of the scale scenario (each in every member).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Readiness flips measured in the scale scenario.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Members of the small scenario.
    #[arg(long, default_value_t = 3)]
    small_members: usize,
    /// Services of the small scenario.
    #[arg(long, default_value_t = 5)]
    small_services: usize,
    /// Readiness flips measured in the small scenario.
    #[arg(long, default_value_t = 200)]
    small_changes: usize,
    /// Shortest outage of the returning member, in seconds (it stays down until its names have
    /// fallen back, at most 15 s more).
    #[arg(long, default_value_t = 3.0)]
    outage: f64,
    /// Readiness flips measured right after `/ready`, while fedns writes its first statuses.
    #[arg(long, default_value_t = 20)]
    busy_changes: usize,
    /// Zonal names of the returning member that are polled.
    #[arg(long, default_value_t = 20)]
    return_names: usize,
    /// Skip the member-return step.
    #[arg(long)]
    no_return: bool,
    /// Upper bound on the changes of one scenario, in seconds.
    #[arg(long, default_value_t = 120)]
    change_budget: u64,
    /// fedns --sync-timeout, in seconds; also the longest wait for /ready.
    #[arg(long, default_value_t = 120)]
    sync_timeout: u64,
    /// Extra environment for fedns, e.g. `--fedns-env MALLOC_ARENA_MAX=2` (repeatable).
    #[arg(long, value_parser = parse_env)]
    fedns_env: Vec<(String, String)>,
    /// fedns binary [default: the one cargo bench built, target/release/fedns].
    #[arg(long)]
    fedns: Option<PathBuf>,
    /// Output directory [default: bench/out/kube-sync].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; without it (as under `cargo test --all-targets`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))
}

/// One scenario's size.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    label: &'static str,
    members: usize,
    services: usize,
    changes: usize,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    changes: usize,
    timeouts: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>, timeouts: usize) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            ms(samples[rank - 1])
        };
        Latency {
            changes: samples.len() + timeouts,
            timeouts,
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// fedns's programming-latency histogram over the change window.
#[derive(Debug, Default, Serialize)]
struct Programming {
    observations: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
    /// Upper bound of the highest bucket with an observation.
    max_le_ms: Option<f64>,
}

impl Programming {
    fn of(h: &Histogram) -> Self {
        Programming {
            observations: h.count,
            p50_ms: h.quantile(0.5).map(|s| s * 1e3),
            p99_ms: h.quantile(0.99).map(|s| s * 1e3),
            mean_ms: h.mean().map(|s| s * 1e3),
            max_le_ms: h.max_bound().map(|s| s * 1e3),
        }
    }
}

/// Requests fedns made to the members, from the harness counters.
#[derive(Debug, Default, Serialize)]
struct MemberRequests {
    min: u64,
    mean: f64,
    max: u64,
    /// `"verb resource"` → mean per member.
    by_kind: BTreeMap<String, f64>,
    /// Writes to any member (fedns should make none).
    writes: u64,
}

impl MemberRequests {
    fn of(members: &[FakeCluster]) -> Self {
        let mut totals = Vec::new();
        let mut writes = 0;
        let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
        for m in members {
            let counts = m.request_counts();
            totals.push(counts.values().sum::<u64>());
            writes += m.writes();
            for ((verb, resource), n) in counts {
                *by_kind.entry(format!("{verb} {resource}")).or_default() += n as f64;
            }
        }
        let n = members.len().max(1) as f64;
        by_kind.values_mut().for_each(|v| *v /= n);
        MemberRequests {
            min: totals.iter().copied().min().unwrap_or(0),
            mean: totals.iter().sum::<u64>() as f64 / n,
            max: totals.iter().copied().max().unwrap_or(0),
            by_kind,
            writes,
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct MemberReturn {
    member: String,
    names: usize,
    /// Stop → all polled names answer with a CNAME (probe failures and grace period included).
    withdrawn_after_ms: Option<f64>,
    outage_ms: f64,
    /// `restart()` → the first polled name answers with its address again.
    first_answer_ms: Option<f64>,
    /// `restart()` → every polled name answers with its address again.
    all_answers_ms: Option<f64>,
    /// `restart()` → the member has seen a watch (resumed) or list (relist) request for every
    /// watched kind.
    watches_back_ms: Option<f64>,
    /// List requests after `restart()` (0: every watch resumed from its resourceVersion).
    lists_after_restart: u64,
    /// fedns's programming histogram from the stop until the names are back.
    programming: Programming,
    /// Host writes from the stop until they settled after the return.
    host_writes: u64,
}

/// fedns's resources and the host's write count at the end of a phase.
#[derive(Debug, Default, Serialize)]
struct Snapshot {
    phase: &'static str,
    /// Since fedns was started.
    at_ms: f64,
    memory: Memory,
    cpu_seconds: f64,
    host_writes: u64,
}

#[derive(Debug, Default, Serialize)]
struct ScenarioResult {
    label: String,
    members: usize,
    services: usize,
    zones: usize,
    objects_per_member: usize,
    host_objects: usize,
    seed_ms: f64,
    /// fedns spawn → `/ready` 200 (first full listing of the host and every member).
    ready_ms: f64,
    /// `/ready` → every sampled zonal name answers its address.
    answers_after_ready_ms: f64,
    /// `/ready` → the last host write before 2 s without one.
    host_writes_settled_after_ms: Option<f64>,
    snapshots: Vec<Snapshot>,
    bench_process_memory: Memory,
    member_requests_sync: MemberRequests,
    member_requests_end: MemberRequests,
    /// Host requests by `"verb resource"` up to `/ready`, and by the time writes settled.
    host_requests_ready: BTreeMap<String, u64>,
    host_requests_settled: BTreeMap<String, u64>,
    /// Events on the host once writes settled, by `"type reason"`.
    host_events: BTreeMap<String, usize>,
    /// Changes right after `/ready`, while fedns writes its first statuses, and the host writes
    /// made meanwhile.
    busy_change_latency: Latency,
    busy_host_writes: u64,
    change_latency: Latency,
    programming: Programming,
    member_return: Option<MemberReturn>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Starts a host and the members, seeds them; the time seeding took.
async fn start_clusters(
    topology: &Topology,
) -> Result<(FakeCluster, Vec<FakeCluster>, usize, Duration)> {
    let host = FakeCluster::start("host").await;
    let mut members = Vec::with_capacity(topology.members);
    for i in 0..topology.members {
        members.push(FakeCluster::start(&Topology::member_name(i)).await);
    }
    let seeding = Instant::now();
    for (i, member) in members.iter().enumerate() {
        member.apply_all(fixture::member_objects(topology, i));
    }
    let endpoints: Vec<(String, String)> = members.iter().map(|m| (m.url(), m.token())).collect();
    let host_objects = fixture::host_objects(topology, &endpoints);
    let count = host_objects.len();
    host.apply_all(host_objects);
    Ok((host, members, count, seeding.elapsed()))
}

/// Up to `n` `(member, service)` pairs, each the owner of its zonal name: every member's first
/// owned service, then every member's second, and so on.
fn sample_owned(topology: &Topology, n: usize) -> Vec<(usize, usize)> {
    let owned: Vec<Vec<usize>> = (0..topology.members)
        .map(|m| topology.owned_services(m).collect())
        .collect();
    let mut pairs = Vec::with_capacity(n);
    for round in 0..topology.services {
        for (m, services) in owned.iter().enumerate() {
            if pairs.len() == n {
                return pairs;
            }
            if let Some(&s) = services.get(round) {
                pairs.push((m, s));
            }
        }
    }
    pairs
}

/// Polls sampled zonal names until each answers exactly its owner's address.
fn wait_for_answers(
    probe: &mut Probe,
    topology: &Topology,
    pairs: &[(usize, usize)],
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    for &(m, s) in pairs {
        let name = topology.zonal_name(m, s);
        let want = Shape::Addresses(vec![topology.load_balancer_ip(m, s)]);
        let left = limit.saturating_sub(started.elapsed());
        if probe
            .until(&name, left, Duration::from_millis(5), |a| *a == want)
            .is_none()
        {
            bail!(
                "{name} still answers {:?} after {limit:?}, expected {want:?}",
                probe.shape(&name, Duration::from_millis(500))
            );
        }
    }
    Ok(started.elapsed())
}

/// Waits until the host has seen no write for 2 s; the time of its last write since `since`, or
/// `None` when `limit` passes first.
fn wait_for_host_writes(host: &FakeCluster, since: Instant, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut last = host.writes();
    let mut last_change = Instant::now();
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        let now = host.writes();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= Duration::from_secs(2) {
            return Some(last_change.duration_since(since));
        }
    }
    None
}

/// Flips owned EndpointSlices unready and back, `changes` times in all; each flip timed from the
/// write into the member's store to the zonal answer's change (addresses ↔ CNAME).
fn measure_changes(
    probe: &mut Probe,
    topology: &Topology,
    members: &[FakeCluster],
    changes: usize,
    budget: Duration,
) -> Result<Latency> {
    if changes == 0 {
        return Ok(Latency::of(Vec::new(), 0));
    }
    let pairs = sample_owned(
        topology,
        changes
            .div_ceil(2)
            .min(topology.members * topology.services),
    );
    if pairs.is_empty() {
        bail!("no owned zonal name to flip");
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(changes);
    let mut timeouts = 0;
    'flips: for j in 0..changes.div_ceil(2) {
        let (m, s) = pairs[j % pairs.len()];
        let name = topology.zonal_name(m, s);
        for ready in [false, true] {
            if samples.len() + timeouts == changes || started.elapsed() > budget {
                break 'flips;
            }
            let t0 = Instant::now();
            members[m].apply_json(fixture::endpoint_slice(s, ready));
            let seen = loop {
                let shape = probe.shape(&name, Duration::from_millis(200));
                if (ready && shape.is_addresses()) || (!ready && shape.is_cname()) {
                    break Some(t0.elapsed());
                }
                if t0.elapsed() > CHANGE_LIMIT {
                    break None;
                }
                std::thread::sleep(POLL_EVERY);
            };
            match seen {
                Some(took) => samples.push(took),
                None => {
                    timeouts += 1;
                    eprintln!(
                        "  {name}: no {} within {CHANGE_LIMIT:?}",
                        if ready { "addresses" } else { "CNAME" }
                    );
                    if !ready {
                        // Put it back before moving on.
                        members[m].apply_json(fixture::endpoint_slice(s, true));
                        continue 'flips;
                    }
                }
            }
            std::thread::sleep(SETTLE_BETWEEN_CHANGES);
        }
    }
    Ok(Latency::of(samples, timeouts))
}

/// What the member-return step works with.
struct Federation<'a> {
    topology: &'a Topology,
    host: &'a FakeCluster,
    members: &'a [FakeCluster],
    fedns: &'a FednsProcess,
}

/// Stops `member` until its names fall back (at least `outage`), restarts it, and times its
/// names answering again and its watchers coming back.
async fn member_return(
    probe: &mut Probe,
    federation: Federation<'_>,
    member: usize,
    names: usize,
    outage: Duration,
) -> Result<MemberReturn> {
    let Federation {
        topology,
        host,
        members,
        fedns,
    } = federation;
    let cluster = &members[member];
    let owned: Vec<usize> = topology.owned_services(member).collect();
    let step = (owned.len() / names.max(1)).max(1);
    let polled: Vec<(String, Shape)> = owned
        .iter()
        .step_by(step)
        .take(names)
        .map(|&s| {
            let want = Shape::Addresses(vec![topology.load_balancer_ip(member, s)]);
            (topology.zonal_name(member, s), want)
        })
        .collect();
    for (name, want) in &polled {
        if probe
            .until(
                name,
                Duration::from_secs(5),
                Duration::from_millis(5),
                |a| a == want,
            )
            .is_none()
        {
            bail!("{name} does not answer {want:?} before the outage");
        }
    }
    let requests = |verb: &str| -> Vec<u64> {
        MEMBER_RESOURCES
            .iter()
            .map(|r| cluster.requests(verb, r))
            .collect()
    };
    let lists_before = requests("list");
    let watches_before = requests("watch");
    let histogram_before = Histogram::parse(&fedns.metrics()?, PROGRAMMING_METRIC);
    let host_writes_before = host.writes();

    let stopped = Instant::now();
    cluster.stop().await;
    let mut withdrawn_after = None;
    let fallback_limit = outage + Duration::from_secs(15);
    while stopped.elapsed() < fallback_limit {
        if withdrawn_after.is_none()
            && polled
                .iter()
                .all(|(name, _)| probe.shape(name, Duration::from_millis(200)).is_cname())
        {
            withdrawn_after = Some(stopped.elapsed());
        }
        if withdrawn_after.is_some() && stopped.elapsed() >= outage {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let outage_ms = ms(stopped.elapsed());

    let restarted = Instant::now();
    cluster.restart().await;
    let mut back: Vec<Option<Duration>> = vec![None; polled.len()];
    let mut reconnected = None;
    while restarted.elapsed() < Duration::from_secs(30)
        && (back.iter().any(Option::is_none) || reconnected.is_none())
    {
        for ((name, want), seen) in polled.iter().zip(back.iter_mut()) {
            if seen.is_none() && probe.shape(name, Duration::from_millis(200)) == *want {
                *seen = Some(restarted.elapsed());
            }
        }
        if reconnected.is_none() {
            let (lists, watches) = (requests("list"), requests("watch"));
            let kinds_back = (0..MEMBER_RESOURCES.len())
                .all(|k| lists[k] > lists_before[k] || watches[k] > watches_before[k]);
            if kinds_back {
                reconnected = Some(restarted.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let lists_after_restart = requests("list")
        .iter()
        .zip(&lists_before)
        .map(|(now, before)| now - before)
        .sum();
    let all_back = back.iter().all(Option::is_some);
    let programming = Programming::of(
        &Histogram::parse(&fedns.metrics()?, PROGRAMMING_METRIC).since(&histogram_before),
    );
    wait_for_host_writes(host, restarted, Duration::from_secs(60));
    Ok(MemberReturn {
        member: Topology::member_name(member),
        names: polled.len(),
        withdrawn_after_ms: withdrawn_after.map(ms),
        outage_ms,
        first_answer_ms: back.iter().flatten().min().copied().map(ms),
        all_answers_ms: all_back
            .then(|| back.iter().flatten().max().copied().map(ms))
            .flatten(),
        watches_back_ms: reconnected.map(ms),
        lists_after_restart,
        programming,
        host_writes: host.writes() - host_writes_before,
    })
}

fn count_map(counts: BTreeMap<(String, String), u64>) -> BTreeMap<String, u64> {
    counts
        .into_iter()
        .map(|((verb, resource), n)| (format!("{verb} {resource}"), n))
        .collect()
}

/// Events on the host by `"type reason"` (core/v1 and events.k8s.io/v1).
fn events_by_reason(host: &FakeCluster) -> BTreeMap<String, usize> {
    let mut by_reason = BTreeMap::new();
    for api_version in ["v1", "events.k8s.io/v1"] {
        for event in host.list_json(api_version, "Event", None) {
            let key = format!(
                "{} {}",
                event["type"].as_str().unwrap_or("?"),
                event["reason"].as_str().unwrap_or("?")
            );
            *by_reason.entry(key).or_default() += 1;
        }
    }
    by_reason
}

async fn run_scenario(
    opts: &Options,
    scenario: Scenario,
    mut launch: Launch,
) -> Result<ScenarioResult> {
    let topology = Topology::new(scenario.members, scenario.services);
    if scenario.members == 0 || scenario.services == 0 || !topology.fits() {
        bail!(
            "{}: members and services must be ≥ 1 and members × services < 16M",
            scenario.label
        );
    }
    eprintln!(
        "{}: starting 1 host + {} members, seeding {} services each",
        scenario.label, scenario.members, scenario.services
    );
    let (host, members, host_objects, seeded) = start_clusters(&topology).await?;
    let objects_per_member = members[0].object_count();
    eprintln!("  seeded in {seeded:.2?}; starting fedns");

    launch.kubeconfig = host.kubeconfig_path();
    let mut fedns = FednsProcess::spawn(&launch)?;
    let mut snapshots = Vec::new();
    let snapshot = |phase: &'static str, fedns: &FednsProcess| -> Result<Snapshot> {
        Ok(Snapshot {
            phase,
            at_ms: ms(fedns.started.elapsed()),
            memory: fedns.memory()?,
            cpu_seconds: fedns.cpu_seconds(),
            host_writes: host.writes(),
        })
    };

    let ready = fedns.wait_ready(Duration::from_secs(opts.sync_timeout + 30))?;
    let ready_at = Instant::now();
    snapshots.push(snapshot("ready", &fedns)?);
    let member_requests_sync = MemberRequests::of(&members);
    let host_requests_ready = count_map(host.request_counts());
    eprintln!("  ready after {ready:.2?}");

    let mut probe = Probe::new(fedns.dns)?;
    let sampled = sample_owned(&topology, 20);
    let answers = wait_for_answers(&mut probe, &topology, &sampled, Duration::from_secs(30))?;
    let global = format!(
        "{}.{}.{}.svc.{}.",
        Topology::service_name(0),
        fixture::APP_NAMESPACE,
        fixture::FEDERATION,
        fixture::DOMAIN
    );
    match probe.shape(&global, Duration::from_secs(1)) {
        Shape::Addresses(a) if a.len() == topology.zones() => {}
        other => bail!(
            "{global}: expected {} addresses, got {other:?}",
            topology.zones()
        ),
    }
    eprintln!(
        "  sampled answers correct {answers:.2?} after ready; {} changes while fedns writes statuses",
        opts.busy_changes
    );
    let writes_before = host.writes();
    let busy_change_latency = measure_changes(
        &mut probe,
        &topology,
        &members,
        opts.busy_changes,
        Duration::from_secs(opts.change_budget),
    )?;
    let busy_host_writes = host.writes() - writes_before;
    eprintln!("  waiting for host writes to settle");
    let settled = wait_for_host_writes(&host, ready_at, Duration::from_secs(180));
    snapshots.push(snapshot("host writes settled", &fedns)?);
    let host_requests_settled = count_map(host.request_counts());
    let host_events = events_by_reason(&host);

    eprintln!("  {} changes", scenario.changes);
    let before = Histogram::parse(&fedns.metrics()?, PROGRAMMING_METRIC);
    let change_latency = measure_changes(
        &mut probe,
        &topology,
        &members,
        scenario.changes,
        Duration::from_secs(opts.change_budget),
    )?;
    let after = Histogram::parse(&fedns.metrics()?, PROGRAMMING_METRIC);
    let programming = Programming::of(&after.since(&before));
    snapshots.push(snapshot("changes", &fedns)?);

    let member_return = if opts.no_return {
        None
    } else {
        eprintln!("  member return");
        let federation = Federation {
            topology: &topology,
            host: &host,
            members: &members,
            fedns: &fedns,
        };
        let outage = Duration::from_secs_f64(opts.outage);
        let result = member_return(&mut probe, federation, 0, opts.return_names, outage).await?;
        snapshots.push(snapshot("member return", &fedns)?);
        Some(result)
    };
    fedns.ensure_running()?;
    Ok(ScenarioResult {
        label: scenario.label.to_owned(),
        members: scenario.members,
        services: scenario.services,
        zones: topology.zones(),
        objects_per_member,
        host_objects,
        seed_ms: ms(seeded),
        ready_ms: ms(ready),
        answers_after_ready_ms: ms(answers),
        host_writes_settled_after_ms: settled.map(ms),
        snapshots,
        bench_process_memory: Memory::of(std::process::id())?,
        member_requests_sync,
        member_requests_end: MemberRequests::of(&members),
        host_requests_ready,
        host_requests_settled,
        host_events,
        busy_change_latency,
        busy_host_writes,
        change_latency,
        programming,
        member_return,
    })
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.1} ms"))
}

fn counts_line<T: std::fmt::Display>(counts: &BTreeMap<String, T>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn latency_line(l: &Latency) -> String {
    format!(
        "{} flips, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} timeouts",
        l.changes, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.timeouts
    )
}

fn programming_line(p: &Programming) -> String {
    format!(
        "{} observations, p50 ≈ {}, p99 ≈ {}, mean {}, max ≤ {}",
        p.observations,
        opt_ms(p.p50_ms),
        opt_ms(p.p99_ms),
        opt_ms(p.mean_ms),
        opt_ms(p.max_le_ms)
    )
}

fn render(r: &ScenarioResult, out: &mut String) {
    let _ = writeln!(
        out,
        "== {}: {} members × {} services ({} zones; every service in every member, one ready shard per zone) ==",
        r.label, r.members, r.services, r.zones
    );
    let _ = writeln!(
        out,
        "objects: {} per member (incl. the harness's defaults), {} on the host; seeded in {:.0} ms",
        r.objects_per_member, r.host_objects, r.seed_ms
    );
    let _ = writeln!(
        out,
        "first sync: /ready {:.0} ms after the spawn; sampled zonal names correct {:.1} ms later",
        r.ready_ms, r.answers_after_ready_ms
    );
    let b = &r.busy_change_latency;
    let _ = writeln!(
        out,
        "change → answer right after /ready ({} host writes meanwhile): {}",
        r.busy_host_writes,
        latency_line(b)
    );
    let _ = writeln!(
        out,
        "change → answer once host writes settled: {}",
        latency_line(&r.change_latency)
    );
    let _ = writeln!(
        out,
        "  {PROGRAMMING_METRIC} (same window): {}",
        programming_line(&r.programming)
    );
    let _ = writeln!(
        out,
        "fedns by phase:   at (s)   VmRSS MiB   peak MiB   CPU s   host writes"
    );
    for s in &r.snapshots {
        let _ = writeln!(
            out,
            "  {:<20} {:>6.1}   {:>9.1}   {:>8.1}   {:>5.2}   {:>11}",
            s.phase,
            s.at_ms / 1e3,
            mib(s.memory.rss_kib),
            mib(s.memory.peak_kib),
            s.cpu_seconds,
            s.host_writes
        );
    }
    let _ = writeln!(
        out,
        "bench process (harness) VmRSS {:.1} MiB",
        mib(r.bench_process_memory.rss_kib)
    );
    let s = &r.member_requests_sync;
    let kinds: BTreeMap<String, String> = s
        .by_kind
        .iter()
        .map(|(k, n)| (k.clone(), format!("{n:.2}")))
        .collect();
    let _ = writeln!(
        out,
        "API requests per member up to /ready: min {} / mean {:.1} / max {} ({})",
        s.min,
        s.mean,
        s.max,
        counts_line(&kinds)
    );
    let e = &r.member_requests_end;
    let _ = writeln!(
        out,
        "API requests per member by the end: min {} / mean {:.1} / max {}; writes to members {}",
        e.min, e.mean, e.max, e.writes
    );
    let _ = writeln!(
        out,
        "host requests up to /ready: {}",
        counts_line(&r.host_requests_ready)
    );
    let _ = writeln!(
        out,
        "host requests when writes settled ({} after /ready): {}",
        opt_ms(r.host_writes_settled_after_ms),
        counts_line(&r.host_requests_settled)
    );
    let _ = writeln!(out, "host Events then: {}", counts_line(&r.host_events));
    if let Some(m) = &r.member_return {
        let _ = writeln!(
            out,
            "member return ({}, {} of its zonal names): down {:.0} ms; names fell back to CNAME {} after the stop",
            m.member,
            m.names,
            m.outage_ms,
            opt_ms(m.withdrawn_after_ms)
        );
        let _ = writeln!(
            out,
            "  after restart(): first name answers {}, all {}; watches of all 5 kinds back {} ({} relists)",
            opt_ms(m.first_answer_ms),
            opt_ms(m.all_answers_ms),
            opt_ms(m.watches_back_ms),
            m.lists_after_restart
        );
        let _ = writeln!(
            out,
            "  {PROGRAMMING_METRIC} over the outage and return: {}; host writes {}",
            programming_line(&m.programming),
            m.host_writes
        );
    }
    out.push('\n');
}

fn run(opts: &Options) -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| repo.join("bench/out/kube-sync"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binary = opts
        .fedns
        .clone()
        .or_else(|| option_env!("CARGO_BIN_EXE_fedns").map(PathBuf::from))
        .unwrap_or_else(|| repo.join("target/release/fedns"));
    let mut scenarios = Vec::new();
    for step in &opts.steps {
        scenarios.push(match step.trim() {
            "small" => Scenario {
                label: "small",
                members: opts.small_members,
                services: opts.small_services,
                changes: opts.small_changes,
            },
            "scale" => Scenario {
                label: "scale",
                members: opts.members,
                services: opts.services,
                changes: opts.changes,
            },
            other => bail!("unknown step `{other}` (small, scale)"),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the harness runtime")?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut report = format!(
        "kube_sync: fedns's Kubernetes source on the fake multi-cluster API harness (127.0.0.1, {} cores)\n\
         command: cargo bench --bench kube_sync -- {}\n\
         fedns: {} serve --udp-workers 1 --probe-period 500ms --probe-timeout 500ms \
         --probe-failure-threshold 2 --grace-period 1s --sync-timeout {}s{}\n\
         fedns source: {}\n\
         changes: EndpointSlice ready flips written with FakeCluster::apply_json, zonal name polled over UDP every {:?}\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.is_empty() {
            "(defaults)".to_owned()
        } else {
            args.join(" ")
        },
        binary.display(),
        opts.sync_timeout,
        opts.fedns_env
            .iter()
            .map(|(k, v)| format!(" ({k}={v})"))
            .collect::<String>(),
        source_version(repo),
        POLL_EVERY,
    );
    let mut results = Vec::new();
    for scenario in scenarios {
        let launch = Launch {
            binary: binary.clone(),
            kubeconfig: PathBuf::new(), // the scenario's host, once it runs
            log: out_dir.join(format!("fedns-{}.log", scenario.label)),
            grace_period: Duration::from_secs(1),
            probe_period: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(500),
            probe_failure_threshold: 2,
            sync_timeout: Duration::from_secs(opts.sync_timeout),
            env: opts.fedns_env.clone(),
        };
        // The future runs on this (main) thread: fedns is spawned from it (see FednsProcess::spawn).
        let result = runtime.block_on(run_scenario(opts, scenario, launch))?;
        let mut text = String::new();
        render(&result, &mut text);
        print!("{text}");
        report.push_str(&text);
        results.push(result);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::fs::write(out_dir.join("results.txt"), &report)?;
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "command": format!("cargo bench --bench kube_sync -- {}", args.join(" ")),
            "scenarios": results,
        }))?,
    )?;
    eprintln!("wrote {}", out_dir.join("results.{txt,json}").display());
    Ok(())
}

/// `git describe --always --dirty` of the checkout, for the report.
fn source_version(repo: &Path) -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(repo)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        })
}

fn main() -> ExitCode {
    let opts = Options::parse();
    if !opts.bench {
        eprintln!(
            "kube_sync is a benchmark: run it with `cargo bench --bench kube_sync -- [options]`"
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = fedns_process::install_signal_handler() {
        eprintln!("kube_sync: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube_sync: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
