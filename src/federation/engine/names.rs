//! The engine's names: one [`NameState`] per name, found by its key's hash. Each key is held once,
//! in an arena of keys back to back, and owners refer to their names by [`NameId`] (4 bytes)
//! instead of holding keys of their own. At 260,000 names a heap block per key and a second
//! copy of every key in the owners' lists were 30 MB of the engine's 56.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::NameState;

/// A name's slot: stable while the name is known (claimed, published, or an empty non-terminal).
pub(super) type NameId = u32;

/// A slot that holds no name (its id is on the free list).
const FREE: usize = usize::MAX;

/// Freed key bytes in the arena below which it is not compacted.
const COMPACT_AFTER: usize = 64 * 1024;

#[derive(Debug)]
struct Slot {
    /// Offset of `key length u8 | key` in the arena; [`FREE`] for a free slot.
    key_at: usize,
    state: NameState,
}

/// Every name the engine knows, by key (lowercase wire form).
#[derive(Debug, Default)]
pub(super) struct Names {
    /// Ids of the known names, hashed by key.
    index: HashTable<NameId>,
    slots: Vec<Slot>,
    free: Vec<NameId>,
    /// Keys, each as `length u8 | key`, back to back; forgotten names leave garbage behind until
    /// the arena is compacted.
    keys: Vec<u8>,
    garbage: usize,
    hasher: foldhash::fast::RandomState,
}

fn key_in(keys: &[u8], at: usize) -> &[u8] {
    &keys[at + 1..at + 1 + keys[at] as usize]
}

impl Names {
    /// The index, and the hash of a name by id for the index to grow by.
    fn index_and_rehash(&mut self) -> (&mut HashTable<NameId>, impl Fn(&NameId) -> u64 + '_) {
        let Self {
            index,
            slots,
            keys,
            hasher,
            ..
        } = self;
        let (slots, keys, hasher) = (&*slots, &*keys, &*hasher);
        let rehash = move |&id: &NameId| hasher.hash_one(key_in(keys, slots[id as usize].key_at));
        (index, rehash)
    }

    /// A set with room for `capacity` names.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut names = Self::default();
        names.reserve(capacity);
        names
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Room for about `additional` more names (keys the length of those held so far).
    pub fn reserve(&mut self, additional: usize) {
        let (index, rehash) = self.index_and_rehash();
        index.reserve(additional, rehash);
        self.slots
            .reserve(additional.saturating_sub(self.free.len()));
        let per_key = match self.len() {
            0 => 48,
            n => (self.keys.len() - self.garbage) / n,
        };
        self.keys.reserve(additional * per_key);
    }

    /// The id of `key`, if the name is known.
    pub fn id(&self, key: &[u8]) -> Option<NameId> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&id| self.key(id) == key).copied()
    }

    /// The id of `key`, a new idle name if it was not known.
    pub fn entry(&mut self, key: &[u8]) -> NameId {
        let hash = self.hasher.hash_one(key);
        if let Some(&id) = self.index.find(hash, |&id| self.key(id) == key) {
            return id;
        }
        let key_at = self.keys.len();
        self.keys.push(key.len() as u8);
        self.keys.extend_from_slice(key);
        let slot = Slot {
            key_at,
            state: NameState::default(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                let id = NameId::try_from(self.slots.len()).expect("fewer than 2^32 names");
                self.slots.push(slot);
                id
            }
        };
        let (index, rehash) = self.index_and_rehash();
        index.insert_unique(hash, id, rehash);
        id
    }

    pub fn key(&self, id: NameId) -> &[u8] {
        key_in(&self.keys, self.slots[id as usize].key_at)
    }

    pub fn state(&self, id: NameId) -> &NameState {
        &self.slots[id as usize].state
    }

    pub fn state_mut(&mut self, id: NameId) -> &mut NameState {
        &mut self.slots[id as usize].state
    }

    pub fn get(&self, key: &[u8]) -> Option<&NameState> {
        self.id(key).map(|id| self.state(id))
    }

    /// Forgets the name when nothing is left of it ([`NameState::is_idle`]); its id is reused.
    pub fn forget_if_idle(&mut self, id: NameId) {
        let slot = &self.slots[id as usize];
        if !slot.state.is_idle() {
            return;
        }
        let key = key_in(&self.keys, slot.key_at);
        let hash = self.hasher.hash_one(key);
        if let Ok(found) = self.index.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        self.garbage += 1 + key.len();
        self.slots[id as usize].key_at = FREE;
        self.free.push(id);
        if self.garbage > COMPACT_AFTER && self.garbage > self.keys.len() / 2 {
            self.compact();
        }
    }

    /// Rewrites the arena with the keys of known names only.
    fn compact(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len() - self.garbage);
        for slot in self.slots.iter_mut().filter(|s| s.key_at != FREE) {
            let key = key_in(&self.keys, slot.key_at);
            slot.key_at = keys.len();
            keys.push(key.len() as u8);
            keys.extend_from_slice(key);
        }
        self.keys = keys;
        self.garbage = 0;
    }

    /// Every known name: key and state.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &NameState)> {
        self.slots
            .iter()
            .filter(|s| s.key_at != FREE)
            .map(|s| (key_in(&self.keys, s.key_at), &s.state))
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(key, _)| key)
    }

    pub fn values(&self) -> impl Iterator<Item = &NameState> {
        self.iter().map(|(_, state)| state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        let label = format!("n{i}");
        let mut key = vec![label.len() as u8];
        key.extend_from_slice(label.as_bytes());
        key.extend_from_slice(b"\x07example\x03com\x00");
        key
    }

    /// Names come and go in the thousands: ids stay with their names, freed ids are reused, and
    /// every key survives the arena's compactions.
    #[test]
    fn names_keep_their_ids_and_keys_while_others_come_and_go() {
        let mut names = Names::default();
        let mut ids = std::collections::HashMap::new();
        for round in 0..4 {
            let range = round * 20_000..(round + 1) * 20_000;
            for i in range.clone() {
                let id = names.entry(&key(i));
                names.state_mut(id).below = 1;
                ids.insert(i, id);
            }
            // Forget all but every tenth name of the round.
            for i in range.filter(|i| i % 10 != 0) {
                let id = ids.remove(&i).unwrap();
                names.state_mut(id).below = 0;
                names.forget_if_idle(id);
            }
        }
        assert!(names.slots.len() < 30_000, "freed ids are reused");
        assert!(
            names.keys.len() < 2 * (names.keys.len() - names.garbage) + COMPACT_AFTER,
            "the arena was compacted"
        );
        assert_eq!(names.len(), ids.len());
        for (i, id) in &ids {
            assert_eq!(names.id(&key(*i)), Some(*id));
            assert_eq!(names.key(*id), key(*i));
        }
        assert_eq!(names.id(&key(1)), None);
        assert_eq!(names.keys().count(), ids.len());
    }

    /// At 260,000 names each byte of a slot is 260 KB.
    #[test]
    fn a_slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 32, "a slot is {size} bytes");
    }

    /// A name with something left (a claimant, names below, published data) is not forgotten.
    #[test]
    fn a_name_in_use_is_not_forgotten() {
        let mut names = Names::default();
        let id = names.entry(&key(1));
        names.state_mut(id).published = true;
        names.forget_if_idle(id);
        assert_eq!(names.id(&key(1)), Some(id));
        names.state_mut(id).published = false;
        names.forget_if_idle(id);
        assert_eq!(names.id(&key(1)), None);
        assert!(names.is_empty());
    }
}
