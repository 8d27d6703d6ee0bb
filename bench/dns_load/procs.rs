//! Child processes of the benchmark (servers, dnsperf): each runs in its own process group, so the
//! whole group (NSD forks workers) is signalled by id when the [`Supervised`] handle drops, when the
//! benchmark fails, or when it receives SIGINT/SIGTERM. Also the /proc readings (RSS, CPU time).

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Process groups alive right now, for the signal handler.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn signal_group(pgid: i32, signal: Signal) {
    // ESRCH (group already gone) is fine.
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// On SIGINT/SIGTERM: terminate every live child group, then exit.
pub fn install_signal_handler() -> Result<()> {
    crate::interrupt::on_interrupt(|| {
        eprintln!("dns_load: interrupted, stopping child processes");
        let groups = LIVE_GROUPS.lock().map(|g| g.clone()).unwrap_or_default();
        for &pgid in &groups {
            signal_group(pgid, Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(500));
        for &pgid in &groups {
            signal_group(pgid, Signal::SIGKILL);
        }
    })
}

/// Finds `program` on PATH, or explains which Debian package provides it.
pub fn require_tool(program: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        PathBuf::from("/usr/sbin"),
        PathBuf::from("/sbin"),
        PathBuf::from("/usr/local/sbin"),
    ];
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("`{program}` not found: install the Debian package `{package}` (apt-get install -y {package})")
        })
}

/// CPU set for `taskset -c`.
#[derive(Debug, Clone, Copy)]
pub enum Cpus {
    /// One core.
    Core(usize),
    /// Every core of the machine.
    All,
}

impl Cpus {
    fn list(self) -> String {
        match self {
            Cpus::Core(core) => core.to_string(),
            Cpus::All => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                format!("0-{}", n.saturating_sub(1))
            }
        }
    }
}

/// `[setpriv --pdeathsig TERM] taskset -c <cpus> <program> <args…>`: the CPU set is always
/// explicit, so a run never inherits an affinity by accident; `setpriv` (util-linux, when present)
/// makes the kernel stop the child even if this process is killed without a chance to clean up.
pub fn pinned(program: &Path, cpus: Cpus) -> Command {
    let mut command = match require_tool("setpriv", "util-linux") {
        Ok(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "TERM", "taskset"]);
            command
        }
        Err(_) => Command::new("taskset"),
    };
    command.arg("-c").arg(cpus.list()).arg(program);
    command
}

/// A child process group that is terminated when this handle drops.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Supervised {
    /// Spawns `command` in a new process group, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.push(child.id() as i32);
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Errors (with the end of its log) when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.status = Some(status);
            bail!(
                "{} exited early ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 15)
            );
        }
        Ok(())
    }

    /// Waits for a normal exit until `deadline`; then terminates the group and errors.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.status = Some(status);
                self.forget_group();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!("{} did not finish in time and was killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, SIGKILL after 5 s; reaps the child.
    pub fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        if self.status.is_none() {
            // The leader first, so a forking server (NSD) stops and reaps its own workers.
            let _ = nix::sys::signal::kill(Pid::from_raw(pgid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match self.child.try_wait() {
                    Ok(Some(status)) => {
                        self.status = Some(status);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        signal_group(pgid, Signal::SIGKILL);
                        self.status = self.child.wait().ok();
                        break;
                    }
                }
            }
        }
        // Forked workers may outlive the leader by a moment; make sure none stays behind.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut signalled = false;
        while group_has_members(pgid) && Instant::now() < deadline {
            if !signalled {
                signal_group(pgid, Signal::SIGTERM);
                signalled = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if group_has_members(pgid) {
            signal_group(pgid, Signal::SIGKILL);
        }
        self.forget_group();
    }

    fn forget_group(&self) {
        let pgid = self.child.id() as i32;
        if let Ok(mut groups) = LIVE_GROUPS.lock() {
            groups.retain(|&g| g != pgid);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Pids of every process in group `pgid`.
fn group_members(pgid: i32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            // Fields after the name: state(0) ppid(1) pgrp(2); zombies do not count.
            stat_fields(pid).is_some_and(|f| {
                f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && f[0] != "Z"
            })
        })
        .collect()
}

fn group_has_members(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

/// CPU seconds (user + system) used so far by every process of the group led by `pid`.
pub fn group_cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as f64;
    group_members(pid as i32)
        .into_iter()
        .filter_map(stat_fields)
        // utime(11) stime(12) in the fields after the name.
        .map(|f| {
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (field(11) + field(12)) as f64
        })
        .sum::<f64>()
        / ticks_per_second
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sum of `VmRSS` over the group led by `pid` (NSD: main process plus forked servers and xfrd;
/// pages shared after fork are counted once per process).
pub fn group_rss_kib(pid: u32) -> Option<u64> {
    let members = group_members(pid as i32);
    if members.is_empty() {
        return None;
    }
    Some(members.into_iter().filter_map(rss_kib).sum())
}

/// CPU seconds (user + system) of the reaped children of this process so far (dnsperf runs).
pub fn children_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(u.user_time()) + seconds(u.system_time())
    })
}

/// Busy CPU seconds of the whole machine so far (all cores, from `/proc/stat`).
pub fn machine_busy_seconds() -> f64 {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as f64;
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal …: everything but idle and iowait is busy.
    let busy: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    busy as f64 / ticks_per_second
}

/// Waits (at most `max_wait`) until the rest of the machine is quiet: less than `threshold` of one
/// core busy over a one-second sample, not counting the processes of group `ours`. Returns the last
/// sample, in cores.
pub fn wait_for_quiet(ours: Option<u32>, threshold: f64, max_wait: Duration) -> f64 {
    let deadline = Instant::now() + max_wait;
    let mut announced = false;
    loop {
        let own_before = ours.map_or(0.0, group_cpu_seconds);
        let before = machine_busy_seconds();
        std::thread::sleep(Duration::from_secs(1));
        let own = ours.map_or(0.0, group_cpu_seconds) - own_before;
        let busy = (machine_busy_seconds() - before - own).max(0.0);
        if busy < threshold || Instant::now() >= deadline {
            if announced || busy >= threshold {
                println!(
                    "  machine {}: other processes use {:.0}% of a core",
                    if busy < threshold {
                        "quiet"
                    } else {
                        "still busy, measuring anyway"
                    },
                    busy * 100.0
                );
            }
            return busy;
        }
        if !announced {
            println!(
                "  waiting up to {max_wait:?} for the machine to be quiet: other processes use {:.0}% of a core",
                busy * 100.0
            );
            announced = true;
        }
    }
}
