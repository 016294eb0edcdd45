//! The bounded ring of a channel's recent persisted events, kept for resume.
//! Allocated on the channel's first event: an idle channel has none.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ts::Ts;

/// Owned by its shard; never crosses cores.
pub struct History {
    /// (ts, encoded websocket frame), oldest first.
    events: VecDeque<(Ts, Bytes)>,
    capacity: usize,
    /// Newest ts ever evicted: a resume from before it cannot be served.
    evicted_max: Option<Ts>,
}

/// What a resume from `since` gets from one channel.
#[derive(Debug, PartialEq)]
pub enum Replay {
    /// Frames to send and their ts, in ts order (possibly none).
    Frames(Vec<(Ts, Bytes)>),
    /// The ring no longer reaches back to `since`.
    ResyncRequired,
}

impl History {
    /// A ring whose first event follows `floor`: events up to `floor` (from
    /// before a restart, say) exist but are not in the ring.
    pub fn new(capacity: usize, floor: Option<Ts>) -> History {
        assert!(capacity > 0, "a history ring holds at least one event");
        History {
            events: VecDeque::new(),
            capacity,
            evicted_max: floor,
        }
    }

    pub fn push(&mut self, ts: Ts, frame: Bytes) {
        debug_assert!(
            self.events.back().is_none_or(|(last, _)| *last < ts),
            "ts must increase"
        );
        if self.events.len() == self.capacity {
            let (old, _) = self.events.pop_front().expect("full ring has a front");
            self.evicted_max = Some(old);
        }
        self.events.push_back((ts, frame));
    }

    /// Events after `since`: every frame with ts > `from` (`from` ≤ `since`
    /// allows a lookback; the client dedupes), or `ResyncRequired` if an
    /// event newer than `since` was already evicted.
    pub fn replay(&self, since: Ts, from: Ts) -> Replay {
        debug_assert!(from <= since);
        if self.evicted_max.is_some_and(|e| e > since) {
            return Replay::ResyncRequired;
        }
        let start = self.events.partition_point(|(ts, _)| *ts <= from);
        Replay::Frames(self.events.range(start..).cloned().collect())
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// The newest event's ts.
    pub fn newest(&self) -> Option<Ts> {
        self.events.back().map(|(ts, _)| *ts)
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> (Ts, Bytes) {
        (Ts(n * 10), Bytes::from(n.to_string()))
    }

    #[test]
    fn replays_after_since() {
        let mut h = History::new(4, None);
        for t in 1..=3 {
            let (ts, f) = frame(t);
            h.push(ts, f);
        }
        assert_eq!(
            h.replay(Ts(10), Ts(10)),
            Replay::Frames(vec![frame(2), frame(3)])
        );
        assert_eq!(h.replay(Ts(30), Ts(30)), Replay::Frames(vec![]));
        assert_eq!(
            h.replay(Ts(0), Ts(0)),
            Replay::Frames(vec![frame(1), frame(2), frame(3)])
        );
    }

    #[test]
    fn lookback_repeats_older_events() {
        let mut h = History::new(4, None);
        for t in 1..=3 {
            let (ts, f) = frame(t);
            h.push(ts, f);
        }
        assert_eq!(
            h.replay(Ts(20), Ts(5)),
            Replay::Frames(vec![frame(1), frame(2), frame(3)])
        );
    }

    #[test]
    fn a_floor_counts_as_evicted() {
        let mut h = History::new(4, Some(Ts(15)));
        let (ts, f) = frame(2);
        h.push(ts, f);
        assert_eq!(h.replay(Ts(10), Ts(10)), Replay::ResyncRequired);
        assert_eq!(h.replay(Ts(15), Ts(15)), Replay::Frames(vec![frame(2)]));
    }

    #[test]
    fn resync_when_evicted_past_since() {
        let mut h = History::new(2, None);
        for t in 1..=4 {
            let (ts, f) = frame(t);
            h.push(ts, f);
        }
        // 10 and 20 were evicted: a client that saw 10 missed 20.
        assert_eq!(h.replay(Ts(10), Ts(10)), Replay::ResyncRequired);
        // A client that saw 20 missed nothing that was evicted.
        assert_eq!(
            h.replay(Ts(20), Ts(20)),
            Replay::Frames(vec![frame(3), frame(4)])
        );
        assert_eq!(h.len(), 2);
    }
}
