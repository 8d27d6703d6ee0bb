//! DNS transport: UDP answer workers (one OS thread and one `SO_REUSEPORT` socket each, no async
//! runtime on the hot path) and a TCP listener on tokio. Both call [`responder::respond_from`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::dns::responder::{self, Answered, Limits, Transport};
use crate::dns::rrl::{Action, RateLimiter, RrlSettings};
use crate::dns::store::RecordStore;
use crate::dns::wire::{self, rtype};
use crate::dns::xfr::Transfers;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How long a worker blocks in `recv` before it checks for shutdown and flushes metrics.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// The running UDP workers of one listen address.
#[derive(Debug)]
pub struct UdpWorkers {
    pub local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpWorkers {
    /// Binds `workers` sockets to `addr` (port 0 picks one port for all) and starts one thread each.
    pub fn start(
        addr: SocketAddr,
        workers: usize,
        store: Arc<RecordStore>,
        limits: Limits,
        rrl: &RrlSettings,
        metrics: &Metrics,
        xfr: Option<Arc<Transfers>>,
    ) -> io::Result<Self> {
        let epoch = Instant::now();
        Self::start_with(addr, workers, |_| FednsAnswerer {
            store: store.clone(),
            limits: limits.clone(),
            limiter: RateLimiter::new(rrl.clone()),
            metrics: metrics.worker(Transport::Udp),
            xfr: xfr.clone(),
            epoch,
        })
    }

    /// [`UdpWorkers::start`] with any [`Answerer`]: the same sockets and batching around other
    /// answers (the benchmark's null responder measures the transport alone with it).
    pub fn start_with<A: Answerer>(
        addr: SocketAddr,
        workers: usize,
        mut answerer: impl FnMut(usize) -> A,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let first = bind_udp(addr)?;
        let local_addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers.max(1) {
            sockets.push(bind_udp(local_addr)?);
        }
        let threads = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let stop = stop.clone();
                let answerer = answerer(i);
                std::thread::Builder::new()
                    .name(format!("fedns-udp-{i}"))
                    .spawn(move || udp_loop(socket, answerer, stop))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            local_addr,
            stop,
            threads,
        })
    }

    /// Stops the workers after the packets they are answering.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What a UDP worker does with each datagram it reads.
pub trait Answerer: Send + 'static {
    /// Writes the reply to `packet` (from `client`) in `out`; `false` sends nothing.
    fn answer(&mut self, packet: &[u8], client: Option<IpAddr>, out: &mut Vec<u8>) -> bool;
    /// Called when the socket has been idle for a while.
    fn idle(&mut self) {}
}

/// The fedns answer path of one worker: the store, rate limiting, transfers' TSIG, metrics.
struct FednsAnswerer {
    store: Arc<RecordStore>,
    limits: Limits,
    limiter: RateLimiter,
    metrics: crate::metrics::WorkerMetrics,
    xfr: Option<Arc<Transfers>>,
    epoch: Instant,
}

impl Answerer for FednsAnswerer {
    // Not inlined: one symbol holding the whole answer path (lookup, rate limiting, metrics), so
    // bench/answer_instructions can count its instructions; one direct call per packet.
    #[inline(never)]
    fn answer(&mut self, packet: &[u8], client: Option<IpAddr>, out: &mut Vec<u8>) -> bool {
        let started = Instant::now();
        let answered = responder::respond_from(
            packet,
            &self.store,
            Transport::Udp,
            &self.limits,
            client,
            out,
        );
        if let (Some(a), Some(x)) = (&answered, &self.xfr)
            && a.transfer
        {
            x.finish_signed(packet, out, true);
        }
        let answered = match client {
            Some(client) => rate_limit(
                answered,
                client,
                out,
                &mut self.limiter,
                self.epoch,
                started,
                &mut self.metrics,
            ),
            None => answered,
        };
        let send = answered.is_some();
        self.metrics.observe(packet, answered, started.elapsed());
        send
    }

    fn idle(&mut self) {
        self.metrics.flush();
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Bursts queue in the kernel rather than being dropped.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(IDLE_TICK))?;
    Ok(socket.into())
}

/// Datagrams read and answered per system call on Linux.
#[cfg(target_os = "linux")]
const BATCH: usize = 32;

/// Answers datagrams in batches: one `recvmmsg` and one `sendmmsg` per batch of queries.
#[cfg(target_os = "linux")]
fn udp_loop(socket: UdpSocket, mut answerer: impl Answerer, stop: Arc<AtomicBool>) {
    use nix::errno::Errno;
    use nix::sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
        sendmmsg, setsockopt, sockopt,
    };
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    let fd = socket.as_raw_fd();
    // On a wildcard bind, learn each query's destination address and answer from it (a reply
    // from another address of the host is dropped by the client).
    let local = socket.local_addr().ok();
    let wildcard = local.is_some_and(|a| a.ip().is_unspecified());
    let cmsg_space = match local {
        Some(SocketAddr::V4(_)) if wildcard => Some(nix::cmsg_space!(nix::libc::in_pktinfo))
            .filter(|_| {
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
                    .inspect_err(|e| tracing::warn!(error = %e, "IP_PKTINFO unavailable"))
                    .is_ok()
            }),
        Some(SocketAddr::V6(_)) if wildcard => Some(nix::cmsg_space!(nix::libc::in6_pktinfo))
            .filter(|_| {
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                    .inspect_err(|e| tracing::warn!(error = %e, "IPV6_RECVPKTINFO unavailable"))
                    .is_ok()
            }),
        _ => None,
    };
    let mut packets = vec![[0u8; 4096]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(4096)).collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, cmsg_space.clone());
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers_pktinfo = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, cmsg_space);
    let mut received: [(usize, Option<SockaddrStorage>, Destination); BATCH] =
        [(0, None, Destination::Bound); BATCH];
    let mut replies: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
    let mut sources: [Destination; BATCH] = [Destination::Bound; BATCH];

    while !stop.load(Ordering::Relaxed) {
        let count = {
            let mut bufs = packets.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                [IoSliceMut::new(
                    bufs.next().map_or(&mut [][..], |b| &mut b[..]),
                )]
            });
            match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => {
                    let mut n = 0;
                    for msg in results {
                        let mut destination = Destination::Bound;
                        if let Ok(cmsgs) = msg.cmsgs() {
                            for cmsg in cmsgs {
                                match cmsg {
                                    ControlMessageOwned::Ipv4PacketInfo(mut info) => {
                                        // Reply from the address the query was sent to; let
                                        // routing pick the interface.
                                        info.ipi_spec_dst = info.ipi_addr;
                                        info.ipi_ifindex = 0;
                                        destination = Destination::V4(info);
                                    }
                                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                                        destination = Destination::V6(info);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        received[n] = (msg.bytes, msg.address, destination);
                        n += 1;
                    }
                    n
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    answerer.idle();
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "udp recvmmsg failed");
                    continue;
                }
            }
        };
        let mut answers = 0;
        for i in 0..count {
            let (len, peer, destination) = received[i];
            let client = peer.as_ref().and_then(ip_of);
            if answerer.answer(&packets[i][..len], client, &mut outs[answers]) && client.is_some() {
                replies[answers] = peer;
                sources[answers] = destination;
                answers += 1;
            }
        }
        let mut sent = 0;
        while sent < answers {
            // One sendmmsg per run of replies leaving from the same address (the control message
            // is shared by the whole call).
            let source = sources[sent];
            let run = sources[sent..answers]
                .iter()
                .take_while(|s| **s == source)
                .count();
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(outs.get(sent + i).map_or(&[][..], |o| &o[..]))]
            });
            let result = match &source {
                Destination::Bound => sendmmsg(
                    fd,
                    &mut send_headers,
                    iovs[..run].iter(),
                    &replies[sent..sent + run],
                    [],
                    MsgFlags::empty(),
                )
                .map(|r| r.count()),
                Destination::V4(info) => sendmmsg(
                    fd,
                    &mut send_headers_pktinfo,
                    iovs[..run].iter(),
                    &replies[sent..sent + run],
                    [ControlMessage::Ipv4PacketInfo(info)],
                    MsgFlags::empty(),
                )
                .map(|r| r.count()),
                Destination::V6(info) => sendmmsg(
                    fd,
                    &mut send_headers_pktinfo,
                    iovs[..run].iter(),
                    &replies[sent..sent + run],
                    [ControlMessage::Ipv6PacketInfo(info)],
                    MsgFlags::empty(),
                )
                .map(|r| r.count()),
            };
            match result {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // Skip the datagram that failed (e.g. an unreachable peer) and go on.
                    tracing::debug!(error = %e, "udp sendmmsg failed");
                    sent += 1;
                }
            }
        }
    }
}

/// The client address of a datagram.
#[cfg(target_os = "linux")]
fn ip_of(addr: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// Applies response rate limiting to the response built in `out`: `None` when it is dropped.
#[inline]
fn rate_limit(
    answered: Option<Answered>,
    client: IpAddr,
    out: &mut Vec<u8>,
    limiter: &mut RateLimiter,
    epoch: Instant,
    now: Instant,
    metrics: &mut crate::metrics::WorkerMetrics,
) -> Option<Answered> {
    let mut answered = answered?;
    let second = now.saturating_duration_since(epoch).as_secs() as u32;
    let question = out.get(..answered.question_end as usize).unwrap_or(out);
    match limiter.check(client, answered.class, question, second) {
        Action::Send => Some(answered),
        Action::Slip => {
            metrics.rate_limited(true);
            answered.truncate(out);
            Some(answered)
        }
        Action::Drop => {
            metrics.rate_limited(false);
            None
        }
    }
}

/// The address a reply leaves from: the socket's own, or (on a wildcard bind) the address the
/// query was sent to.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
enum Destination {
    Bound,
    V4(nix::libc::in_pktinfo),
    V6(nix::libc::in6_pktinfo),
}

#[cfg(target_os = "linux")]
impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bound, Self::Bound) => true,
            (Self::V4(a), Self::V4(b)) => a.ipi_spec_dst.s_addr == b.ipi_spec_dst.s_addr,
            (Self::V6(a), Self::V6(b)) => {
                a.ipi6_addr.s6_addr == b.ipi6_addr.s6_addr && a.ipi6_ifindex == b.ipi6_ifindex
            }
            _ => false,
        }
    }
}

/// Answers one datagram per `recv_from`/`send_to` where batching is not available.
#[cfg(not(target_os = "linux"))]
fn udp_loop(socket: UdpSocket, mut answerer: impl Answerer, stop: Arc<AtomicBool>) {
    let mut packet = [0u8; 4096];
    let mut out = Vec::with_capacity(64 * 1024);
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut packet) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                answerer.idle();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp recv failed");
                continue;
            }
        };
        if answerer.answer(&packet[..len], Some(peer.ip()), &mut out)
            && let Err(e) = socket.send_to(&out, peer)
        {
            tracing::debug!(error = %e, %peer, "udp send failed");
        }
    }
}

/// TCP listener settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSettings {
    /// Open connections; at the cap a new one closes the connection idle longest.
    pub max_connections: usize,
    /// How long a connection may wait for its next query when the server is not under pressure.
    pub idle_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

impl TcpSettings {
    /// Connections one client address may hold: an eighth of the cap (at least 8), so one
    /// client cannot push everyone else out. At its share a client's new connection closes its
    /// own connection idle longest.
    pub fn per_client(&self) -> usize {
        (self.max_connections / 8).max(8).min(self.max_connections)
    }

    /// The idle timeout with `open` connections: the configured one up to half the cap, then
    /// shrinking linearly to a tenth of it (at least 200 ms) at the cap, as NSD and Knot shorten
    /// it under load.
    pub fn idle_timeout_at(&self, open: usize) -> Duration {
        let half = self.max_connections / 2;
        if open <= half || self.max_connections == 0 {
            return self.idle_timeout;
        }
        let over = (open - half).min(self.max_connections - half) as u32;
        let span = (self.max_connections - half).max(1) as u32;
        let floor = (self.idle_timeout / 10).max(Duration::from_millis(200));
        let full = self.idle_timeout.saturating_sub(floor);
        (self.idle_timeout.saturating_sub(full * over / span)).max(floor.min(self.idle_timeout))
    }
}

/// One open TCP connection as the listener sees it.
#[derive(Debug)]
struct Conn {
    peer: IpAddr,
    /// Milliseconds since the listener started when the connection last finished an answer.
    last_active: AtomicU64,
    /// Set while a query is being read or answered: such a connection is not idle.
    busy: AtomicBool,
    /// Asked to close; it leaves the table when its task ends.
    closing: AtomicBool,
    close: tokio::sync::Notify,
}

/// The open connections, for picking which to close under pressure. Touched on accept and
/// close only, never per query.
#[derive(Debug)]
struct ConnTable {
    started: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    count: AtomicUsize,
}

impl ConnTable {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Registers a new connection, asking the idle-longest ones to close when `peer` is at its
    /// share or the table is at the cap.
    fn admit(&self, id: u64, peer: IpAddr, settings: &TcpSettings) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            peer,
            last_active: AtomicU64::new(self.now_ms()),
            busy: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close: tokio::sync::Notify::new(),
        });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let staying = || open.values().filter(|c| !c.closing.load(Ordering::Relaxed));
        let same_peer = staying().filter(|c| c.peer == peer).count();
        if same_peer >= settings.per_client() {
            evict_idlest(&open, Some(peer));
        } else if staying().count() >= settings.max_connections {
            evict_idlest(&open, None);
        }
        open.insert(id, conn.clone());
        self.count.store(open.len(), Ordering::Relaxed);
        conn
    }

    fn evict_idlest(&self) {
        evict_idlest(&self.open.lock().unwrap_or_else(|e| e.into_inner()), None);
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&id);
        self.count.store(open.len(), Ordering::Relaxed);
    }
}

/// Asks the connection idle longest (of `peer`, if given) to close. It leaves the table when its
/// task ends, right after.
fn evict_idlest(open: &HashMap<u64, Arc<Conn>>, peer: Option<IpAddr>) {
    let idlest = open
        .values()
        .filter(|c| peer.is_none_or(|p| c.peer == p) && !c.closing.load(Ordering::Relaxed))
        .min_by_key(|c| {
            (
                c.busy.load(Ordering::Relaxed),
                c.last_active.load(Ordering::Relaxed),
            )
        });
    if let Some(conn) = idlest {
        conn.closing.store(true, Ordering::Relaxed);
        conn.close.notify_one();
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Registered<'a> {
    table: &'a ConnTable,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

/// Serves DNS over TCP until `stop` resolves. Every connection is accepted at once; at the cap
/// the connection idle longest is closed instead (as NSD and Knot do).
pub async fn serve_tcp(
    listener: TcpListener,
    store: Arc<RecordStore>,
    limits: Limits,
    settings: TcpSettings,
    metrics: Metrics,
    stop: Shutdown,
    xfr: Option<Arc<Transfers>>,
) {
    let table = Arc::new(ConnTable {
        started: Instant::now(),
        open: Mutex::new(HashMap::new()),
        count: AtomicUsize::new(0),
    });
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors: make room, then go on accepting.
                tracing::debug!(error = %e, "tcp accept failed");
                table.evict_idlest();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let conn = table.admit(id, peer.ip(), &settings);
        let table = table.clone();
        let store = store.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        let limits = limits.clone();
        let xfr = xfr.clone();
        tokio::spawn(async move {
            let _registered = Registered { table: &table, id };
            let _ = stream.set_nodelay(true);
            let connection = TcpConnection {
                conn: &conn,
                table: &table,
                settings,
                store: &store,
                limits,
                xfr,
            };
            if let Err(e) = connection.serve(stream, metrics, stop).await {
                tracing::debug!(error = %e, %peer, "tcp connection ended");
            }
        });
    }
}

struct TcpConnection<'a> {
    conn: &'a Conn,
    table: &'a ConnTable,
    settings: TcpSettings,
    store: &'a RecordStore,
    limits: Limits,
    xfr: Option<Arc<Transfers>>,
}

impl TcpConnection<'_> {
    async fn serve(
        mut self,
        mut stream: TcpStream,
        metrics: Metrics,
        stop: Shutdown,
    ) -> io::Result<()> {
        let mut worker = metrics.worker(Transport::Tcp);
        // Sized to each message as it comes, not to the largest possible one.
        let mut packet = Vec::new();
        let mut out = Vec::new();
        let mut framed = Vec::new();
        loop {
            let idle = self
                .settings
                .idle_timeout_at(self.table.count.load(Ordering::Relaxed));
            let len = tokio::select! {
                r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                    Ok(Ok(len)) => len as usize,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                },
                _ = self.conn.close.notified() => return Ok(()),
                _ = stop.wait() => return Ok(()),
            };
            self.conn.busy.store(true, Ordering::Relaxed);
            packet.resize(len, 0);
            tokio::select! {
                r = tokio::time::timeout(idle, stream.read_exact(&mut packet[..len])) => {
                    r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tcp read timed out"))??;
                }
                _ = self.conn.close.notified() => return Ok(()),
            }
            // RFC 7828: tell the client how long it may keep the connection idle.
            self.limits.tcp_keepalive = Some((idle.as_millis() / 100).min(u16::MAX as u128) as u16);
            let started = Instant::now();
            if let Some(xfr) = &self.xfr
                && wire::parse_query(&packet)
                    .is_ok_and(|q| matches!(q.qtype, rtype::AXFR | rtype::IXFR))
            {
                // Zone transfers are built off the runtime's threads (a big zone takes a while)
                // and written message by message; a client that stops reading loses its slot.
                let (x, p, peer) = (xfr.clone(), packet.clone(), self.conn.peer);
                let messages = tokio::task::spawn_blocking(move || x.answer_transfer(&p, peer))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                for message in messages {
                    framed.clear();
                    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
                    framed.extend_from_slice(&message);
                    if !self.write_bounded(&mut stream, &framed, &stop).await? {
                        return Ok(());
                    }
                }
                self.conn
                    .last_active
                    .store(self.table.now_ms(), Ordering::Relaxed);
                self.conn.busy.store(false, Ordering::Relaxed);
                framed = Vec::new();
                continue;
            }
            let answered = responder::respond_from(
                &packet,
                self.store,
                Transport::Tcp,
                &self.limits,
                Some(self.conn.peer),
                &mut out,
            );
            if let (Some(a), Some(x)) = (&answered, &self.xfr)
                && a.transfer
            {
                x.finish_signed(&packet, &mut out, false);
            }
            worker.observe(&packet, answered, started.elapsed());
            match answered {
                Some(_) => {
                    framed.clear();
                    framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
                    framed.extend_from_slice(&out);
                    if !self.write_bounded(&mut stream, &framed, &stop).await? {
                        return Ok(());
                    }
                }
                // A message we cannot answer ends the connection (RFC 7766 section 6.2.3).
                None => return Ok(()),
            }
            worker.flush();
            self.conn
                .last_active
                .store(self.table.now_ms(), Ordering::Relaxed);
            self.conn.busy.store(false, Ordering::Relaxed);
            // A large message does not keep its buffers for the connection's lifetime.
            for buf in [&mut packet, &mut out, &mut framed] {
                if buf.capacity() > 4096 {
                    *buf = Vec::new();
                }
            }
        }
    }

    /// Writes one framed message. A peer that has not taken it within the idle timeout (it
    /// stopped reading, or reads too slowly) is disconnected: a stalled reader holds its slot,
    /// and nothing else, for that long at most. `Ok(false)`: the connection was asked to close
    /// (pressure at the cap, shutdown) while the write was waiting.
    async fn write_bounded(
        &self,
        stream: &mut TcpStream,
        framed: &[u8],
        stop: &Shutdown,
    ) -> io::Result<bool> {
        tokio::select! {
            r = tokio::time::timeout(self.settings.idle_timeout, stream.write_all(framed)) => {
                r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tcp write timed out"))??;
                Ok(true)
            }
            _ = self.conn.close.notified() => Ok(false),
            _ = stop.wait() => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn idle_timeout_shrinks_past_half_the_cap() {
        let s = TcpSettings {
            max_connections: 100,
            idle_timeout: Duration::from_secs(10),
        };
        assert_eq!(s.idle_timeout_at(0), Duration::from_secs(10));
        assert_eq!(s.idle_timeout_at(50), Duration::from_secs(10));
        assert!(s.idle_timeout_at(75) < Duration::from_secs(6));
        assert_eq!(s.idle_timeout_at(100), Duration::from_secs(1));
        assert_eq!(s.idle_timeout_at(500), Duration::from_secs(1));
    }

    #[test]
    fn at_the_cap_the_idlest_connection_is_asked_to_close() {
        let settings = TcpSettings {
            max_connections: 3,
            idle_timeout: Duration::from_secs(10),
        };
        let table = ConnTable {
            started: Instant::now(),
            open: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
        };
        let peers: [IpAddr; 3] = [
            [127, 0, 0, 1].into(),
            [127, 0, 0, 2].into(),
            [127, 0, 0, 3].into(),
        ];
        let conns: Vec<_> = (0..3)
            .map(|i| table.admit(i, peers[i as usize], &settings))
            .collect();
        conns[0].last_active.store(50, Ordering::Relaxed);
        conns[1].last_active.store(10, Ordering::Relaxed);
        conns[2].last_active.store(0, Ordering::Relaxed);
        conns[2].busy.store(true, Ordering::Relaxed);
        let _new = table.admit(3, [127, 0, 0, 4].into(), &settings);
        // The idle-longest connection that is not answering a query gets the close signal.
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let closed: Vec<bool> = conns
            .iter()
            .map(|c| {
                let mut n = std::pin::pin!(c.close.notified());
                n.as_mut().poll(&mut cx).is_ready()
            })
            .collect();
        assert_eq!(closed, [false, true, false]);
    }
}
