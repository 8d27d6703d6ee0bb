//! DNS transport: UDP answer workers (one OS thread and one `SO_REUSEPORT` socket each, no async
//! runtime on the hot path) and a TCP listener on tokio. Both call [`responder::respond`].

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::dns::responder::{self, Limits, Transport};
use crate::dns::store::RecordStore;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How long a worker blocks in `recv` before it checks for shutdown and flushes metrics.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// TCP connections idle longer than this are closed (RFC 7766 suggests seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Concurrent TCP connections; more wait in the accept queue.
const TCP_MAX_CONNECTIONS: usize = 1024;

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
        metrics: &Metrics,
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
                let store = store.clone();
                let stop = stop.clone();
                let limits = limits.clone();
                let metrics = metrics.worker(Transport::Udp);
                std::thread::Builder::new()
                    .name(format!("fedns-udp-{i}"))
                    .spawn(move || udp_loop(socket, store, limits, metrics, stop))
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
fn udp_loop(
    socket: UdpSocket,
    store: Arc<RecordStore>,
    limits: Limits,
    mut metrics: crate::metrics::WorkerMetrics,
    stop: Arc<AtomicBool>,
) {
    use nix::errno::Errno;
    use nix::sys::socket::{
        ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
    };
    use std::io::{IoSlice, IoSliceMut};
    use std::os::fd::AsRawFd;

    let fd = socket.as_raw_fd();
    let mut packets = vec![[0u8; 4096]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(4096)).collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: [(usize, Option<SockaddrStorage>); BATCH] = [(0, None); BATCH];
    let mut replies: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
    let no_cmsgs: [ControlMessage<'_>; 0] = [];

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
                        received[n] = (msg.bytes, msg.address);
                        n += 1;
                    }
                    n
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    metrics.flush();
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
            let (len, peer) = received[i];
            let started = Instant::now();
            let answered = responder::respond(
                &packets[i][..len],
                &store,
                Transport::Udp,
                &limits,
                &mut outs[answers],
            );
            metrics.observe(answered, started.elapsed());
            if answered.is_some() && peer.is_some() {
                replies[answers] = peer;
                answers += 1;
            }
        }
        let mut sent = 0;
        while sent < answers {
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(outs.get(sent + i).map_or(&[][..], |o| &o[..]))]
            });
            match sendmmsg(
                fd,
                &mut send_headers,
                iovs[..answers - sent].iter(),
                &replies[sent..answers],
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let n = results.count();
                    if n == 0 {
                        break;
                    }
                    sent += n;
                }
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

/// Answers one datagram per `recv_from`/`send_to` where batching is not available.
#[cfg(not(target_os = "linux"))]
fn udp_loop(
    socket: UdpSocket,
    store: Arc<RecordStore>,
    limits: Limits,
    mut metrics: crate::metrics::WorkerMetrics,
    stop: Arc<AtomicBool>,
) {
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
                metrics.flush();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp recv failed");
                continue;
            }
        };
        let started = Instant::now();
        let answered =
            responder::respond(&packet[..len], &store, Transport::Udp, &limits, &mut out);
        if answered.is_some()
            && let Err(e) = socket.send_to(&out, peer)
        {
            tracing::debug!(error = %e, %peer, "udp send failed");
        }
        metrics.observe(answered, started.elapsed());
    }
}

/// Serves DNS over TCP until `stop` resolves.
pub async fn serve_tcp(
    listener: TcpListener,
    store: Arc<RecordStore>,
    limits: Limits,
    metrics: Metrics,
    stop: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let store = store.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            if let Err(e) = tcp_connection(stream, store, limits, metrics, stop).await {
                tracing::debug!(error = %e, %peer, "tcp connection ended");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    store: Arc<RecordStore>,
    limits: Limits,
    metrics: Metrics,
    stop: Shutdown,
) -> io::Result<()> {
    let mut worker = metrics.worker(Transport::Tcp);
    let mut packet = vec![0u8; u16::MAX as usize];
    let mut out = Vec::with_capacity(4096);
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(TCP_IDLE, stream.read_u16()) => match r {
                Ok(Ok(len)) => len as usize,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            },
            _ = stop.wait() => return Ok(()),
        };
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet[..len]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tcp read timed out"))??;
        let started = Instant::now();
        let answered =
            responder::respond(&packet[..len], &store, Transport::Tcp, &limits, &mut out);
        worker.observe(answered, started.elapsed());
        match answered {
            Some(_) => {
                let mut framed = Vec::with_capacity(out.len() + 2);
                framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
                framed.extend_from_slice(&out);
                stream.write_all(&framed).await?;
            }
            // A message we cannot answer ends the connection (RFC 7766 section 6.2.3).
            None => return Ok(()),
        }
        worker.flush();
    }
}
