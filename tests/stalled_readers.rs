//! TCP clients that stop reading: a zone transfer left half-read, or pipelined queries whose
//! answers are never taken. The stalled connection must block no other UDP or TCP answer and no
//! other transfer, and the server drops it once a write has waited the idle timeout.
//!
//! The client shrinks its receive buffer so the server's writes block after a few kilobytes; the
//! server side of the connection is watched in `/proc/net/tcp` (unsent bytes, then gone or
//! closing), which needs no cooperation from the stalled client.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The server's `--tcp-idle-timeout`, which also bounds each write.
const IDLE: Duration = Duration::from_secs(2);
/// Records of the big zone: about 8 MB of TXT, far more than socket buffers hold.
const RECORDS: usize = 32_000;

/// A static zone `big.test.` of [`RECORDS`] TXT records, and `fat.big.test.` with 20 TXT
/// records (a 4 KB answer).
fn write_big_zone(zones: &Path) {
    let mut text = String::from(
        "$ORIGIN big.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 1209600 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
    );
    let filler = "x".repeat(200);
    for i in 0..20 {
        text.push_str(&format!("fat IN TXT \"{i:04}{filler}\"\n"));
    }
    for i in 0..RECORDS {
        text.push_str(&format!("t{i} IN TXT \"{i:06}{filler}\"\n"));
    }
    std::fs::write(zones.join("big.test.zone"), text).unwrap();
}

async fn start() -> Server {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "transfer:\n  allow: [{network: 127.0.0.0/8}]\n",
    )
    .unwrap();
    let path = config.path().to_owned();
    let server = Server::start_configured(
        |source, zones| {
            copy_tree(&repo().join("deploy/demo"), source);
            copy_tree(&repo().join("zones"), zones);
            write_big_zone(zones);
        },
        |args| {
            args.config = Some(path);
            args.tcp_idle_timeout = Some(IDLE);
        },
    )
    .await;
    drop(config);
    server
}

/// A connection whose receive buffer is tiny, so the server's writes block almost at once.
async fn connect_small(server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(server).await.unwrap()
}

async fn send(stream: &mut TcpStream, query: &[u8]) {
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(query).await.unwrap();
}

/// The next framed message, or `None` at EOF or a reset.
async fn receive(stream: &mut TcpStream) -> Option<Message> {
    let len = stream.read_u16().await.ok()?;
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Message::from_vec(&buf).unwrap())
}

/// The server side of the connection whose client end is `client`, from `/proc/net/tcp`:
/// (state, bytes queued unsent). `None` when the kernel no longer has it.
fn server_side(server: SocketAddr, client: SocketAddr) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16).unwrap();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (port(f[1]) == server.port() && port(f[2]) == client.port()).then(|| {
            let state = u8::from_str_radix(f[3], 16).unwrap();
            let tx = f[4].split(':').next().unwrap();
            (state, u64::from_str_radix(tx, 16).unwrap())
        })
    })
}

const ESTABLISHED: u8 = 1;

/// Waits until the server holds unsent bytes for `client`: its writes are stuck on our window.
async fn until_stalled(server: SocketAddr, client: SocketAddr) -> Instant {
    let stalled = eventually(Duration::from_secs(20), async || {
        server_side(server, client).is_some_and(|(state, tx)| state == ESTABLISHED && tx > 0)
    })
    .await;
    assert!(
        stalled.is_some(),
        "the server never had unsent bytes for {client}: {:?}",
        server_side(server, client)
    );
    Instant::now()
}

/// Waits until the server has closed its side of `client`'s connection; how long it took from
/// `since`. Fails past the idle timeout plus `margin`.
async fn until_dropped(server: SocketAddr, client: SocketAddr, since: Instant) -> Duration {
    let margin = Duration::from_secs(5);
    let dropped = eventually(IDLE + margin, async || {
        server_side(server, client).is_none_or(|(state, _)| state != ESTABLISHED)
    })
    .await;
    assert!(
        dropped.is_some(),
        "the stalled connection {client} is still open {:?} after it stalled (bound: idle timeout {IDLE:?} + {margin:?}): {:?}",
        since.elapsed(),
        server_side(server, client)
    );
    since.elapsed()
}

/// Other clients are answered: UDP, TCP on a new connection.
async fn others_are_answered(server: &Server) {
    let mut udp = server.udp_client().await;
    let m = ask(&mut udp, "ns1.acme.com.", RecordType::A).await;
    assert_eq!(summary(&m), "NoError A 127.0.0.1");
    let mut tcp = server.tcp_client().await;
    let m = ask(&mut tcp, "ns1.big.test.", RecordType::A).await;
    assert_eq!(summary(&m), "NoError A 127.0.0.1");
}

/// A whole AXFR of `zone` on a new connection: its record count.
async fn full_axfr(server: SocketAddr, zone: &str) -> usize {
    let mut stream = TcpStream::connect(server).await.unwrap();
    send(&mut stream, &query_bytes(zone, RecordType::AXFR, false)).await;
    let mut records = 0;
    let mut soas = 0;
    while soas < 2 {
        let m = tokio::time::timeout(Duration::from_secs(20), receive(&mut stream))
            .await
            .expect("a transfer message within 20 s")
            .expect("the transfer ended early");
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        records += m.answers.len();
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_transfer_blocks_no_one_and_is_dropped() {
    let server = start().await;
    let mut stalled = connect_small(server.dns).await;
    let client = stalled.local_addr().unwrap();
    send(
        &mut stalled,
        &query_bytes("big.test.", RecordType::AXFR, false),
    )
    .await;
    // The transfer started: its first message, opening with the SOA.
    let first = tokio::time::timeout(Duration::from_secs(20), receive(&mut stalled))
        .await
        .expect("the first transfer message within 20 s")
        .expect("a transfer message");
    assert_eq!(first.answers[0].record_type(), RecordType::SOA);
    let mut soas = 1;
    // Then the client stops reading and the server's writes block.
    let since = until_stalled(server.dns, client).await;
    others_are_answered(&server).await;
    assert_eq!(
        server_side(server.dns, client).map(|s| s.0),
        Some(ESTABLISHED),
        "the other answers came while the transfer was stalled"
    );
    // Another transfer goes through, every record of the zone.
    assert_eq!(full_axfr(server.dns, "big.test.").await, RECORDS + 20 + 4);
    let took = until_dropped(server.dns, client, since).await;
    eprintln!("stalled transfer dropped {took:?} after it stalled (idle timeout {IDLE:?})");
    // Reading again gets what was already sent, then the end: never the closing SOA.
    while let Some(m) = receive(&mut stalled).await {
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
    }
    assert_eq!(soas, 1, "the stalled transfer was cut short");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_queries_and_never_reads_is_dropped() {
    let server = start().await;
    let mut stalled = connect_small(server.dns).await;
    let client = stalled.local_addr().unwrap();
    // 3,000 queries for a 4 KB answer: 12 MB the client never takes.
    let query = query_bytes("fat.big.test.", RecordType::TXT, false);
    let mut burst = Vec::new();
    for _ in 0..3000 {
        burst.extend_from_slice(&(query.len() as u16).to_be_bytes());
        burst.extend_from_slice(&query);
    }
    stalled.write_all(&burst).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), receive(&mut stalled))
        .await
        .expect("the first answer within 20 s")
        .expect("an answer");
    assert_eq!(first.answers.len(), 20);
    let since = until_stalled(server.dns, client).await;
    others_are_answered(&server).await;
    assert_eq!(
        server_side(server.dns, client).map(|s| s.0),
        Some(ESTABLISHED),
        "the other answers came while the connection was stalled"
    );
    let took = until_dropped(server.dns, client, since).await;
    eprintln!(
        "stalled pipelining client dropped {took:?} after it stalled (idle timeout {IDLE:?})"
    );
    let mut answers = 1;
    while receive(&mut stalled).await.is_some() {
        answers += 1;
    }
    assert!(answers < 3000, "all {answers} answers were sent");
    server.stop().await;
}
