//! Claims: which owner claims which name, the winner of each name (lowest [`Owner`]) and the
//! conflicts, the empty non-terminal counts, and rendering the winner into the store.

use super::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::dns::store::{EntryBuilder, ZoneTable};
use crate::dns::variants::{self, VariantBody};
use crate::dns::wire::rtype;
use crate::federation::locality::Localized;
use crate::federation::naming::{self, NameError};
use crate::federation::records::{Computed, NameProblem, RecordData, Reported};

use super::names::NameId;
use super::{Claim, Claimants, Conflict, Engine, EngineCounts, Owner};

/// A name's lowercase wire form, the store's key.
type Key = Box<[u8]>;
/// A rendered store entry.
type Entry = Box<[u8]>;

/// What one owner claims after a computation, rendered: name keys with their entries, and the
/// problems found. Made from the model alone, so batches of owners can be prepared in parallel.
#[derive(Default)]
struct Prepared {
    claims: Vec<(Key, Entry)>,
    problems: Vec<String>,
}

impl Engine {
    /// Recomputes computed owners and publishes the differences, a batch at a time: a batch
    /// reads the model (one view of the members for all of it), then writes its claims.
    ///
    /// Before the store first syncs (nothing is answered yet, so no answer worker waits for a
    /// core) and with a second core, two halves of each round of batches are computed and
    /// rendered on two threads; claiming stays on this one. Once serving, a recomputation stays on
    /// the engine's thread and leaves the other cores to the answer workers.
    pub(super) fn recompute_all(&mut self, owners: Vec<Owner>, now: Instant) {
        /// Owners per batch: the members are viewed once per batch, and a batch's computed
        /// records (about 2 KB per owner) are held until they are claimed.
        const BATCH: usize = 256;
        let lanes = match self.store.is_synced() || owners.len() < 2 * BATCH {
            true => 1,
            false => std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        };
        let total = owners.len();
        let names_before = self.names.len();
        let mut done = 0;
        let mut owners = owners.into_iter().peekable();
        while owners.peek().is_some() {
            if done > 0 && done <= BATCH * lanes && total > done {
                // Room for the rest, extrapolated from the first round: the name map and the
                // store's staged changes grow once instead of doubling their way up.
                let added = self.names.len().saturating_sub(names_before);
                let more = added * (total - done) / done;
                self.names.reserve(more);
                self.store.reserve(more);
            }
            let round: Vec<Owner> = owners.by_ref().take(BATCH * lanes).collect();
            done += round.len();
            let prepared = match lanes {
                1 => self.prepare(&round, now),
                _ => {
                    let (first, second) = round.split_at(round.len() / 2);
                    let this = &*self;
                    // The helper logs where this thread does (record problems, oversized tables).
                    let dispatch = tracing::dispatcher::get_default(Clone::clone);
                    std::thread::scope(|scope| {
                        let other = scope.spawn(|| {
                            tracing::dispatcher::with_default(&dispatch, || {
                                this.prepare(second, now)
                            })
                        });
                        let mut prepared = this.prepare(first, now);
                        let rest = other
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        prepared.extend(rest);
                        prepared
                    })
                }
            };
            for (owner, prepared) in round.into_iter().zip(prepared) {
                self.apply_prepared(owner, prepared);
            }
        }
    }

    /// Computes and renders what each of `owners` claims (`None`: the owner no longer exists).
    fn prepare(&self, owners: &[Owner], now: Instant) -> Vec<Option<Prepared>> {
        let views = self.member_views(now);
        let zones = self.store.zones();
        owners
            .iter()
            .map(|owner| {
                let computed = self.compute_with(owner, &views, Reported::Holders);
                prepare_claims(&zones, computed)
            })
            .collect()
    }

    /// Publishes what `owner` claims after a computation, and its problems.
    fn apply_prepared(&mut self, owner: Owner, prepared: Option<Prepared>) {
        self.status_dirty.insert(owner.clone());
        let Prepared { claims, problems } = prepared.unwrap_or_default();
        if problems.is_empty() {
            self.problems.remove(&owner);
        } else {
            for p in &problems {
                tracing::warn!(%owner, problem = %p, "record problem");
            }
            self.problems.insert(owner.clone(), problems);
        }
        self.set_claims(owner, claims);
    }

    /// Replaces everything `owner` claims with `claims` (name key, rendered entry), publishing
    /// each name whose served entry changes.
    pub(super) fn set_claims(&mut self, owner: Owner, claims: Vec<(Key, Entry)>) {
        let (owner, old) = match self.owned.remove_entry(&owner) {
            Some((owner, old)) => (owner, old),
            None => (Arc::new(owner), Box::default()),
        };
        let mut publish: Vec<(Key, Option<Entry>)> = Vec::new();
        if !old.is_empty() {
            let new_keys: HashSet<&[u8]> = claims.iter().map(|(k, _)| &**k).collect();
            for &id in old.iter() {
                if !new_keys.contains(self.names.key(id))
                    && let Some(served) = self.withdraw(id, &owner)
                {
                    publish.push((self.names.key(id).into(), served));
                }
            }
        }
        let mut ids = Vec::with_capacity(claims.len());
        for (key, entry) in claims {
            let id = self.names.entry(&key);
            ids.push(id);
            if let Some(served) = self.claim(id, &key, &owner, entry) {
                publish.push((key, Some(served)));
            }
        }
        if !ids.is_empty() {
            self.owned.insert(owner, ids.into_boxed_slice());
        }
        for (key, entry) in publish {
            self.publish(&key, entry);
        }
    }

    /// Records `owner`'s claim of the name `id` (`key`); returns the entry to serve when the
    /// served one changes.
    fn claim(
        &mut self,
        id: NameId,
        key: &[u8],
        owner: &Arc<Owner>,
        entry: Box<[u8]>,
    ) -> Option<Box<[u8]>> {
        let state = self.names.state_mut(id);
        match &mut state.claimants {
            claimants @ Claimants::None => {
                *claimants = Claimants::One(owner.clone());
                Some(entry)
            }
            Claimants::One(one) if one == owner => {
                // The served entry is this owner's: publish only a change.
                let same = self.store.with_entry(key, |e| *e == *entry);
                (same != Some(true)).then_some(entry)
            }
            claimants @ Claimants::One(_) => {
                let Claimants::One(other) = std::mem::take(claimants) else {
                    unreachable!("matched One above");
                };
                // The served entry is the other owner's: keep it beside the new claim.
                let served = self
                    .store
                    .with_entry(key, |e| Box::from(e))
                    .unwrap_or_default();
                let mut list = vec![(other, served), (owner.clone(), entry.clone())];
                list.sort_by(|a, b| a.0.cmp(&b.0));
                let first = Arc::ptr_eq(&list[0].0, owner);
                *claimants = Claimants::Many(Box::new(list));
                first.then_some(entry)
            }
            Claimants::Many(list) => match list.binary_search_by(|(o, _)| (**o).cmp(owner)) {
                Ok(i) if list[i].1 == entry => None,
                Ok(i) => {
                    list[i].1 = entry.clone();
                    (i == 0).then_some(entry)
                }
                Err(i) => {
                    list.insert(i, (owner.clone(), entry.clone()));
                    (i == 0).then_some(entry)
                }
            },
        }
    }

    /// Takes `owner`'s claim of the name `id` away; returns what to serve when the served entry
    /// changes (`Some(None)`: nothing, the name goes).
    fn withdraw(&mut self, id: NameId, owner: &Owner) -> Option<Option<Box<[u8]>>> {
        let state = self.names.state_mut(id);
        match &mut state.claimants {
            Claimants::None => None,
            Claimants::One(one) if **one == *owner => {
                state.claimants = Claimants::None;
                Some(None)
            }
            Claimants::One(_) => None,
            Claimants::Many(list) => {
                let i = list.iter().position(|(o, _)| **o == *owner)?;
                list.remove(i);
                let served = (i == 0).then(|| list.first().map(|(_, e)| e.clone()));
                if list.len() == 1 {
                    // Its entry is served (now, or already): the store holds it.
                    let (last, _) = list.pop().expect("one claimant left");
                    state.claimants = Claimants::One(last);
                }
                served
            }
        }
    }

    /// Writes `entry` (`None`: no data) as the entry of `key`, maintaining empty non-terminals
    /// and the zone's digest.
    pub(super) fn publish(&mut self, key: &[u8], entry: Option<Box<[u8]>>) {
        let zones = self.store.zones();
        let Some(zone) = zones.find(key).cloned() else {
            // Never published (outside every zone): forget it once nothing claims it.
            if let Some(id) = self.names.id(key) {
                self.names.forget_if_idle(id);
            }
            return;
        };
        drop(zones);
        self.dirty_zones.insert(zone.key().into());
        let old = match self.rebuilding {
            true => 0,
            false => self
                .store
                .with_entry(key, |e| entry_digest(key, e))
                .unwrap_or(0),
        };
        let id = self.names.entry(key);
        let state = self.names.state_mut(id);
        let was = std::mem::replace(&mut state.published, entry.is_some());
        let below = state.below;
        self.names.forget_if_idle(id);
        let new = match entry {
            Some(entry) => {
                let digest = match self.rebuilding {
                    true => 0,
                    false => entry_digest(key, &entry),
                };
                if !was {
                    self.published += 1;
                    self.adjust_ancestors(key, zone.key(), 1);
                }
                self.store.insert(key, &entry);
                digest
            }
            None => {
                if was {
                    self.published -= 1;
                    self.adjust_ancestors(key, zone.key(), -1);
                }
                if below > 0 {
                    self.store.insert(key, []);
                } else {
                    self.store.remove(key);
                }
                0
            }
        };
        if !self.rebuilding {
            let digest = self.digests.entry(zone.key().into()).or_insert(0);
            *digest = digest.wrapping_sub(old).wrapping_add(new);
        }
    }

    pub(super) fn adjust_ancestors(&mut self, key: &[u8], apex: &[u8], delta: i32) {
        let mut at = 1 + key[0] as usize;
        while at < key.len() && key.len() - at > apex.len() {
            let ancestor = &key[at..];
            let id = self.names.entry(ancestor);
            let state = self.names.state_mut(id);
            let before = state.below;
            state.below = before.saturating_add_signed(delta);
            let after = state.below;
            let published = state.published;
            self.names.forget_if_idle(id);
            if !published {
                if before == 0 && after > 0 {
                    self.store.insert(ancestor, []);
                } else if before > 0 && after == 0 {
                    self.store.remove(ancestor);
                }
            }
            at += 1 + key[at] as usize;
        }
    }

    /// Names claimed by more than one owner.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (key, state) in self.names.iter() {
            let Some(winner) = state.claimants.first() else {
                continue;
            };
            // A static zone file replacing a Domain's generated apex is intended, not a conflict.
            for (loser, _) in state
                .claimants
                .rejected()
                .iter()
                .filter(|(o, _)| !matches!(**o, Owner::Apex(_)))
            {
                out.push(Conflict {
                    name: key_to_text(key),
                    winner: (**winner).clone(),
                    loser: (**loser).clone(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Counts for `/metrics` and `status`.
    pub fn counts(&self) -> EngineCounts {
        EngineCounts {
            members: self.members.len(),
            ready_members: self.members.keys().filter(|c| self.is_ready(c)).count(),
            service_records: self.services.len(),
            ingress_records: self.ingresses.len(),
            names: self.published,
            conflicts: self
                .names
                .values()
                .map(|state| {
                    state
                        .claimants
                        .rejected()
                        .iter()
                        .filter(|(o, _)| !matches!(**o, Owner::Apex(_)))
                        .count()
                })
                .sum(),
            problems: self.problems.values().map(Vec::len).sum(),
        }
    }
}

/// Renders a computation's records into claims (names outside every served zone are reported,
/// not claimed). `None`: the owner no longer exists.
fn prepare_claims(
    zones: &ZoneTable,
    computed: Result<Option<Computed>, NameError>,
) -> Option<Prepared> {
    let computed = match computed {
        Ok(Some(computed)) => computed,
        Ok(None) => return None,
        Err(error) => {
            return Some(Prepared {
                claims: Vec::new(),
                problems: vec![error.to_string()],
            });
        }
    };
    let mut problems: Vec<String> = computed.problems.iter().map(describe_problem).collect();
    let mut claims = Vec::with_capacity(computed.records.len());
    let mut localized = computed.localized;
    for record in computed.records {
        let key = naming::wire_key(&record.name);
        if zones.find(&key).is_none() {
            problems.push(format!(
                "{} is outside every served zone: not answered",
                record.name
            ));
            continue;
        }
        let claim = match localized.take_if(|(name, _)| *name == record.name) {
            Some((_, answers)) => Claim::Localized(record.data, Box::new(answers)),
            None => Claim::Record(record.data),
        };
        claims.push((key, render(&claim)));
    }
    Some(Prepared { claims, problems })
}

pub(super) fn describe_problem(p: &NameProblem) -> String {
    match &p.cluster {
        Some(c) => format!("cluster {c}: {}", p.error),
        None => p.error.to_string(),
    }
}

/// Renders one claim into a store entry.
pub(super) fn render(claim: &Claim) -> Box<[u8]> {
    let mut b = EntryBuilder::new();
    match claim {
        Claim::Record(RecordData::Address { v4, v6, ttl }) => {
            b.addresses(v4, v6, *ttl);
        }
        Claim::Record(RecordData::Cname { target, ttl }) => {
            b.cname(target, *ttl);
        }
        Claim::Localized(data, localized) => {
            let ttl = match data {
                RecordData::Address { v4, v6, ttl } => {
                    b.addresses(v4, v6, *ttl);
                    *ttl
                }
                RecordData::Cname { target, ttl } => {
                    b.cname(target, *ttl);
                    *ttl
                }
            };
            match render_variants(localized, ttl) {
                Some(table) => {
                    b.variants(&table);
                }
                None => tracing::warn!(
                    "per-client answers too large for one entry: every client gets every target"
                ),
            }
        }
        Claim::Static { apex, sets } => {
            if *apex {
                b.apex_soa();
            }
            for set in sets {
                b.rrset(set.rtype, set.ttl, set.rdatas.iter().map(|r| &r[..]));
            }
        }
        Claim::Apex {
            name_servers,
            ttl,
            addresses,
        } => {
            let rdatas: Vec<Vec<u8>> = name_servers
                .iter()
                .map(|n| {
                    let mut r = Vec::new();
                    crate::dns::store::push_name(&mut r, n);
                    r
                })
                .collect();
            b.rrset(rtype::NS, *ttl, rdatas.iter().map(|r| &r[..]));
            b.apex_soa();
            // The name server's addresses, complete records, as additional data.
            let additional: Vec<Vec<u8>> = name_servers
                .first()
                .into_iter()
                .flat_map(|ns| addresses.iter().map(move |a| (ns, a)))
                .map(|(ns, a)| {
                    let (t, data) = match a {
                        std::net::IpAddr::V4(a) => (rtype::A, a.octets().to_vec()),
                        std::net::IpAddr::V6(a) => (rtype::AAAA, a.octets().to_vec()),
                    };
                    let mut rr = Vec::new();
                    crate::dns::store::push_full_rr(&mut rr, ns, t, *ttl, &data);
                    rr
                })
                .collect();
            b.rrset(
                crate::dns::store::ADDITIONAL,
                0,
                additional.iter().map(|r| &r[..]),
            );
        }
    }
    b.finish()
}

/// Pre-renders every per-client answer of a localized name into a variant table.
fn render_variants(localized: &Localized, ttl: u32) -> Option<Vec<u8>> {
    let bodies: Vec<Box<[u8]>> = localized
        .variants
        .iter()
        .map(|v| EntryBuilder::new().addresses(&v.v4, &v.v6, ttl).finish())
        .collect();
    let variants: Vec<VariantBody<'_>> = localized
        .variants
        .iter()
        .zip(&bodies)
        .map(|(v, sets)| VariantBody {
            outcome: v.outcome.code(),
            weight: v.weight,
            sets,
        })
        .collect();
    variants::encode(
        localized.strategy,
        localized.scoped,
        &localized.by_location,
        &variants,
    )
}

/// One name's part of its zone's content digest (summed over the zone's names, so the order
/// names are published in does not matter); 0 for an empty non-terminal.
pub(super) fn entry_digest(key: &[u8], entry: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    if entry.is_empty() {
        return 0;
    }
    // SipHash with fixed keys: the same content gives the same digest.
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    entry.hash(&mut h);
    h.finish()
}

/// A lowercase wire key as presentation text.
pub fn key_to_text(key: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while at < key.len() && key[at] != 0 {
        let len = key[at] as usize;
        let label = key.get(at + 1..at + 1 + len).unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(label));
        out.push('.');
        at += 1 + len;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}
