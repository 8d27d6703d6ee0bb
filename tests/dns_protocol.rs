//! The DNS protocol as clients see it: the real server on 127.0.0.1:0, queried over UDP and TCP
//! with hickory's client, raw packets, dig and kdig.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const G: &str = "nginx.test.galactic.svc.example.com.";
const US1: &str = "nginx.test.galactic.svc.us1.us.example.com.";
const US2: &str = "nginx.test.galactic.svc.us2.us.example.com.";
const AP1: &str = "nginx.test.galactic.svc.ap1.ap.example.com.";
const AP: &str = "nginx.test.galactic.svc.ap.example.com.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_regional_and_zonal_names_answer_over_udp_and_tcp() {
    let server = Server::demo().await;
    for mut client in [server.udp_client().await, server.tcp_client().await] {
        let m = ask(&mut client, G, RecordType::A).await;
        assert_eq!(summary(&m), "NoError A 10.1.0.10 A 10.2.0.10 A 10.3.0.10");
        assert!(m.metadata.authoritative);
        assert!(!m.metadata.recursion_available);
        let m = ask(
            &mut client,
            "nginx.test.galactic.svc.us.example.com.",
            RecordType::A,
        )
        .await;
        assert_eq!(summary(&m), "NoError A 10.1.0.10 A 10.2.0.10");
        let m = ask(&mut client, US2, RecordType::AAAA).await;
        assert_eq!(summary(&m), "NoError AAAA 2001:db8:2::10");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_zone_falls_back_through_region_to_global_in_one_answer() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let m = ask(&mut client, AP1, RecordType::A).await;
    assert_eq!(
        summary(&m),
        format!("NoError CNAME {AP} CNAME {G} A 10.1.0.10 A 10.2.0.10 A 10.3.0.10")
    );
    assert!(
        m.answers.iter().all(|r| r.ttl == 300),
        "recordTTL 300 everywhere"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_only_zone_answers_aaaa_with_nodata_not_a_cname() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let m = ask(&mut client, US1, RecordType::AAAA).await;
    assert_eq!(summary(&m), "NoError");
    assert_eq!(m.authorities.len(), 1, "SOA for negative caching");
    assert_eq!(m.authorities[0].ttl, 30);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_external_name_ingress_and_static_vanity_names() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let m = ask(&mut client, "www.example.com.", RecordType::A).await;
    assert!(summary(&m).starts_with(&format!("NoError CNAME {G} A ")));
    let m = ask(
        &mut client,
        "checkout.shop.galactic.svc.example.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(summary(&m), "NoError A 10.1.0.20 A 10.3.0.20");
    let m = ask(&mut client, "shop.example.com.", RecordType::A).await;
    assert_eq!(summary(&m), "NoError A 10.3.0.80");
    let m = ask(&mut client, "nginx.acme.com.", RecordType::A).await;
    assert!(summary(&m).starts_with(&format!("NoError CNAME {G} A ")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_hostname_is_resolved_into_addresses() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let eu = "nginx.test.galactic.svc.eu1.eu.example.com.";
    let took = eventually(Duration::from_secs(5), async || {
        summary(&ask(&mut client, eu, RecordType::A).await) == "NoError A 10.3.0.10"
    })
    .await;
    assert!(
        took.is_some(),
        "lb-eu.elb.acme.com resolved from our own zone"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apex_has_soa_and_ns_and_empty_non_terminals_are_nodata() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let m = ask(&mut client, "example.com.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1);
    let m = ask(&mut client, "example.com.", RecordType::NS).await;
    assert_eq!(summary(&m), "NoError NS ns1.example.com.");
    // The in-zone name server resolves (the demo Domain's nameServerAddresses), and its address
    // goes with the NS answer.
    let glue: Vec<String> = m.additionals.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(glue, ["127.0.0.1"]);
    let m = ask(&mut client, "ns1.example.com.", RecordType::A).await;
    assert_eq!(summary(&m), "NoError A 127.0.0.1");
    for ent in [
        "svc.example.com.",
        "galactic.svc.example.com.",
        "us.example.com.",
    ] {
        let m = ask(&mut client, ent, RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NoError, "{ent}");
        assert!(m.answers.is_empty());
    }
    let m = ask(
        &mut client,
        "missing.test.galactic.svc.example.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_our_zones_are_refused_including_the_root_ns_probe() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let m = ask(&mut client, ".", RecordType::NS).await;
    assert_eq!(rcode(&m), ResponseCode::Refused);
    let m = ask(&mut client, "www.google.com.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::Refused);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_case_is_preserved_in_the_answer() {
    let server = Server::demo().await;
    let mixed = "NgInX.TeSt.GaLaCtIc.SvC.ExAmPlE.CoM.";
    let bytes = raw_udp(
        server.dns,
        &query_bytes(mixed, RecordType::A, false),
        Duration::from_secs(2),
    )
    .unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.queries[0].name().to_ascii(), mixed);
    assert_eq!(m.answers[0].name.to_ascii(), mixed);
    // And the raw question bytes are echoed exactly.
    assert!(bytes.windows(6).any(|w| w == b"\x05NgInX"));
    server.stop().await;
}

/// A federation whose global name has `n` IPv6 targets.
async fn big_server(n: usize) -> Server {
    Server::start_with(|source, _| {
        copy_tree(&repo().join("deploy/demo/federation.yaml").parent().unwrap().join("us-east"), &source.join("c1"));
        std::fs::copy(repo().join("deploy/demo/federation.yaml"), source.join("federation.yaml")).unwrap();
        let ips: String = (1..=n)
            .map(|i| format!("    - ip: 2001:db8::{i:x}\n"))
            .collect();
        std::fs::write(
            source.join("c1/services.yaml"),
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: nginx, namespace: test}}\nspec: {{type: LoadBalancer}}\nstatus:\n  loadBalancer:\n    ingress:\n{ips}"
            ),
        )
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_udp_answer_sets_tc_and_the_tcp_retry_succeeds() {
    let server = big_server(60).await;
    let q = query_bytes(G, RecordType::AAAA, true);
    let udp = Message::from_vec(&raw_udp(server.dns, &q, Duration::from_secs(2)).unwrap()).unwrap();
    assert!(udp.metadata.truncation);
    assert!(udp.answers.is_empty());
    let tcp = Message::from_vec(&raw_tcp(server.dns, &q)).unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 60);
    // Without EDNS the UDP limit is 512 bytes.
    let small = query_bytes(G, RecordType::AAAA, false);
    let raw = raw_udp(server.dns, &small, Duration::from_secs(2)).unwrap();
    assert!(raw.len() <= 512);
    assert!(Message::from_vec(&raw).unwrap().metadata.truncation);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_is_echoed_with_1232_and_version_1_gets_badvers() {
    let server = Server::demo().await;
    let q = query_bytes(G, RecordType::A, true);
    let m = Message::from_vec(&raw_udp(server.dns, &q, Duration::from_secs(2)).unwrap()).unwrap();
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    let mut m = Message::from_vec(&q).unwrap();
    m.edns.as_mut().unwrap().set_version(1);
    let r = Message::from_vec(
        &raw_udp(server.dns, &m.to_vec().unwrap(), Duration::from_secs(2)).unwrap(),
    )
    .unwrap();
    // Extended rcode 16: BADVERS in an OPT (hickory decodes 16 as TSIG's BADSIG).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert_eq!(r.edns.as_ref().map(|e| e.version()), Some(0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_opcodes_get_notimp() {
    let server = Server::demo().await;
    let mut q = query_bytes(G, RecordType::A, false);
    q[2] = (q[2] & 0x87) | (5 << 3); // UPDATE
    let r = raw_udp(server.dns, &q, Duration::from_secs(2)).unwrap();
    assert_eq!(r[3] & 0x0F, 4);
    q[2] = (q[2] & 0x87) | (15 << 3);
    let r = raw_udp(server.dns, &q, Duration::from_secs(2)).unwrap();
    assert_eq!(r[3] & 0x0F, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gets_a_minimal_answer() {
    let server = Server::demo().await;
    let mut client = server.udp_client().await;
    let m = ask(
        &mut client,
        "nginx.test.galactic.svc.us.example.com.",
        RecordType::ANY,
    )
    .await;
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(!m.answers.is_empty());
    assert!(
        m.answers
            .iter()
            .all(|r| r.record_type() == m.answers[0].record_type()),
        "one RRset"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_never_stop_the_server() {
    let server = Server::demo().await;
    let wait = Duration::from_millis(300);
    // Truncated header: dropped.
    assert!(raw_udp(server.dns, &[0x12, 0x34, 0x01], wait).is_none());
    // A response (QR set): dropped, never reflected.
    let mut response = query_bytes(G, RecordType::A, false);
    response[2] |= 0x80;
    assert!(raw_udp(server.dns, &response, wait).is_none());
    // A question name that is a compression pointer to itself: FORMERR.
    let looped = [
        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1,
    ];
    let r = raw_udp(server.dns, &looped, wait).unwrap();
    assert_eq!(r[3] & 0x0F, 1);
    // An additional record whose owner points at itself: FORMERR.
    let mut q = query_bytes(G, RecordType::A, false);
    q[11] = 1;
    let at = q.len() as u8;
    q.extend_from_slice(&[0xC0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(raw_udp(server.dns, &q, wait).unwrap()[3] & 0x0F, 1);
    // An oversized name (five 63-octet labels): FORMERR.
    let mut long = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(raw_udp(server.dns, &long, wait).unwrap()[3] & 0x0F, 1);
    // Label length claiming more bytes than the packet has.
    let short = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, b'a', b'b'];
    assert_eq!(raw_udp(server.dns, &short, wait).unwrap()[3] & 0x0F, 1);
    // Seeded garbage of every size.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000usize {
        let len = i % 600;
        let packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        socket.send_to(&packet, server.dns).unwrap();
    }
    // Garbage over TCP too: a frame of junk, then a clean query on a new connection.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(server.dns).unwrap();
        let _ = s.write_all(&[0, 7, 1, 2, 3, 4, 5, 6, 7]);
    }
    let mut client = server.udp_client().await;
    let m = ask(&mut client, G, RecordType::A).await;
    assert_eq!(
        rcode(&m),
        ResponseCode::NoError,
        "still answering after garbage"
    );
    let tcp =
        Message::from_vec(&raw_tcp(server.dns, &query_bytes(G, RecordType::A, false))).unwrap();
    assert_eq!(tcp.answers.len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_tcp_queries_are_all_answered() {
    use std::io::{Read, Write};
    let server = Server::demo().await;
    let mut s = std::net::TcpStream::connect(server.dns).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut batch = Vec::new();
    for _ in 0..5 {
        let q = query_bytes(G, RecordType::A, false);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    s.write_all(&batch).unwrap();
    for _ in 0..5 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(Message::from_vec(&buf).unwrap().answers.len(), 3);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_dig,
    ignore = "dig is missing (apt-get install bind9-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn dig_sees_the_demo_answers_and_the_cname_fallback() {
    let server = Server::demo().await;
    let port = server.dns.port().to_string();
    let dig = |name: &str, extra: &[&str]| {
        let mut args: Vec<String> =
            vec!["@127.0.0.1".into(), "-p".into(), port.clone(), name.into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("+noall".into());
        args.push("+answer".into());
        args.push("+comments".into());
        // dig aligns columns with tabs and spaces: compare with single spaces.
        tool("dig", &args)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = dig(AP1, &[]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(&format!("{AP1} 300 IN CNAME {AP}")), "{out}");
    assert!(out.contains(&format!("{G} 300 IN A 10.1.0.10")), "{out}");
    assert!(out.contains(" aa"), "authoritative: {out}");
    let out = dig(G, &["+tcp"]);
    assert!(out.contains("10.3.0.10"), "{out}");
    let out = dig("nothing.example.com", &[]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    fedns_missing_kdig,
    ignore = "kdig is missing (apt-get install knot-dnsutils) and FEDNS_SKIP_MISSING_TOOLS=1"
)]
async fn kdig_gets_the_same_answers_over_udp_and_tcp() {
    let server = Server::demo().await;
    let port = server.dns.port().to_string();
    for transport in ["+notcp", "+tcp"] {
        let args: Vec<String> = ["@127.0.0.1", "-p", &port, US1, "A", transport, "+short"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = tool("kdig", &args);
        assert_eq!(out.trim(), "10.1.0.10", "{transport}: {out}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tcp_client_is_answered_while_many_connections_are_held_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = demo_with(|args| {
        args.tcp_max_connections = Some(64);
        args.tcp_idle_timeout = Some(Duration::from_secs(30));
    })
    .await;
    // 300 idle connections from ten client addresses: far past the cap of 64.
    let mut held = Vec::new();
    for i in 0..300u32 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((
                [127, 0, 0, 2 + (i % 10) as u8],
                0,
            )))
            .unwrap();
        held.push(socket.connect(server.dns).await.unwrap());
    }
    let started = std::time::Instant::now();
    let mut client = tokio::net::TcpStream::connect(server.dns).await.unwrap();
    let q = query_bytes(G, RecordType::A, false);
    client
        .write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .await
        .unwrap();
    let len = tokio::time::timeout(Duration::from_secs(3), client.read_u16())
        .await
        .expect("answered while 300 connections are held open")
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(Message::from_vec(&buf).unwrap().answers.len(), 3);
    eprintln!("answered in {:?}", started.elapsed());
    // The idle-longest connections were closed to make room: most held ones see EOF.
    let mut closed = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while closed < 300 - 63 && std::time::Instant::now() < deadline {
        let mut still_open = Vec::new();
        for mut stream in held {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
                _ => still_open.push(stream),
            }
        }
        held = still_open;
    }
    assert_eq!(
        closed,
        300 - 63,
        "idle connections closed to stay at the cap"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_leave_from_the_address_queried_on_a_wildcard_bind() {
    let server = demo_with(|args| args.dns_listen = vec!["0.0.0.0:0".parse().unwrap()]).await;
    let port = server.dns.port();
    for to in ["127.0.0.2", "127.0.0.1", "127.0.0.3"] {
        let target: std::net::SocketAddr = format!("{to}:{port}").parse().unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket
            .send_to(&query_bytes(G, RecordType::A, false), target)
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = socket.recv_from(&mut buf).expect("an answer");
        assert_eq!(from, target, "the reply to {to} comes from {to}");
        assert_eq!(Message::from_vec(&buf[..n]).unwrap().answers.len(), 3);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_prefix_is_rate_limited_with_slips_but_tcp_is_not() {
    let server = demo_with(|args| {
        args.rrl_rate = Some(5);
        args.rrl_slip = Some(2);
        args.udp_workers = Some(1);
    })
    .await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let q = query_bytes(G, RecordType::A, true);
    for _ in 0..40 {
        socket.send_to(&q, server.dns).unwrap();
    }
    let (mut full, mut slipped) = (0, 0);
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty());
            assert!(m.edns.is_some(), "a slip keeps the OPT");
            slipped += 1;
        } else {
            full += 1;
        }
    }
    // 40 responses within a second or so: about 5 sent, the other 35 limited, every 2nd slipped.
    assert!((5..=10).contains(&full), "{full} full answers");
    assert!((15..=18).contains(&slipped), "{slipped} slips");
    let (_, metrics) = server.admin_get("/metrics").await;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("fedns_rrl_actions_total{action=\"drop\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u32>().ok());
    assert!(dropped.is_some_and(|d| d >= 15), "{metrics}");
    // TCP is never limited: the slip's retry succeeds.
    let tcp = Message::from_vec(&raw_tcp(server.dns, &q)).unwrap();
    assert_eq!(tcp.answers.len(), 3);
    server.stop().await;
}

/// The demo with some flags changed.
async fn demo_with(configure: impl FnOnce(&mut fedns::config::ServeArgs)) -> Server {
    Server::start_configured(
        |source, zones| {
            copy_tree(&repo().join("deploy/demo"), source);
            copy_tree(&repo().join("zones"), zones);
        },
        configure,
    )
    .await
}
