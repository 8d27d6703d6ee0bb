//! Running dnsperf (Debian package `dnsperf`, 2.x) and reading its report. dnsperf 2.10 prints only
//! the average latency; percentiles come from its verbose mode (`-v`: one `> RCODE name type
//! latency` line per answer), written to a file and read after the run.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::{self, Cpus, Supervised};

/// Load shape shared by every run.
#[derive(Debug, Clone)]
pub struct Load {
    pub query_file: PathBuf,
    pub seconds: u64,
    pub clients: usize,
    pub outstanding: usize,
    pub threads: usize,
    /// How long to wait for other processes (builds) to calm down before each run.
    pub quiet_wait: Duration,
    /// Percent of core 0 (the pinned server's core) burned during every run; 0: none.
    pub background: u8,
    /// An EDNS option sent with every query, as dnsperf's `-E code:hex-value`.
    pub edns_option: Option<String>,
}

/// Latency percentiles from verbose output, in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub timeouts: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The dnsperf command line, for the record.
    pub command: String,
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub avg_latency_us: f64,
    pub max_latency_us: f64,
    pub rcodes: String,
    pub percentiles: Option<Percentiles>,
    /// CPU seconds the server's processes used during the run.
    pub server_cpu_seconds: f64,
    pub dnsperf_cpu_seconds: f64,
    /// Cores used by everything else on the machine during the run (noise; should be ≈ 0).
    pub other_cpu_cores: f64,
    /// Cores used by the `--background` burner during the run.
    pub background_cpu_cores: f64,
}

/// Runs dnsperf against `server` (process group led by `server_pid`) for `load.seconds` (plus a
/// bounded grace), with at most `max_qps` when given; `verbose` turns on per-query latencies for
/// percentiles. Waits for a quiet machine first and accounts for the CPU used during the run.
pub fn run(
    load: &Load,
    server: SocketAddr,
    server_pid: u32,
    cpus: Cpus,
    max_qps: Option<u64>,
    verbose: bool,
    output: &Path,
) -> Result<Report> {
    let dnsperf = procs::require_tool("dnsperf", "dnsperf")?;
    let mut command = procs::pinned(&dnsperf, cpus);
    command
        .arg("-s")
        .arg(server.ip().to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-d")
        .arg(&load.query_file)
        .arg("-l")
        .arg(load.seconds.to_string())
        .arg("-c")
        .arg(load.clients.to_string())
        .arg("-T")
        .arg(load.threads.to_string())
        .arg("-q")
        .arg(load.outstanding.to_string())
        .arg("-t")
        .arg("2");
    if let Some(qps) = max_qps {
        command.arg("-Q").arg(qps.to_string());
    }
    if verbose {
        command.arg("-v");
    }
    if let Some(option) = &load.edns_option {
        command.arg("-E").arg(option);
    }
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    procs::wait_for_quiet(Some(server_pid), 0.10, load.quiet_wait);
    let burner = match load.background {
        0 => None,
        percent => {
            let exe = std::env::current_exe().context("locating the benchmark executable")?;
            let mut command = procs::pinned(&exe, Cpus::Core(0));
            command
                .arg("--bench")
                .arg("--burn")
                .arg(percent.to_string());
            let log = output.with_extension("burner.log");
            Some(Supervised::spawn("background burner", command, &log)?)
        }
    };
    let burner_before = burner
        .as_ref()
        .map_or(0.0, |b| procs::group_cpu_seconds(b.pid()));
    let server_before = procs::group_cpu_seconds(server_pid);
    let dnsperf_before = procs::children_cpu_seconds();
    let busy_before = procs::machine_busy_seconds();
    let started = Instant::now();
    let mut process = Supervised::spawn("dnsperf", command, output)?;
    let deadline = started + Duration::from_secs(load.seconds + 30);
    let status = process.wait_until(deadline)?;
    let wall = started.elapsed().as_secs_f64();
    let server_cpu_seconds = procs::group_cpu_seconds(server_pid) - server_before;
    let dnsperf_cpu_seconds = procs::children_cpu_seconds() - dnsperf_before;
    let busy = procs::machine_busy_seconds() - busy_before;
    let background_cpu_seconds = burner
        .as_ref()
        .map_or(0.0, |b| procs::group_cpu_seconds(b.pid()) - burner_before);
    drop(burner);
    if !status.success() {
        bail!(
            "dnsperf failed ({status}); end of {}:\n{}",
            output.display(),
            procs::log_tail(output, 15)
        );
    }
    let mut report = parse(output, verbose)?;
    if verbose {
        // A million `> NOERROR name type latency` lines: keep only the summary.
        let summary = fs::read_to_string(output)
            .map(|text| {
                text.lines()
                    .filter(|l| !l.starts_with("> "))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        fs::write(output, summary + "\n")?;
    }
    report.command = line;
    report.server_cpu_seconds = server_cpu_seconds;
    report.dnsperf_cpu_seconds = dnsperf_cpu_seconds;
    report.other_cpu_cores =
        ((busy - server_cpu_seconds - dnsperf_cpu_seconds - background_cpu_seconds) / wall)
            .max(0.0);
    report.background_cpu_cores = background_cpu_seconds / wall;
    Ok(report)
}

fn number_after(text: &str, label: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse(output: &Path, verbose: bool) -> Result<Report> {
    let file = File::open(output).with_context(|| format!("reading {}", output.display()))?;
    let mut summary = String::new();
    let mut latencies: Vec<u64> = Vec::new();
    let mut timeouts = 0usize;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("> ") {
            if !verbose {
                continue;
            }
            let mut fields = rest.split_whitespace();
            let rcode = fields.next().unwrap_or("");
            match (rcode, fields.last().and_then(|l| l.parse::<f64>().ok())) {
                ("T", _) => timeouts += 1,
                (_, Some(seconds)) => latencies.push((seconds * 1e6).round() as u64),
                _ => {}
            }
        } else {
            summary.push_str(&line);
            summary.push('\n');
        }
    }
    let field = |label: &str| {
        number_after(&summary, label).with_context(|| {
            format!(
                "dnsperf output {} has no `{label}` line:\n{}",
                output.display(),
                procs::log_tail(output, 15)
            )
        })
    };
    let rcodes = summary
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Response codes:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let max_latency_us = summary
        .lines()
        .find(|l| l.trim_start().starts_with("Average Latency (s):"))
        .and_then(|l| l.split("max ").nth(1))
        .and_then(|v| v.trim_end_matches(')').trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1e6;
    let percentiles = verbose.then(|| {
        latencies.sort_unstable();
        let at = |q: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            latencies[rank - 1]
        };
        Percentiles {
            samples: latencies.len(),
            timeouts,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: latencies.last().copied().unwrap_or(0),
        }
    });
    Ok(Report {
        command: String::new(),
        sent: field("Queries sent:")? as u64,
        completed: field("Queries completed:")? as u64,
        lost: field("Queries lost:")? as u64,
        qps: field("Queries per second:")?,
        avg_latency_us: field("Average Latency (s):")? * 1e6,
        max_latency_us,
        rcodes,
        percentiles,
        server_cpu_seconds: 0.0,
        dnsperf_cpu_seconds: 0.0,
        other_cpu_cores: 0.0,
        background_cpu_cores: 0.0,
    })
}
