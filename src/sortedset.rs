//! [`SortedSet`]: a set of small `Copy` values (user ids, connection slots)
//! that holds one value inline and moves to the heap from two. Most of a
//! host's 16 million channels have a handful of members and, on a gateway
//! shard, one local watcher; a `Vec` would cost 24 bytes inline plus a heap
//! block of at least 4 values for each of them.
//!
//! Sorted, so membership is a binary search: the channel server checks it on
//! every client publish, the gateway on every subscription.

use std::fmt;

/// 16 bytes for 8-byte values. Owned by whoever owns the state it is part
/// of (a shard); never crosses cores by itself.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum SortedSet<T> {
    #[default]
    Empty,
    One(T),
    /// Two or more, ascending. Boxed so that the set stays 16 bytes (the
    /// `Vec` itself is 24): the common sets of zero or one value pay for
    /// the pointer, not the `Vec`.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<T>>),
}

impl<T: Ord + Copy> SortedSet<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            SortedSet::Empty => &[],
            SortedSet::One(v) => std::slice::from_ref(v),
            SortedSet::Many(vs) => vs,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, SortedSet::Empty)
    }

    pub fn contains(&self, v: T) -> bool {
        self.as_slice().binary_search(&v).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.as_slice().iter().copied()
    }

    /// Adds `v`; false if it was there.
    pub fn insert(&mut self, v: T) -> bool {
        match self {
            SortedSet::Empty => *self = SortedSet::One(v),
            SortedSet::One(w) if *w == v => return false,
            SortedSet::One(w) => {
                let w = *w;
                *self = SortedSet::Many(Box::new(if w < v { vec![w, v] } else { vec![v, w] }));
            }
            SortedSet::Many(vs) => match vs.binary_search(&v) {
                Ok(_) => return false,
                Err(i) => vs.insert(i, v),
            },
        }
        true
    }

    /// Removes `v`; false if it was not there. A set of one goes back
    /// inline.
    pub fn remove(&mut self, v: T) -> bool {
        match self {
            SortedSet::Empty => return false,
            SortedSet::One(w) if *w == v => *self = SortedSet::Empty,
            SortedSet::One(_) => return false,
            SortedSet::Many(vs) => {
                let Ok(i) = vs.binary_search(&v) else {
                    return false;
                };
                vs.remove(i);
                if vs.len() == 1 {
                    *self = SortedSet::One(vs[0]);
                }
            }
        }
        true
    }
}

impl<T: Ord + Copy + fmt::Debug> fmt::Debug for SortedSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Id;

    #[test]
    fn small_and_sorted() {
        assert_eq!(std::mem::size_of::<SortedSet<Id>>(), 16);
        assert_eq!(std::mem::size_of::<SortedSet<u32>>(), 16);
        let mut s = SortedSet::default();
        assert!(s.is_empty() && !s.contains(3));
        assert!(s.insert(5));
        assert!(!s.insert(5));
        assert!(matches!(s, SortedSet::One(5)));
        assert!(s.insert(3));
        assert!(s.insert(9));
        assert!(s.insert(4));
        assert_eq!(s.as_slice(), [3, 4, 5, 9]);
        assert!(s.contains(4) && !s.contains(6));
        assert!(s.remove(4) && !s.remove(4));
        assert!(s.remove(9) && s.remove(3));
        assert!(matches!(s, SortedSet::One(5)), "back inline: {s:?}");
        assert!(!s.remove(7));
        assert!(s.remove(5));
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
    }
}
