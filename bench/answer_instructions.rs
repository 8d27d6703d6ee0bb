//! Instructions per answered query in fedns's answer path, counted by valgrind's callgrind: a
//! count that does not depend on what else the machine is doing, for comparing configurations
//! whose difference is smaller than the noise of a timed run (dnsperf on this machine varies by
//! ±10%). Each case starts the release fedns on the demo federation under callgrind, collecting
//! only inside the UDP worker's answer function (`FednsAnswerer::answer`: parsing, the lookup,
//! rate limiting and metrics; the socket calls and the kernel's work are left out, they are the
//! same in every case), sends `--queries` queries one at a time, stops it and reads the total.
//!
//! Cases: `rrl-off` (`--rrl-rate 0`) and `rrl-on` (response rate limiting at a rate this client
//! never reaches, so every response goes through the table and none is limited).
//!
//! `cargo bench --bench answer_instructions -- [--queries 20000]` (needs Debian `valgrind`).

#[path = "interrupt.rs"]
#[allow(dead_code)]
mod interrupt;
#[path = "dns_load/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "udp_client.rs"]
#[allow(dead_code)]
mod udp_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::udp_client::UdpClient;

#[derive(Debug, Parser)]
struct Options {
    /// Queries per case.
    #[arg(long, default_value_t = 20_000)]
    queries: u32,
    /// fedns binary [default: target/release/fedns, which `cargo bench` builds].
    #[arg(long)]
    fedns: Option<PathBuf>,
    /// Passed by `cargo bench`; without it (as under `cargo test --all-targets`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The names asked, in turn: a global name (A and AAAA), a regional name, a CNAME fallback
/// and a missing name (NXDOMAIN), so every response class the limiter keys on is in the mix.
const QUESTIONS: [(&str, u16); 5] = [
    ("nginx.test.galactic.svc.example.com", 1),
    ("nginx.test.galactic.svc.example.com", 28),
    ("nginx.test.galactic.svc.us.example.com", 1),
    ("nginx.test.galactic.svc.ap1.ap.example.com", 1),
    ("nosuch.test.galactic.svc.example.com", 1),
];

fn free_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

fn ready(admin: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&admin, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// Sends SIGTERM and waits for the process (valgrind writes its output on exit).
fn terminate(child: &mut Child) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("fedns under valgrind exited with {status}");
    }
    Ok(())
}

/// The collected instruction total of a callgrind output file (its `totals:` or `summary:` line).
fn total_instructions(path: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .max()
        .with_context(|| format!("no totals line in {}", path.display()))
}

/// Instructions per query of one case: fedns with `args` under callgrind.
fn measure(opts: &Options, fedns: &Path, case: &str, args: &[&str], out: &Path) -> Result<f64> {
    let valgrind = procs::require_tool("valgrind", "valgrind")?;
    let (dns_port, admin_port) = (free_port()?, free_port()?);
    let dns: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = out.join(format!("callgrind.{case}.out"));
    let log = std::fs::File::create(out.join(format!("{case}.log")))?;
    let mut child = Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg("--toggle-collect=*FednsAnswerer*answer*")
        .arg(format!("--callgrind-out-file={}", output.display()))
        .arg(fedns)
        .args(["serve", "--source"])
        .arg(root.join("deploy/demo"))
        .args(["--dns-listen", &dns.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--udp-workers", "1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting fedns under valgrind")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready(admin) {
        if let Some(status) = child.try_wait()? {
            bail!("fedns under valgrind exited before it was ready: {status} (see {case}.log)");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("fedns under valgrind not ready within 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut client = UdpClient::new(dns)?;
    let mut answered = 0u32;
    for i in 0..opts.queries {
        let (name, qtype) = QUESTIONS[i as usize % QUESTIONS.len()];
        let reply = client.query(name, qtype, Duration::from_secs(10))?;
        if reply.metadata.truncation {
            bail!("{case}: a truncated (rate-limited) answer: the case would not be comparable");
        }
        answered += 1;
    }
    terminate(&mut child)?;
    let total = total_instructions(&output)?;
    Ok(total as f64 / f64::from(answered))
}

fn run(opts: &Options) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fedns = opts
        .fedns
        .clone()
        .or_else(|| option_env!("CARGO_BIN_EXE_fedns").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target/release/fedns"));
    let out = root.join("bench/out/answer_instructions");
    std::fs::create_dir_all(&out)?;
    let cases: [(&str, &[&str]); 2] = [
        ("rrl-off", &["--rrl-rate", "0"]),
        ("rrl-on", &["--rrl-rate", "1000000000"]),
    ];
    let mut lines = vec![format!(
        "instructions per query in the answer function (callgrind), {} queries per case, one at a time",
        opts.queries
    )];
    let mut per_query = Vec::new();
    for (case, args) in cases {
        let n = measure(opts, &fedns, case, args, &out)?;
        lines.push(format!("{case:<8} {n:>10.0}"));
        println!("{}", lines.last().unwrap());
        per_query.push(n);
    }
    lines.push(format!(
        "rrl-on/rrl-off: {:.4}× ({:+.0} instructions per query)",
        per_query[1] / per_query[0],
        per_query[1] - per_query[0]
    ));
    println!("{}", lines.last().unwrap());
    std::fs::write(out.join("results.txt"), lines.join("\n") + "\n")?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let opts = Options::parse();
    if !opts.bench {
        eprintln!(
            "answer_instructions is a benchmark: run it with `cargo bench --bench answer_instructions`"
        );
        return std::process::ExitCode::SUCCESS;
    }
    match run(&opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("answer_instructions: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
