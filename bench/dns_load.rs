//! Reproducible load benchmark: fedns against Knot DNS and NSD on the same data.
//!
//! `cargo bench --bench dns_load -- [options]` generates a federation (100 clusters × 1,000
//! services by default) into `bench/out/<name>/`: the fedns directory source, the equivalent zone
//! file for Knot and NSD, and a seeded dnsperf query mix. It then starts each server on loopback,
//! checks its answers against the generator's own record computation, and measures with dnsperf:
//! throughput with the server pinned to core 0 and dnsperf to core 1, latency percentiles at a fixed
//! rate, a run with 2 workers and no pinning, fedns's update latency (source file change → new
//! answer) and the RSS of every server. See `bench/README.md`.

#[path = "dns_load/artifacts.rs"]
mod artifacts;
#[path = "dns_load/dnsperf.rs"]
mod dnsperf;
#[path = "dns_load/federation.rs"]
mod federation;
#[path = "interrupt.rs"]
mod interrupt;
#[path = "dns_load/null.rs"]
mod null;
#[path = "dns_load/probe.rs"]
mod probe;
#[path = "dns_load/procs.rs"]
mod procs;
#[path = "dns_load/servers.rs"]
mod servers;
#[path = "udp_client.rs"]
mod udp_client;
#[path = "dns_load/update.rs"]
mod update;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::dnsperf::{Load, Report};
use crate::federation::{Category, Federation, Mix, Oracle, Params};
use crate::procs::Cpus;
use crate::servers::{FednsBinary, Kind, Launch, Running};
use crate::update::UpdateLatency;

/// Load benchmark of fedns against Knot DNS and NSD (all on 127.0.0.1).
#[derive(Debug, Parser)]
#[command(name = "dns_load")]
struct Options {
    /// Member clusters.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Services (one ServiceDNSRecord each) [default: 1000, or 10000 with --scale].
    #[arg(long)]
    services: Option<usize>,
    /// Regions; clusters are assigned round-robin.
    #[arg(long, default_value_t = 5)]
    regions: usize,
    /// Zones per region.
    #[arg(long, default_value_t = 4)]
    zones_per_region: usize,
    /// Member clusters each service is placed in (chosen at random, seeded).
    #[arg(long, default_value_t = 3)]
    placement: usize,
    /// Fraction of placed shards without a ready endpoint.
    #[arg(long, default_value_t = 0.10)]
    unhealthy: f64,
    /// Seed of the generator and the query shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Lines in the dnsperf query file.
    #[arg(long, default_value_t = 100_000)]
    queries: usize,
    /// Query mix in percent: hits,cname-fallbacks,nxdomain.
    #[arg(long, default_value = "70,20,10")]
    mix: String,
    /// Output directory name under bench/out [default: c<clusters>-s<services>].
    #[arg(long)]
    name: Option<String>,
    /// Root of the output directories.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Servers to measure, in order; `null` is fedns's UDP workers answering one fixed reply
    /// without looking anything up (the transport's own cost per query).
    #[arg(long, value_delimiter = ',', default_value = "fedns,knot,nsd,null")]
    servers: Vec<String>,
    /// Percent of one core burned on the server's core (core 0) during every dnsperf run, for
    /// every server alike: how each holds up when something else runs on its core.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    background: u8,
    /// Steps: throughput (pinned, 1 worker), latency (fixed rate, pinned), workers2 (2 workers,
    /// unpinned), update (fedns only), locality (fedns only: global names with and without
    /// client-subnet answers) [default: all five; with --scale: throughput,update].
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<String>>,
    /// Only write the generated files.
    #[arg(long)]
    generate_only: bool,
    /// 100 clusters × 10,000 services for the memory figure.
    #[arg(long)]
    scale: bool,
    /// fedns binary [default: the one cargo bench built, target/release/fedns].
    #[arg(long)]
    fedns: Option<PathBuf>,
    /// dnsperf run length in seconds (-l).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// dnsperf clients (-c).
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// dnsperf outstanding queries (-q).
    #[arg(long, default_value_t = 500)]
    outstanding: usize,
    /// dnsperf threads (-T).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Before each dnsperf run, wait up to this many seconds for other processes to go quiet.
    #[arg(long, default_value_t = 300)]
    quiet_wait: u64,
    /// Repeat a dnsperf run up to this many times while other processes use more than 15% of a
    /// core during it; the least disturbed run is reported.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Rate of the latency step (dnsperf -Q).
    #[arg(long, default_value_t = 100_000)]
    latency_qps: u64,
    /// Readiness flips of the update step.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    /// Upper bound on the update step, in seconds.
    #[arg(long, default_value_t = 120)]
    update_budget: u64,
    /// Queries of the file checked against the expected answers on every server before measuring.
    #[arg(long, default_value_t = 2000)]
    check: usize,
    /// Abort when fedns gives an answer that differs from the expected one.
    #[arg(long)]
    strict: bool,
    /// Seconds a server may take to load before it counts as failed.
    #[arg(long)]
    load_timeout: Option<u64>,
    /// Passed by `cargo bench`; without it (as under `cargo test --all-targets`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run as the null responder on this address (started by the benchmark itself).
    #[arg(long, hide = true)]
    serve_null: Option<std::net::SocketAddr>,
    #[arg(long, hide = true, default_value_t = 1)]
    null_workers: usize,
    /// Internal: run as the background burner at this percent of a core.
    #[arg(long, hide = true)]
    burn: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Throughput,
    Latency,
    Workers2,
    Update,
    Locality,
}

fn parse_steps(steps: &[String]) -> Result<Vec<Step>> {
    steps
        .iter()
        .map(|s| match s.trim() {
            "throughput" => Ok(Step::Throughput),
            "latency" => Ok(Step::Latency),
            "workers2" => Ok(Step::Workers2),
            "update" => Ok(Step::Update),
            "locality" => Ok(Step::Locality),
            other => {
                bail!("unknown step `{other}` (throughput, latency, workers2, update, locality)")
            }
        })
        .collect()
}

fn parse_mix(mix: &str) -> Result<Mix> {
    let parts: Vec<u32> = mix
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--mix `{mix}`: expected three integers like 70,20,10"))?;
    let [hits, cnames, nxdomain] = parts[..] else {
        bail!("--mix `{mix}`: expected three integers like 70,20,10");
    };
    if hits + cnames + nxdomain == 0 {
        bail!("--mix `{mix}` is all zero");
    }
    Ok(Mix {
        hits,
        cnames,
        nxdomain,
    })
}

/// Results of one server in one mode.
#[derive(Debug, Default, serde::Serialize)]
struct ServerResult {
    server: String,
    workers: String,
    pinned: bool,
    startup_ms: u64,
    rss_ready_kib: Option<u64>,
    rss_after_load_kib: Option<u64>,
    check_mismatches: Option<usize>,
    throughput: Option<Report>,
    server_cpu_seconds: Option<f64>,
    /// Answered queries per second of server CPU time.
    qps_per_core: Option<f64>,
    latency: Option<Report>,
    update: Option<UpdateLatency>,
}

#[derive(Debug, Default, serde::Serialize)]
struct Results {
    name: String,
    clusters: usize,
    services: usize,
    names: usize,
    cname_names: usize,
    queries: BTreeMap<String, usize>,
    notes: Vec<String>,
    pinned: Vec<ServerResult>,
    workers2: Vec<ServerResult>,
    /// The locality step: fedns on the global names, plain, with ECS, and with `nearest`.
    locality: Vec<ServerResult>,
}

/// Everything generated for one run.
struct Generated {
    fed: Federation,
    oracle: Oracle,
    queries: Vec<federation::Query>,
    flip: Option<federation::FlipTarget>,
    dir: PathBuf,
}

impl Generated {
    fn source(&self) -> PathBuf {
        self.dir.join("source")
    }
    fn zone_file(&self) -> PathBuf {
        self.dir.join("example.com.zone")
    }
    fn query_file(&self) -> PathBuf {
        self.dir.join("queries.txt")
    }
    fn empty_zones(&self) -> PathBuf {
        self.dir.join("zones-empty")
    }
    /// The source again, with the Domain's default strategy `nearest` (the locality step).
    fn locality_source(&self) -> PathBuf {
        self.dir.join("source-nearest")
    }
    /// The config placing the locality step's client subnet in the first region.
    fn locality_config(&self) -> PathBuf {
        self.dir.join("locality.yaml")
    }
    /// Queries for global names only (the names a strategy applies to).
    fn global_query_file(&self) -> PathBuf {
        self.dir.join("queries-global.txt")
    }
}

/// The client subnet of the locality step's queries, 192.0.2.0/24 (TEST-NET-1), placed by
/// `clientNetworks` in the first region.
const LOCALITY_SUBNET: &str = "192.0.2.0/24";
/// The same as an EDNS Client Subnet option for dnsperf's `-E`: code 8, family 1, source
/// prefix 24, scope 0, address 192.0.2.
const LOCALITY_ECS: &str = "8:00011800c00002";

fn generate(
    opts: &Options,
    services: usize,
    locality: bool,
    dir: &Path,
    results: &mut Results,
) -> Result<Generated> {
    let started = Instant::now();
    let params = Params {
        clusters: opts.clusters,
        services,
        regions: opts.regions,
        zones_per_region: opts.zones_per_region,
        placement: opts.placement,
        unhealthy: opts.unhealthy,
        seed: opts.seed,
    };
    if params.clusters == 0 || params.services == 0 || params.regions == 0 {
        bail!("--clusters, --services and --regions must be at least 1");
    }
    if params.zones_per_region == 0 || params.placement == 0 {
        bail!("--zones-per-region and --placement must be at least 1");
    }
    if !(0.0..=1.0).contains(&params.unhealthy) {
        bail!("--unhealthy must be a fraction between 0 and 1");
    }
    let mix = parse_mix(&opts.mix)?;
    let fed = Federation::generate(&params);
    let records = fed.all_records();
    let oracle = Oracle::new(&records);
    let flip = fed.flip_target();
    let queries = federation::query_mix(&fed, &records, mix, opts.queries.max(1));

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generated = Generated {
        fed,
        oracle,
        queries,
        flip,
        dir: dir.to_owned(),
    };
    for stale in [
        generated.source(),
        generated.locality_source(),
        generated.empty_zones(),
        dir.join("staging"),
    ] {
        if stale.exists() {
            fs::remove_dir_all(&stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    fs::create_dir_all(generated.empty_zones())?;
    artifacts::write_source(
        &generated.fed,
        generated.flip.as_ref(),
        None,
        &generated.source(),
    )?;
    if locality {
        artifacts::write_source(
            &generated.fed,
            None,
            Some(serde_json::json!({ "type": "nearest" })),
            &generated.locality_source(),
        )?;
        fs::write(
            generated.locality_config(),
            format!(
                "# generated by bench/dns_load: the locality step's client subnet\n\
                 clientNetworks:\n- {{network: {LOCALITY_SUBNET}, region: {}}}\n",
                generated.fed.regions[0]
            ),
        )?;
        let global = federation::global_queries(&records, opts.queries.max(1), opts.seed);
        artifacts::write_query_file(&global, &generated.global_query_file())?;
    }
    artifacts::write_zone_file(&records, &generated.zone_file())?;
    artifacts::write_query_file(&generated.queries, &generated.query_file())?;

    results.clusters = params.clusters;
    results.services = params.services;
    results.names = records.len();
    results.cname_names = records
        .iter()
        .filter(|r| matches!(r.rrset, federation::Rrset::Cname(_)))
        .count();
    for q in &generated.queries {
        *results
            .queries
            .entry(q.category.as_str().to_owned())
            .or_default() += 1;
    }
    println!(
        "generated {} in {:.1?}: {} clusters, {} services, {} names ({} CNAME fallbacks), {} queries {:?}",
        dir.display(),
        started.elapsed(),
        params.clusters,
        params.services,
        results.names,
        results.cname_names,
        generated.queries.len(),
        results.queries
    );
    Ok(generated)
}

/// Sends the first `count` queries of the file to `server` and compares with the oracle.
fn check_answers(generated: &Generated, running: &Running, count: usize) -> Result<usize> {
    let mut probe = probe::Probe::new(running.dns)?;
    let mut mismatches = 0;
    let mut by_category: BTreeMap<Category, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    for query in generated.queries.iter().take(count) {
        let expected = generated.oracle.answer(&query.name, query.qtype);
        let observed = match probe.query(&query.name, query.qtype) {
            Ok(message) => probe::observed(&message),
            Err(e) => federation::Answer {
                rcode: format!("no answer ({e})"),
                records: Vec::new(),
            },
        };
        if observed != expected {
            mismatches += 1;
            *by_category.entry(query.category).or_default() += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "  {} {} ({}):\n    expected {}\n    got      {}",
                    query.name,
                    query.qtype.as_str(),
                    query.category.as_str(),
                    probe::render(&expected),
                    probe::render(&observed)
                ));
            }
        }
    }
    let checked = count.min(generated.queries.len());
    if mismatches == 0 {
        println!(
            "  {}: {checked} answers match the expected ones",
            running.kind.as_str()
        );
    } else {
        let categories: Vec<String> = by_category
            .iter()
            .map(|(c, n)| format!("{} {n}", c.as_str()))
            .collect();
        println!(
            "  {}: {mismatches} of {checked} answers differ from the expected ones ({}):\n{}",
            running.kind.as_str(),
            categories.join(", "),
            examples.join("\n")
        );
    }
    Ok(mismatches)
}

fn start(
    kind: Kind,
    generated: &Generated,
    fedns: Option<&FednsBinary>,
    launch: &Launch,
) -> Result<Running> {
    match kind {
        Kind::Fedns => {
            let binary = fedns.context("fedns is not available")?;
            servers::start_fedns(
                binary,
                &generated.source(),
                &generated.empty_zones(),
                None,
                launch,
            )
        }
        Kind::Knot => servers::start_knot(&generated.zone_file(), launch),
        Kind::Nsd => servers::start_nsd(&generated.zone_file(), launch),
        Kind::Null => servers::start_null(launch),
    }
}

struct Plan<'a> {
    opts: &'a Options,
    steps: Vec<Step>,
    load: Load,
    load_timeout: Duration,
    fedns: Option<FednsBinary>,
}

/// Pinned mode: server on core 0 with one worker, dnsperf on core 1.
fn run_pinned(plan: &Plan, generated: &Generated, kind: Kind) -> Result<ServerResult> {
    let work_dir = generated.dir.join(format!("{}-pinned", kind.as_str()));
    let launch = Launch {
        work_dir: &work_dir,
        workers: 1,
        cpus: Cpus::Core(0),
        load_timeout: plan.load_timeout,
    };
    println!("{}: starting (core 0, 1 worker)", kind.as_str());
    let mut running = start(kind, generated, plan.fedns.as_ref(), &launch)?;
    let pid = running.process.pid();
    let mut result = ServerResult {
        server: kind.as_str().into(),
        workers: workers_label(plan, kind, 1),
        pinned: true,
        startup_ms: running.startup.as_millis() as u64,
        rss_ready_kib: procs::group_rss_kib(pid),
        ..Default::default()
    };
    println!(
        "  {}: serving after {:.2?}, RSS {}",
        kind.as_str(),
        running.startup,
        mib(result.rss_ready_kib)
    );
    // The null responder answers everything with one fixed reply: nothing to check.
    let mismatches = match kind {
        Kind::Null => 0,
        _ => check_answers(generated, &running, plan.opts.check)?,
    };
    result.check_mismatches = (kind != Kind::Null).then_some(mismatches);
    if mismatches > 0 && (kind != Kind::Fedns || plan.opts.strict) {
        bail!(
            "{} does not serve the expected answers; the comparison would be meaningless",
            kind.as_str()
        );
    }

    if plan.steps.contains(&Step::Throughput) {
        let report = measure(
            plan,
            running.dns,
            pid,
            Cpus::Core(1),
            None,
            false,
            &work_dir.join("dnsperf-throughput.txt"),
        )?;
        running.process.ensure_running()?;
        let cpu = report.server_cpu_seconds;
        result.server_cpu_seconds = Some(cpu);
        result.qps_per_core = (cpu > 0.0).then(|| report.completed as f64 / cpu);
        println!(
            "  {}: {:.0} qps, avg {:.0} µs, lost {}, server CPU {:.0}%",
            kind.as_str(),
            report.qps,
            report.avg_latency_us,
            report.lost,
            100.0 * cpu / plan.load.seconds as f64
        );
        result.throughput = Some(report);
        result.rss_after_load_kib = procs::group_rss_kib(pid);
    }
    if plan.steps.contains(&Step::Latency) {
        let report = measure(
            plan,
            running.dns,
            pid,
            Cpus::Core(1),
            Some(plan.opts.latency_qps),
            true,
            &work_dir.join("dnsperf-latency.txt"),
        )?;
        running.process.ensure_running()?;
        if let Some(p) = &report.percentiles {
            println!(
                "  {}: at {:.0} qps p50 {} µs, p99 {} µs, p99.9 {} µs",
                kind.as_str(),
                report.qps,
                p.p50_us,
                p.p99_us,
                p.p999_us
            );
        }
        result.latency = Some(report);
        result.rss_after_load_kib = procs::group_rss_kib(pid).or(result.rss_after_load_kib);
    }
    if kind == Kind::Fedns && plan.steps.contains(&Step::Update) {
        match &generated.flip {
            Some(target) => {
                let cluster_dir = generated
                    .source()
                    .join(&generated.fed.clusters[target.cluster].name);
                let update = update::measure(
                    target,
                    &cluster_dir,
                    &generated.dir.join("staging"),
                    running.dns,
                    plan.opts.flips,
                    Duration::from_secs(plan.opts.update_budget),
                )?;
                println!(
                    "  fedns: update latency over {} flips: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} timeouts",
                    update.flips, update.p50_ms, update.p99_ms, update.max_ms, update.timeouts
                );
                result.update = Some(update);
            }
            None => println!("  fedns: no shard suitable for the update step (all zones shared)"),
        }
    }
    running.process.stop();
    Ok(result)
}

/// The locality step, fedns only, pinned like the throughput step, on queries for global names:
/// plain (no EDNS, as the main mix), with an EDNS Client Subnet option on every query (its
/// parsing and echo), and with the Domain's strategy `nearest` and that option (every answer
/// picked by the client's region). Each row's `qps/core` against the plain one is the cost of
/// per-client answers.
fn run_locality(plan: &Plan, generated: &Generated) -> Result<Vec<ServerResult>> {
    let binary = plan.fedns.as_ref().context("fedns is not available")?;
    let source = generated.source();
    let nearest = generated.locality_source();
    let config = generated.locality_config();
    let cases: [(&str, &Path, Option<&Path>, Option<&str>); 3] = [
        ("plain", &source, None, None),
        ("plain+ECS", &source, None, Some(LOCALITY_ECS)),
        ("nearest+ECS", &nearest, Some(&config), Some(LOCALITY_ECS)),
    ];
    let mut rows = Vec::new();
    for (label, source, config, ecs) in cases {
        let work_dir = generated.dir.join(format!("fedns-locality-{label}"));
        let launch = Launch {
            work_dir: &work_dir,
            workers: 1,
            cpus: Cpus::Core(0),
            load_timeout: plan.load_timeout,
        };
        println!("fedns {label}: starting (core 0, 1 worker)");
        let mut running =
            servers::start_fedns(binary, source, &generated.empty_zones(), config, &launch)?;
        let pid = running.process.pid();
        let load = Load {
            query_file: generated.global_query_file(),
            edns_option: ecs.map(str::to_owned),
            ..plan.load.clone()
        };
        let plan = Plan {
            load,
            opts: plan.opts,
            steps: plan.steps.clone(),
            load_timeout: plan.load_timeout,
            fedns: plan.fedns.clone(),
        };
        let report = measure(
            &plan,
            running.dns,
            pid,
            Cpus::Core(1),
            None,
            false,
            &work_dir.join("dnsperf-throughput.txt"),
        )?;
        running.process.ensure_running()?;
        // The strategy really picked: fedns counted per-client answers (and only then).
        let admin = running.admin.context("fedns has an admin address")?;
        let picked = servers::metric_sum(admin, "fedns_dns_locality_answers_total")?;
        if config.is_some() && picked < report.completed as f64 * 0.5 {
            bail!(
                "fedns {label}: only {picked} of {} answers were picked by locality",
                report.completed
            );
        }
        let cpu = report.server_cpu_seconds;
        println!(
            "  fedns {label}: {:.0} qps, server CPU {:.0}%, {picked} locality answers",
            report.qps,
            100.0 * cpu / plan.load.seconds as f64
        );
        rows.push(ServerResult {
            server: label.into(),
            workers: "1".into(),
            pinned: true,
            startup_ms: running.startup.as_millis() as u64,
            server_cpu_seconds: Some(cpu),
            qps_per_core: (cpu > 0.0).then(|| report.completed as f64 / cpu),
            throughput: Some(report),
            rss_after_load_kib: procs::group_rss_kib(pid),
            ..Default::default()
        });
        running.process.stop();
    }
    Ok(rows)
}

/// Unpinned mode: two workers, server and dnsperf free to use both cores.
fn run_workers2(plan: &Plan, generated: &Generated, kind: Kind) -> Result<ServerResult> {
    let work_dir = generated.dir.join(format!("{}-workers2", kind.as_str()));
    let launch = Launch {
        work_dir: &work_dir,
        workers: 2,
        cpus: Cpus::All,
        load_timeout: plan.load_timeout,
    };
    println!("{}: starting (2 workers, no pinning)", kind.as_str());
    let mut running = start(kind, generated, plan.fedns.as_ref(), &launch)?;
    let pid = running.process.pid();
    let report = measure(
        plan,
        running.dns,
        pid,
        Cpus::All,
        None,
        false,
        &work_dir.join("dnsperf-throughput.txt"),
    )?;
    running.process.ensure_running()?;
    let cpu = report.server_cpu_seconds;
    println!(
        "  {}: {:.0} qps, avg {:.0} µs, server CPU {:.0}%",
        kind.as_str(),
        report.qps,
        report.avg_latency_us,
        100.0 * cpu / plan.load.seconds as f64
    );
    let result = ServerResult {
        server: kind.as_str().into(),
        workers: workers_label(plan, kind, 2),
        pinned: false,
        startup_ms: running.startup.as_millis() as u64,
        rss_after_load_kib: procs::group_rss_kib(pid),
        server_cpu_seconds: Some(cpu),
        qps_per_core: (cpu > 0.0).then(|| report.completed as f64 / cpu),
        throughput: Some(report),
        ..Default::default()
    };
    running.process.stop();
    Ok(result)
}

/// Other processes may use at most this much CPU (in cores) during a run for it to count as clean.
const NOISE_LIMIT: f64 = 0.15;

/// One dnsperf run, repeated (up to `--retries` times) while other processes disturb it; the
/// least disturbed attempt is kept.
fn measure(
    plan: &Plan,
    server: std::net::SocketAddr,
    server_pid: u32,
    cpus: Cpus,
    max_qps: Option<u64>,
    verbose: bool,
    output: &Path,
) -> Result<Report> {
    let mut best: Option<Report> = None;
    for attempt in 0..=plan.opts.retries {
        if attempt > 0 {
            println!(
                "  other processes used {:.0}% of a core during the run: repeating it ({attempt}/{})",
                best.as_ref().map_or(0.0, |b| b.other_cpu_cores) * 100.0,
                plan.opts.retries
            );
        }
        let report = dnsperf::run(
            &plan.load, server, server_pid, cpus, max_qps, verbose, output,
        )?;
        let clean = report.other_cpu_cores <= NOISE_LIMIT;
        if best
            .as_ref()
            .is_none_or(|b| report.other_cpu_cores < b.other_cpu_cores)
        {
            best = Some(report);
        }
        if clean {
            break;
        }
    }
    best.context("no dnsperf run")
}

fn workers_label(plan: &Plan, kind: Kind, workers: usize) -> String {
    match (&plan.fedns, kind) {
        (Some(binary), Kind::Fedns) if !binary.udp_workers_flag => "fedns default".into(),
        _ => workers.to_string(),
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

fn find<'a>(rows: &'a [ServerResult], server: &str) -> Option<&'a ServerResult> {
    rows.iter().find(|r| r.server == server)
}

fn throughput_table(out: &mut String, rows: &[ServerResult]) {
    let _ = writeln!(
        out,
        "{:<11} {:>7} {:>9} {:>8} {:>7} {:>8} {:>8} {:>6} {:>10} {:>11}",
        "server",
        "workers",
        "qps",
        "avg µs",
        "lost",
        "srv CPU",
        "other**",
        "bg",
        "qps/core*",
        "RSS"
    );
    for row in rows {
        let Some(t) = &row.throughput else { continue };
        let seconds = if t.qps > 0.0 {
            t.completed as f64 / t.qps
        } else {
            0.0
        };
        let util = match row.server_cpu_seconds {
            Some(cpu) if seconds > 0.0 => format!("{:.0}%", 100.0 * cpu / seconds),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<11} {:>7} {:>9.0} {:>8.0} {:>7} {:>8} {:>7.0}% {:>5.0}% {:>10} {:>11}",
            row.server,
            row.workers,
            t.qps,
            t.avg_latency_us,
            t.lost,
            util,
            t.other_cpu_cores * 100.0,
            t.background_cpu_cores * 100.0,
            row.qps_per_core.map_or("-".into(), |q| format!("{q:.0}")),
            mib(row.rss_after_load_kib),
        );
    }
    let qps = |r: &ServerResult| r.throughput.as_ref().map(|t| t.qps);
    if let Some(fedns) = find(rows, "fedns") {
        for peer in ["knot", "nsd"] {
            if let Some(theirs) = find(rows, peer) {
                let _ = writeln!(
                    out,
                    "fedns/{peer}: qps {}, qps/core {}",
                    ratio(qps(fedns), qps(theirs)),
                    ratio(fedns.qps_per_core, theirs.qps_per_core)
                );
            }
        }
        if let Some(null) = find(rows, "null") {
            let _ = writeln!(
                out,
                "fedns/null: qps/core {} (a query costs fedns {} what it costs the null responder)",
                ratio(fedns.qps_per_core, null.qps_per_core),
                ratio(null.qps_per_core, fedns.qps_per_core)
            );
        }
    }
}

fn render_results(results: &Results, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n=== dns_load {}: {} clusters × {} services, {} names ({} CNAME fallbacks)",
        results.name, results.clusters, results.services, results.names, results.cname_names
    );
    let _ = writeln!(out, "query mix: {:?}", results.queries);
    let _ = writeln!(
        out,
        "dnsperf: -l {} -c {} -q {} -T {}",
        plan.load.seconds, plan.load.clients, plan.load.outstanding, plan.load.threads
    );
    let checks: Vec<String> = results
        .pinned
        .iter()
        .filter_map(|r| Some(format!("{} {}", r.server, r.check_mismatches?)))
        .collect();
    if !checks.is_empty() {
        let _ = writeln!(
            out,
            "answers differing from the expected ones (first {} queries): {}",
            plan.opts.check,
            checks.join(", ")
        );
    }
    if plan.opts.background > 0 {
        let _ = writeln!(
            out,
            "background: a burner pinned to core 0 (the pinned server's core) ran at {}% of it \
             during every dnsperf run (`bg` column: what it got)",
            plan.opts.background
        );
    }
    for note in &results.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if results.pinned.iter().any(|r| r.throughput.is_some()) {
        let _ = writeln!(
            out,
            "\n-- throughput: server pinned to core 0, dnsperf pinned to core 1"
        );
        throughput_table(&mut out, &results.pinned);
    }
    if results.pinned.iter().any(|r| r.latency.is_some()) {
        let _ = writeln!(
            out,
            "\n-- latency at -Q {} (pinned as above), from dnsperf -v per-query latencies",
            plan.opts.latency_qps
        );
        let _ = writeln!(
            out,
            "{:<6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6} {:>11} {:>11}",
            "server",
            "qps",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "lost",
            "other**",
            "bg",
            "p99.9/knot",
            "p99.9/nsd"
        );
        let p999 = |r: &ServerResult| {
            r.latency
                .as_ref()
                .and_then(|l| l.percentiles.as_ref())
                .map(|p| p.p999_us as f64)
        };
        for row in &results.pinned {
            let Some(l) = &row.latency else { continue };
            let Some(p) = &l.percentiles else { continue };
            let (vs_knot, vs_nsd) = if row.server == "fedns" {
                (
                    ratio(p999(row), find(&results.pinned, "knot").and_then(p999)),
                    ratio(p999(row), find(&results.pinned, "nsd").and_then(p999)),
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                out,
                "{:<6} {:>9.0} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7.0}% {:>5.0}% {:>11} {:>11}",
                row.server,
                l.qps,
                p.p50_us,
                p.p99_us,
                p.p999_us,
                p.max_us,
                l.lost,
                l.other_cpu_cores * 100.0,
                l.background_cpu_cores * 100.0,
                vs_knot,
                vs_nsd
            );
        }
    }
    if !results.workers2.is_empty() {
        let _ = writeln!(
            out,
            "\n-- 2 workers, no pinning (server and dnsperf share both cores)"
        );
        throughput_table(&mut out, &results.workers2);
    }
    if !results.locality.is_empty() {
        let _ = writeln!(
            out,
            "\n-- locality: fedns on global names only, pinned as above; plain, with an ECS \
             option ({LOCALITY_SUBNET}) on every query, and with strategy nearest and that option"
        );
        throughput_table(&mut out, &results.locality);
        if let Some(plain) = find(&results.locality, "plain") {
            for label in ["plain+ECS", "nearest+ECS"] {
                if let Some(row) = find(&results.locality, label) {
                    let _ = writeln!(
                        out,
                        "{label}/plain: qps/core {}",
                        ratio(row.qps_per_core, plain.qps_per_core)
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "\n* qps/core = answered queries / server CPU seconds during the run: the capacity of one \
         fully busy core, which the measured qps hides when dnsperf saturates its own core first\n\
         ** other = CPU used by other processes on the machine during the run, in % of one core \
         (compilers of a concurrent build, …): when it is not ≈ 0 the numbers are noisy"
    );
    for row in &results.pinned {
        if let Some(u) = &row.update {
            let _ = writeln!(
                out,
                "\n-- update latency (flip.json rename → changed zonal answer), {} flips: \
                 p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} timeouts",
                u.flips, u.p50_ms, u.p90_ms, u.p99_ms, u.max_ms, u.timeouts
            );
        }
    }
    let _ = writeln!(
        out,
        "\n-- memory (VmRSS, summed over the server's processes)"
    );
    for row in &results.pinned {
        let _ = writeln!(
            out,
            "{:<6} ready after {:>6} ms: {:>11}; after load: {:>11}",
            row.server,
            row.startup_ms,
            mib(row.rss_ready_kib),
            mib(row.rss_after_load_kib)
        );
    }
    out
}

fn run(opts: &Options) -> Result<()> {
    let services = opts
        .services
        .unwrap_or(if opts.scale { 10_000 } else { 1_000 });
    let steps = match &opts.steps {
        Some(steps) => parse_steps(steps)?,
        None if opts.scale => vec![Step::Throughput, Step::Update],
        None => vec![
            Step::Throughput,
            Step::Latency,
            Step::Workers2,
            Step::Update,
            Step::Locality,
        ],
    };
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("c{}-s{services}", opts.clusters));
    let out_root = opts
        .out
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/out"));
    let dir = out_root.join(&name);
    let mut results = Results {
        name: name.clone(),
        ..Default::default()
    };
    let mut kinds = opts
        .servers
        .iter()
        .map(|s| Kind::parse(s))
        .collect::<Result<Vec<_>>>()?;
    kinds.dedup();
    let locality = steps.contains(&Step::Locality) && kinds.contains(&Kind::Fedns);
    let generated = generate(opts, services, locality, &dir, &mut results)?;
    if opts.generate_only {
        return Ok(());
    }

    procs::require_tool("taskset", "util-linux")?;
    procs::require_tool("dnsperf", "dnsperf")?;
    let mut fedns = None;
    if kinds.contains(&Kind::Fedns) {
        let path = opts
            .fedns
            .clone()
            .or_else(|| option_env!("CARGO_BIN_EXE_fedns").map(PathBuf::from))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/fedns"));
        match FednsBinary::probe(&path) {
            Ok(binary) => {
                if !binary.udp_workers_flag {
                    results.notes.push(
                        "`fedns serve --help` has no --udp-workers: fedns ran with its default \
                         worker count in every mode"
                            .into(),
                    );
                }
                fedns = Some(binary);
            }
            Err(e) => {
                println!("fedns: skipped: {e:#}");
                results.notes.push(format!("fedns skipped: {e:#}"));
                kinds.retain(|&k| k != Kind::Fedns);
            }
        }
    }
    if kinds.is_empty() {
        bail!("no server left to measure");
    }
    // Fail before measuring anything when a peer is not installed.
    for kind in &kinds {
        match kind {
            Kind::Knot => drop(procs::require_tool("knotd", "knot")?),
            Kind::Nsd => drop(procs::require_tool("nsd", "nsd")?),
            Kind::Fedns | Kind::Null => {}
        }
    }
    let plan = Plan {
        opts,
        steps,
        load: Load {
            query_file: generated.query_file(),
            seconds: opts.duration.max(1),
            clients: opts.clients.max(1),
            outstanding: opts.outstanding.max(1),
            threads: opts.threads.max(1),
            quiet_wait: Duration::from_secs(opts.quiet_wait),
            background: opts.background,
            edns_option: None,
        },
        load_timeout: Duration::from_secs(opts.load_timeout.unwrap_or(if services > 5_000 {
            600
        } else {
            120
        })),
        fedns,
    };

    // One failing server (wrong answers, killed from outside) does not lose the others' numbers.
    let mut failures = 0;
    let pinned_steps = [Step::Throughput, Step::Latency, Step::Update];
    if plan.steps.iter().any(|s| pinned_steps.contains(s)) {
        for &kind in &kinds {
            match run_pinned(&plan, &generated, kind) {
                Ok(result) => results.pinned.push(result),
                Err(e) => {
                    failures += 1;
                    println!("{}: failed: {e:#}", kind.as_str());
                    results
                        .notes
                        .push(format!("{} (pinned) failed: {e:#}", kind.as_str()));
                }
            }
        }
    }
    if plan.steps.contains(&Step::Workers2) {
        for &kind in &kinds {
            match run_workers2(&plan, &generated, kind) {
                Ok(result) => results.workers2.push(result),
                Err(e) => {
                    failures += 1;
                    println!("{}: failed: {e:#}", kind.as_str());
                    results
                        .notes
                        .push(format!("{} (2 workers) failed: {e:#}", kind.as_str()));
                }
            }
        }
    }

    if locality && plan.fedns.is_some() {
        match run_locality(&plan, &generated) {
            Ok(rows) => results.locality = rows,
            Err(e) => {
                failures += 1;
                println!("fedns locality: failed: {e:#}");
                results
                    .notes
                    .push(format!("fedns locality step failed: {e:#}"));
            }
        }
    }

    let text = render_results(&results, &plan);
    println!("{text}");
    fs::write(dir.join("results.txt"), &text)?;
    fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    println!(
        "results written to {}",
        dir.join("results.{txt,json}").display()
    );
    if failures > 0 {
        bail!("{failures} server run(s) failed, see the notes above");
    }
    Ok(())
}

fn main() -> ExitCode {
    let opts = Options::parse();
    // The benchmark's own helper processes: the null responder and the background burner.
    let helper = match (opts.serve_null, opts.burn) {
        (Some(addr), _) => Some(null::serve(addr, opts.null_workers)),
        (None, Some(percent)) => Some(null::burn(percent)),
        (None, None) => None,
    };
    if let Some(Err(e)) = helper {
        eprintln!("dns_load: error: {e:#}");
        return ExitCode::FAILURE;
    }
    if !opts.bench {
        // `cargo test --all-targets` runs bench targets without `--bench`: do not start servers then.
        eprintln!(
            "dns_load is a benchmark: run it with `cargo bench --bench dns_load -- [options]`"
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = procs::install_signal_handler() {
        eprintln!("dns_load: error: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dns_load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
