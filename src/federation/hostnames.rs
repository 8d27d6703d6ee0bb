//! Background resolution of load-balancer hostnames (AWS ELB style) into addresses. Names inside
//! our own zones are resolved through our own answer path, without any network traffic; others go
//! to the upstream resolver (configured, or the system's). Each name is re-resolved when its
//! upstream TTL runs out; a failure keeps the last good set (the engine ignores `None`s).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::dns::responder::{self, Limits, Transport};
use crate::dns::store::RecordStore;
use crate::federation::records::ResolvedHost;

/// Re-resolution floor and ceiling, whatever the upstream TTL says.
const MIN_REFRESH: Duration = Duration::from_secs(5);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// Retry delay after a failure.
const RETRY: Duration = Duration::from_secs(10);

/// Resolves hostnames, remembering when each is due again.
#[derive(Debug)]
pub struct HostResolver {
    store: Arc<RecordStore>,
    upstream: Option<SocketAddr>,
    resolver: Option<TokioResolver>,
    due: BTreeMap<String, Instant>,
}

impl HostResolver {
    pub fn new(store: Arc<RecordStore>, upstream: Option<SocketAddr>) -> Self {
        Self {
            store,
            upstream,
            resolver: None,
            due: BTreeMap::new(),
        }
    }

    /// Resolves every host of `wanted` that is due; forgets hosts no longer wanted.
    pub async fn resolve_due(
        &mut self,
        wanted: &std::collections::BTreeSet<String>,
        now: Instant,
    ) -> Vec<(String, Option<ResolvedHost>)> {
        self.due.retain(|h, _| wanted.contains(h));
        let mut out = Vec::new();
        for host in wanted {
            if self.due.get(host).is_some_and(|at| *at > now) {
                continue;
            }
            let result = self.resolve(host).await;
            let next = match &result {
                Ok(r) => Duration::from_secs(r.ttl.into()).clamp(MIN_REFRESH, MAX_REFRESH),
                Err(e) => {
                    tracing::warn!(host, error = %e, "load-balancer hostname did not resolve; keeping the last good addresses");
                    RETRY
                }
            };
            self.due.insert(host.clone(), now + next);
            out.push((host.clone(), result.ok()));
        }
        out
    }

    /// Resolves, without any network traffic, the wanted hosts that live in our own zones; used at
    /// start-up so the first answers already include them.
    pub fn resolve_local(
        &mut self,
        wanted: &std::collections::BTreeSet<String>,
        now: Instant,
    ) -> Vec<(String, ResolvedHost)> {
        let mut out = Vec::new();
        for host in wanted {
            let Ok(name) = Name::from_ascii(host) else {
                continue;
            };
            if self
                .store
                .zones()
                .find(&crate::federation::naming::wire_key(&name))
                .is_none()
            {
                continue;
            }
            if let Ok(resolved) = resolve_locally(&self.store, &name) {
                let next = Duration::from_secs(resolved.ttl.into()).clamp(MIN_REFRESH, MAX_REFRESH);
                self.due.insert(host.clone(), now + next);
                out.push((host.clone(), resolved));
            }
        }
        out
    }

    async fn resolve(&mut self, host: &str) -> Result<ResolvedHost, String> {
        let name = Name::from_ascii(host).map_err(|e| e.to_string())?;
        let key = crate::federation::naming::wire_key(&name);
        if self.store.zones().find(&key).is_some() {
            return resolve_locally(&self.store, &name);
        }
        let resolver = match &self.resolver {
            Some(r) => r,
            None => self.resolver.insert(build_resolver(self.upstream)?),
        };
        let lookup = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now())
            .as_secs() as u32;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err("no addresses".into());
        }
        Ok(ResolvedHost { addrs, ttl })
    }
}

fn build_resolver(upstream: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    match upstream {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
            TokioResolver::builder_with_config(config, provider)
                .build()
                .map_err(|e| e.to_string())
        }
        None => TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| e.to_string()),
    }
}

/// Resolves a name in our own zones by asking our own answer path for A and AAAA.
pub fn resolve_locally(store: &RecordStore, name: &Name) -> Result<ResolvedHost, String> {
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    let mut out = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let mut q = Message::query();
        q.add_query(Query::query(name.clone(), qtype));
        let bytes = q.to_vec().map_err(|e| e.to_string())?;
        responder::respond(&bytes, store, Transport::Tcp, &Limits::default(), &mut out)
            .ok_or("not answerable")?;
        let answer = Message::from_vec(&out).map_err(|e| e.to_string())?;
        for record in answer.answers {
            match record.data {
                RData::A(a) => addrs.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
                _ => continue,
            }
            ttl = ttl.min(record.ttl);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{name} has no addresses in our zones"));
    }
    Ok(ResolvedHost { addrs, ttl })
}
