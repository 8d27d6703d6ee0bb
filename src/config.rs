//! Configuration of `fedns serve`: command-line flags, `FEDNS_*` environment variables and an
//! optional YAML file (`--config`). Flags and environment win over the file; the file wins over
//! built-in defaults. Everything is validated before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::dns::responder::Limits;
use crate::dns::rrl::{Prefix, RrlSettings};
use crate::dns::server::TcpSettings;
use crate::federation::engine::Settings;
use crate::federation::geoip::{self, GeoipRegions};
use crate::federation::locality::{ClientNetwork, LocationTable};
use crate::federation::records::TtlPolicy;
use crate::k8s::lease::LeaseSettings;

/// A configuration that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Flags of `fedns serve` (each also settable as `FEDNS_<NAME>` or in the config file).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// YAML config file; its keys are the flag names in camelCase (dnsListen, gracePeriod, ...).
    #[arg(long, env = "FEDNS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Embedded source: a directory with federation objects at the top and one sub-directory of
    /// Kubernetes YAML per member cluster (see deploy/demo). Watched for changes.
    #[arg(long, env = "FEDNS_SOURCE")]
    pub source: Option<PathBuf>,
    /// Directory of RFC 1035 master files served beside the computed records (one zone per file).
    #[arg(long, env = "FEDNS_ZONES")]
    pub zones: Option<PathBuf>,
    /// Address to answer DNS on, UDP and TCP; repeat or comma-separate for several
    /// [default: 127.0.0.1:5353].
    /// Accepts ip:port, :port (all IPv4 interfaces) and host:port (localhost:5353).
    #[arg(long, env = "FEDNS_DNS_LISTEN", value_delimiter = ',', value_parser = parse_listen)]
    pub dns_listen: Vec<SocketAddr>,
    /// Address of the admin HTTP server: /metrics, /healthz, /ready, /explain, /status
    /// [default: 127.0.0.1:9053].
    #[arg(long, env = "FEDNS_ADMIN_LISTEN", value_parser = parse_listen)]
    pub admin_listen: Option<SocketAddr>,
    /// UDP answer workers, each a thread with its own SO_REUSEPORT socket [default: CPU count].
    #[arg(long, env = "FEDNS_UDP_WORKERS")]
    pub udp_workers: Option<usize>,
    /// TTL of records whose recordTTL is 0 [default: 180].
    #[arg(long, env = "FEDNS_DEFAULT_TTL")]
    pub default_ttl: Option<u32>,
    /// Lowest TTL served for computed records [default: 0].
    #[arg(long, env = "FEDNS_MIN_TTL")]
    pub min_ttl: Option<u32>,
    /// Highest TTL served for computed records [default: 86400].
    #[arg(long, env = "FEDNS_MAX_TTL")]
    pub max_ttl: Option<u32>,
    /// Negative-caching TTL (SOA MINIMUM) of Domain zones [default: 30].
    #[arg(long, env = "FEDNS_NEGATIVE_TTL")]
    pub negative_ttl: Option<u32>,
    /// How long an unreachable member keeps its targets, e.g. 30s, 5m [default: 0s].
    #[arg(long, env = "FEDNS_GRACE_PERIOD", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
    /// Largest UDP response and the EDNS payload we advertise [default: 1232].
    #[arg(long, env = "FEDNS_MAX_UDP_PAYLOAD")]
    pub max_udp_payload: Option<u16>,
    /// Open DNS TCP connections; at the cap a new connection closes the one idle longest
    /// [default: 1024].
    #[arg(long, env = "FEDNS_TCP_MAX_CONNECTIONS")]
    pub tcp_max_connections: Option<usize>,
    /// How long a DNS TCP connection may wait for its next query; shortened automatically past
    /// half the connection cap [default: 10s].
    #[arg(long, env = "FEDNS_TCP_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub tcp_idle_timeout: Option<Duration>,
    /// Response rate limiting: UDP responses per second per client prefix (/24, /56) and
    /// response class; 0 turns it off [default: 200].
    #[arg(long, env = "FEDNS_RRL_RATE")]
    pub rrl_rate: Option<u32>,
    /// Every Nth rate-limited response is sent truncated instead of dropped, so real clients
    /// retry over TCP; 0 drops all [default: 2].
    #[arg(long, env = "FEDNS_RRL_SLIP")]
    pub rrl_slip: Option<u32>,
    /// How long a flooding prefix's excess is remembered, e.g. 15s [default: 15s].
    #[arg(long, env = "FEDNS_RRL_WINDOW", value_parser = parse_duration)]
    pub rrl_window: Option<Duration>,
    /// Client prefixes never rate limited, e.g. 10.0.0.0/8 (the cluster resolvers); repeat or
    /// comma-separate [default: none].
    #[arg(long, env = "FEDNS_RRL_EXEMPT", value_delimiter = ',')]
    pub rrl_exempt: Vec<Prefix>,
    /// Addresses of the Domains' name server (`nameServer`, else `ns.<zone>`) when it lies in
    /// its zone, for Domains that give no `nameServerAddresses` of their own: served as its
    /// A/AAAA records and sent with NS answers; repeat or comma-separate [default: none].
    #[arg(long, env = "FEDNS_NAME_SERVER_ADDRESSES", value_delimiter = ',')]
    pub name_server_addresses: Vec<std::net::IpAddr>,
    /// Server identity sent as EDNS NSID (RFC 5001) and answered to CH TXT id.server and
    /// hostname.bind; `hostname` uses the machine's host name [default: none].
    #[arg(long, env = "FEDNS_NSID")]
    pub nsid: Option<String>,
    /// Answer to CH TXT version.bind and version.server [default: none, those are REFUSED].
    #[arg(long, env = "FEDNS_VERSION_STRING")]
    pub version_string: Option<String>,
    /// MaxMind DB file (GeoLite2/GeoIP2 Country or City) placing clients no clientNetworks row
    /// matches, by the config file's geoipRegions; read once at startup [default: none].
    #[arg(long, env = "FEDNS_GEOIP_DATABASE")]
    pub geoip_database: Option<PathBuf>,
    /// Resolver for load-balancer hostnames outside our zones, ip:port [default: the system's].
    #[arg(long, env = "FEDNS_UPSTREAM_RESOLVER")]
    pub upstream_resolver: Option<SocketAddr>,
    /// Log format: text or json (one object per line, fields at the top level) [default: text].
    #[arg(long, env = "FEDNS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level: error, warn, info, debug or trace, or a filter such as `info,fedns=debug`
    /// [default: info; the FEDNS_LOG filter when set].
    #[arg(long, env = "FEDNS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Lame-duck drain on SIGTERM/SIGINT: how long answers continue after /ready starts failing,
    /// so load balancers stop sending first, e.g. 5s [default: 2s].
    #[arg(long, env = "FEDNS_SHUTDOWN_DRAIN", value_parser = parse_duration)]
    pub shutdown_drain: Option<Duration>,
    /// Kubernetes source: kubeconfig of the host cluster (else KUBECONFIG, else in-cluster).
    /// Selected when --source is not given.
    #[arg(long, env = "FEDNS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the host cluster in the kubeconfig [default: its current context].
    #[arg(long, env = "FEDNS_CONTEXT")]
    pub context: Option<String>,
    /// Control-plane namespace: Domains, KubeFedClusters and their Secrets
    /// [default: kube-federation-system].
    #[arg(long, env = "FEDNS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Member health probe period, e.g. 10s [default: 10s].
    #[arg(long, env = "FEDNS_PROBE_PERIOD", value_parser = parse_duration)]
    pub probe_period: Option<Duration>,
    /// Member health probe timeout [default: 3s].
    #[arg(long, env = "FEDNS_PROBE_TIMEOUT", value_parser = parse_duration)]
    pub probe_timeout: Option<Duration>,
    /// Consecutive failed probes before a member is not ready [default: 3].
    #[arg(long, env = "FEDNS_PROBE_FAILURE_THRESHOLD")]
    pub probe_failure_threshold: Option<u32>,
    /// Consecutive successful probes before it is ready again [default: 1].
    #[arg(long, env = "FEDNS_PROBE_SUCCESS_THRESHOLD")]
    pub probe_success_threshold: Option<u32>,
    /// Longest wait for every member's first listing before answering without the members not
    /// listed yet (the host cluster's first listing is always waited for) [default: 60s].
    #[arg(long, env = "FEDNS_SYNC_TIMEOUT", value_parser = parse_duration)]
    pub sync_timeout: Option<Duration>,
    /// How long an empty relist of a kind that had objects is distrusted: the old objects are
    /// kept until a second listing at least this much later is still empty [default: 30s].
    #[arg(long, env = "FEDNS_EMPTY_RELIST_CONFIRM", value_parser = parse_duration)]
    pub empty_relist_confirm: Option<Duration>,
    /// Run the propagation controllers (FederatedTypeConfig, Federated<Kind>,
    /// ReplicaSchedulingPreference) beside DNS [default: true].
    #[arg(long, env = "FEDNS_PROPAGATION")]
    pub propagation: Option<bool>,
    /// How often every federated object is checked against its members again, even without a
    /// change (nothing is written when nothing drifted) [default: 5m].
    #[arg(long, env = "FEDNS_PROPAGATION_RESYNC", value_parser = parse_duration)]
    pub propagation_resync: Option<Duration>,
    /// Kubernetes source: elect one writer among replicas with a Lease in --namespace; the others
    /// serve DNS but write nothing. `--leader-elect=false` writes from every replica
    /// [default: true].
    #[arg(long, env = "FEDNS_LEADER_ELECT", num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// Zone transfers: at most one NOTIFY per zone and secondary this often; changes in between
    /// are coalesced into the next (transfer.notify in the config file) [default: 1s].
    #[arg(long, env = "FEDNS_NOTIFY_INTERVAL", value_parser = parse_duration)]
    pub notify_interval: Option<Duration>,
    /// Name of the Lease [default: fedns].
    #[arg(long, env = "FEDNS_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// How long a leader's claim lasts after its last renewal; a standby takes over after it
    /// [default: 15s].
    #[arg(long, env = "FEDNS_LEASE_DURATION", value_parser = parse_duration)]
    pub lease_duration: Option<Duration>,
    /// A leader that could not renew for this long stops writing (less than the lease
    /// duration) [default: 10s].
    #[arg(long, env = "FEDNS_LEASE_RENEW_DEADLINE", value_parser = parse_duration)]
    pub lease_renew_deadline: Option<Duration>,
    /// How often the Lease is renewed or tried for [default: 2s].
    #[arg(long, env = "FEDNS_LEASE_RETRY_PERIOD", value_parser = parse_duration)]
    pub lease_retry_period: Option<Duration>,
}

/// A member cluster given as a kubeconfig context (config file `members:`), for users without
/// KubeFedCluster objects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberConfig {
    pub name: String,
    /// Context in the kubeconfig [default: the member's name].
    pub context: Option<String>,
    /// Kubeconfig file [default: the host's].
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub zones: Vec<String>,
    pub region: Option<String>,
    /// Labels placement selectors match (what a KubeFedCluster's labels are).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Where the federation comes from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The embedded directory source.
    Directory(PathBuf),
    /// A host cluster (and its members) through the Kubernetes API.
    Kubernetes(KubeConfig),
}

/// The Kubernetes source's settings.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: String,
    pub probe: crate::source::kubernetes::host::ProbeSettings,
    pub sync_timeout: Duration,
    /// `--empty-relist-confirm`.
    pub empty_relist_confirm: Duration,
    pub members: Vec<MemberConfig>,
    /// Whether the propagation controllers run.
    pub propagation: bool,
    /// Full re-check period of the propagation controller.
    pub propagation_resync: Duration,
    /// Watch only, write nothing anywhere (no status, no Lease, no propagation): for commands
    /// that read the federation through the source, like `fedns explain --kubeconfig`.
    pub read_only: bool,
    /// The Lease that elects the one writer; `None`: every replica writes. Boxed: it would make
    /// this variant of [`SourceConfig`] several times the other's size.
    pub leader_election: Option<Box<LeaseSettings>>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The config file: the same settings as the flags, in camelCase.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    source: Option<PathBuf>,
    zones: Option<PathBuf>,
    dns_listen: Option<Vec<String>>,
    admin_listen: Option<String>,
    udp_workers: Option<usize>,
    #[serde(rename = "defaultTTL")]
    default_ttl: Option<u32>,
    #[serde(rename = "minTTL")]
    min_ttl: Option<u32>,
    #[serde(rename = "maxTTL")]
    max_ttl: Option<u32>,
    #[serde(rename = "negativeTTL")]
    negative_ttl: Option<u32>,
    grace_period: Option<String>,
    #[serde(rename = "maxUDPPayload")]
    max_udp_payload: Option<u16>,
    tcp_max_connections: Option<usize>,
    tcp_idle_timeout: Option<String>,
    rrl_rate: Option<u32>,
    rrl_slip: Option<u32>,
    rrl_window: Option<String>,
    rrl_exempt: Option<Vec<String>>,
    name_server_addresses: Option<Vec<std::net::IpAddr>>,
    upstream_resolver: Option<SocketAddr>,
    nsid: Option<String>,
    version_string: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    shutdown_drain: Option<String>,
    propagation: Option<bool>,
    propagation_resync: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: Option<String>,
    probe_period: Option<String>,
    probe_timeout: Option<String>,
    probe_failure_threshold: Option<u32>,
    probe_success_threshold: Option<u32>,
    sync_timeout: Option<String>,
    empty_relist_confirm: Option<String>,
    #[serde(default)]
    members: Vec<MemberConfig>,
    /// Where clients are: `[{network: 10.1.0.0/16, region: eu, zone: eu1}]`, longest prefix wins.
    #[serde(default)]
    client_networks: Vec<ClientNetwork>,
    /// For `nearest`: the regions to try, in order, when the client's own has no healthy cluster.
    #[serde(default)]
    region_preferences: BTreeMap<String, Vec<String>>,
    /// MaxMind DB file placing the clients `clientNetworks` does not (`--geoip-database`).
    geoip_database: Option<PathBuf>,
    /// `{<ISO country or continent code>: <region>}` for the GeoIP database's networks.
    #[serde(default)]
    geoip_regions: BTreeMap<String, String>,
    leader_elect: Option<bool>,
    lease_name: Option<String>,
    lease_duration: Option<String>,
    lease_renew_deadline: Option<String>,
    lease_retry_period: Option<String>,
    notify_interval: Option<String>,
    /// Zone transfers and NOTIFY (see the README's "Serving through secondaries").
    transfer: Option<crate::dns::xfr::config::TransferFile>,
    #[serde(default)]
    tsig_keys: Vec<crate::dns::xfr::config::TsigKeyFile>,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub source: SourceConfig,
    pub zones: Option<PathBuf>,
    pub dns_listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    pub udp_workers: usize,
    pub engine: Settings,
    pub limits: Limits,
    pub tcp: TcpSettings,
    pub rrl: RrlSettings,
    pub upstream_resolver: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// The log filter from --log-level / logLevel; `None`: FEDNS_LOG, else info.
    pub log_level: Option<String>,
    /// How long answers continue after /ready fails on shutdown.
    pub shutdown_drain: Duration,
    /// Where clients are (`clientNetworks`, `regionPreferences`); also in `engine` and `limits`.
    pub locality: Arc<LocationTable>,
    /// Zone transfers, NOTIFY and TSIG keys; `None` when not configured (transfers REFUSED).
    pub transfer: Option<crate::dns::xfr::TransferConfig>,
}

/// Parses a duration in the one syntax of every flag, config key and environment variable:
/// Go/humantime style `1m30s`, `1.5s`, `500ms`, `2h`, or `0`. A bare number is an error (its unit
/// would be a guess).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{text:?} has no unit: write {text}s (durations look like 30s, 1m30s, 1.5s, 500ms)"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}): use e.g. 30s, 1m30s, 1.5s, 500ms"))
}

/// Parses a listen address: `ip:port`, `[ipv6]:port`, `:port` (every IPv4 interface, like Go's
/// `:5353`) or `host:port` (`localhost` is 127.0.0.1 without a lookup; other names are resolved
/// once, at start).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        format!(
            "invalid address {text:?}: use ip:port, :port or host:port (e.g. 0.0.0.0:5353, :5353, localhost:5353, [::]:5353)"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    match host {
        "" | "*" => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
        "localhost" => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        host => {
            use std::net::ToSocketAddrs;
            let mut addrs = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host:?} in {text:?}: {e}"))?;
            addrs.next().ok_or_else(bad)
        }
    }
}

impl ServeArgs {
    /// Merges flags, environment and the config file, then validates.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let locality = location_table(&file, self.geoip_database.as_deref())?;
        let grace = match (&self.grace_period, &file.grace_period) {
            (Some(d), _) => *d,
            (None, Some(text)) => parse_duration(text).map_err(|message| ConfigError::Invalid {
                field: "gracePeriod",
                message,
            })?,
            (None, None) => Duration::ZERO,
        };
        // Addresses come only from the file here (flags are parsed by clap): name the file.
        let listen = |field: &str, text: &str| {
            parse_listen(text).map_err(|message| ConfigError::Parse {
                path: self.config.clone().unwrap_or_default(),
                message: format!("{field}: {message}"),
            })
        };
        let dns_listen = if !self.dns_listen.is_empty() {
            self.dns_listen.clone()
        } else {
            match &file.dns_listen {
                Some(list) => list
                    .iter()
                    .map(|a| listen("dnsListen", a))
                    .collect::<Result<_, _>>()?,
                None => vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            }
        };
        let admin_listen = match (self.admin_listen, &file.admin_listen) {
            (Some(a), _) => a,
            (None, Some(text)) => listen("adminListen", text)?,
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 9053)),
        };
        let ttl = TtlPolicy {
            default_ttl: self.default_ttl.or(file.default_ttl).unwrap_or(180),
            min_ttl: self.min_ttl.or(file.min_ttl).unwrap_or(0),
            max_ttl: self.max_ttl.or(file.max_ttl).unwrap_or(86_400),
        };
        let duration =
            |flag: Option<Duration>, text: &Option<String>, field, default| match (flag, text) {
                (Some(d), _) => Ok(d),
                (None, Some(t)) => {
                    parse_duration(t).map_err(|message| ConfigError::Invalid { field, message })
                }
                (None, None) => Ok(default),
            };
        let source = match self.source.clone().or(file.source) {
            Some(dir) => SourceConfig::Directory(dir),
            None => {
                let kubeconfig = self.kubeconfig.clone().or(file.kubeconfig);
                let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
                if kubeconfig.is_none() && std::env::var_os("KUBECONFIG").is_none() && !in_cluster {
                    return Err(ConfigError::Invalid {
                        field: "source",
                        message: "no source given: pass --source <dir> (try --source deploy/demo) \
                                  or --kubeconfig <file> for a host cluster"
                            .into(),
                    });
                }
                let namespace = self
                    .namespace
                    .clone()
                    .or(file.namespace)
                    .unwrap_or_else(|| "kube-federation-system".into());
                let leader_election = if self.leader_elect.or(file.leader_elect).unwrap_or(true) {
                    let defaults = LeaseSettings::new(namespace.clone());
                    Some(Box::new(LeaseSettings {
                        name: self
                            .lease_name
                            .clone()
                            .or(file.lease_name)
                            .unwrap_or(defaults.name),
                        lease_duration: duration(
                            self.lease_duration,
                            &file.lease_duration,
                            "leaseDuration",
                            defaults.lease_duration,
                        )?,
                        renew_deadline: duration(
                            self.lease_renew_deadline,
                            &file.lease_renew_deadline,
                            "leaseRenewDeadline",
                            defaults.renew_deadline,
                        )?,
                        retry_period: duration(
                            self.lease_retry_period,
                            &file.lease_retry_period,
                            "leaseRetryPeriod",
                            defaults.retry_period,
                        )?,
                        ..defaults
                    }))
                } else {
                    None
                };
                SourceConfig::Kubernetes(KubeConfig {
                    propagation: self.propagation.or(file.propagation).unwrap_or(true),
                    read_only: false,
                    propagation_resync: duration(
                        self.propagation_resync,
                        &file.propagation_resync,
                        "propagationResync",
                        Duration::from_secs(300),
                    )?,
                    kubeconfig,
                    context: self.context.clone().or(file.context),
                    namespace,
                    probe: crate::source::kubernetes::host::ProbeSettings {
                        period: duration(
                            self.probe_period,
                            &file.probe_period,
                            "probePeriod",
                            Duration::from_secs(10),
                        )?,
                        timeout: duration(
                            self.probe_timeout,
                            &file.probe_timeout,
                            "probeTimeout",
                            Duration::from_secs(3),
                        )?,
                        failure_threshold: self
                            .probe_failure_threshold
                            .or(file.probe_failure_threshold)
                            .unwrap_or(3),
                        success_threshold: self
                            .probe_success_threshold
                            .or(file.probe_success_threshold)
                            .unwrap_or(1),
                    },
                    sync_timeout: duration(
                        self.sync_timeout,
                        &file.sync_timeout,
                        "syncTimeout",
                        Duration::from_secs(60),
                    )?,
                    empty_relist_confirm: duration(
                        self.empty_relist_confirm,
                        &file.empty_relist_confirm,
                        "emptyRelistConfirm",
                        crate::source::kubernetes::watch::EMPTY_RELIST_CONFIRM,
                    )?,
                    members: file.members,
                    leader_election,
                })
            }
        };
        let notify_interval = duration(
            self.notify_interval,
            &file.notify_interval,
            "notifyInterval",
            Duration::from_secs(1),
        )?;
        let transfer = crate::dns::xfr::TransferConfig::resolve(
            file.transfer.as_ref(),
            &file.tsig_keys,
            notify_interval,
        )
        .map_err(|message| ConfigError::Parse {
            path: self.config.clone().unwrap_or_default(),
            message,
        })?;
        let cfg = ServeConfig {
            locality: locality.clone(),
            source,
            zones: self.zones.clone().or(file.zones),
            dns_listen,
            admin_listen,
            udp_workers: self
                .udp_workers
                .or(file.udp_workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            engine: Settings {
                ttl,
                grace,
                negative_ttl: self.negative_ttl.or(file.negative_ttl).unwrap_or(30),
                locality: locality.clone(),
                name_server_addresses: if self.name_server_addresses.is_empty() {
                    file.name_server_addresses.unwrap_or_default()
                } else {
                    self.name_server_addresses.clone()
                },
                ..Settings::default()
            },
            limits: Limits {
                max_udp_payload: self
                    .max_udp_payload
                    .or(file.max_udp_payload)
                    .unwrap_or(1232),
                nsid: self
                    .nsid
                    .clone()
                    .or(file.nsid)
                    .map(|text| server_identity(&text)),
                version: self
                    .version_string
                    .clone()
                    .or(file.version_string)
                    .map(|text| text.into_bytes().into()),
                tcp_keepalive: None,
                locality: (!locality.is_empty()).then(|| locality.clone()),
            },
            tcp: TcpSettings {
                max_connections: self
                    .tcp_max_connections
                    .or(file.tcp_max_connections)
                    .unwrap_or(TcpSettings::default().max_connections),
                idle_timeout: duration(
                    self.tcp_idle_timeout,
                    &file.tcp_idle_timeout,
                    "tcpIdleTimeout",
                    TcpSettings::default().idle_timeout,
                )?,
            },
            rrl: RrlSettings {
                rate: self
                    .rrl_rate
                    .or(file.rrl_rate)
                    .unwrap_or(RrlSettings::default().rate),
                slip: self
                    .rrl_slip
                    .or(file.rrl_slip)
                    .unwrap_or(RrlSettings::default().slip),
                window: duration(
                    self.rrl_window,
                    &file.rrl_window,
                    "rrlWindow",
                    RrlSettings::default().window,
                )?,
                exempt: if !self.rrl_exempt.is_empty() {
                    self.rrl_exempt.clone()
                } else {
                    file.rrl_exempt
                        .unwrap_or_default()
                        .iter()
                        .map(|p| p.parse())
                        .collect::<Result<_, _>>()
                        .map_err(|message| ConfigError::Invalid {
                            field: "rrlExempt",
                            message,
                        })?
                },
            },
            upstream_resolver: self.upstream_resolver.or(file.upstream_resolver),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            log_level: self.log_level.clone().or(file.log_level),
            shutdown_drain: duration(
                self.shutdown_drain,
                &file.shutdown_drain,
                "shutdownDrain",
                Duration::from_secs(2),
            )?,
            transfer,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The NSID bytes for `--nsid`: the text itself, or the machine's host name for `hostname`.
fn server_identity(text: &str) -> std::sync::Arc<[u8]> {
    let text = match text {
        "hostname" => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "hostname".to_owned()),
        other => other.to_owned(),
    };
    text.into_bytes().into()
}

/// The location table of a config file (`clientNetworks`, `regionPreferences`, `geoipRegions`,
/// `geoipDatabase` unless `geoip_database` is given); empty without one.
pub fn locality_from(
    path: Option<&Path>,
    geoip_database: Option<&Path>,
) -> Result<Arc<LocationTable>, ConfigError> {
    let file = match path {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    location_table(&file, geoip_database)
}

/// `clientNetworks` and `regionPreferences`, then the GeoIP database (`geoip_database`, else the
/// file's `geoipDatabase`) mapped by `geoipRegions`. One without the other is an error, as is a
/// database that cannot be read (naming its path).
fn location_table(
    file: &FileConfig,
    geoip_database: Option<&Path>,
) -> Result<Arc<LocationTable>, ConfigError> {
    let invalid = |field, message| ConfigError::Invalid { field, message };
    let table = LocationTable::new(&file.client_networks, file.region_preferences.clone())
        .map_err(|m| invalid("clientNetworks", m))?;
    let regions = GeoipRegions::new(&file.geoip_regions).map_err(|m| invalid("geoipRegions", m))?;
    let table = match (
        geoip_database.or(file.geoip_database.as_deref()),
        regions.is_empty(),
    ) {
        (None, true) => table,
        (None, false) => {
            return Err(invalid(
                "geoipRegions",
                "set, but no GeoIP database: pass --geoip-database <file> (or geoipDatabase)"
                    .into(),
            ));
        }
        (Some(path), true) => {
            return Err(invalid(
                "geoipRegions",
                format!(
                    "empty: the GeoIP database {} would place no client; map ISO country or \
                     continent codes to regions, e.g. geoipRegions: {{DE: eu, NA: us}}",
                    path.display()
                ),
            ));
        }
        (Some(path), false) => {
            let networks = geoip::load(path, &regions).map_err(|m| invalid("geoipDatabase", m))?;
            table.with_geoip(&regions, &networks)
        }
    };
    Ok(Arc::new(table))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl ServeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if let SourceConfig::Kubernetes(k) = &self.source {
            if k.probe.failure_threshold == 0 || k.probe.success_threshold == 0 {
                return invalid("probeFailureThreshold", "thresholds must be at least 1");
            }
            if k.probe.timeout.is_zero() || k.probe.period.is_zero() {
                return invalid("probeTimeout", "probe period and timeout must be positive");
            }
            if let Some(lease) = &k.leader_election {
                // A leader must stop writing before a standby may see its Lease expired, and
                // must get more than one try at renewing before it gives up.
                if lease.retry_period.is_zero() {
                    return invalid("leaseRetryPeriod", "must be positive");
                }
                if lease.renew_deadline <= lease.retry_period {
                    return invalid("leaseRenewDeadline", "must be longer than leaseRetryPeriod");
                }
                if lease.lease_duration <= lease.renew_deadline {
                    return invalid("leaseDuration", "must be longer than leaseRenewDeadline");
                }
                if lease.name.is_empty() {
                    return invalid("leaseName", "must not be empty");
                }
            }
        }
        if self.udp_workers == 0 || self.udp_workers > 256 {
            return invalid("udpWorkers", "must be between 1 and 256");
        }
        if self.limits.max_udp_payload < 512 {
            return invalid("maxUDPPayload", "must be at least 512");
        }
        if self
            .limits
            .nsid
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > 255)
        {
            return invalid("nsid", "must be 1 to 255 bytes");
        }
        if self.limits.version.as_ref().is_some_and(|v| v.len() > 255) {
            return invalid("versionString", "must be at most 255 bytes");
        }
        let ttl = self.engine.ttl;
        if ttl.min_ttl > ttl.max_ttl {
            return invalid("minTTL", "must not exceed maxTTL");
        }
        if ttl.default_ttl == 0 {
            return invalid("defaultTTL", "must be greater than 0");
        }
        if self.dns_listen.is_empty() {
            return invalid("dnsListen", "needs at least one address");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            source: Some("deploy/demo".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_local_and_kubefed_compatible() {
        let cfg = args().resolve().unwrap();
        assert_eq!(cfg.dns_listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(cfg.engine.ttl.default_ttl, 180);
        assert_eq!(cfg.engine.negative_ttl, 30);
        assert_eq!(cfg.engine.grace, Duration::ZERO);
        assert_eq!(cfg.limits.max_udp_payload, 1232);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(&path, "gracePeriod: 30s\ndefaultTTL: 60\nudpWorkers: 3\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        a.udp_workers = Some(1);
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.engine.grace, Duration::from_secs(30));
        assert_eq!(cfg.engine.ttl.default_ttl, 60);
        assert_eq!(cfg.udp_workers, 1);
    }

    #[test]
    fn name_server_addresses_come_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(
            &path,
            "nameServerAddresses: [192.0.2.53, \"2001:db8::53\"]\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let cfg = a.clone().resolve().unwrap();
        assert_eq!(cfg.engine.name_server_addresses.len(), 2);
        a.name_server_addresses = vec!["198.51.100.1".parse().unwrap()];
        let cfg = a.resolve().unwrap();
        assert_eq!(
            cfg.engine.name_server_addresses,
            ["198.51.100.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn unknown_config_keys_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(&path, "gracePeriods: 30s\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.contains("fedns.yaml") && err.contains("gracePeriods"),
            "{err}"
        );
    }

    #[test]
    fn client_networks_reach_the_engine_and_the_answer_path_and_bad_rows_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(
            &path,
            "clientNetworks:\n- {network: 10.1.0.0/16, region: us, zone: us1}\n\
             regionPreferences: {us: [eu]}\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let cfg = a.resolve().unwrap();
        let found = cfg.locality.locate("10.1.2.3".parse().unwrap(), 32);
        assert_eq!(found.scope, 16);
        assert_eq!(cfg.locality.preferences("us"), ["eu"]);
        assert_eq!(cfg.limits.locality.as_ref(), Some(&cfg.locality));
        assert_eq!(cfg.engine.locality, cfg.locality);
        // Without rows the answer path does not look clients up at all.
        assert!(args().resolve().unwrap().limits.locality.is_none());
        std::fs::write(
            &path,
            "clientNetworks:\n- {network: 10.1.0.0/99, region: us}\n",
        )
        .unwrap();
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.starts_with("clientNetworks: clientNetworks[0]: \"10.1.0.0/99\""),
            "{err}"
        );
        std::fs::write(
            &path,
            "clientNetworks:\n- {network: 10.1.0.0/16, place: us}\n",
        )
        .unwrap();
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("place"), "{err}");
    }

    #[test]
    fn geoip_regions_and_the_geoip_database_come_together_and_a_bad_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        let mut a = args();
        a.config = Some(path.clone());
        let err = |a: &ServeArgs| a.resolve().unwrap_err().to_string();
        std::fs::write(&path, "geoipRegions: {DE: eu}\n").unwrap();
        assert!(err(&a).starts_with("geoipRegions: set, but no GeoIP database"));
        std::fs::write(&path, "geoipRegions: {DEU: eu}\n").unwrap();
        assert!(err(&a).starts_with("geoipRegions: \"DEU\" is not an ISO country"));
        let missing = dir.path().join("missing.mmdb");
        std::fs::write(&path, format!("geoipDatabase: {}\n", missing.display())).unwrap();
        assert!(err(&a).starts_with("geoipRegions: empty: the GeoIP database"));
        std::fs::write(&path, "geoipRegions: {DE: eu}\n").unwrap();
        a.geoip_database = Some(missing.clone());
        let text = err(&a);
        assert!(
            text.starts_with(&format!(
                "geoipDatabase: cannot read GeoIP database {}:",
                missing.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn durations_parse_in_go_and_humantime_syntax() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        let bare = parse_duration("7").unwrap_err();
        assert!(bare.contains("7s"), "{bare}");
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn listen_addresses_take_the_usual_forms() {
        assert_eq!(parse_listen(":5353"), Ok("0.0.0.0:5353".parse().unwrap()));
        assert_eq!(
            parse_listen("localhost:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_listen("[::]:53"), Ok("[::]:53".parse().unwrap()));
        assert_eq!(
            parse_listen("10.0.0.1:53"),
            Ok("10.0.0.1:53".parse().unwrap())
        );
        assert!(parse_listen("5353").is_err());
        assert!(parse_listen("localhost:99999").is_err());
    }

    #[test]
    fn the_file_takes_the_same_durations_and_addresses_as_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(
            &path,
            "gracePeriod: 1m30s\nshutdownDrain: 1.5s\ndnsListen: [':5353', 'localhost:5354']\nadminListen: localhost:9000\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.engine.grace, Duration::from_secs(90));
        assert_eq!(cfg.shutdown_drain, Duration::from_millis(1500));
        assert_eq!(
            cfg.dns_listen,
            vec![
                "0.0.0.0:5353".parse().unwrap(),
                "127.0.0.1:5354".parse().unwrap()
            ]
        );
        assert_eq!(cfg.admin_listen, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn missing_source_says_what_to_do() {
        if std::env::var_os("KUBECONFIG").is_some()
            || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        {
            return; // a kubeconfig in the environment is a valid source
        }
        let err = ServeArgs::default().resolve().unwrap_err().to_string();
        assert!(
            err.contains("--source") && err.contains("--kubeconfig"),
            "{err}"
        );
    }

    #[test]
    fn kubeconfig_selects_the_kubernetes_source_with_members_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(
            &path,
            "probePeriod: 2s\nmembers:\n- {name: east, context: kind-east, region: us}\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            kubeconfig: Some("/tmp/host.kubeconfig".into()),
            probe_failure_threshold: Some(5),
            ..Default::default()
        };
        let SourceConfig::Kubernetes(k) = args.resolve().unwrap().source else {
            panic!("expected the Kubernetes source");
        };
        assert_eq!(k.namespace, "kube-federation-system");
        assert_eq!(k.probe.period, Duration::from_secs(2));
        assert_eq!(k.probe.failure_threshold, 5);
        assert_eq!(k.members[0].context.as_deref(), Some("kind-east"));
    }

    #[test]
    fn leader_election_is_on_by_default_with_client_go_timings() {
        let args = ServeArgs {
            kubeconfig: Some("/tmp/host.kubeconfig".into()),
            namespace: Some("fed".into()),
            ..Default::default()
        };
        let SourceConfig::Kubernetes(k) = args.resolve().unwrap().source else {
            panic!("expected the Kubernetes source");
        };
        let lease = k.leader_election.expect("elected by default");
        assert_eq!(lease.name, "fedns");
        assert_eq!(lease.namespace, "fed");
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
        assert_eq!(lease.renew_deadline, Duration::from_secs(10));
        assert_eq!(lease.retry_period, Duration::from_secs(2));
        assert!(!lease.identity.is_empty());
    }

    #[test]
    fn lease_settings_come_from_the_file_and_can_turn_election_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedns.yaml");
        std::fs::write(
            &path,
            "leaseName: dns-writer\nleaseDuration: 4s\nleaseRenewDeadline: 3s\nleaseRetryPeriod: 500ms\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path),
            kubeconfig: Some("/tmp/host.kubeconfig".into()),
            ..Default::default()
        };
        let SourceConfig::Kubernetes(k) = args.resolve().unwrap().source else {
            panic!("expected the Kubernetes source");
        };
        let lease = k.leader_election.unwrap();
        assert_eq!(lease.name, "dns-writer");
        assert_eq!(lease.retry_period, Duration::from_millis(500));
        args.leader_elect = Some(false);
        let SourceConfig::Kubernetes(k) = args.resolve().unwrap().source else {
            panic!("expected the Kubernetes source");
        };
        assert_eq!(k.leader_election, None);
    }

    #[test]
    fn a_renew_deadline_not_shorter_than_the_lease_is_rejected() {
        let args = ServeArgs {
            kubeconfig: Some("/tmp/host.kubeconfig".into()),
            lease_duration: Some(Duration::from_secs(10)),
            lease_renew_deadline: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("leaseDuration"), "{err}");
    }

    #[test]
    fn min_ttl_above_max_is_rejected() {
        let mut a = args();
        a.min_ttl = Some(100);
        a.max_ttl = Some(10);
        assert!(a.resolve().is_err());
    }
}
