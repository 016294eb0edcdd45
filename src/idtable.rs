//! [`IdTable`]: a map from [`Id`] to `V` for state a host keeps per channel,
//! of which it holds ~16 million (docs/DESIGN.md "What stays small").
//!
//! It is a hash table of `u32` positions over a dense `Vec<(Id, V)>`. A
//! `HashMap<Id, V>` ([`crate::ids::IdMap`]) keeps each `(Id, V)` in its
//! bucket, and hashbrown sizes tables in powers of two filled to at most
//! 7/8, so 13% to 56% of the buckets are empty — and since occupied buckets
//! are spread over the whole table, every page of it is touched and
//! resident. At 8 million 40-byte entries that is 16.8M buckets × 41 bytes
//! = 688 MB for 328 MB of entries. Here an empty bucket costs 5 bytes (the
//! `u32` and hashbrown's control byte), the entries are packed, and the
//! `Vec`'s spare capacity is never written, so it is never resident.
//!
//! A lookup reads the table, then the entry: one more cache miss than an
//! inline bucket, which the channel server and the gateway can afford (one
//! lookup per event or per subscription).
//!
//! Removal moves the last entry into the hole: positions are not stable,
//! and nothing outside this type sees them.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::ids::{Id, IdHasher};

/// Owned by whoever owns the state it holds (a shard); never crosses cores
/// by itself.
pub struct IdTable<V> {
    /// Positions in `entries`, hashed by the id found there.
    slots: HashTable<u32>,
    entries: Vec<(Id, V)>,
}

fn hash(id: Id) -> u64 {
    std::hash::BuildHasherDefault::<IdHasher>::default().hash_one(id)
}

/// Tables below this many entries are not worth shrinking.
const SHRINK_FLOOR: usize = 1024;

impl<V> Default for IdTable<V> {
    fn default() -> Self {
        IdTable {
            slots: HashTable::new(),
            entries: Vec::new(),
        }
    }
}

impl<V> IdTable<V> {
    /// Takes `entries` as they are (no copy) and indexes them. Panics if an
    /// id appears twice (callers load them from a primary key).
    pub fn from_entries(entries: Vec<(Id, V)>) -> IdTable<V> {
        assert!(
            entries.len() <= u32::MAX as usize,
            "at most 2^32 entries per table"
        );
        let mut slots = HashTable::with_capacity(entries.len());
        for (i, (id, _)) in entries.iter().enumerate() {
            let h = hash(*id);
            assert!(
                slots.find(h, |&j| entries[j as usize].0 == *id).is_none(),
                "id {id} loaded twice"
            );
            slots.insert_unique(h, i as u32, |&j| hash(entries[j as usize].0));
        }
        IdTable { slots, entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, id: Id) -> Option<usize> {
        self.slots
            .find(hash(id), |&i| self.entries[i as usize].0 == id)
            .map(|&i| i as usize)
    }

    pub fn get(&self, id: Id) -> Option<&V> {
        self.position(id).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut V> {
        self.position(id).map(|i| &mut self.entries[i].1)
    }

    /// The value of `id`, inserted with `make` if absent.
    pub fn get_or_insert_with(&mut self, id: Id, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.position(id) {
            Some(i) => i,
            None => {
                let i = self.entries.len();
                assert!(i < u32::MAX as usize, "at most 2^32 entries per table");
                self.entries.push((id, make()));
                let entries = &self.entries;
                self.slots
                    .insert_unique(hash(id), i as u32, |&j| hash(entries[j as usize].0));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `id`; the last entry takes its place.
    pub fn remove(&mut self, id: Id) -> Option<V> {
        let entries = &self.entries;
        let (i, _) = self
            .slots
            .find_entry(hash(id), |&i| entries[i as usize].0 == id)
            .ok()?
            .remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        if i != last {
            let moved = self.entries[last].0;
            let slot = self
                .slots
                .find_mut(hash(moved), |&j| j as usize == last)
                .expect("every entry has a slot");
            *slot = i as u32;
        }
        let (_, value) = self.entries.swap_remove(i);
        self.shrink_if_sparse();
        Some(value)
    }

    /// After many removals (every connection of a shard closed), gives the
    /// memory back: a sparse table stays resident otherwise.
    fn shrink_if_sparse(&mut self) {
        let len = self.entries.len();
        if self.slots.capacity() > SHRINK_FLOOR && len < self.slots.capacity() / 4 {
            let entries = &self.entries;
            self.slots
                .shrink_to(len * 2, |&j| hash(entries[j as usize].0));
            self.entries.shrink_to(len * 2);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id, &V)> {
        self.entries.iter().map(|(id, v)| (*id, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Bytes allocated (table and entries, spare capacity included; what
    /// the entries point to is not counted).
    pub fn allocated_bytes(&self) -> usize {
        self.slots.allocation_size() + self.entries.capacity() * std::mem::size_of::<(Id, V)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> Id {
        Id::parse(&format!("C{i}")).unwrap()
    }

    #[test]
    fn insert_get_remove_keep_every_other_entry_reachable() {
        let mut t: IdTable<u64> = IdTable::default();
        for i in 0..5000 {
            *t.get_or_insert_with(id(i), || 0) += i;
        }
        *t.get_or_insert_with(id(7), || 0) += 1;
        assert_eq!(t.len(), 5000);
        assert_eq!(t.get(id(7)), Some(&8));
        assert_eq!(t.get(id(5000)), None);
        // Removing from the front moves the last entries around.
        for i in (0..5000).step_by(3) {
            assert_eq!(t.remove(id(i)), Some(i + u64::from(i == 7)));
            assert_eq!(t.remove(id(i)), None);
        }
        for i in 0..5000 {
            let want = (i % 3 != 0).then_some(i + u64::from(i == 7));
            assert_eq!(t.get(id(i)).copied(), want, "{i}");
        }
        assert_eq!(t.len(), 3333);
        assert_eq!(t.values().count(), 3333);
        *t.get_mut(id(1)).unwrap() = 42;
        assert_eq!(
            t.iter().find(|(k, _)| *k == id(1)).map(|(_, v)| *v),
            Some(42)
        );
    }

    #[test]
    fn shrinks_when_emptied_and_loads_entries_in_place() {
        let mut t: IdTable<u8> = IdTable::default();
        for i in 0..100_000 {
            t.get_or_insert_with(id(i), || 1);
        }
        let full = t.allocated_bytes();
        for i in 0..99_990 {
            t.remove(id(i));
        }
        assert!(
            t.allocated_bytes() < full / 100,
            "{} of {full}",
            t.allocated_bytes()
        );
        assert_eq!(t.get(id(99_995)), Some(&1));

        let loaded = IdTable::from_entries((0..1000).map(|i| (id(i), i)).collect());
        assert_eq!(loaded.len(), 1000);
        assert!((0..1000).all(|i| loaded.get(id(i)) == Some(&i)));
    }

    #[test]
    #[should_panic(expected = "loaded twice")]
    fn duplicate_ids_are_refused_at_load() {
        let _ = IdTable::from_entries(vec![(id(1), ()), (id(1), ())]);
    }
}
