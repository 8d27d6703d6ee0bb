//! Why a name answers what it answers, for `fedns explain` and `/explain`.

use std::time::Instant;

use crate::dns::rrl::Prefix;
use crate::federation::locality::{self, Choice, Location, Row, Strategy};
use crate::federation::model::ObjectKey;
use crate::federation::naming;
use crate::federation::records::Computed;

use super::{Claimants, Engine, Owner};

/// Why a name answers what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    pub zone: Option<String>,
    /// The owner whose data is served, and the entry served (store layout, see
    /// [`crate::dns::store::EntryBuilder`]).
    pub served: Option<(Owner, Box<[u8]>)>,
    /// Other owners claiming the same name (conflicts).
    pub rejected: Vec<Owner>,
    /// The computation behind the served data, for computed owners.
    pub computed: Option<Computed>,
    /// Error that kept the owner from producing any name.
    pub record_error: Option<String>,
    pub empty_non_terminal: bool,
    /// What one client gets, when asked with `--client` / `&client=`.
    pub client: Option<ClientExplanation>,
    /// When the name is a zone's apex: the zone's serial and its secondaries.
    pub apex: Option<ApexState>,
}

/// A served zone as seen from its apex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApexState {
    pub serial: u32,
    /// What each secondary last did; filled in by the server, which holds the transfers (empty
    /// without transfer configuration or when computing from a source directory).
    pub secondaries: Vec<(std::net::IpAddr, crate::dns::xfr::PeerStatus)>,
}

/// What one client (an address or a subnet) gets from a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientExplanation {
    /// The client as given.
    pub client: String,
    /// Why it could not be used (not an address or subnet).
    pub error: Option<String>,
    /// Where the client is, and the row (`clientNetworks` or GeoIP network) that said so.
    pub location: Option<(Location, Row)>,
    /// Whether the location table has GeoIP networks (what "nowhere" searched).
    pub geoip: bool,
    /// The ECS scope an answer depending on the location carries.
    pub scope: u8,
    /// The strategy of the name (`all` for names without one).
    pub strategy: Strategy,
    /// The clusters chosen, and why.
    pub choice: Option<Choice>,
}

impl Engine {
    /// Explains why `name` answers what it answers.
    pub fn explain(&self, name: &str, now: Instant) -> Explanation {
        self.explain_for(name, None, now)
    }

    /// Explains `name`, and what `client` (an address or subnet, e.g. `10.1.2.3` or
    /// `2001:db8::/56`) gets from it.
    pub fn explain_for(&self, name: &str, client: Option<&str>, now: Instant) -> Explanation {
        let key = match naming::parse_dotted("name", name) {
            Ok(n) => naming::wire_key(&n),
            Err(e) => {
                return Explanation {
                    name: name.to_owned(),
                    zone: None,
                    served: None,
                    rejected: Vec::new(),
                    computed: None,
                    record_error: Some(e.to_string()),
                    empty_non_terminal: false,
                    client: None,
                    apex: None,
                };
            }
        };
        let zones = self.store.zones();
        let found = zones.find(&key);
        let zone = found.map(|z| z.apex.to_ascii());
        let apex = found.filter(|z| *z.key() == *key).map(|z| ApexState {
            serial: z.serial(),
            secondaries: Vec::new(),
        });
        let state = self.names.get(&key);
        let served = state.and_then(|s| match &s.claimants {
            Claimants::None => None,
            Claimants::One(owner) => {
                let entry = self
                    .store
                    .with_entry(&key, |e| Box::from(e))
                    .unwrap_or_default();
                Some(((**owner).clone(), entry))
            }
            Claimants::Many(list) => list.first().map(|(o, e)| ((**o).clone(), e.clone())),
        });
        let rejected = state
            .map(|s| {
                s.claimants
                    .rejected()
                    .iter()
                    .map(|(o, _)| (**o).clone())
                    .collect()
            })
            .unwrap_or_default();
        let (computed, record_error) = match &served {
            Some((owner @ (Owner::Service(_) | Owner::Ingress(_)), _)) => {
                match self.compute(owner, now) {
                    Ok(c) => (c, None),
                    Err(e) => (None, Some(e.to_string())),
                }
            }
            _ => (None, None),
        };
        let client = client.map(|client| self.explain_client(client, &served, computed.as_ref()));
        Explanation {
            name: name.to_owned(),
            zone,
            served,
            rejected,
            computed,
            record_error,
            empty_non_terminal: state.is_some_and(|s| s.below > 0 && !s.published),
            client,
            apex,
        }
    }

    /// Where `client` is and which clusters the served owner's strategy gives it.
    fn explain_client(
        &self,
        client: &str,
        served: &Option<(Owner, Box<[u8]>)>,
        computed: Option<&Computed>,
    ) -> ClientExplanation {
        let mut out = ClientExplanation {
            client: client.to_owned(),
            error: None,
            location: None,
            geoip: false,
            scope: 0,
            strategy: Strategy::All,
            choice: None,
        };
        let subnet: Prefix = match client.parse() {
            Ok(p) => p,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let table = &self.settings.locality;
        let found = table.locate(subnet.addr, subnet.len);
        out.scope = found.scope;
        out.geoip = table.has_geoip();
        out.location = table
            .location(found.location)
            .cloned()
            .zip(found.row.and_then(|r| table.row(r)).copied());
        // Only the global name of a record with a strategy answers per client.
        let localized = served
            .as_ref()
            .is_some_and(|(_, entry)| crate::dns::variants::table(entry).is_some());
        if let (Some((Owner::Service(key), _)), true) = (served, localized)
            && let Some(record) = self.services.get(key)
        {
            let default = self
                .domains
                .get(&record.domain_ref)
                .and_then(|d| d.default_strategy.clone());
            out.strategy = record.strategy.clone().or(default).unwrap_or_default();
        }
        if let Some(computed) = computed.filter(|_| localized) {
            let location = out.location.as_ref().map(|(l, _)| l);
            out.choice = Some(locality::choose(
                &out.strategy,
                &computed.shards,
                location,
                table,
            ));
        }
        out
    }

    /// Explains a ServiceDNSRecord by key, even when it produced no names.
    pub fn explain_record(
        &self,
        key: &ObjectKey,
        now: Instant,
    ) -> Result<Option<Computed>, String> {
        self.compute(&Owner::Service(key.clone()), now)
            .map_err(|e| e.to_string())
    }
}
