//! Why a name answers what it answers, for `fedns explain` and `/explain`.

use std::time::Instant;

use crate::federation::model::ObjectKey;
use crate::federation::naming;
use crate::federation::records::Computed;

use super::{Claim, Engine, Owner};

/// Why a name answers what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub name: String,
    pub zone: Option<String>,
    /// The owner whose data is served, and its data.
    pub served: Option<(Owner, Claim)>,
    /// Other owners claiming the same name (conflicts).
    pub rejected: Vec<Owner>,
    /// The computation behind the served data, for computed owners.
    pub computed: Option<Computed>,
    /// Error that kept the owner from producing any name.
    pub record_error: Option<String>,
    pub empty_non_terminal: bool,
}

impl Engine {
    /// Explains why `name` answers what it answers.
    pub fn explain(&self, name: &str, now: Instant) -> Explanation {
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
                };
            }
        };
        let zones = self.store.zones();
        let zone = zones.find(&key).map(|z| z.apex.to_ascii());
        let list = self.claims.get(&key);
        let served = list.and_then(|l| l.first()).cloned();
        let rejected = list
            .map(|l| l.iter().skip(1).map(|(o, _)| o.clone()).collect())
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
        Explanation {
            name: name.to_owned(),
            zone,
            served,
            rejected,
            computed,
            record_error,
            empty_non_terminal: self.ent_refs.contains_key(&key) && !self.present.contains(&key),
        }
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
