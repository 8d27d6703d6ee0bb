//! Real secondaries for zone transfer tests and benches: NSD, Knot or BIND (Debian packages `nsd`,
//! `knot`, `bind9`) started on a loopback port with exactly the recipe of `deploy/secondaries/`
//! (fedns's address and the secret put in). Used by `tests/secondaries.rs` and `bench/xfr.rs`
//! (which includes this file and `tools.rs` with `#[path]`).

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fedns::dns::tsig;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::tools;

/// The secret of the recipes (and of the test's fedns).
pub const SECRET: &str = "c2VjcmV0LWZvci10aGUtZmVkbnMtZGVtby1vbmx5IQ==";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Nsd,
    Knot,
    Bind,
}

pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running secondary; killed on drop.
pub struct Secondary {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub kind: Kind,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secondary {
    /// Its log file.
    pub fn log(&self) -> String {
        let file = match self.kind {
            Kind::Nsd => "nsd.log",
            Kind::Knot => "knot.log",
            Kind::Bind => "named.log",
        };
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }
}

/// The recipe of `deploy/secondaries/` with fedns's address (and `secret`) put in.
pub fn recipe(kind: Kind, fedns: SocketAddr, secret: &str) -> String {
    let file = match kind {
        Kind::Nsd => "nsd.conf",
        Kind::Knot => "knot.conf",
        Kind::Bind => "named.conf",
    };
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/secondaries")
            .join(file),
    )
    .unwrap();
    let port = fedns.port();
    text.replace("192.0.2.53@53", &format!("127.0.0.1@{port}"))
        .replace("port 53", &format!("port {port}"))
        .replace("192.0.2.53", "127.0.0.1")
        .replace(SECRET, secret)
}

pub fn start_secondary(kind: Kind, port: u16, fedns: SocketAddr, secret: &str) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (program, package) = match kind {
        Kind::Nsd => ("/usr/sbin/nsd", "nsd"),
        Kind::Knot => ("/usr/sbin/knotd", "knot"),
        Kind::Bind => ("/usr/sbin/named", "bind9"),
    };
    if !Path::new(program).exists() {
        tools::missing(program, &format!("apt-get install {package}"));
    }
    let recipe = recipe(kind, fedns, secret);
    let (conf, args): (String, Vec<String>) = match kind {
        Kind::Nsd => (
            format!(
                "server:\n  ip-address: 127.0.0.1@{port}\n  zonesdir: {d}\n  username: \"\"\n  chroot: \"\"\n  \
                 pidfile: {d}/nsd.pid\n  database: \"\"\n  zonelistfile: {d}/zone.list\n  xfrdfile: {d}/xfrd.state\n  \
                 xfrdir: {d}\n  logfile: {d}/nsd.log\n  server-count: 1\n  verbosity: 2\n  rrl-ratelimit: 0\n\
                 remote-control:\n  control-enable: no\n{recipe}"
            ),
            vec!["-d".into(), "-c".into(), format!("{d}/secondary.conf")],
        ),
        Kind::Knot => (
            format!(
                "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n\
                 database:\n  storage: {d}\n\
                 template:\n  - id: default\n    storage: {d}\n\
                 log:\n  - target: {d}/knot.log\n    any: debug\n\
                 {recipe}"
            ),
            vec!["-c".into(), format!("{d}/secondary.conf")],
        ),
        Kind::Bind => (
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
}};
controls {{ }};
logging {{
    channel file {{ file "{d}/named.log"; severity debug 1; print-time yes; }};
    category default {{ file; }};
    category xfer-in {{ file; }};
    category notify {{ file; }};
}};
{recipe}"#
            ),
            vec!["-g".into(), "-c".into(), format!("{d}/secondary.conf")],
        ),
    };
    std::fs::write(dir.path().join("secondary.conf"), conf).unwrap();
    let child = Command::new(program)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    Secondary {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
        kind,
    }
}

/// The SOA serial `server` answers for `zone` over UDP; `None` without an answer within 2 s or
/// without the zone.
pub fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let mut query = Message::query();
    query.metadata.id = 0x5053;
    query.add_query(Query::query(Name::from_ascii(zone).ok()?, RecordType::SOA));
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    socket.send_to(&query.to_vec().ok()?, server).ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    match &m.answers.first()?.data {
        RData::SOA(soa) if m.metadata.response_code == ResponseCode::NoError => Some(soa.serial),
        _ => None,
    }
}

/// A zone transfer as received.
pub struct Received {
    /// The messages, TSIG removed.
    pub messages: Vec<Message>,
    /// Bytes on the wire, TCP length prefixes included.
    pub bytes: usize,
}

impl Received {
    pub fn records(&self) -> usize {
        self.messages.iter().map(|m| m.answers.len()).sum()
    }
}

/// An AXFR of `zone` (or, with `ixfr_from`, an IXFR from that serial) from `server` over a new TCP
/// connection, signed with `key` when given: what came back, or the rcode of a refusal. Reads
/// until the transfer is complete (RFC 5936 and RFC 1995 framing: the closing SOA).
pub fn transfer(
    server: SocketAddr,
    zone: &str,
    ixfr_from: Option<u32>,
    key: Option<&tsig::Key>,
) -> Result<Received, u8> {
    let qtype = if ixfr_from.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    let mut q = Message::query();
    q.metadata.id = 0x5854;
    q.add_query(Query::query(Name::from_ascii(zone).unwrap(), qtype));
    let mut query = q.to_vec().unwrap();
    if let Some(serial) = ixfr_from {
        // The client's SOA in the authority section: owner = the question's name, only the
        // serial matters.
        query[9] = 1;
        query.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0]);
        query.extend_from_slice(&serial.to_be_bytes());
        query.extend_from_slice(&[0; 16]);
    }
    if let Some(key) = key {
        tsig::sign_request(&mut query, key, tsig::now());
    }
    let mut s = std::net::TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&(query.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&query).unwrap();
    let mut received = Received {
        messages: Vec::new(),
        bytes: 0,
    };
    // The current serial (the first SOA), whether the answer is incremental, and whether the next
    // SOA of an incremental answer opens a difference sequence (or, with the current serial,
    // closes the answer).
    let (mut current, mut incremental, mut opens) = (None, false, true);
    let mut records = 0;
    loop {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        received.bytes += 2 + buf.len();
        let rc = buf[3] & 0x0F;
        if rc != 0 {
            return Err(rc);
        }
        if let Ok(Some(record)) = tsig::find(&buf) {
            buf.truncate(record.at);
            let ar = u16::from_be_bytes([buf[10], buf[11]]) - 1;
            buf[10..12].copy_from_slice(&ar.to_be_bytes());
        }
        let m = Message::from_vec(&buf).unwrap();
        let mut done = false;
        for r in &m.answers {
            records += 1;
            let serial = match &r.data {
                RData::SOA(soa) => Some(soa.serial),
                _ => None,
            };
            match records {
                1 => current = serial,
                2 => {
                    incremental = ixfr_from.is_some() && serial.is_some();
                    if incremental {
                        opens = false;
                    }
                    done = !incremental && serial.is_some() && serial == current;
                }
                _ if incremental => {
                    if serial.is_some() {
                        done = opens && serial == current;
                        opens = !opens;
                    }
                }
                _ => done = serial.is_some() && serial == current,
            }
        }
        received.messages.push(m);
        // An IXFR answered with the SOA alone: the client is current.
        if done || (records == 1 && ixfr_from.is_some()) {
            return Ok(received);
        }
    }
}
