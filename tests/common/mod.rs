//! Shared test fixtures: a running fedns on loopback with its own copy of a source tree, and DNS
//! clients (hickory's, raw sockets, dig/kdig).
#![allow(dead_code)]

pub mod federation;
pub mod generated;
pub mod secondary;
pub mod tools;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fedns::app::{self, Running};
use fedns::config::ServeArgs;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies a directory tree (the demo) so a test can edit it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A fedns serving a private copy of a source tree and zone directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub running: Option<Running>,
}

impl Server {
    /// Serves a copy of `deploy/demo` with `zones/`.
    pub async fn demo() -> Self {
        Self::start_with(|source, zones| {
            copy_tree(&repo().join("deploy/demo"), source);
            copy_tree(&repo().join("zones"), zones);
        })
        .await
    }

    /// Serves whatever `fill` writes into the source and zones directories.
    pub async fn start_with(fill: impl FnOnce(&Path, &Path)) -> Self {
        Self::start_configured(fill, |_| {}).await
    }

    pub async fn start_configured(
        fill: impl FnOnce(&Path, &Path),
        configure: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let zones = dir.path().join("zones");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::create_dir_all(&zones).unwrap();
        fill(&source, &zones);
        let mut args = ServeArgs {
            source: Some(source),
            zones: Some(zones),
            dns_listen: vec!["127.0.0.1:0".parse().unwrap()],
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            udp_workers: Some(2),
            ..Default::default()
        };
        configure(&mut args);
        let running = app::start(args.resolve().unwrap()).await.unwrap();
        Self {
            dns: running.dns_addrs[0],
            admin: running.admin_addr,
            running: Some(running),
            dir,
        }
    }

    pub fn source(&self) -> PathBuf {
        self.dir.path().join("source")
    }

    pub fn zones(&self) -> PathBuf {
        self.dir.path().join("zones")
    }

    pub async fn udp_client(&self) -> Client<TokioRuntimeProvider> {
        let stream = UdpClientStream::builder(self.dns, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(2)))
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        client
    }

    pub async fn tcp_client(&self) -> Client<TokioRuntimeProvider> {
        let (stream, handle) = TcpClientStream::new(
            self.dns,
            None,
            Some(Duration::from_secs(2)),
            TokioRuntimeProvider::default(),
        );
        let stream = stream.await.unwrap();
        let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, handle);
        tokio::spawn(bg);
        client
    }

    /// GET on the admin server, returning (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop(Duration::ZERO).await;
        }
    }
}

/// A plain HTTP/1.0 GET (the admin server), returning (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Asks over UDP with hickory's client; returns the response.
pub async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
) -> Message {
    let response = client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype)
        .await
        .unwrap();
    response.into_message()
}

/// The answer as one line: rcode, then each record's type and data.
pub fn summary(m: &Message) -> String {
    let mut parts = vec![format!("{:?}", m.metadata.response_code)];
    for r in &m.answers {
        parts.push(match &r.data {
            RData::A(a) => format!("A {a}"),
            RData::AAAA(a) => format!("AAAA {a}"),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            other => format!("{} {other}", r.record_type()),
        });
    }
    parts.join(" ")
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Sends raw bytes over UDP; returns the raw response, or `None` after `wait`.
pub fn raw_udp(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// Sends raw bytes over TCP (framed); returns the raw response.
pub fn raw_tcp(server: SocketAddr, packet: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(&(packet.len() as u16).to_be_bytes()).unwrap();
    s.write_all(packet).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// A query message as bytes, optionally with EDNS.
pub fn query_bytes(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Polls `check` until it returns true or `limit` passes; returns the time it took.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Runs an external DNS tool (dig, kdig), which must be installed (see [`tools`]).
pub fn tool(name: &str, args: &[String]) -> String {
    let package = match name {
        "kdig" => "knot-dnsutils",
        _ => "bind9-dnsutils",
    };
    tools::require(
        name,
        &format!("command -v {name}"),
        &format!("apt-get install {package}"),
    );
    let out = Command::new(name).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Server-side applies one object (any kind the cluster knows), then its `status` if it has one.
pub async fn apply(client: &kube::Client, object: serde_json::Value) {
    use kube::api::{Patch, PatchParams};
    let api_version = object["apiVersion"].as_str().unwrap().to_owned();
    let kind = object["kind"].as_str().unwrap().to_owned();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let api: kube::Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            kube::Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => kube::Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply("e2e").force();
    api.patch(&name, &params, &Patch::Apply(&object))
        .await
        .unwrap();
    if object.get("status").is_some() {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": object["status"]})),
        )
        .await
        .unwrap();
    }
}

/// Creates a namespace (no error when it exists).
pub async fn namespace(client: &kube::Client, name: &str) {
    use kube::api::{Patch, PatchParams};
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let _ = api
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&ns))
        .await;
}

/// Applies every CRD fedns reads or writes (`fedns::cli::crds::all()`) to a cluster.
pub async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in fedns::cli::crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
}
