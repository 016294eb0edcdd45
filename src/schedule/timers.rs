//! The pending messages of one shard, earliest first: one compact entry per
//! message, `(post_at, id)`, in a binary min-heap. The message itself stays
//! in the store until it fires; the heap holds only what orders it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ids::Id;
use crate::limits::SCHEDULE_TIMER_ENTRY_BYTES;

/// One pending message: when (Unix seconds), its channel (`Id::raw`) and
/// its row id. Ordered by time, then channel, then id: per channel that is
/// `(post_at, id)`, the order its messages fire in (ids grow in the order
/// they were scheduled); across the channels due the same second, a round
/// takes one channel's messages together, so the store writes them into
/// the same few pages instead of one page per message (at the top of the
/// hour, thousands of channels are due at once: see `crate::channel::fire`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub post_at_secs: i64,
    pub channel: u64,
    pub id: i64,
}

impl Entry {
    pub fn new(post_at_secs: i64, channel: Id, id: i64) -> Entry {
        Entry {
            post_at_secs,
            channel: channel.raw(),
            id,
        }
    }
}

// What one pending message costs its owning shard, beside the heap's spare
// capacity: three integers, no allocation of its own.
const _: () = assert!(std::mem::size_of::<Reverse<Entry>>() == SCHEDULE_TIMER_ENTRY_BYTES);

/// Owned by its shard; never crosses cores.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    pub fn from_entries(entries: Vec<Entry>) -> Timers {
        Timers {
            heap: entries.into_iter().map(Reverse).collect(),
        }
    }

    /// Adds an entry; true if it is now the earliest (the timer must be
    /// set sooner).
    pub fn push(&mut self, e: Entry) -> bool {
        let earliest = self.earliest().is_none_or(|at| e.post_at_secs < at);
        self.heap.push(Reverse(e));
        earliest
    }

    /// When the earliest entry is due.
    pub fn earliest(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse(e)| e.post_at_secs)
    }

    /// Takes, in order, up to `max` entries due at `now_secs`.
    pub fn pop_due(&mut self, now_secs: i64, max: usize) -> Vec<Entry> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.heap.peek() {
                Some(Reverse(e)) if e.post_at_secs <= now_secs => {
                    due.push(self.heap.pop().expect("peeked").0);
                }
                _ => break,
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(post_at_secs: i64, id: i64) -> Entry {
        Entry {
            post_at_secs,
            channel: 1,
            id,
        }
    }

    #[test]
    fn a_second_s_entries_come_out_a_channel_at_a_time() {
        let at = |channel, id| Entry {
            post_at_secs: 5,
            channel,
            id,
        };
        // Scheduled round-robin over two channels, all for the same second.
        let mut t = Timers::from_entries(vec![at(2, 1), at(1, 2), at(2, 3), at(1, 4)]);
        t.push(Entry {
            post_at_secs: 4,
            channel: 2,
            id: 5,
        });
        let due = t.pop_due(5, 10);
        assert_eq!(
            due.iter().map(|e| e.id).collect::<Vec<_>>(),
            [5, 2, 4, 1, 3],
            "earlier second first; then channel 1's in id order, then channel 2's"
        );
    }

    #[test]
    fn due_entries_come_out_by_time_then_id() {
        let mut t = Timers::from_entries(vec![e(5, 3), e(5, 1), e(9, 0)]);
        assert!(!t.push(e(5, 2)), "not earlier than 5");
        assert!(t.push(e(4, 7)), "earlier: the timer moves");
        assert_eq!(t.earliest(), Some(4));
        assert_eq!(t.pop_due(3, 10), vec![]);
        assert_eq!(t.pop_due(5, 3), vec![e(4, 7), e(5, 1), e(5, 2)]);
        assert_eq!(t.pop_due(5, 10), vec![e(5, 3)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(100, 10), vec![e(9, 0)]);
        assert!(t.is_empty() && t.earliest().is_none());
        assert!(t.push(e(1, 1)), "the first entry is the earliest");
    }
}
