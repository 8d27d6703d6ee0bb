//! The `fedns` command line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use fedns::config::{LogFormat, ServeArgs};
use fedns::federation::engine::Engine;
use fedns::federation::model::{DomainSpec, FederationObject, SourceEvent};

/// Cross-cluster DNS service discovery for federated Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "fedns", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the federation zones over DNS (UDP and TCP) with an admin HTTP server.
    Serve(Box<ServeArgs>),
    /// Explain why a name answers what it answers: which clusters contribute, which are unhealthy
    /// and why. Asks a running fedns (--admin) or computes from a source directory (--source).
    Explain {
        /// The name to explain, e.g. nginx.test.galactic.svc.us1.us.example.com
        name: String,
        /// Admin address of a running fedns.
        #[arg(long, env = "FEDNS_ADMIN", conflicts_with = "source")]
        admin: Option<SocketAddr>,
        /// Source directory to compute from, without a running server.
        #[arg(long)]
        source: Option<PathBuf>,
        /// Zone files directory to include (with --source or --kubeconfig).
        #[arg(long)]
        zones: Option<PathBuf>,
        /// Compute from the cluster itself: read the host (and its members) read-only until the
        /// first full listing, then explain. Writes nothing anywhere.
        #[arg(long, conflicts_with_all = ["admin", "source"])]
        kubeconfig: Option<PathBuf>,
        /// Context of the host cluster (with --kubeconfig) [default: its current context].
        #[arg(long, requires = "kubeconfig")]
        context: Option<String>,
        /// Control-plane namespace (with --kubeconfig) [default: kube-federation-system].
        #[arg(short = 'n', long, requires = "kubeconfig")]
        namespace: Option<String>,
        /// Also say what this client gets: an address or subnet (10.1.2.3, 2001:db8::/56), placed
        /// by the clientNetworks and GeoIP database of --config (of the running server with
        /// --admin).
        #[arg(long)]
        client: Option<String>,
        /// Config file of `serve` (for clientNetworks, regionPreferences and geoipRegions), with
        /// --source or --kubeconfig.
        #[arg(long, env = "FEDNS_CONFIG", conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// GeoIP database of `serve` (--geoip-database), with --source or --kubeconfig
        /// [default: geoipDatabase of --config].
        #[arg(long, env = "FEDNS_GEOIP_DATABASE", conflicts_with = "admin")]
        geoip_database: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions fedns reads and writes (Domain, ServiceDNSRecord,
    /// IngressDNSRecord, DNSEndpoint, KubeFedCluster, FederatedTypeConfig, KubeFedConfig,
    /// ReplicaSchedulingPreference and the default Federated<Kind> types), or write one file each
    /// into --out-dir.
    Crds {
        /// Write one file per CRD into this directory instead of printing a YAML stream.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Print the CoreDNS server blocks (or the kube-dns stubDomains ConfigMap) that forward the
    /// federation zones of the Domains to fedns. Reads Domains from --source, else from the host
    /// cluster (--kubeconfig/--context/--namespace, KUBECONFIG, in-cluster).
    Corefile {
        /// The fedns DNS Service address to forward to, ip:port (e.g. 10.96.0.53:53).
        #[arg(long)]
        fedns: SocketAddr,
        /// corefile (CoreDNS server blocks) or stubdomains (kube-dns ConfigMap).
        #[arg(long, value_enum, default_value_t)]
        format: fedns::cli::corefile::Format,
        /// Source directory to read Domains from, instead of a cluster.
        #[arg(long, conflicts_with_all = ["kubeconfig", "context"])]
        source: Option<PathBuf>,
        /// Kubeconfig of the host cluster [default: KUBECONFIG, else in-cluster].
        #[arg(long, env = "FEDNS_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Context of the host cluster in the kubeconfig [default: its current context].
        #[arg(long, env = "FEDNS_CONTEXT")]
        context: Option<String>,
        /// Control-plane namespace holding the Domains.
        #[arg(
            short = 'n',
            long,
            env = "FEDNS_NAMESPACE",
            default_value = "kube-federation-system"
        )]
        namespace: String,
    },
    /// Join a member cluster to the federation (like `kubefedctl join`): a ServiceAccount, RBAC
    /// and token Secret in the member; the token Secret and the KubeFedCluster in the host.
    Join(fedns::cli::join::JoinArgs),
    /// Remove a member cluster: its KubeFedCluster and Secret in the host, the ServiceAccount,
    /// RBAC and token Secret in the member. Propagated objects stay unless
    /// --remove-managed-objects.
    Unjoin(fedns::cli::unjoin::UnjoinArgs),
    /// Enable federation of a type: print (--dry-run) or apply its FederatedTypeConfig and
    /// Federated CRD.
    Enable(fedns::cli::enable::EnableArgs),
    /// Print (or --apply) the Federated<Kind> of an existing object of the host or a file.
    Federate(fedns::cli::federate::FederateArgs),
    /// The federation at a glance: from a running fedns (--admin) or the host cluster.
    Status(fedns::cli::status::StatusArgs),
    /// Send one DNS query and print the answer the way dig does (a small dig).
    Query {
        /// The name to ask for, e.g. nginx.test.galactic.svc.example.com
        name: String,
        /// Record type: A, AAAA, CNAME, SOA, NS, TXT, SRV, ANY ...
        #[arg(default_value = "A")]
        qtype: String,
        /// The DNS server to ask, ip:port (or :port, localhost:port).
        #[arg(long, default_value = "127.0.0.1:5353", env = "FEDNS_SERVER", value_parser = fedns::config::parse_listen)]
        server: SocketAddr,
        /// Use TCP instead of UDP.
        #[arg(long)]
        tcp: bool,
        /// How long to wait for the answer, e.g. 3s, 500ms.
        #[arg(long, default_value = "3s", value_parser = fedns::config::parse_duration)]
        timeout: Duration,
    },
}

/// Runs the command line; an error is printed once, as `error: <what>: <cause>`, without a
/// backtrace (even with RUST_BACKTRACE set: these are the user's errors, not fedns's bugs).
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: many errors already include their
/// source's text in their own message, and repeating it would say the same thing twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Explain {
            name,
            admin: _,
            source: _,
            zones,
            kubeconfig: Some(kubeconfig),
            context,
            namespace,
            client,
            config,
            geoip_database,
        } => explain_from_cluster(
            &name,
            kubeconfig,
            context,
            namespace,
            zones,
            ExplainClient {
                client,
                config,
                geoip_database,
            },
        ),
        Command::Explain {
            name,
            admin,
            source,
            zones,
            client,
            config,
            geoip_database,
            ..
        } => explain(
            &name,
            admin,
            source,
            zones,
            ExplainClient {
                client,
                config,
                geoip_database,
            },
        ),
        Command::Query {
            name,
            qtype,
            server,
            tcp,
            timeout,
        } => query(&name, &qtype, server, tcp, timeout),
        Command::Crds { out_dir } => crds(out_dir),
        Command::Corefile {
            fedns,
            format,
            source,
            kubeconfig,
            context,
            namespace,
        } => {
            let domains = match source {
                Some(dir) => domains_from_directory(&dir)?,
                None => domains_from_cluster(kubeconfig, context, &namespace)?,
            };
            print!("{}", fedns::cli::corefile::render(&domains, fedns, format)?);
            Ok(())
        }
        Command::Join(args) => run_cli(fedns::cli::join::run(args)),
        Command::Unjoin(args) => run_cli(fedns::cli::unjoin::run(args)),
        Command::Enable(args) => run_cli(fedns::cli::enable::run(args)),
        Command::Federate(args) => run_cli(fedns::cli::federate::run(args)),
        Command::Status(args) => run_cli(fedns::cli::status::run(args)),
    }
}

/// Runs one management subcommand on a single-threaded runtime (one request at a time).
fn run_cli(
    command: impl std::future::Future<Output = Result<(), fedns::cli::Error>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(command)?;
    Ok(())
}

/// Logs to stderr: text for people, or JSON with every field at the top level of its line
/// (`{"timestamp":…,"level":"INFO","message":"fedns serving","version":…}`). The level comes
/// from --log-level, else the FEDNS_LOG filter, else info.
fn init_logging(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    // kube_client logs an ERROR for every refused connection while a member is down; fedns's own
    // watchers already log each failure once (with what it means), so it is quiet by default.
    let quiet = |filter: &str| {
        if filter.contains("kube_client") || filter.contains("kube_runtime") {
            filter.to_owned()
        } else {
            format!("{filter},kube_client=off,kube_runtime::watcher=error")
        }
    };
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(quiet(level)).map_err(|e| {
            anyhow::anyhow!(
                "--log-level {level:?}: {e} (use error, warn, info, debug, trace or a filter like info,fedns=debug)"
            )
        })?,
        None => tracing_subscriber::EnvFilter::try_from_env("FEDNS_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(quiet("info"))),
    };
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    init_logging(cfg.log_format, cfg.log_level.as_deref())?;
    let drain = cfg.shutdown_drain;
    // Engine, sources, TCP and admin run here; UDP answer workers are their own threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = fedns::app::start(cfg).await?;
        let signal = wait_for_signal().await;
        tracing::info!(
            signal,
            drain = ?drain,
            "shutting down: /ready fails, answering until the drain ends"
        );
        let started = Instant::now();
        running.stop(drain).await;
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "fedns stopped"
        );
        anyhow::Ok(())
    })
}

/// Waits for SIGTERM or SIGINT; returns which.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}

fn crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let files = fedns::cli::crds::files();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, yaml) in files {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            for (_, yaml) in files {
                print!("---\n{yaml}");
            }
        }
    }
    Ok(())
}

/// The Domains of a source directory (files that fail to load are warned about and skipped).
fn domains_from_directory(dir: &std::path::Path) -> anyhow::Result<Vec<DomainSpec>> {
    let snapshot = fedns::source::dir::load(dir)?;
    for e in snapshot.errors() {
        eprintln!("warning: {e}");
    }
    let mut domains = Vec::new();
    for event in snapshot.initial_events() {
        if let SourceEvent::ResetFederation(objects) = event {
            domains.extend(objects.into_iter().filter_map(|o| match o {
                FederationObject::Domain(d) => Some(d),
                _ => None,
            }));
        }
    }
    Ok(domains)
}

/// The Domains in `namespace` of the host cluster (invalid ones are warned about and skipped).
fn domains_from_cluster(
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: &str,
) -> anyhow::Result<Vec<DomainSpec>> {
    use kube::api::{Api, ListParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let options = KubeConfigOptions {
            context,
            ..Default::default()
        };
        let config = match (&kubeconfig, &options.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options).await?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options).await?,
            (None, None) => kube::Config::infer().await?,
        };
        let client = kube::Client::try_from(config)?;
        let api: Api<fedns::k8s::crd::Domain> = Api::namespaced(client, namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .with_context(|| format!("cannot list Domains in namespace {namespace}"))?;
        let mut domains = Vec::new();
        for d in list.items {
            match fedns::source::normalize::domain(d) {
                Ok(FederationObject::Domain(d)) => domains.push(d),
                Ok(_) => {}
                Err(e) => eprintln!("warning: {e}"),
            }
        }
        Ok(domains)
    })
}

/// `explain --client --config`: the client to place, and where the location table comes from.
struct ExplainClient {
    client: Option<String>,
    config: Option<PathBuf>,
    geoip_database: Option<PathBuf>,
}

impl ExplainClient {
    /// The `/explain` query for `name`.
    fn path(&self, name: &str) -> String {
        let mut path = format!("/explain?name={}", url_encode(name));
        if let Some(client) = &self.client {
            path.push_str(&format!("&client={}", url_encode(client)));
        }
        path
    }
}

fn explain(
    name: &str,
    admin: Option<SocketAddr>,
    source: Option<PathBuf>,
    zones: Option<PathBuf>,
    client: ExplainClient,
) -> anyhow::Result<()> {
    if let Some(source) = source {
        let locality = fedns::config::locality_from(
            client.config.as_deref(),
            client.geoip_database.as_deref(),
        )?;
        let snapshot = fedns::source::dir::load(&source)?;
        for e in snapshot.errors() {
            eprintln!("warning: {e}");
        }
        let store = std::sync::Arc::new(fedns::dns::store::RecordStore::new());
        let settings = fedns::federation::engine::Settings {
            locality,
            ..Default::default()
        };
        let mut engine = Engine::new(store, settings);
        let mut zone_dir = fedns::dns::zonefile::ZoneDir::new(zones);
        zone_dir.refresh();
        for e in zone_dir.errors() {
            eprintln!("warning: {e}");
        }
        engine.set_static_zones(zone_dir.zones());
        let now = Instant::now();
        for event in snapshot.initial_events() {
            engine.apply(event, now);
        }
        engine.flush(now);
        print!(
            "{}",
            fedns::federation::explain::render(&engine.explain_for(
                name,
                client.client.as_deref(),
                now
            ))
        );
        return Ok(());
    }
    let admin = admin.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9053)));
    let body = fedns::cli::status::admin_get(admin, &client.path(name)).context(
        "pass --admin <address> of a running fedns, or --source <dir> to compute locally",
    )?;
    print!("{body}");
    Ok(())
}

/// `explain` against the cluster: runs the Kubernetes source in this process, read-only (no status,
/// no Lease, no propagation), on loopback ports, until its first full listing; then asks it.
fn explain_from_cluster(
    name: &str,
    kubeconfig: PathBuf,
    context: Option<String>,
    namespace: Option<String>,
    zones: Option<PathBuf>,
    client: ExplainClient,
) -> anyhow::Result<()> {
    let args = ServeArgs {
        config: client.config.clone(),
        geoip_database: client.geoip_database.clone(),
        kubeconfig: Some(kubeconfig),
        context,
        namespace,
        zones,
        dns_listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        udp_workers: Some(1),
        propagation: Some(false),
        leader_elect: Some(false),
        ..Default::default()
    };
    let mut cfg = args.resolve()?;
    let fedns::config::SourceConfig::Kubernetes(k) = &mut cfg.source else {
        anyhow::bail!("--kubeconfig did not select the Kubernetes source");
    };
    k.read_only = true;
    let wait = k.sync_timeout + Duration::from_secs(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = fedns::app::start(cfg).await?;
        let admin = running.admin_addr;
        let started = Instant::now();
        let ready = loop {
            let ok = tokio::task::spawn_blocking(move || {
                fedns::cli::status::admin_get(admin, "/ready").is_ok()
            })
            .await
            .unwrap_or(false);
            if ok || started.elapsed() > wait {
                break ok;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !ready {
            eprintln!(
                "warning: the host cluster (or a member) was not listed within {wait:?}; explaining what is known"
            );
        }
        let path = client.path(name);
        let body = tokio::task::spawn_blocking(move || fedns::cli::status::admin_get(admin, &path))
            .await
            .context("explain request")??;
        print!("{body}");
        running.stop(Duration::ZERO).await;
        anyhow::Ok(())
    })
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(
    name: &str,
    qtype: &str,
    server: SocketAddr,
    tcp: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let qtype: RecordType = qtype.to_uppercase().parse().map_err(|_| {
        anyhow::anyhow!(
            "unknown record type {qtype:?} (A, AAAA, CNAME, SOA, NS, TXT, SRV, ANY ...)"
        )
    })?;
    let name = Name::from_ascii(name).with_context(|| format!("invalid name {name:?}"))?;
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, qtype));
    let bytes = msg.to_vec()?;
    let started = Instant::now();
    let no_answer = |e: std::io::Error| {
        let waited = humantime::format_duration(timeout);
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => anyhow::anyhow!(
                "no answer from {server} within {waited}: is fedns serving there? (`fedns serve` listens on 127.0.0.1:5353 by default; pass --server, or a longer --timeout)"
            ),
            std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
                "{server} refused the connection: nothing listens there (pass --server <ip:port> of `fedns serve --dns-listen`)"
            ),
            _ => anyhow::anyhow!("asking {server}: {e}"),
        }
    };
    let answer = if tcp {
        let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(no_answer)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(&(bytes.len() as u16).to_be_bytes())?;
        stream.write_all(&bytes)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).map_err(no_answer)?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).map_err(no_answer)?;
        buf
    } else {
        let socket = UdpSocket::bind(if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        socket.set_read_timeout(Some(timeout))?;
        socket.send_to(&bytes, server).map_err(no_answer)?;
        let mut buf = vec![0u8; 65535];
        let (n, _) = socket.recv_from(&mut buf).map_err(no_answer)?;
        buf.truncate(n);
        buf
    };
    let elapsed = started.elapsed();
    let response = Message::from_vec(&answer).context("malformed response")?;
    print!(
        "{}",
        dig_style(&response, server, if tcp { "tcp" } else { "udp" }, elapsed)
    );
    Ok(())
}

/// A response as dig prints it: header, flags, sections, query time and server.
fn dig_style(m: &Message, server: SocketAddr, transport: &str, elapsed: Duration) -> String {
    use std::fmt::Write as _;
    let md = &m.metadata;
    let rcode = match u16::from(md.response_code) {
        0 => "NOERROR".to_owned(),
        1 => "FORMERR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        3 => "NXDOMAIN".to_owned(),
        4 => "NOTIMP".to_owned(),
        5 => "REFUSED".to_owned(),
        16 => "BADVERS".to_owned(),
        n => format!("RCODE{n}"),
    };
    let flags: Vec<&str> = [
        (
            md.message_type == hickory_proto::op::MessageType::Response,
            "qr",
        ),
        (md.authoritative, "aa"),
        (md.truncation, "tc"),
        (md.recursion_desired, "rd"),
        (md.recursion_available, "ra"),
        (md.authentic_data, "ad"),
        (md.checking_disabled, "cd"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        ";; ->>HEADER<<- opcode: {}, status: {rcode}, id: {}",
        md.op_code, md.id
    );
    let _ = writeln!(
        out,
        ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
        flags.join(" "),
        m.queries.len(),
        m.answers.len(),
        m.authorities.len(),
        m.additionals.len() + usize::from(m.edns.is_some()),
    );
    if let Some(edns) = &m.edns {
        let _ = write!(
            out,
            "\n;; OPT PSEUDOSECTION:\n; EDNS: version: {}, udp: {}\n",
            edns.version(),
            edns.max_payload()
        );
    }
    let _ = writeln!(out, "\n;; QUESTION SECTION:");
    for q in &m.queries {
        let _ = writeln!(
            out,
            ";{}\t\t{}\t{}",
            q.name(),
            q.query_class(),
            q.query_type()
        );
    }
    for (title, records) in [
        ("ANSWER", &m.answers),
        ("AUTHORITY", &m.authorities),
        ("ADDITIONAL", &m.additionals),
    ] {
        if records.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n;; {title} SECTION:");
        for r in records {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                r.name,
                r.ttl,
                r.dns_class,
                r.record_type(),
                r.data
            );
        }
    }
    let _ = write!(
        out,
        "\n;; Query time: {} usec\n;; SERVER: {}#{}({transport})\n",
        elapsed.as_micros(),
        server.ip(),
        server.port()
    );
    out
}

fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id()) as u16
}
