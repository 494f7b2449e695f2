//! One shard's sessions, laid out for memory: every session lives once, in
//! a slab slot; the key index, the expiry index and the owner index refer to
//! it by its 4-byte slot number instead of repeating the 32-byte key.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use session_core::{Error, RecordMeta, Result, StorageKey, Touch, Write};
use slab::Slab;

/// Hashes [`StorageKey`]s: foldhash, seeded per table, so bucket positions
/// stay unpredictable even to a caller who chooses session IDs (and so knows
/// their keys) with `create_with_id`, at a fraction of SipHash's cost.
type KeyHasher = foldhash::fast::RandomState;

/// A stored session.
pub(crate) struct Entry {
    pub(crate) meta: RecordMeta,
    /// The encoded data: a fraction of the decoded map's size, and what a
    /// load hands out (decoded on the request's first read).
    pub(crate) data: Arc<[u8]>,
}

struct Slot {
    key: StorageKey,
    entry: Entry,
}

/// A slot number. A shard holds far fewer than 2^32 sessions.
type SlotId = u32;

/// A table with room for fewer sessions than this is never shrunk: the
/// memory is small and would soon be needed again.
const SHRINK_MIN_ROOM: usize = 256;

impl Entry {
    /// The entry `write` stores.
    pub(crate) fn of(write: &Write) -> Self {
        Self {
            meta: write.meta.clone(),
            data: Arc::clone(&write.encoded),
        }
    }
}

/// Make `meta`, which an update (a save or rotation of a stored session)
/// brings, keep the later of its own and the `stored` activity time and
/// expiry: a write whose clock reading came before another request's touch
/// reached the store (a touch bumps no version, so the write's
/// compare-and-set passes) must not pull back the deadline the touch set.
/// Both are capped by the absolute deadline, which never changes after
/// creation, so the later one is within it.
pub(crate) fn keep_later_deadline(meta: &mut RecordMeta, stored: &RecordMeta) {
    meta.last_active_ms = meta.last_active_ms.max(stored.last_active_ms);
    meta.expires_ms = meta.expires_ms.max(stored.expires_ms);
}

#[derive(Default)]
pub(crate) struct Table {
    slots: Slab<Slot>,
    /// Slot numbers, found by the hash of their slot's key.
    index: HashTable<SlotId>,
    hasher: KeyHasher,
    /// `(expires_ms, slot)` of every stored session bound to no owner.
    expiry_anonymous: BTreeSet<(i64, SlotId)>,
    /// `(expires_ms, slot)` of every stored session bound to an owner. Kept
    /// apart so that a full store can evict anonymous sessions first.
    expiry_owned: BTreeSet<(i64, SlotId)>,
    /// Slots bound to each owner.
    owners: HashMap<Arc<str>, HashSet<SlotId, KeyHasher>, KeyHasher>,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// How many sessions the table has memory for without growing.
    pub(crate) fn room(&self) -> usize {
        self.slots.capacity().max(self.index.capacity())
    }

    /// Give memory back if the table holds at most a quarter of what it has
    /// room for (after a flood of sessions has expired or been ended), by
    /// moving the sessions into the lowest slots and shrinking every index
    /// to fit. Costs time in proportion to the room, and leaves the room
    /// equal to the sessions held, so the cost is paid again only after the
    /// table has grown fourfold and emptied again: amortised, it is a small
    /// constant per session removed. Returns whether it shrank.
    pub(crate) fn shrink_if_sparse(&mut self) -> bool {
        let room = self.room();
        if room < SHRINK_MIN_ROOM || self.len() > room / 4 {
            return false;
        }
        let Table {
            slots,
            index,
            hasher,
            expiry_anonymous,
            expiry_owned,
            owners,
        } = self;
        slots.compact(|slot, from, to| {
            let (Ok(from), Ok(to)) = (SlotId::try_from(from), SlotId::try_from(to)) else {
                return false;
            };
            // Renumber the slot in every index; the index is updated first
            // and cannot miss, so a refused move changes nothing.
            let Some(id) = index.find_mut(hasher.hash_one(slot.key), |&id| id == from) else {
                return false;
            };
            *id = to;
            let meta = &slot.entry.meta;
            let expiry = if meta.owner.is_some() {
                &mut *expiry_owned
            } else {
                &mut *expiry_anonymous
            };
            expiry.remove(&(meta.expires_ms, from));
            expiry.insert((meta.expires_ms, to));
            if let Some(bound) = meta.owner.as_ref().and_then(|o| owners.get_mut(o)) {
                bound.remove(&from);
                bound.insert(to);
            }
            true
        });
        index.shrink_to_fit(|&id| hasher.hash_one(slots[id as usize].key));
        owners.shrink_to_fit();
        for bound in owners.values_mut() {
            bound.shrink_to_fit();
        }
        true
    }

    /// The expiry index that holds a session with (`owned`) or without an
    /// owner.
    fn expiry(&mut self, owned: bool) -> &mut BTreeSet<(i64, SlotId)> {
        if owned {
            &mut self.expiry_owned
        } else {
            &mut self.expiry_anonymous
        }
    }

    fn find(&self, key: &StorageKey) -> Option<SlotId> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&id| self.slots[id as usize].key == *key)
            .copied()
    }

    /// The entry under `key`, live or not.
    pub(crate) fn get(&self, key: &StorageKey) -> Option<&Entry> {
        self.find(key).map(|id| &self.slots[id as usize].entry)
    }

    /// The entry under `key` if it is live at `now`.
    pub(crate) fn live(&self, key: &StorageKey, now: i64) -> Option<&Entry> {
        self.get(key).filter(|e| e.meta.is_live(now))
    }

    /// Insert where no entry exists under `key`.
    pub(crate) fn insert(&mut self, key: StorageKey, entry: Entry) {
        let expires = entry.meta.expires_ms;
        let owner = entry.meta.owner.clone();
        let id = self.slots.insert(Slot { key, entry });
        // Slab numbers are dense, so this holds while a shard has fewer than
        // 2^32 sessions, which its memory could not hold anyway.
        let id = SlotId::try_from(id).unwrap_or(SlotId::MAX);
        let Table {
            slots,
            index,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(key);
        index.insert_unique(hash, id, |&other| {
            hasher.hash_one(slots[other as usize].key)
        });
        self.expiry(owner.is_some()).insert((expires, id));
        if let Some(owner) = owner {
            self.bind(owner, id);
        }
    }

    /// Remove the entry under `key`, live or not.
    pub(crate) fn remove(&mut self, key: &StorageKey) -> Option<Entry> {
        let id = self.find(key)?;
        Some(self.remove_slot(id).1)
    }

    fn remove_slot(&mut self, id: SlotId) -> (StorageKey, Entry) {
        let Table {
            slots,
            index,
            hasher,
            ..
        } = self;
        let key = slots[id as usize].key;
        if let Ok(found) = index.find_entry(hasher.hash_one(key), |&other| other == id) {
            found.remove();
        }
        let Slot { key, entry } = self.slots.remove(id as usize);
        self.expiry(entry.meta.owner.is_some())
            .remove(&(entry.meta.expires_ms, id));
        if let Some(owner) = &entry.meta.owner {
            self.unbind(owner, id);
        }
        (key, entry)
    }

    /// Perform `write` with one lookup: insert-only or compare-and-set, as
    /// [`Write::expected_version`] says. An update keeps the later of the
    /// stored and the written activity time and expiry (see
    /// [`keep_later_deadline`]), and leaves them in `write.meta`, so the
    /// caller's session holds what was stored. Returns the entry it replaced
    /// (an expired one, for an insert), for the caller to drop after
    /// unlocking.
    pub(crate) fn apply(&mut self, write: &mut Write) -> Result<Option<Entry>> {
        let Some(id) = self.find(&write.key) else {
            if write.expected_version.is_some() {
                return Err(Error::NotFound);
            }
            self.insert(write.key, Entry::of(write));
            return Ok(None);
        };
        let stored = &self.slots[id as usize].entry.meta;
        let live = stored.is_live(write.now_ms);
        match write.expected_version {
            None if live => return Err(Error::Conflict),
            Some(_) if !live => return Err(Error::NotFound),
            Some(v) if stored.version != v => return Err(Error::Conflict),
            // An insert over an expired entry replaces it.
            None => {}
            // An update of the live version replaces its contents.
            Some(_) => keep_later_deadline(&mut write.meta, stored),
        }
        let old = std::mem::replace(&mut self.slots[id as usize].entry, Entry::of(write));
        self.reindex(id, &old.meta, &write.meta);
        Ok(Some(old))
    }

    /// Slide a live entry's deadline, with one lookup.
    pub(crate) fn touch(&mut self, touch: &Touch) -> Result<()> {
        let id = self
            .find(&touch.key)
            .filter(|&id| self.slots[id as usize].entry.meta.is_live(touch.now_ms))
            .ok_or(Error::NotFound)?;
        let meta = &mut self.slots[id as usize].entry.meta;
        let old_expiry = meta.expires_ms;
        // Only forward: a touch dated before a write that got the lock
        // first must not pull that write's deadline back.
        if touch.expires_ms <= old_expiry {
            return Ok(());
        }
        let (last_active_ms, expires_ms) = (touch.last_active_ms, touch.expires_ms);
        let owned = meta.owner.is_some();
        meta.last_active_ms = last_active_ms;
        meta.expires_ms = expires_ms;
        if old_expiry != expires_ms {
            let expiry = self.expiry(owned);
            expiry.remove(&(old_expiry, id));
            expiry.insert((expires_ms, id));
        }
        Ok(())
    }

    fn reindex(&mut self, id: SlotId, old: &RecordMeta, new: &RecordMeta) {
        let (was_owned, is_owned) = (old.owner.is_some(), new.owner.is_some());
        if old.expires_ms != new.expires_ms || was_owned != is_owned {
            self.expiry(was_owned).remove(&(old.expires_ms, id));
            self.expiry(is_owned).insert((new.expires_ms, id));
        }
        if old.owner != new.owner {
            if let Some(owner) = &old.owner {
                self.unbind(owner, id);
            }
            if let Some(owner) = &new.owner {
                self.bind(Arc::clone(owner), id);
            }
        }
    }

    fn bind(&mut self, owner: Arc<str>, id: SlotId) {
        self.owners.entry(owner).or_default().insert(id);
    }

    fn unbind(&mut self, owner: &Arc<str>, id: SlotId) {
        if let MapEntry::Occupied(mut set) = self.owners.entry(Arc::clone(owner)) {
            set.get_mut().remove(&id);
            if set.get().is_empty() {
                set.remove();
            }
        }
    }

    /// The deadline and slot of the session that expires first.
    fn first(&self) -> Option<(i64, SlotId)> {
        match (self.expiry_anonymous.first(), self.expiry_owned.first()) {
            (Some(&a), Some(&o)) => Some(a.min(o)),
            (a, o) => a.or(o).copied(),
        }
    }

    /// The deadline and key of the session that expires first among those
    /// bound to no owner (`anonymous`) or among all.
    pub(crate) fn first_expiry(&self, anonymous: bool) -> Option<(i64, StorageKey)> {
        let first = if anonymous {
            self.expiry_anonymous.first().copied()
        } else {
            self.first()
        };
        first.map(|(expires, id)| (expires, self.slots[id as usize].key))
    }

    /// Move up to `max` expired entries into `out`; returns whether more
    /// may be left.
    pub(crate) fn purge_batch(&mut self, now: i64, max: usize, out: &mut Vec<Entry>) -> bool {
        while out.len() < max {
            match self.first() {
                Some((expires, id)) if !session_core::is_live(expires, now) => {
                    out.push(self.remove_slot(id).1);
                }
                _ => return false,
            }
        }
        true
    }

    /// Sessions stored but expired at `now`, counted from the expiry index.
    pub(crate) fn expired_count(&self, now: i64) -> usize {
        [&self.expiry_anonymous, &self.expiry_owned]
            .into_iter()
            .map(|expiry| {
                expiry
                    .iter()
                    .take_while(|(expires, _)| !session_core::is_live(*expires, now))
                    .count()
            })
            .sum()
    }

    /// The sessions bound to `owner`, live or not.
    pub(crate) fn owned(&self, owner: &str) -> impl Iterator<Item = (StorageKey, &Entry)> {
        self.owners.get(owner).into_iter().flatten().map(|&id| {
            let slot = &self.slots[id as usize];
            (slot.key, &slot.entry)
        })
    }

    /// Check that every index agrees with the slots (for tests).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        assert_eq!(self.index.len(), self.slots.len());
        assert_eq!(
            self.expiry_anonymous.len() + self.expiry_owned.len(),
            self.slots.len()
        );
        for (id, slot) in &self.slots {
            let id = SlotId::try_from(id).unwrap();
            assert_eq!(self.find(&slot.key), Some(id));
            let expiry = if slot.entry.meta.owner.is_some() {
                &self.expiry_owned
            } else {
                &self.expiry_anonymous
            };
            assert!(expiry.contains(&(slot.entry.meta.expires_ms, id)));
            if let Some(owner) = &slot.entry.meta.owner {
                assert!(self.owners[owner].contains(&id));
            }
        }
        let bound: usize = self.owners.values().map(HashSet::len).sum();
        let owned = self
            .slots
            .iter()
            .filter(|(_, s)| s.entry.meta.owner.is_some())
            .count();
        assert_eq!(bound, owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{Session, SessionConfig, SessionId};

    /// A write for a fresh session with `owner`, expiring at `expires`.
    fn write(expires: i64, owner: Option<&str>) -> Write {
        let config = SessionConfig::from_secs(60);
        let mut session = Session::new(SessionId::generate().unwrap(), &config);
        if let Some(owner) = owner {
            session.set_owner(owner);
        }
        let mut w = session.prepare_write(&config).unwrap();
        w.meta.expires_ms = expires;
        w.now_ms = 0;
        w
    }

    #[test]
    fn indexes_stay_in_step_through_every_kind_of_change() {
        let mut table = Table::default();
        let mut keys = Vec::new();
        // A deterministic mix of inserts, updates, owner changes, touches,
        // removals and purges, checking every index after each step.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..3000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let owner = ["alice", "bob"].get((x % 3) as usize).copied();
            match x % 6 {
                0 | 1 => {
                    let mut w = write(1_000 + (x % 500) as i64, owner);
                    keys.push(w.key);
                    assert!(table.apply(&mut w).unwrap().is_none());
                }
                2 if !keys.is_empty() => {
                    let key = keys[(x as usize / 7) % keys.len()];
                    let version = table.get(&key).unwrap().meta.version;
                    let mut w = write(2_000 + step, owner);
                    w.key = key;
                    w.expected_version = Some(version);
                    w.meta.version = version + 1;
                    table.apply(&mut w).unwrap();
                }
                3 if !keys.is_empty() => {
                    let key = keys.swap_remove((x as usize / 7) % keys.len());
                    assert!(table.remove(&key).is_some());
                }
                4 if !keys.is_empty() => {
                    let key = keys[(x as usize / 7) % keys.len()];
                    let touch = Touch {
                        key,
                        last_active_ms: step,
                        expires_ms: 3_000 + step,
                        now_ms: 0,
                    };
                    table.touch(&touch).unwrap();
                }
                _ => {
                    let mut out = Vec::new();
                    while table.purge_batch(1_200, 16, &mut out) {
                        out.clear();
                    }
                    keys.retain(|k| table.get(k).is_some());
                }
            }
            table.assert_consistent();
            assert_eq!(table.len(), keys.len());
        }
    }

    #[test]
    fn a_mostly_empty_table_shrinks_and_keeps_its_indexes_in_step() {
        let mut table = Table::default();
        let mut keys = Vec::new();
        for i in 0..4000i64 {
            let owner = ["alice", "bob", "carol"].get((i % 4) as usize).copied();
            let mut w = write(1_000 + i, owner);
            keys.push(w.key);
            table.apply(&mut w).unwrap();
        }
        let peak = table.room();
        assert!(peak >= 4000);
        assert!(!table.shrink_if_sparse(), "full: nothing to give back");
        // Keep a scattered tenth (so sessions must move down), drop the rest.
        let mut kept = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            if i % 10 == 7 {
                kept.push(key);
            } else {
                table.remove(&key).unwrap();
            }
        }
        assert!(table.shrink_if_sparse());
        assert!(table.room() < peak / 4, "{} of {peak}", table.room());
        assert!(!table.shrink_if_sparse(), "already fits");
        table.assert_consistent();
        assert_eq!(table.len(), kept.len());
        for key in &kept {
            assert_eq!(table.get(key).map(|e| table_key(&table, e)), Some(*key));
        }
        // Every index still works: updates, touches, owner lookups, purges.
        let first = kept[0];
        let mut w = write(9_000, Some("dave"));
        w.key = first;
        w.expected_version = Some(1);
        w.meta.version = 2;
        table.apply(&mut w).unwrap();
        assert_eq!(table.owned("dave").count(), 1);
        // Of the kept (every tenth from the eighth), half are Bob's.
        assert_eq!(table.owned("bob").count(), kept.len() / 2);
        let mut out = Vec::new();
        assert!(!table.purge_batch(6_000, usize::MAX, &mut out));
        assert_eq!(out.len(), kept.len() - 1, "all but the updated one");
        table.assert_consistent();
        assert_eq!(table.len(), 1);
    }

    /// The key a stored entry is filed under, found through the slots.
    fn table_key(table: &Table, entry: &Entry) -> StorageKey {
        table
            .slots
            .iter()
            .find(|(_, slot)| std::ptr::eq(&slot.entry, entry))
            .map(|(_, slot)| slot.key)
            .unwrap()
    }

    #[test]
    fn purge_removes_exactly_the_expired_and_stops_at_the_first_live() {
        let mut table = Table::default();
        for expires in [10, 20, 30, 40, 50] {
            table.apply(&mut write(expires, None)).unwrap();
        }
        let mut out = Vec::new();
        assert!(
            table.purge_batch(35, 2, &mut out),
            "a full batch may leave more"
        );
        assert_eq!(out.len(), 2);
        out.clear();
        assert!(
            !table.purge_batch(35, 2, &mut out),
            "the rest fits: nothing left"
        );
        assert_eq!(out.len(), 1);
        assert_eq!(table.len(), 2);
        assert_eq!(table.first_expiry(false).map(|(e, _)| e), Some(40));
        table.assert_consistent();
    }
}
