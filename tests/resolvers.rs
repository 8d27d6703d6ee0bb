//! The forwarding recipes of `deploy/forwarding/`, proven with real recursive resolvers: unbound
//! (stub zone) and BIND's named (forward zone) run as the current user on free loopback ports, from
//! a configuration in a temporary directory that includes the recipe file verbatim but for the
//! fedns address. fedns serves a copy of the demo; every query goes to the resolver, with RD set.
//!
//! The resolvers never send a packet off this machine: only `example.com` is resolvable (unbound
//! refuses every other name; both have root hints that point at 127.0.0.1) and the tests ask for
//! nothing else. A missing resolver fails the test naming its Debian package (`bash .ci/test`
//! installs `unbound` and `bind9`), or marks it ignored under `FEDNS_SKIP_MISSING_TOOLS=1`.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const G: &str = "nginx.test.galactic.svc.example.com.";
const US: &str = "nginx.test.galactic.svc.us.example.com.";
const US1: &str = "nginx.test.galactic.svc.us1.us.example.com.";
const US2: &str = "nginx.test.galactic.svc.us2.us.example.com.";
const AP: &str = "nginx.test.galactic.svc.ap.example.com.";
const AP1: &str = "nginx.test.galactic.svc.ap1.ap.example.com.";
const MISSING: &str = "nope.test.galactic.svc.example.com.";

/// The address the recipes use for fedns (TEST-NET-1), replaced by the test's fedns.
const RECIPE_UNBOUND_ADDR: &str = "192.0.2.53@53";
const RECIPE_BIND_ADDR: &str = "192.0.2.53 port 53";

/// Root hints that lead nowhere but loopback, so a stray recursion cannot leave the machine.
const LOOPBACK_ROOT_HINTS: &str = ".                3600000 IN NS a.root.invalid.\n\
                                   a.root.invalid.  3600000 IN A  127.0.0.1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unbound,
    Bind,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Unbound => "unbound",
            Kind::Bind => "named",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Unbound => "unbound",
            Kind::Bind => "bind9",
        }
    }
}

/// The resolver's executable: on PATH or in the sbin directories (not on a user's PATH on Debian).
/// A missing one fails the test naming its Debian package.
fn find_daemon(kind: Kind) -> PathBuf {
    let name = kind.binary();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        common::tools::missing(name, &format!("apt-get install {}", kind.package()))
    })
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A recursive resolver process forwarding `example.com` to fedns. Killed on drop.
struct Resolver {
    kind: Kind,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Resolver {
    async fn start(kind: Kind, daemon: &Path, fedns: SocketAddr) -> Resolver {
        let mut last_log = String::new();
        // A port taken between free_port() and the daemon's bind makes it exit: try another.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let conf = write_config(kind, dir.path(), port, fedns);
            let log = dir.path().join("resolver.log");
            let daemon = runnable_copy(daemon, dir.path());
            let mut command = Command::new(&daemon);
            match kind {
                // -d: foreground, logging to stderr.
                Kind::Unbound => command.arg("-d").arg("-c").arg(&conf),
                // -g: foreground, logging to stderr; no -u (no user switch), no -t (no chroot).
                Kind::Bind => command.args(["-g", "-n", "1", "-c"]).arg(&conf),
            };
            let mut child = command
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", daemon.display()));
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(15) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Some(m) = try_resolve(addr, "example.com.", RecordType::SOA).await
                    && m.metadata.response_code == ResponseCode::NoError
                {
                    return Resolver {
                        kind,
                        addr,
                        child,
                        log,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!(
            "{} did not start answering; its log:\n{last_log}",
            kind.binary()
        );
    }

    /// Sends `name`/`qtype` with RD set and returns the resolver's answer.
    async fn ask(&self, name: &str, qtype: RecordType) -> Message {
        for _ in 0..3 {
            if let Some(m) = try_resolve(self.addr, name, qtype).await {
                return m;
            }
        }
        panic!(
            "{} gave no answer for {name} {qtype}; its log:\n{}",
            self.kind.binary(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon to execute. Debian confines /usr/sbin/named and /usr/sbin/unbound with AppArmor
/// profiles that deny reading a configuration in /tmp; a copy elsewhere runs unconfined.
fn runnable_copy(daemon: &Path, dir: &Path) -> PathBuf {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y");
    if !apparmor {
        return daemon.to_owned();
    }
    let copy = dir.join(daemon.file_name().unwrap());
    std::fs::copy(daemon, &copy).unwrap();
    copy
}

/// Writes the resolver's configuration into `dir`: test-only settings (paths, port, no root
/// access) plus the recipe from deploy/forwarding with fedns's address substituted.
fn write_config(kind: Kind, dir: &Path, port: u16, fedns: SocketAddr) -> PathBuf {
    let d = dir.display();
    std::fs::write(dir.join("root.hints"), LOOPBACK_ROOT_HINTS).unwrap();
    let (recipe, placeholder, address) = match kind {
        Kind::Unbound => (
            "unbound.conf",
            RECIPE_UNBOUND_ADDR,
            format!("{}@{}", fedns.ip(), fedns.port()),
        ),
        Kind::Bind => (
            "named.conf",
            RECIPE_BIND_ADDR,
            format!("{} port {}", fedns.ip(), fedns.port()),
        ),
    };
    let text = std::fs::read_to_string(repo().join("deploy/forwarding").join(recipe)).unwrap();
    assert!(
        text.contains(placeholder),
        "deploy/forwarding/{recipe} no longer names fedns as {placeholder}"
    );
    std::fs::write(dir.join("fedns.conf"), text.replace(placeholder, &address)).unwrap();
    let (file, conf) = match kind {
        Kind::Unbound => (
            "unbound.conf",
            format!(
                r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    # fedns is on loopback here.
    do-not-query-localhost: no
    # Nothing but the federation zone resolves, and the root is on loopback.
    root-hints: "{d}/root.hints"
    local-zone: "." refuse
    local-zone: "example.com." transparent
    # Defaults, spelled out: answers live exactly their TTL.
    prefetch: no
    serve-expired: no
    cache-min-ttl: 0
remote-control:
    control-enable: no
include: "{d}/fedns.conf"
"#
            ),
        ),
        Kind::Bind => (
            "named.conf",
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/cache.db";
    statistics-file "{d}/stats";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    allow-recursion {{ 127.0.0.0/8; }};
    // Validation on without trust anchors (nothing to fetch), plus the recipe's exception.
    dnssec-validation yes;
    validate-except {{ "example.com"; }};
    notify no;
    // Defaults, spelled out: answers live exactly their TTL.
    prefetch 0;
    stale-answer-enable no;
    stale-cache-enable no;
    min-cache-ttl 0;
}};
// No rndc control channel (it would need a key in /etc/bind and port 953).
controls {{ }};
zone "." {{ type hint; file "{d}/root.hints"; }};
include "{d}/fedns.conf";
"#
            ),
        ),
    };
    let path = dir.join(file);
    std::fs::write(&path, conf).unwrap();
    path
}

/// One UDP exchange with RD set; `None` on timeout.
async fn try_resolve(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let mut query = Message::query();
    query.metadata.id = rand_id();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .ok()?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        if m.metadata.id == query.metadata.id {
            return Some(m);
        }
    }
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ (nanos >> 16)) as u16
}

/// The CNAME chain of an answer as (owner, target) pairs, lowercase.
fn cnames(m: &Message) -> Vec<(String, String)> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some((
                r.name.to_ascii().to_lowercase(),
                c.0.to_ascii().to_lowercase(),
            )),
            _ => None,
        })
        .collect()
}

/// The A and AAAA addresses of an answer with their owner name, lowercase.
fn addresses(m: &Message) -> BTreeSet<(String, String)> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_ascii().to_lowercase(), a.to_string())),
            RData::AAAA(a) => Some((r.name.to_ascii().to_lowercase(), a.to_string())),
            _ => None,
        })
        .collect()
}

fn at(owner: &str, addrs: &[&str]) -> BTreeSet<(String, String)> {
    addrs
        .iter()
        .map(|a| (owner.to_owned(), (*a).to_owned()))
        .collect()
}

/// A recursive answer: from the resolver (RA set, not authoritative), NOERROR.
fn assert_recursive_answer(m: &Message, what: &str) {
    assert_eq!(rcode(m), ResponseCode::NoError, "{what}: {}", summary(m));
    assert!(
        m.metadata.recursion_available,
        "{what}: RA set by the resolver"
    );
    assert!(
        !m.metadata.authoritative,
        "{what}: not fedns's own AA answer"
    );
}

/// fedns on a copy of the demo (nginx's recordTTL set to `ttl` when given), once every shard's
/// targets are known (eu-central's load-balancer hostname is resolved in the background); then
/// the resolver.
async fn start(kind: Kind, ttl: Option<u32>) -> (Server, Resolver) {
    let daemon = find_daemon(kind);
    let server = Server::start_with(|source, zones| {
        copy_tree(&repo().join("deploy/demo"), source);
        copy_tree(&repo().join("zones"), zones);
        if let Some(ttl) = ttl {
            let file = source.join("federation.yaml");
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains("recordTTL: 300"));
            std::fs::write(
                &file,
                text.replace("recordTTL: 300", &format!("recordTTL: {ttl}")),
            )
            .unwrap();
        }
    })
    .await;
    let mut client = server.udp_client().await;
    eventually(Duration::from_secs(5), async || {
        addresses(&ask(&mut client, G, RecordType::A).await).len() == 3
    })
    .await
    .expect("fedns answers the global name with all three shards");
    let resolver = Resolver::start(kind, &daemon, server.dns).await;
    (server, resolver)
}

/// The sum of `fedns_dns_requests_total` over transports, once the workers' batched counters are
/// flushed (they flush after 100 ms idle): the value read twice, 300 ms apart, agrees.
async fn fedns_requests(server: &Server) -> u64 {
    let read = async || -> u64 {
        let (_, body) = server.admin_get("/metrics").await;
        body.lines()
            .filter(|l| l.starts_with("fedns_dns_requests_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let mut last = read().await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read().await;
        if now == last {
            return now;
        }
        last = now;
    }
}

// ---- the scenarios, each run through both resolvers ----

async fn global_regional_and_zonal_names_resolve(kind: Kind) {
    let (server, resolver) = start(kind, None).await;
    let m = resolver.ask(G, RecordType::A).await;
    assert_recursive_answer(&m, "global");
    assert!(cnames(&m).is_empty(), "{}", summary(&m));
    assert_eq!(
        addresses(&m),
        at(G, &["10.1.0.10", "10.2.0.10", "10.3.0.10"])
    );

    let m = resolver.ask(US, RecordType::A).await;
    assert_recursive_answer(&m, "regional");
    assert_eq!(addresses(&m), at(US, &["10.1.0.10", "10.2.0.10"]));

    let m = resolver.ask(US1, RecordType::A).await;
    assert_recursive_answer(&m, "zonal");
    assert_eq!(addresses(&m), at(US1, &["10.1.0.10"]));

    let m = resolver.ask(US2, RecordType::AAAA).await;
    assert_recursive_answer(&m, "zonal AAAA");
    assert_eq!(addresses(&m), at(US2, &["2001:db8:2::10"]));
    drop(resolver);
    server.stop().await;
}

async fn cname_fallback_ends_in_addresses(kind: Kind) {
    let (server, resolver) = start(kind, None).await;
    // ap-south has no ready endpoint: zone → region → global.
    let m = resolver.ask(AP1, RecordType::A).await;
    assert_recursive_answer(&m, "fallback");
    assert_eq!(
        cnames(&m),
        vec![
            (AP1.to_owned(), AP.to_owned()),
            (AP.to_owned(), G.to_owned())
        ],
        "{}",
        summary(&m)
    );
    assert_eq!(
        addresses(&m),
        at(G, &["10.1.0.10", "10.2.0.10", "10.3.0.10"]),
        "{}",
        summary(&m)
    );
    drop(resolver);
    server.stop().await;
}

/// With a 2 s record TTL: the resolver serves its cached answer while it lives, then the fallback.
async fn unhealthy_shard_fails_over_within_the_ttl(kind: Kind) {
    const TTL: Duration = Duration::from_secs(2);
    let (server, resolver) = start(kind, Some(TTL.as_secs() as u32)).await;
    let m = resolver.ask(US1, RecordType::A).await;
    let cached_at = Instant::now();
    assert_recursive_answer(&m, "before");
    assert_eq!(addresses(&m), at(US1, &["10.1.0.10"]));
    assert!(m.answers.iter().all(|r| r.ttl <= 2), "{m:?}");

    // us-east's only endpoint turns unready; fedns answers the fallback at once.
    let file = server.source().join("us-east/endpointslices.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("ready: true", "ready: false", 1)).unwrap();
    let mut direct = server.udp_client().await;
    eventually(Duration::from_secs(5), async || {
        summary(&ask(&mut direct, US1, RecordType::A).await)
            .starts_with(&format!("NoError CNAME {US}"))
    })
    .await
    .expect("fedns answers the zonal name with a CNAME");
    let flipped_at = Instant::now();

    // Still inside the TTL: the resolver answers from its cache, as it should.
    if cached_at.elapsed() < TTL - Duration::from_millis(700) {
        let m = resolver.ask(US1, RecordType::A).await;
        assert_eq!(
            addresses(&m),
            at(US1, &["10.1.0.10"]),
            "cached answer within its TTL: {}",
            summary(&m)
        );
    } else {
        eprintln!(
            "fedns took {:?} to flip: cache check skipped",
            cached_at.elapsed()
        );
    }

    // Once the TTL has run out the resolver asks again and gets the regional fallback.
    let deadline = (cached_at + TTL).max(flipped_at) + Duration::from_millis(1500);
    let failed_over = loop {
        let m = resolver.ask(US1, RecordType::A).await;
        if !cnames(&m).is_empty() {
            break Some(m);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let m = failed_over.unwrap_or_else(|| {
        panic!(
            "{} still answers the unhealthy zone {:?} after the record TTL",
            kind.binary(),
            cached_at.elapsed()
        )
    });
    assert_recursive_answer(&m, "after");
    assert_eq!(cnames(&m), vec![(US1.to_owned(), US.to_owned())]);
    assert_eq!(addresses(&m), at(US, &["10.2.0.10"]), "{}", summary(&m));
    drop(resolver);
    server.stop().await;
}

/// The SOA of a negative answer's authority section: (owner, TTL).
fn negative_soa(m: &Message) -> (String, u32) {
    let soa = m
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .unwrap_or_else(|| panic!("no SOA in the authority section: {m:?}"));
    (soa.name.to_ascii().to_lowercase(), soa.ttl)
}

async fn nxdomain_is_cached_for_the_negative_ttl(kind: Kind) {
    let (server, resolver) = start(kind, None).await;
    let m = resolver.ask(MISSING, RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain, "{}", summary(&m));
    assert!(m.answers.is_empty(), "{}", summary(&m));
    let (owner, first_ttl) = negative_soa(&m);
    assert_eq!(owner, "example.com.");
    assert!(first_ttl > 2 && first_ttl <= 30, "negative TTL {first_ttl}");
    let before = fedns_requests(&server).await;

    // 1.2 s later the resolver answers from its negative cache: fedns sees no query, and the
    // SOA's TTL has counted down.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = resolver.ask(MISSING, RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain, "{}", summary(&m));
    let (_, second_ttl) = negative_soa(&m);
    assert!(
        second_ttl < first_ttl,
        "SOA TTL counts down in the cache: {first_ttl} then {second_ttl}"
    );
    let after = fedns_requests(&server).await;
    assert_eq!(
        before, after,
        "the second NXDOMAIN came from the resolver's cache, not from fedns"
    );
    drop(resolver);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_unbound,
    ignore = "unbound is missing (apt-get install unbound) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn unbound_resolves_global_regional_and_zonal_names() {
    global_regional_and_zonal_names_resolve(Kind::Unbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_unbound,
    ignore = "unbound is missing (apt-get install unbound) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn unbound_follows_the_cname_fallback_to_addresses() {
    cname_fallback_ends_in_addresses(Kind::Unbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_unbound,
    ignore = "unbound is missing (apt-get install unbound) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn unbound_fails_over_within_the_record_ttl_when_a_shard_turns_unhealthy() {
    unhealthy_shard_fails_over_within_the_ttl(Kind::Unbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_unbound,
    ignore = "unbound is missing (apt-get install unbound) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn unbound_caches_nxdomain_without_asking_fedns_again() {
    nxdomain_is_cached_for_the_negative_ttl(Kind::Unbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_named,
    ignore = "named is missing (apt-get install bind9) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn bind_resolves_global_regional_and_zonal_names() {
    global_regional_and_zonal_names_resolve(Kind::Bind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_named,
    ignore = "named is missing (apt-get install bind9) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn bind_follows_the_cname_fallback_to_addresses() {
    cname_fallback_ends_in_addresses(Kind::Bind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_named,
    ignore = "named is missing (apt-get install bind9) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn bind_fails_over_within_the_record_ttl_when_a_shard_turns_unhealthy() {
    unhealthy_shard_fails_over_within_the_ttl(Kind::Bind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_named,
    ignore = "named is missing (apt-get install bind9) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn bind_caches_nxdomain_without_asking_fedns_again() {
    nxdomain_is_cached_for_the_negative_ttl(Kind::Bind).await;
}
