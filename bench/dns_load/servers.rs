//! The servers under test: fedns (the release binary on the generated directory source) and the
//! peers Knot DNS and NSD (on the equivalent zone file), each started on loopback in its own
//! directory, pinned as asked, and only handed over once it answers.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::federation::DOMAIN;
use crate::probe::Probe;
use crate::procs::{self, Cpus, Supervised};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Fedns,
    Knot,
    Nsd,
    /// fedns's UDP workers answering a fixed reply: the transport's own cost.
    Null,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fedns => "fedns",
            Kind::Knot => "knot",
            Kind::Nsd => "nsd",
            Kind::Null => "null",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fedns" => Ok(Kind::Fedns),
            "knot" | "knotd" => Ok(Kind::Knot),
            "nsd" => Ok(Kind::Nsd),
            "null" => Ok(Kind::Null),
            other => bail!("unknown server `{other}` (expected fedns, knot, nsd or null)"),
        }
    }
}

/// How fedns is started; `udp_workers_flag` is false when `fedns serve --help` does not list
/// `--udp-workers` (then the worker count is fedns's own default).
#[derive(Debug, Clone)]
pub struct FednsBinary {
    pub path: PathBuf,
    pub udp_workers_flag: bool,
    pub rrl_flag: bool,
}

impl FednsBinary {
    /// Checks that `path` exists and `fedns serve --help` works.
    pub fn probe(path: &Path) -> Result<Self> {
        if !path.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release`",
                path.display()
            );
        }
        let output = Command::new(path)
            .args(["serve", "--help"])
            .output()
            .with_context(|| format!("running {} serve --help", path.display()))?;
        let help = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        if !output.status.success() || !help.contains("--source") {
            bail!(
                "`{} serve --help` does not describe the serve command yet ({}): {}",
                path.display(),
                output.status,
                help.lines().next().unwrap_or("no output")
            );
        }
        Ok(Self {
            path: path.to_owned(),
            udp_workers_flag: help.contains("--udp-workers"),
            rrl_flag: help.contains("--rrl-rate"),
        })
    }
}

/// A server under test, running.
#[derive(Debug)]
pub struct Running {
    pub kind: Kind,
    pub dns: SocketAddr,
    /// fedns's admin listener (`/metrics`); `None` for the others.
    pub admin: Option<SocketAddr>,
    pub process: Supervised,
    pub startup: Duration,
}

/// Where and how to start one server.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub work_dir: &'a Path,
    pub workers: usize,
    pub cpus: Cpus,
    pub load_timeout: Duration,
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Starts fedns on the directory source (with `--config`, when given) and waits for `/ready`.
pub fn start_fedns(
    binary: &FednsBinary,
    source: &Path,
    zones: &Path,
    config: Option<&Path>,
    launch: &Launch,
) -> Result<Running> {
    fresh_dir(launch.work_dir)?;
    let port = free_port()?;
    let admin_port = free_port()?;
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let mut command = procs::pinned(&binary.path, launch.cpus);
    command
        .arg("serve")
        .arg("--source")
        .arg(source)
        .arg("--zones")
        .arg(zones)
        .arg("--dns-listen")
        .arg(dns.to_string())
        .arg("--admin-listen")
        .arg(admin.to_string());
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if binary.udp_workers_flag {
        command.arg("--udp-workers").arg(launch.workers.to_string());
    }
    if binary.rrl_flag {
        // dnsperf is one client sending far more than a real one: keep response rate limiting
        // running (every response goes through its table) at a rate the load never reaches.
        command.arg("--rrl-rate").arg("1000000000");
    }
    let started = Instant::now();
    let mut process = Supervised::spawn("fedns", command, &launch.work_dir.join("fedns.log"))?;
    let deadline = started + launch.load_timeout;
    loop {
        process.ensure_running()?;
        if http_status(admin, "/ready").ok() == Some(200) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "fedns not ready (GET http://{admin}/ready != 200) within {:?}; end of {}:\n{}",
                launch.load_timeout,
                process.log().display(),
                procs::log_tail(process.log(), 15)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup = started.elapsed();
    Probe::new(dns)?.wait_for_soa(DOMAIN, Duration::from_secs(10))?;
    Ok(Running {
        kind: Kind::Fedns,
        dns,
        admin: Some(admin),
        process,
        startup,
    })
}

/// `GET <path>` over HTTP/1.1; the status code.
fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let response = http_get(addr, path, 64)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")
}

/// The sum of every sample of metric `name` in fedns's `/metrics`.
pub fn metric_sum(admin: SocketAddr, name: &str) -> Result<f64> {
    let text = http_get(admin, "/metrics", usize::MAX)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// `GET <path>` over HTTP/1.1: the response's first `limit` bytes (at least one read).
fn http_get(addr: SocketAddr, path: &str, limit: usize) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let len = stream.read(&mut chunk)?;
        response.extend_from_slice(&chunk[..len]);
        if len == 0 || response.len() >= limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Starts `knotd` on the zone file and waits until it serves the apex SOA.
pub fn start_knot(zone_file: &Path, launch: &Launch) -> Result<Running> {
    let knotd = procs::require_tool("knotd", "knot")?;
    let dir = launch.work_dir;
    fresh_dir(dir)?;
    fs::copy(zone_file, dir.join("example.com.zone"))?;
    let port = free_port()?;
    let config = format!(
        "# generated by bench/dns_load\n\
         server:\n    listen: 127.0.0.1@{port}\n    rundir: \"{dir}\"\n    pidfile: \"{dir}/knot.pid\"\n\
         \x20   udp-workers: {workers}\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: \"{dir}/db\"\n\
         log:\n  - target: stderr\n    any: notice\n\
         template:\n  - id: default\n    storage: \"{dir}\"\n    zonefile-sync: -1\n\
         \x20   zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\n\
         zone:\n  - domain: {DOMAIN}\n    file: example.com.zone\n",
        dir = dir.display(),
        workers = launch.workers,
    );
    let conf = dir.join("knot.conf");
    fs::write(&conf, config)?;
    let mut command = procs::pinned(&knotd, launch.cpus);
    command.arg("-c").arg(&conf);
    start_peer(Kind::Knot, command, port, launch)
}

/// Starts `nsd` in the foreground on the zone file and waits until it serves the apex SOA.
pub fn start_nsd(zone_file: &Path, launch: &Launch) -> Result<Running> {
    let nsd = procs::require_tool("nsd", "nsd")?;
    let dir = launch.work_dir;
    fresh_dir(dir)?;
    fs::copy(zone_file, dir.join("example.com.zone"))?;
    let port = free_port()?;
    // Response-rate limiting is on by default in Debian's NSD (200 qps per source): off for a load test.
    let config = format!(
        "# generated by bench/dns_load\n\
         server:\n    ip-address: 127.0.0.1@{port}\n    port: {port}\n    server-count: {workers}\n\
         \x20   reuseport: yes\n    username: \"\"\n    chroot: \"\"\n    zonesdir: \"{dir}\"\n\
         \x20   pidfile: \"{dir}/nsd.pid\"\n    database: \"\"\n    zonelistfile: \"{dir}/zone.list\"\n\
         \x20   xfrdfile: \"{dir}/xfrd.state\"\n    xfrdir: \"{dir}\"\n    logfile: \"{dir}/nsd.log\"\n\
         \x20   verbosity: 1\n    rrl-ratelimit: 0\n    rrl-whitelist-ratelimit: 0\n\
         remote-control:\n    control-enable: no\n\
         zone:\n    name: {DOMAIN}\n    zonefile: example.com.zone\n",
        dir = dir.display(),
        workers = launch.workers,
    );
    let conf = dir.join("nsd.conf");
    fs::write(&conf, config)?;
    let mut command = procs::pinned(&nsd, launch.cpus);
    command.arg("-d").arg("-c").arg(&conf);
    start_peer(Kind::Nsd, command, port, launch)
}

/// Starts the null responder (this benchmark's own executable, `--serve-null`) and waits until it
/// answers.
pub fn start_null(launch: &Launch) -> Result<Running> {
    fresh_dir(launch.work_dir)?;
    let port = free_port()?;
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    let mut command = procs::pinned(&exe, launch.cpus);
    command
        .arg("--bench")
        .arg("--serve-null")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--null-workers")
        .arg(launch.workers.to_string());
    start_peer(Kind::Null, command, port, launch)
}

fn start_peer(kind: Kind, command: Command, port: u16, launch: &Launch) -> Result<Running> {
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    let mut process = Supervised::spawn(
        kind.as_str(),
        command,
        &launch.work_dir.join(format!("{}.out", kind.as_str())),
    )?;
    let mut probe = Probe::new(dns)?;
    let deadline = started + launch.load_timeout;
    loop {
        process.ensure_running()?;
        if probe
            .wait_for_soa(DOMAIN, Duration::from_millis(500))
            .is_ok()
        {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not serve {DOMAIN} within {:?}; end of {}:\n{}",
                kind.as_str(),
                launch.load_timeout,
                process.log().display(),
                procs::log_tail(process.log(), 15)
            );
        }
    }
    Ok(Running {
        kind,
        dns,
        admin: None,
        startup: started.elapsed(),
        process,
    })
}
