//! Slack-style ids (`C024BE91L`, `U0G9QF9C6`, `T…`) packed into a `u64`.
//!
//! An id is up to 12 characters of `[0-9A-Z]`, the first a letter naming its
//! kind. Each character is a base-37 digit (1..=36; 0 means "no character"),
//! most significant first and left-aligned, so ids of different lengths never
//! collide and 37^12 < 2^64. Packing keeps per-channel and per-connection
//! state small (docs/DESIGN.md "What stays small") and makes ids cheap to hash,
//! compare and send between shards.

use std::fmt;

/// Longest id we pack. Slack's ids are 9 to 11 characters.
pub const ID_CHARS_MAX: usize = 12;
/// Characters after the kind letter in the ids we generate.
const GENERATED_TAIL_CHARS: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(u64);

fn digit_of(c: u8) -> Option<u64> {
    match c {
        b'0'..=b'9' => Some(u64::from(c - b'0') + 1),
        b'A'..=b'Z' => Some(u64::from(c - b'A') + 11),
        _ => None,
    }
}

fn char_of(d: u64) -> u8 {
    debug_assert!((1..=36).contains(&d));
    if d <= 10 {
        b'0' + (d - 1) as u8
    } else {
        b'A' + (d - 11) as u8
    }
}

impl Id {
    /// Parses an id; `None` for anything that is not 2..=12 characters of
    /// `[0-9A-Z]` starting with a letter.
    pub fn parse(s: &str) -> Option<Id> {
        let b = s.as_bytes();
        if b.len() < 2 || b.len() > ID_CHARS_MAX || !b[0].is_ascii_uppercase() {
            return None;
        }
        let mut v: u64 = 0;
        for i in 0..ID_CHARS_MAX {
            let d = match b.get(i) {
                Some(&c) => digit_of(c)?,
                None => 0,
            };
            v = v * 37 + d;
        }
        Some(Id(v))
    }

    /// The raw packed value (the ring hashes this).
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`Id::raw`]; `None` if it is not a valid packing.
    pub fn from_raw(v: u64) -> Option<Id> {
        let id = Id(v);
        let s = id.to_string();
        (Id::parse(&s) == Some(id)).then_some(id)
    }

    /// The kind letter: `C`, `G`, `D` (conversations), `U`/`W` (users),
    /// `T` (teams), `B` (bots).
    pub fn kind(self) -> char {
        char_of(self.0 / 37u64.pow(ID_CHARS_MAX as u32 - 1)) as char
    }

    pub fn is_user(self) -> bool {
        matches!(self.kind(), 'U' | 'W')
    }

    pub fn is_conversation(self) -> bool {
        matches!(self.kind(), 'C' | 'G' | 'D')
    }

    /// A fresh random id of the given kind, 11 characters like Slack's.
    pub fn generate(kind: char, rng: &mut impl rand::Rng) -> Id {
        assert!(kind.is_ascii_uppercase(), "id kind must be A-Z");
        let mut s = String::with_capacity(1 + GENERATED_TAIL_CHARS);
        s.push(kind);
        for _ in 0..GENERATED_TAIL_CHARS {
            let d = rng.random_range(1..=36u64);
            s.push(char_of(d) as char);
        }
        Id::parse(&s).expect("generated ids are valid")
    }

    /// Writes the id into `out` without allocating.
    pub fn write_to(self, out: &mut String) {
        out.push_str(self.ascii().as_str());
    }

    /// The id's characters, on the stack.
    pub fn ascii(self) -> IdChars {
        let mut digits = [0u8; ID_CHARS_MAX];
        let mut v = self.0;
        for slot in digits.iter_mut().rev() {
            *slot = (v % 37) as u8;
            v /= 37;
        }
        let len = digits.iter().take_while(|&&d| d != 0).count();
        for d in &mut digits[..len] {
            *d = char_of(u64::from(*d));
        }
        IdChars::new(digits, len)
    }
}

/// An id's characters ([`Id::ascii`]).
pub type IdChars = crate::ascii::StackAscii<ID_CHARS_MAX>;

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ascii().as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// In JSON an id is its text (`"U0G9QF9C6"`); in binary encodings (node
/// links) its packed `u64`.
impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            Id::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid id"))
        } else {
            let raw = u64::deserialize(d)?;
            Id::from_raw(raw).ok_or_else(|| serde::de::Error::custom("invalid packed id"))
        }
    }
}

/// Fresh random ids of one kind, 11 characters like [`Id::generate`]'s, in
/// strictly increasing order: each is the previous one plus a random gap.
/// A bulk import numbers its rows with these, so the store's id indexes are
/// appended to rather than written at random places, and no two ids of one
/// sequence can collide (random ones would: 16 million random 10-character
/// tails share one about 3% of the time).
pub struct AscendingIds {
    kind: u64,
    /// Index of the next id's tail among the 36^10 tails, in order.
    next: u64,
}

/// Tails of 10 characters, each `[0-9A-Z]`.
const TAIL_SPACE: u64 = 36u64.pow(GENERATED_TAIL_CHARS as u32);
/// Largest gap between two ids of a sequence (the mean is half of it).
const GAP_MAX: u64 = 1 << 16;
/// Ids one sequence is guaranteed to yield: room for them is kept above
/// its random start.
pub const ASCENDING_IDS_MAX: u64 = 1 << 32;

impl AscendingIds {
    pub fn new(kind: char, rng: &mut impl rand::Rng) -> AscendingIds {
        assert!(kind.is_ascii_uppercase(), "id kind must be A-Z");
        AscendingIds {
            kind: digit_of(kind as u8).expect("a letter"),
            next: rng.random_range(0..TAIL_SPACE - GAP_MAX * ASCENDING_IDS_MAX),
        }
    }

    /// The next id, or `None` once the sequence has yielded
    /// [`ASCENDING_IDS_MAX`] ids (or more; it may go on a little further).
    pub fn next(&mut self, rng: &mut impl rand::Rng) -> Option<Id> {
        if self.next >= TAIL_SPACE {
            return None;
        }
        let mut tail = self.next;
        self.next += rng.random_range(1..=GAP_MAX);
        // Tail digits most significant first, each 1..=36 (0 means "no
        // character"), then the unused 12th position.
        let mut digits = [0u64; GENERATED_TAIL_CHARS];
        for d in digits.iter_mut().rev() {
            *d = tail % 36 + 1;
            tail /= 36;
        }
        let v = digits.iter().fold(self.kind, |v, &d| v * 37 + d);
        Some(Id(
            v * 37u64.pow((ID_CHARS_MAX - 1 - GENERATED_TAIL_CHARS) as u32)
        ))
    }
}

/// Hasher for maps keyed by [`Id`]: one multiply and a fold of the packed
/// value. Ids are random, so this spreads them well; std's SipHash would
/// cost more than the lookup it serves.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, v: u64) {
        let m = u128::from(v ^ self.0) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// A `HashMap` keyed by ids.
pub type IdMap<V> = std::collections::HashMap<Id, V, std::hash::BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_slack_ids() {
        for s in ["C024BE91L", "U0G9QF9C6", "T0001", "D0", "ZZZZZZZZZZZZ"] {
            let id = Id::parse(s).unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(Id::from_raw(id.raw()), Some(id));
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(Id::parse("C024BE91L").unwrap().kind(), 'C');
        assert!(Id::parse("U0G9QF9C6").unwrap().is_user());
        assert!(Id::parse("G1").unwrap().is_conversation());
        assert!(!Id::parse("T1").unwrap().is_conversation());
    }

    #[test]
    fn lengths_do_not_collide() {
        let a = Id::parse("C0").unwrap();
        let b = Id::parse("C00").unwrap();
        assert_ne!(a, b);
        assert_eq!(b.to_string(), "C00");
    }

    #[test]
    fn rejects_bad_ids() {
        for s in [
            "",
            "C",
            "c024",
            "0ABC",
            "C024BE91L-",
            "CABCDEFGHIJKL",
            "C 1",
            "Cé",
        ] {
            assert_eq!(Id::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let mut rng = rand::rng();
        let a = Id::generate('C', &mut rng);
        let b = Id::generate('C', &mut rng);
        assert_ne!(a, b);
        assert_eq!(a.kind(), 'C');
        assert_eq!(a.to_string().len(), 11);
        assert_eq!(Id::parse(&a.to_string()), Some(a));
    }

    #[test]
    fn ascending_ids_are_valid_increasing_and_ordered_like_their_text() {
        let mut rng = rand::rng();
        let mut seq = AscendingIds::new('C', &mut rng);
        let ids: Vec<Id> = (0..10_000).map(|_| seq.next(&mut rng).unwrap()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            // The store orders ids as text: same order.
            assert!(w[0].to_string() < w[1].to_string());
        }
        for id in &ids {
            let s = id.to_string();
            assert_eq!(s.len(), 11);
            assert_eq!(id.kind(), 'C');
            assert_eq!(Id::parse(&s), Some(*id));
        }
        // Near the end of the tail space it stops instead of overflowing.
        let mut end = AscendingIds {
            kind: digit_of(b'C').unwrap(),
            next: TAIL_SPACE - 1,
        };
        assert_eq!(end.next(&mut rng).unwrap().to_string(), "CZZZZZZZZZZ");
        assert_eq!(end.next(&mut rng), None);
    }

    #[test]
    fn serde_as_string() {
        let id = Id::parse("U123").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"U123\"");
        let back: Id = serde_json::from_str("\"U123\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<Id>("\"u123\"").is_err());
    }
}
