//! TCP under pressure: how long a new client waits for its answer while thousands of connections
//! are held open, and what those connections cost in memory.
//!
//! `cargo bench --bench tcp_pressure -- [connections]` (default 2,000) starts the release fedns on
//! the demo federation, measures its idle RSS, opens the connections from 40 loopback addresses
//! (each asks one question and then stays open), and measures a new client's connect + query +
//! answer time (median and worst of 50) and the RSS again. It runs twice: with the default
//! connection cap (1,024: the idle-longest connections are closed to make room) and with a cap
//! above the connection count (every connection stays open).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let connections: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("fedns, {connections} held-open TCP connections from 40 loopback addresses");
    println!(
        "{:>10} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "cap", "still open", "median ms", "worst ms", "idle RSS", "RSS"
    );
    for cap in [1024, connections * 2] {
        let port = free_port();
        let dns: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = Command::new(env!("CARGO_BIN_EXE_fedns"))
            .arg("serve")
            .arg("--source")
            .arg(repo.join("deploy/demo"))
            .arg("--zones")
            .arg(repo.join("zones"))
            .args(["--dns-listen", &dns.to_string()])
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--tcp-max-connections", &cap.to_string()])
            .args(["--tcp-idle-timeout", "60s"])
            .args(["--udp-workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fedns");
        wait_until_answering(dns);
        let idle = rss_kib(&server);
        let mut held = Vec::with_capacity(connections);
        for i in 0..connections {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let source: SocketAddr = ([127, 0, 0, 2 + (i % 40) as u8], 0).into();
            socket.bind(&source.into()).unwrap();
            socket.connect(&dns.into()).unwrap();
            let mut stream: TcpStream = socket.into();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            // Evicted connections may fail here; that is the point of the cap.
            let _ = exchange(&mut stream);
            held.push(stream);
        }
        let mut times: Vec<Duration> = (0..50)
            .map(|_| {
                let started = Instant::now();
                let mut stream = TcpStream::connect(dns).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                exchange(&mut stream).expect("new client answered");
                started.elapsed()
            })
            .collect();
        times.sort();
        let loaded = rss_kib(&server);
        let open = held
            .iter_mut()
            .filter(|s| {
                let mut s: &TcpStream = s;
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 1];
                matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count();
        println!(
            "{cap:>10} {open:>10} {:>12.2} {:>12.2} {:>7} MB {:>7} MB",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            idle / 1024,
            loaded / 1024
        );
        drop(held);
        stop(&mut server);
    }
}

/// One query for the demo's global name over `stream`; the answer's length.
fn exchange(stream: &mut TcpStream) -> std::io::Result<usize> {
    let q = query();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf.len())
}

fn query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in "nginx.test.galactic.svc.example.com".split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn wait_until_answering(dns: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        socket.send_to(&query(), dns).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && n > 12
            && buf[3] & 0x0F == 0
        {
            return;
        }
    }
    panic!("fedns did not start answering on {dns}");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // UDP on the same number must be free too.
    if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        port
    } else {
        free_port()
    }
}

fn rss_kib(child: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
