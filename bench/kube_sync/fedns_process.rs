//! fedns as the real binary in its own process, so its memory is its own: free ports on
//! 127.0.0.1, the admin endpoints (`/ready`, `/metrics`), `/proc` memory readings, and the
//! programming-latency histogram. The child is killed when its handle drops, when the benchmark
//! is interrupted (SIGINT/SIGTERM), and, through `setpriv --pdeathsig KILL` where util-linux has
//! it, when the benchmark process dies.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Children alive right now, for the signal handler.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_pid(pid: u32) {
    // ESRCH (already gone) is fine.
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// On SIGINT/SIGTERM: kill every live child, then exit.
pub fn install_signal_handler() -> Result<()> {
    crate::interrupt::on_interrupt(|| {
        eprintln!("kube_sync: interrupted, killing fedns");
        for &pid in LIVE.lock().map(|l| l.clone()).unwrap_or_default().iter() {
            kill_pid(pid);
        }
    })
}

/// A port free for both UDP and TCP on 127.0.0.1 (DNS listens on both).
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on 127.0.0.1")
}

/// How to start fedns.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub log: PathBuf,
    pub grace_period: Duration,
    pub probe_period: Duration,
    pub probe_timeout: Duration,
    pub probe_failure_threshold: u32,
    pub sync_timeout: Duration,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    /// Peak resident memory so far (VmHWM).
    pub peak_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        })
    }
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as f64;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after `(comm)`: state is 0, utime 11, stime 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(11) + field(12)) as f64 / ticks
}

/// A running fedns child.
#[derive(Debug)]
pub struct FednsProcess {
    child: Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub started: Instant,
    log: PathBuf,
}

impl FednsProcess {
    /// Starts `fedns serve` on the host kubeconfig with fresh ports. Call it from the main
    /// thread: the parent-death signal fires when the *thread* that spawned the child exits.
    pub fn spawn(launch: &Launch) -> Result<Self> {
        if !launch.binary.is_file() {
            bail!(
                "{} not found: run through `cargo bench --bench kube_sync` (it builds the binary) or pass --fedns",
                launch.binary.display()
            );
        }
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let mut command = if Path::new("/usr/bin/setpriv").is_file() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(&launch.binary);
            c
        } else {
            Command::new(&launch.binary)
        };
        command
            .arg("serve")
            .arg("--kubeconfig")
            .arg(&launch.kubeconfig)
            .arg("--dns-listen")
            .arg(dns.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(["--udp-workers", "1"])
            .args(["--grace-period", &secs(launch.grace_period)])
            .args(["--probe-period", &secs(launch.probe_period)])
            .args(["--probe-timeout", &secs(launch.probe_timeout)])
            .args([
                "--probe-failure-threshold",
                &launch.probe_failure_threshold.to_string(),
            ])
            .args(["--sync-timeout", &secs(launch.sync_timeout)])
            .env_remove("KUBECONFIG")
            .env("FEDNS_LOG", "info")
            // fedns colours its log even into a file otherwise.
            .env("NO_COLOR", "1")
            .envs(launch.env.iter().map(|(k, v)| (k, v)));
        let out = File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        if let Ok(mut live) = LIVE.lock() {
            live.push(child.id());
        }
        Ok(Self {
            child,
            dns,
            admin,
            started,
            log: launch.log.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> Result<Memory> {
        Memory::of(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Errors with the end of the log when fedns has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fedns exited ({status}); end of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// `GET path` on the admin listener: status code and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.admin, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: fedns\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let code = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no HTTP status in {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned());
        Ok((code, body))
    }

    /// Polls `/ready` every 10 ms; the time since the spawn when it answered 200.
    pub fn wait_ready(&mut self, within: Duration) -> Result<Duration> {
        while self.started.elapsed() < within {
            self.ensure_running()?;
            if matches!(self.get("/ready"), Ok((200, _))) {
                return Ok(self.started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "fedns not ready within {within:?} (log: {})",
            self.log.display()
        )
    }

    /// The current `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        match self.get("/metrics")? {
            (200, body) => Ok(body),
            (code, body) => bail!("/metrics answered {code}: {body}"),
        }
    }
}

impl Drop for FednsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|&p| p != pid);
        }
    }
}

/// A Prometheus histogram read from `/metrics` text.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Cumulative counts by upper bound, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    pub fn parse(metrics: &str, name: &str) -> Self {
        let mut h = Histogram::default();
        let bucket = format!("{name}_bucket{{");
        for line in metrics.lines() {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if key.starts_with(&bucket) {
                let le = key
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("+Inf");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                h.buckets.push((bound, value));
            } else if key == format!("{name}_sum") {
                h.sum = value;
            } else if key == format!("{name}_count") {
                h.count = value;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// The observations made since `before`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(bound, n)| {
                let earlier = before
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0.0, |(_, n)| *n);
                (bound, n - earlier)
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// Quantile estimate with linear interpolation inside the bucket, as Prometheus's
    /// `histogram_quantile` does (the highest finite bound when it falls in `+Inf`).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let width = count - lower.1;
                let within = if width > 0.0 {
                    (rank - lower.1) / width
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * within);
            }
            lower = (bound, count);
        }
        None
    }

    /// The upper bound of the highest bucket that gained an observation.
    pub fn max_bound(&self) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        self.buckets
            .iter()
            .find(|(_, count)| *count >= total)
            .map(|(bound, _)| *bound)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}
