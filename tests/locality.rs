//! The global name resolves to the closest healthy copy: client-subnet aware answers (kdig
//! `+subnet`), the query's own source address, failover and weights, and a real recursive resolver
//! (unbound) forwarding EDNS Client Subnet for two loopback clients in two regions.
//!
//! The federation: us-east (region us, zone us1), eu-west (eu, eu1) and ap-south (ap, ap1), each
//! serving four Services on both families; the Domain's default strategy is `nearest`.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};

const NEAR: &str = "near.test.galactic.svc.example.com.";
const FAIL: &str = "fail.test.galactic.svc.example.com.";
const WEIGHTED: &str = "wt.test.galactic.svc.example.com.";
const PLAIN: &str = "plain.test.galactic.svc.example.com.";

const US: [&str; 2] = ["10.10.0.1", "2001:db8:10::1"];
const EU: [&str; 2] = ["10.20.0.1", "2001:db8:20::1"];
const AP: [&str; 2] = ["10.30.0.1", "2001:db8:30::1"];

const CONFIG: &str = "\
clientNetworks:
- {network: 192.0.2.0/24, region: us, zone: us1}
- {network: 198.51.100.0/24, region: eu}
- {network: 198.51.100.128/25, region: eu, zone: eu1}
- {network: 203.0.113.0/24, region: ap}
- {network: 2001:db8:aa::/48, region: eu}
- {network: 2001:db8:bb::/48, region: us}
- {network: 127.0.0.2/32, region: us}
- {network: 127.0.0.3/32, region: eu}
regionPreferences:
  ap: [eu, us]
";

const FEDERATION: &str = r#"apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: Domain
metadata: {name: galactic, namespace: kube-federation-system}
domain: example.com
nameServer: ns1.example.com
strategy: {type: nearest}
---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata: {name: near, namespace: test}
spec: {domainRef: galactic, recordTTL: 60}
---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata: {name: fail, namespace: test}
spec:
  domainRef: galactic
  strategy: {type: failover, primaryRegions: [eu]}
---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata: {name: wt, namespace: test}
spec:
  domainRef: galactic
  strategy: {type: weighted, weights: {us-east: 3, eu-west: 1}}
---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata: {name: plain, namespace: test}
spec:
  domainRef: galactic
  strategy: {type: all}
"#;

const SERVICES: [&str; 4] = ["near", "fail", "wt", "plain"];

/// Writes the federation; `down` lists clusters whose Services have no ready endpoint.
fn federation(source: &Path, down: &[&str]) {
    let mut top = FEDERATION.to_owned();
    for (cluster, region, zone) in [
        ("us-east", "us", "us1"),
        ("eu-west", "eu", "eu1"),
        ("ap-south", "ap", "ap1"),
    ] {
        top.push_str(&format!(
            "---\napiVersion: core.kubefed.io/v1beta1\nkind: KubeFedCluster\n\
             metadata: {{name: {cluster}, namespace: kube-federation-system}}\n\
             spec: {{apiEndpoint: https://{cluster}.example.invalid:6443, secretRef: {{name: s}}}}\n\
             status:\n  conditions: [{{type: Ready, status: \"True\"}}]\n  zones: [{zone}]\n  region: {region}\n"
        ));
        let addrs = match region {
            "us" => US,
            "eu" => EU,
            _ => AP,
        };
        let dir = source.join(cluster);
        std::fs::create_dir_all(&dir).unwrap();
        let mut yaml = String::new();
        for svc in SERVICES {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: test}}\n\
                 spec: {{type: LoadBalancer}}\n\
                 status: {{loadBalancer: {{ingress: [{{ip: \"{}\"}}, {{ip: \"{}\"}}]}}}}\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {svc}-1, namespace: test, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
                 addressType: IPv4\n\
                 endpoints: [{{addresses: [172.16.0.1], conditions: {{ready: {}}}}}]\n",
                addrs[0],
                addrs[1],
                !down.contains(&cluster)
            ));
        }
        std::fs::write(dir.join("objects.yaml"), yaml).unwrap();
    }
    std::fs::write(source.join("federation.yaml"), top).unwrap();
}

async fn serve(down: &'static [&'static str]) -> Server {
    Server::start_configured(
        |source, _| federation(source, down),
        |args| {
            let config = args
                .source
                .as_ref()
                .unwrap()
                .parent()
                .unwrap()
                .join("fedns.yaml");
            std::fs::write(&config, CONFIG).unwrap();
            args.config = Some(config);
            // The weighted test asks hundreds of times from one address.
            args.rrl_rate = Some(0);
        },
    )
    .await
}

/// What kdig got: rcode, the A/AAAA data of the answer, and the ECS option of the response
/// (`address/source/scope`), if any.
#[derive(Debug)]
struct Dig {
    rcode: String,
    addrs: BTreeSet<String>,
    ecs: Option<String>,
}

fn kdig(server: SocketAddr, name: &str, qtype: &str, subnet: Option<&str>) -> Dig {
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "+notcp".into(),
        "+timeout=2".into(),
        "+retry=1".into(),
        name.into(),
        qtype.into(),
    ];
    if let Some(subnet) = subnet {
        args.push(format!("+subnet={subnet}"));
    }
    let out = tool("kdig", &args);
    let rcode = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split([',', ';']).next().unwrap().trim().to_owned())
        .unwrap_or_else(|| panic!("no status in kdig output:\n{out}"));
    let ecs = out
        .lines()
        .find_map(|l| l.split("CLIENT-SUBNET: ").nth(1))
        .map(|s| s.trim().to_owned());
    let mut addrs = BTreeSet::new();
    let mut in_answer = false;
    for line in out.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer && (line.is_empty() || line.starts_with(";;")) {
            in_answer = false;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if in_answer && fields.len() >= 5 && matches!(fields[3], "A" | "AAAA") {
            addrs.insert(fields[4].to_owned());
        }
    }
    Dig { rcode, addrs, ecs }
}

fn set(addrs: &[&str]) -> BTreeSet<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_kdig,
    ignore = "kdig is missing (apt-get install knot-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn nearest_answers_each_clients_region_with_its_ecs_scope_on_both_families() {
    let server = serve(&[]).await;
    let d = server.dns;
    let us = kdig(d, NEAR, "A", Some("192.0.2.77/24"));
    assert_eq!(us.rcode, "NOERROR");
    assert_eq!(us.addrs, set(&[US[0]]), "{us:?}");
    assert_eq!(us.ecs.as_deref(), Some("192.0.2.0/24/24"));
    let eu = kdig(d, NEAR, "A", Some("198.51.100.7/24"));
    assert_eq!(eu.addrs, set(&[EU[0]]));
    // The /24 holds a more specific (zone) row, so the answer needed 25 bits (RFC 7871 7.2.1).
    assert_eq!(eu.ecs.as_deref(), Some("198.51.100.0/24/25"));
    // The zone row (/25) decides with a /25 source; the scope says so.
    let eu1 = kdig(d, NEAR, "A", Some("198.51.100.200/25"));
    assert_eq!(eu1.addrs, set(&[EU[0]]));
    assert_eq!(eu1.ecs.as_deref(), Some("198.51.100.128/25/25"));
    // IPv6 clients, IPv6 answers.
    let eu6 = kdig(d, NEAR, "AAAA", Some("2001:db8:aa:1::/56"));
    assert_eq!(eu6.addrs, set(&[EU[1]]), "{eu6:?}");
    assert_eq!(eu6.ecs.as_deref(), Some("2001:db8:aa::/56/48"));
    let us6 = kdig(d, NEAR, "AAAA", Some("2001:db8:bb::/48"));
    assert_eq!(us6.addrs, set(&[US[1]]));
    // A client found nowhere gets every healthy cluster, scoped to its own source prefix.
    let nowhere = kdig(d, NEAR, "A", Some("100.64.1.0/24"));
    assert_eq!(nowhere.addrs, set(&[US[0], EU[0], AP[0]]));
    assert_eq!(nowhere.ecs.as_deref(), Some("100.64.1.0/24/24"));
    // Without ECS the answer is for the query's source (127.0.0.1: nowhere).
    let plain = kdig(d, NEAR, "A", None);
    assert_eq!(plain.addrs, set(&[US[0], EU[0], AP[0]]));
    assert!(plain.ecs.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_kdig,
    ignore = "kdig is missing (apt-get install knot-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn names_without_a_strategy_answer_everyone_alike_with_scope_zero() {
    let server = serve(&[]).await;
    let d = server.dns;
    for subnet in ["192.0.2.0/24", "198.51.100.0/24"] {
        let r = kdig(d, PLAIN, "A", Some(subnet));
        assert_eq!(r.addrs, set(&[US[0], EU[0], AP[0]]), "{subnet}");
        assert_eq!(r.ecs, Some(format!("{subnet}/0")));
    }
    // Regional names keep their meaning whatever the client.
    let r = kdig(
        d,
        "near.test.galactic.svc.ap.example.com.",
        "A",
        Some("192.0.2.0/24"),
    );
    assert_eq!(r.addrs, set(&[AP[0]]));
    assert_eq!(r.ecs.as_deref(), Some("192.0.2.0/24/0"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_kdig,
    ignore = "kdig is missing (apt-get install knot-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn nearest_falls_back_to_the_preferred_regions_when_the_clients_is_unhealthy() {
    let server = serve(&["ap-south"]).await;
    let ap = kdig(server.dns, NEAR, "A", Some("203.0.113.9/24"));
    assert_eq!(ap.addrs, set(&[EU[0]]), "{ap:?}");
    assert_eq!(ap.ecs.as_deref(), Some("203.0.113.0/24/24"));
    let (_, text) = server
        .admin_get("/explain?name=near.test.galactic.svc.example.com&client=203.0.113.9")
        .await;
    assert!(
        text.contains("location: region ap (clientNetworks 203.0.113.0/24"),
        "{text}"
    );
    assert!(text.contains("strategy: nearest -> preferred"), "{text}");
    assert!(text.contains("out ap-south"), "{text}");
    assert!(text.contains("in  eu-west"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_kdig,
    ignore = "kdig is missing (apt-get install knot-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn failover_serves_the_primaries_while_one_is_healthy() {
    let server = serve(&[]).await;
    for (qtype, want) in [("A", EU[0]), ("AAAA", EU[1])] {
        let r = kdig(server.dns, FAIL, qtype, Some("192.0.2.0/24"));
        assert_eq!(r.addrs, set(&[want]));
        assert_eq!(
            r.ecs.as_deref(),
            Some("192.0.2.0/24/0"),
            "not client-dependent"
        );
    }
    server.stop().await;
    let server = serve(&["eu-west"]).await;
    let r = kdig(server.dns, FAIL, "A", Some("198.51.100.0/24"));
    assert_eq!(r.addrs, set(&[US[0], AP[0]]));
    let r = kdig(server.dns, FAIL, "AAAA", None);
    assert_eq!(r.addrs, set(&[US[1], AP[1]]));
    // Workers flush their counters when idle.
    let counted = eventually(Duration::from_secs(5), async || {
        let (_, metrics) = server.admin_get("/metrics").await;
        let secondary = federation::metric(
            &metrics,
            "fedns_dns_locality_answers_total",
            &[("strategy", "failover"), ("outcome", "secondary")],
        );
        secondary == Some(2.0)
    })
    .await;
    assert!(
        counted.is_some(),
        "two failover answers counted as secondary"
    );
    server.stop().await;
}

/// One raw UDP query (RD clear, no EDNS) from `from`; the answer's addresses.
fn ask_from(
    from: &str,
    server: SocketAddr,
    name: &str,
    qtype: hickory_proto::rr::RecordType,
) -> Message {
    let socket = UdpSocket::bind(from).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
        .send_to(&query_bytes(name, qtype, false), server)
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn addrs(m: &Message) -> BTreeSet<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_kdig,
    ignore = "kdig is missing (apt-get install knot-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn weighted_answers_hold_one_cluster_in_proportion_to_its_weight() {
    let server = serve(&["ap-south"]).await;
    let (mut us, mut eu) = (0, 0);
    for _ in 0..400 {
        let m = ask_from(
            "127.0.0.1:0",
            server.dns,
            WEIGHTED,
            hickory_proto::rr::RecordType::A,
        );
        let got = addrs(&m);
        if got == set(&[US[0]]) {
            us += 1;
        } else if got == set(&[EU[0]]) {
            eu += 1;
        } else {
            panic!("an answer of one cluster expected, got {got:?}");
        }
    }
    // 3:1 over 400 draws: 300 expected, far outside chance below 240 or above 360.
    assert!((240..=360).contains(&us), "us {us} eu {eu}");
    assert_eq!(us + eu, 400);
    server.stop().await;
    // No listed cluster healthy: like `all` (ap-south is not listed, so it has weight 0).
    let server = serve(&["us-east", "eu-west"]).await;
    let r = kdig(server.dns, WEIGHTED, "A", None);
    assert_eq!(r.addrs, set(&[AP[0]]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ecs_the_source_address_places_the_client() {
    let server = serve(&[]).await;
    let a = hickory_proto::rr::RecordType::A;
    assert_eq!(
        addrs(&ask_from("127.0.0.2:0", server.dns, NEAR, a)),
        set(&[US[0]])
    );
    assert_eq!(
        addrs(&ask_from("127.0.0.3:0", server.dns, NEAR, a)),
        set(&[EU[0]])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_subnet_with_a_bad_family_or_prefix_is_formerr() {
    let server = serve(&[]).await;
    // A query for NEAR with an OPT carrying ECS family 1, source /33.
    let mut packet = query_bytes(NEAR, hickory_proto::rr::RecordType::A, false);
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 13]);
    packet.extend_from_slice(&[0, 8, 0, 9, 0, 1, 33, 0, 192, 0, 2, 1, 0]);
    let reply = raw_udp(server.dns, &packet, Duration::from_secs(2)).expect("an answer");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Family 3.
    let mut packet = query_bytes(NEAR, hickory_proto::rr::RecordType::A, false);
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 11]);
    packet.extend_from_slice(&[0, 8, 0, 7, 0, 3, 24, 0, 192, 0, 2]);
    let reply = raw_udp(server.dns, &packet, Duration::from_secs(2)).expect("an answer");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    server.stop().await;
}

/// The unbound executable: on PATH or in /usr/sbin; a missing one fails naming its package.
fn unbound_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join("unbound"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| tools::missing("unbound", "apt-get install unbound"))
}

/// unbound with its subnet module, stub-resolving example.com at fedns and sending it each
/// client's full address as ECS. Killed on drop.
struct Unbound {
    addr: SocketAddr,
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unbound {
    fn start(fedns: SocketAddr) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.path().join("root.hints"),
            ". 3600000 IN NS a.root.invalid.\na.root.invalid. 3600000 IN A 127.0.0.1\n",
        )
        .unwrap();
        let conf = dir.path().join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-tcp: no
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
    do-not-query-localhost: no
    root-hints: "{d}/root.hints"
    local-zone: "." refuse
    local-zone: "example.com." transparent
    module-config: "subnetcache iterator"
    send-client-subnet: {ip}
    max-client-subnet-ipv4: 32
remote-control:
    control-enable: no
stub-zone:
    name: "example.com."
    stub-addr: {ip}@{fedns_port}
"#,
                ip = fedns.ip(),
                fedns_port = fedns.port()
            ),
        )
        .unwrap();
        // Debian confines /usr/sbin/unbound with AppArmor (no configuration in /tmp): run a copy.
        let binary = unbound_binary();
        let copy = dir.path().join("unbound");
        std::fs::copy(&binary, &copy).unwrap();
        let log = dir.path().join("unbound.log");
        let child = std::process::Command::new(&copy)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Unbound {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
            _dir: dir,
        }
    }

    /// Asks with RD set from the loopback address `from`; `None` on timeout.
    fn ask_from(&self, from: &str, name: &str) -> Option<Message> {
        let socket = UdpSocket::bind((from, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut packet = query_bytes(name, hickory_proto::rr::RecordType::A, false);
        packet[2] |= 0x01;
        socket.send_to(&packet, self.addr).ok()?;
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_unbound,
    ignore = "unbound is missing (apt-get install unbound) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn unbound_forwarding_client_subnets_gives_each_loopback_client_its_regions_answer() {
    let server = serve(&[]).await;
    let unbound = Unbound::start(server.dns);
    let dns = server.dns;
    let ready = eventually(Duration::from_secs(15), async || {
        tokio::task::block_in_place(|| unbound.ask_from("127.0.0.1", NEAR))
            .is_some_and(|m| m.metadata.response_code == ResponseCode::NoError)
    })
    .await;
    assert!(
        ready.is_some(),
        "unbound did not answer; fedns at {dns}; its log:\n{}",
        std::fs::read_to_string(&unbound.log).unwrap_or_default()
    );
    // 127.0.0.1 is nowhere: every cluster. The other two are in the us and eu rows.
    for (from, want) in [
        ("127.0.0.1", set(&[US[0], EU[0], AP[0]])),
        ("127.0.0.2", set(&[US[0]])),
        ("127.0.0.3", set(&[EU[0]])),
        ("127.0.0.2", set(&[US[0]])),
    ] {
        let m = tokio::task::block_in_place(|| unbound.ask_from(from, NEAR)).expect("an answer");
        assert_eq!(addrs(&m), want, "client {from}");
    }
    drop(unbound);
    server.stop().await;
}

/// `fedns explain <name> --client … --source … --config …`: output, or the failure's stderr.
fn explain_cli(dir: &Path, client: &str, config: &str) -> (bool, String) {
    let source = dir.join("source");
    if !source.exists() {
        std::fs::create_dir_all(&source).unwrap();
        federation(&source, &["eu-west"]);
    }
    std::fs::write(dir.join("fedns.yaml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedns"))
        .args(["explain", NEAR, "--client", client, "--source"])
        .arg(&source)
        .arg("--config")
        .arg(dir.join("fedns.yaml"))
        .output()
        .unwrap();
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text)
}

#[test]
fn explain_with_a_client_says_where_it_is_and_why_each_cluster_is_in_or_out() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = explain_cli(dir.path(), "198.51.100.200/25", CONFIG);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "location: region eu, zone eu1 (clientNetworks 198.51.100.128/25; ECS scope /25)"
        ),
        "{text}"
    );
    // eu-west is down: eu clients go to every healthy cluster (eu has no preferences).
    assert!(text.contains("strategy: nearest -> all"), "{text}");
    assert!(
        text.contains("out eu-west          unhealthy: no ready endpoints"),
        "{text}"
    );
    assert!(text.contains("in  us-east"), "{text}");
    let (ok, text) = explain_cli(dir.path(), "203.0.113.1", CONFIG);
    assert!(ok, "{text}");
    assert!(text.contains("strategy: nearest -> region"), "{text}");
    assert!(
        text.contains("in  ap-south         in the client's region ap"),
        "{text}"
    );
    assert!(
        text.contains("out us-east          region us is not the client's"),
        "{text}"
    );
    let (ok, text) = explain_cli(dir.path(), "not-an-address", CONFIG);
    assert!(ok, "{text}");
    assert!(
        text.contains("error: \"not-an-address\" is not an address prefix"),
        "{text}"
    );
    let (ok, text) = explain_cli(
        dir.path(),
        "10.0.0.1",
        "clientNetworks:\n- {network: 10.0.0.0/40, region: us}\n",
    );
    assert!(!ok);
    assert!(
        text.contains("clientNetworks[0]: \"10.0.0.0/40\": prefix length must be 0 to 32"),
        "{text}"
    );
}

// GeoIP: `--geoip-database` with `geoipRegions`, against a tiny MaxMind DB written by the test
// (PyPI mmdb-writer): DE -> eu, JP -> ap, BR not mapped.

const GEOIP_CONFIG: &str = "\
clientNetworks:
- {network: 100.64.5.0/24, region: us}
geoipRegions: {DE: eu, jp: ap}
";

/// Writes a MaxMind DB (IPv6, IPv4 networks in its ::/96 subtree, like GeoLite2) holding
/// `networks` as `(network, country, continent)` GeoIP2 Country records.
fn write_geoip_database(path: &Path, networks: &[(&str, &str, &str)]) {
    tools::require(
        "mmdb-writer (Python, import mmdb_writer)",
        "python3 -c 'import mmdb_writer'",
        "python3 -m pip install mmdb-writer==0.2.7",
    );
    let script = r#"
import json, sys
from mmdb_writer import MMDBWriter
from netaddr import IPSet
w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country",
               languages=["en"], description="fedns test")
for net, country, continent in json.loads(sys.argv[2]):
    w.insert_network(IPSet([net]), {"country": {"iso_code": country},
                                    "continent": {"code": continent}})
w.to_db_file(sys.argv[1])
"#;
    let list: Vec<[&str; 3]> = networks.iter().map(|(n, c, k)| [*n, *c, *k]).collect();
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(serde_json::to_string(&list).unwrap())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "mmdb-writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const GEOIP_NETWORKS: [(&str, &str, &str); 4] = [
    ("100.64.0.0/16", "DE", "EU"),
    ("2001:db8:de::/48", "DE", "EU"),
    ("100.65.0.0/20", "JP", "AS"),
    ("100.66.0.0/24", "BR", "SA"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    any(fedns_missing_kdig, fedns_missing_mmdb_writer),
    ignore = "kdig (apt-get install knot-dnsutils) or mmdb-writer (pip install mmdb-writer) is \
              missing and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn geoip_database_places_clients_by_country_with_the_database_networks_length_as_scope() {
    let server = Server::start_configured(
        |source, _| federation(source, &[]),
        |args| {
            let dir = args.source.as_ref().unwrap().parent().unwrap().to_owned();
            let database = dir.join("geo.mmdb");
            write_geoip_database(&database, &GEOIP_NETWORKS);
            std::fs::write(dir.join("fedns.yaml"), GEOIP_CONFIG).unwrap();
            args.config = Some(dir.join("fedns.yaml"));
            args.geoip_database = Some(database);
        },
    )
    .await;
    let d = server.dns;
    // DE (a /16 in the database) -> eu; the scope is the database network's length.
    let de = kdig(d, NEAR, "A", Some("100.64.9.0/24"));
    assert_eq!(de.rcode, "NOERROR");
    assert_eq!(de.addrs, set(&[EU[0]]), "{de:?}");
    assert_eq!(de.ecs.as_deref(), Some("100.64.9.0/24/16"));
    let de6 = kdig(d, NEAR, "AAAA", Some("2001:db8:de:1::/56"));
    assert_eq!(de6.addrs, set(&[EU[1]]), "{de6:?}");
    assert_eq!(de6.ecs.as_deref(), Some("2001:db8:de::/56/48"));
    // JP (a /20; geoipRegions keys in any case) -> ap.
    let jp = kdig(d, NEAR, "A", Some("100.65.3.0/24"));
    assert_eq!(jp.addrs, set(&[AP[0]]), "{jp:?}");
    assert_eq!(jp.ecs.as_deref(), Some("100.65.3.0/24/20"));
    // BR is in the database but not in geoipRegions: nowhere, every healthy cluster.
    let br = kdig(d, NEAR, "A", Some("100.66.0.0/24"));
    assert_eq!(br.addrs, set(&[US[0], EU[0], AP[0]]), "{br:?}");
    assert_eq!(br.ecs.as_deref(), Some("100.66.0.0/24/24"));
    // A clientNetworks row inside the DE network wins over the database.
    let row = kdig(d, NEAR, "A", Some("100.64.5.0/24"));
    assert_eq!(row.addrs, set(&[US[0]]), "{row:?}");
    assert_eq!(row.ecs.as_deref(), Some("100.64.5.0/24/24"));
    server.stop().await;
}

#[test]
#[cfg_attr(
    fedns_missing_mmdb_writer,
    ignore = "mmdb-writer is missing (pip install mmdb-writer) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
fn explain_says_a_location_came_from_the_geoip_database_and_a_bad_database_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("geo.mmdb");
    write_geoip_database(&database, &GEOIP_NETWORKS);
    let config = format!("{GEOIP_CONFIG}geoipDatabase: {}\n", database.display());
    let (ok, text) = explain_cli(dir.path(), "100.64.9.1", &config);
    assert!(ok, "{text}");
    assert!(
        text.contains("location: region eu (GeoIP country DE 100.64.0.0/16; ECS scope /16)"),
        "{text}"
    );
    let (ok, text) = explain_cli(dir.path(), "100.66.0.1", &config);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "location: nowhere (no clientNetworks row or mapped GeoIP network matches; ECS scope /32)"
        ),
        "{text}"
    );
    // serve with a database it cannot read: a startup error naming the path, nothing served.
    let missing = dir.path().join("missing.mmdb");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fedns"))
        .args([
            "serve",
            "--dns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--source")
        .arg(dir.path().join("source"))
        .arg("--config")
        .arg(dir.path().join("fedns.yaml"))
        .arg("--geoip-database")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "geoipDatabase: cannot read GeoIP database {}",
            missing.display()
        )),
        "{stderr}"
    );
}
