//! The consistent-hash ring: which shard owns a channel (docs/DESIGN.md
//! "Placement").
//!
//! Every node must compute the same owner for the same key forever (a
//! changed placement silently splits a channel's subscribers and history
//! across two shards), so the hash is fixed, written out here, and pinned by
//! golden tests. It is never `std`'s randomized `DefaultHasher`, and it only
//! does arithmetic on `u64` values, so endianness and pointer width cannot
//! change it.
//!
//! # The algorithm (enough to reimplement it in another language)
//!
//! All arithmetic is on unsigned 64-bit integers, wrapping mod 2^64; `>>` is a
//! logical shift.
//!
//! **`hash_key(k)`** is the first output of the splitmix64 generator (Steele,
//! Lea & Flood 2014; finalizer constants from Stafford's "Mix13") seeded
//! with `k`:
//!
//! ```text
//! z = k + 0x9E3779B97F4A7C15
//! z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//! z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//! return z ^ (z >> 31)
//! ```
//!
//! Why this one: every step is a bijection on 64-bit values, so distinct keys
//! never collide and, below, distinct virtual nodes never land on the same
//! point; it avalanches fully (each input bit flips each output bit with
//! probability about 1/2), which matters because packed ids are highly
//! structured (left-aligned base-37 digits, shared prefixes); and it is two
//! multiplies with no tables. The added constant keeps key 0 away from the
//! finalizer's fixed point at 0.
//!
//! **`hash_bytes(b)`** is 64-bit FNV-1a over the bytes, then `hash_key`:
//!
//! ```text
//! h = 0xCBF29CE484222325
//! for each byte x: h = (h ^ x) * 0x00000100000001B3
//! return hash_key(h)
//! ```
//!
//! FNV-1a alone mixes its high bits poorly for short inputs, and the ring
//! uses the high bits first, hence the finalizer. It is for names (e.g. a
//! channel name → the shard keeping its name index entry); its output is
//! used as a ring key, i.e. it is hashed again by `owner`, which costs
//! nothing and keeps one rule for all keys.
//!
//! **Virtual nodes.** Member `m` (a `u32`) with `vnodes` virtual nodes puts
//! one point on the 2^64 circle for each `i` in `0..vnodes`, at
//!
//! ```text
//! point(m, i) = hash_key((m << 32) | i)
//! ```
//!
//! Distinct `(m, i)` pairs are distinct inputs, so no two points coincide and
//! no tie-break rule is needed.
//!
//! **Owner.** With `h = hash_key(key)`, the owner is the member of the
//! smallest point `>= h`; if every point is `< h`, it is the member of the
//! smallest point (the circle wraps).
//!
//! # Properties the tests hold it to
//!
//! Adding a member only moves keys to the new member (about 1/(n+1) of them);
//! removing one only moves the keys it owned. The owner does not depend on the
//! order members were given in. With [`DEFAULT_VNODES`], every member of a
//! 2..=64 member ring gets within ±10% of its fair share (measured for
//! members `0..n`; tested at 2, 3, 4, 8 and 16).
//!
//! # Cost
//!
//! [`Ring::owner`] allocates nothing: it hashes the key, uses the hash's top
//! bits to index a bucket table that narrows the search to about one point,
//! and binary-searches that short slice. Measured in release on random keys
//! (tables mostly out of cache): about 30 ns at 4 members, 35 ns at 16,
//! 85 ns at 64, against 55, 70 and 420 ns for a plain binary search over all
//! points. The tables take 16 bytes per point (2 MiB for 64 members at
//! [`DEFAULT_VNODES`]); they are immutable and live behind an `Arc`, so
//! cloning a ring into every shard is cheap and all shards read one copy.

use std::fmt;
use std::sync::Arc;

/// Virtual nodes per member for [`Ring::single_node`].
///
/// A member's share is the sum of `vnodes` random arcs, so its relative
/// error shrinks like `1/sqrt(vnodes)`, and the worst of `n` members grows
/// like `sqrt(2 ln n)`. This is the smallest power of two that keeps every
/// member of every 2..=64 member ring within ±10% of the mean with
/// comfortable margin. Worst deviation measured (1,000,000 keys from the
/// spread test's PRNG, `measure_spread`): 7.3% at 36 members over 2..=64;
/// 2.8%, 1.2%, 1.5%, 3.1%, 4.8% at 2, 3, 4, 8, 16 members. 1024 reached
/// 10.0% at 64 members (no margin); 4096 would give 4.8% for twice the
/// memory and a slower `owner` (see the module doc's "Cost").
pub const DEFAULT_VNODES: u32 = 2048;

/// Upper bound on points in one ring: owner indices are stored as `u32`, and
/// anything near this is a configuration mistake rather than a real ring.
const MAX_POINTS: u64 = 1 << 28;

/// The splitmix64 increment ("golden gamma", 2^64 / φ rounded to odd).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX1: u64 = 0xBF58_476D_1CE4_E5B9;
const MIX2: u64 = 0x94D0_49BB_1331_11EB;

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// The ring's hash of a packed key: the first splitmix64 output seeded with
/// `key` (see the module doc for the exact steps). A bijection on `u64`.
#[inline]
pub fn hash_key(key: u64) -> u64 {
    let mut z = key.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(MIX1);
    z = (z ^ (z >> 27)).wrapping_mul(MIX2);
    z ^ (z >> 31)
}

/// Hash of a byte string (e.g. a channel name): FNV-1a 64, then
/// [`hash_key`]'s finalizer. Use the result as a ring key.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    hash_key(h)
}

/// Where virtual node `i` of member `m` sits on the circle.
#[inline]
fn point(member: u32, i: u32) -> u64 {
    hash_key((u64::from(member) << 32) | u64::from(i))
}

/// The bucket table for sorted `points` (see `Inner::starts`), and its
/// shift. About one point per bucket: the table costs 4 bytes per point and
/// leaves `owner` a slice of about one element to search.
fn bucket_starts(points: &[u64]) -> (Vec<u32>, u32) {
    let buckets = points.len().next_power_of_two().max(2);
    let shift = 64 - buckets.trailing_zeros();
    let mut starts = Vec::with_capacity(buckets + 1);
    let mut idx = 0usize;
    for b in 0..buckets as u64 {
        let lower = b << shift;
        while idx < points.len() && points[idx] < lower {
            idx += 1;
        }
        starts.push(idx as u32);
    }
    starts.push(points.len() as u32);
    (starts, shift)
}

/// A consistent-hash ring over `u32` members (shard indices on one node,
/// packed (node, core) pairs in a cluster; never assumed to be `0..n`).
#[derive(Clone)]
pub struct Ring {
    inner: Arc<Inner>,
    /// Carried along for cluster rings, which CHARM publishes with a version;
    /// not part of placement, so it lives outside the shared tables.
    version: u64,
}

struct Inner {
    /// Sorted, deduplicated.
    members: Vec<u32>,
    vnodes: u32,
    /// Every virtual node's position, ascending. Kept apart from the owners
    /// so the search touches only this array (8 bytes per probe).
    points: Vec<u64>,
    /// `owners[i]` owns `points[i]`; one extra entry at the end repeats
    /// `owners[0]`, so a hash past the last point (index `points.len()`)
    /// wraps to the first point without a branch.
    owners: Vec<u32>,
    /// `starts[b]` is the number of points below `b << shift`, for
    /// `b` in `0..=buckets`. The first point `>= h` is then at an index in
    /// `starts[b]..=starts[b + 1]` where `b = h >> shift`: a slice of about
    /// one point instead of a search over all of them.
    starts: Vec<u32>,
    /// `64 - log2(buckets)`; buckets is a power of two and at least 2, so
    /// this is in `1..=63` and the shift never overflows.
    shift: u32,
}

// By hand, not derived: the derived form would print every point (over a
// hundred thousand of them at 64 members) into logs and panic messages.
impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("version", &self.version)
            .field("members", &self.inner.members)
            .field("vnodes", &self.inner.vnodes)
            .field("points", &self.inner.points.len())
            .finish()
    }
}

impl Ring {
    /// A ring over `members` (any order) with `vnodes` points each, version 1.
    ///
    /// Panics on empty `members`, a duplicate member, `vnodes == 0`, or more
    /// than 2^28 points in all: each is a caller bug, and a ring built anyway
    /// would place channels somewhere no one expects.
    pub fn new(members: &[u32], vnodes: u32) -> Ring {
        assert!(!members.is_empty(), "ring: no members");
        assert!(vnodes > 0, "ring: vnodes must be at least 1");
        let mut sorted = members.to_vec();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            assert!(w[0] != w[1], "ring: duplicate member {}", w[0]);
        }
        let total = sorted.len() as u64 * u64::from(vnodes);
        assert!(
            total <= MAX_POINTS,
            "ring: {} members x {vnodes} vnodes is too many points",
            sorted.len()
        );
        let total = total as usize;

        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total);
        for &m in &sorted {
            pairs.extend((0..vnodes).map(|i| (point(m, i), m)));
        }
        // Points are all distinct (hash_key is a bijection), so sorting by
        // point alone is already a total, input-order-independent order.
        pairs.sort_unstable_by_key(|&(p, _)| p);

        let points: Vec<u64> = pairs.iter().map(|&(p, _)| p).collect();
        let mut owners: Vec<u32> = pairs.iter().map(|&(_, m)| m).collect();
        owners.push(owners[0]);

        let (starts, shift) = bucket_starts(&points);

        Ring {
            inner: Arc::new(Inner {
                members: sorted,
                vnodes,
                points,
                owners,
                starts,
                shift,
            }),
            version: 1,
        }
    }

    /// The ring of one node: members `0..shards`, [`DEFAULT_VNODES`] each.
    pub fn single_node(shards: u32) -> Ring {
        let members: Vec<u32> = (0..shards).collect();
        Ring::new(&members, DEFAULT_VNODES)
    }

    /// The member that owns `key` (a packed id, or a [`hash_bytes`] value).
    #[inline]
    pub fn owner(&self, key: u64) -> u32 {
        self.owner_of_hash(hash_key(key))
    }

    /// The member that owns position `h` on the circle: the owner of the
    /// first point at or after it.
    #[inline]
    fn owner_of_hash(&self, h: u64) -> u32 {
        let inner = &*self.inner;
        let b = (h >> inner.shift) as usize;
        let lo = inner.starts[b] as usize;
        let hi = inner.starts[b + 1] as usize;
        // The first point >= h is in this bucket, or is the first point of a
        // later bucket, which is index `hi`; partition_point over the bucket
        // returns exactly that when no point in it qualifies. `hi` may be
        // `points.len()`, which the sentinel owner turns into a wrap.
        let i = lo + inner.points[lo..hi].partition_point(|&p| p < h);
        inner.owners[i]
    }

    /// The members of `old` that owned keys this ring gives to a member
    /// `to` accepts, other than that member itself, sorted: where a change
    /// from `old` to this ring moves keys from, towards those members.
    ///
    /// Exact, not sampled: between two consecutive points of either ring
    /// every position has one owner in each ring, the owner of the first
    /// point at or after the interval's upper end; so comparing both rings'
    /// owners at every point of either covers the whole circle.
    pub fn donors(&self, old: &Ring, to: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut donors = Vec::new();
        for &p in self.inner.points.iter().chain(&old.inner.points) {
            let now = self.owner_of_hash(p);
            if to(now) {
                let was = old.owner_of_hash(p);
                if was != now {
                    donors.push(was);
                }
            }
        }
        donors.sort_unstable();
        donors.dedup();
        donors
    }

    /// The members, sorted and deduplicated.
    pub fn members(&self) -> &[u32] {
        &self.inner.members
    }

    /// Virtual nodes per member.
    pub fn vnodes(&self) -> u32 {
        self.inner.vnodes
    }

    /// Total virtual nodes on the circle (members × vnodes).
    pub fn points(&self) -> usize {
        self.inner.points.len()
    }

    /// The version this ring carries (1 unless set).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same ring carrying version `v`.
    pub fn with_version(self, v: u64) -> Ring {
        Ring { version: v, ..self }
    }

    /// This ring plus member `m`, same vnodes, version + 1.
    ///
    /// Panics if `m` is already a member (as [`Ring::new`] does on
    /// duplicates): asking to add what is there means the caller's view of
    /// the ring is wrong.
    pub fn with_member(&self, m: u32) -> Ring {
        assert!(
            self.inner.members.binary_search(&m).is_err(),
            "ring: {m} is already a member"
        );
        let mut members = self.inner.members.clone();
        members.push(m);
        Ring::new(&members, self.inner.vnodes).with_version(self.version + 1)
    }

    /// This ring minus member `m`, same vnodes, version + 1.
    ///
    /// Panics if `m` is not a member, or is the last one (a ring must own
    /// every key).
    pub fn without_member(&self, m: u32) -> Ring {
        let members: Vec<u32> = self
            .inner
            .members
            .iter()
            .copied()
            .filter(|&x| x != m)
            .collect();
        assert!(
            members.len() < self.inner.members.len(),
            "ring: {m} is not a member"
        );
        Ring::new(&members, self.inner.vnodes).with_version(self.version + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 as a PRNG: a fixed, dependency-free key stream.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(GAMMA);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(MIX1);
            z = (z ^ (z >> 27)).wrapping_mul(MIX2);
            z ^ (z >> 31)
        }
    }

    /// `donors` names exactly the old owners of the keys the new ring gives
    /// to the chosen members, when members join, leave, or both: checked
    /// against a million keys.
    #[test]
    fn donors_are_exactly_where_the_moved_keys_come_from() {
        let cases: [(&[u32], &[u32], u32); 3] = [
            (&[0, 1, 2, 3], &[0, 1, 2, 3, 4, 5], 4),
            (&[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3], 1),
            (&[0, 1, 2, 3], &[0, 2, 3, 7], 7),
        ];
        for (old, new, gainer) in cases {
            let (old, new) = (Ring::new(old, 64), Ring::new(new, 64));
            let donors = new.donors(&old, |m| m == gainer);
            let mut seen = Vec::new();
            let mut keys = SplitMix(7);
            for _ in 0..1_000_000 {
                let k = keys.next();
                let (was, now) = (old.owner(k), new.owner(k));
                if now == gainer && was != now {
                    assert!(
                        donors.contains(&was),
                        "{k}: from {was}, not a donor {donors:?}"
                    );
                    seen.push(was);
                }
            }
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(
                seen, donors,
                "a donor that gave no key ({old:?} -> {new:?})"
            );
        }
    }

    /// The reference owner rule, straight from the module doc: a linear scan
    /// with no bucket table, to check the fast path against.
    fn slow_owner(ring: &Ring, key: u64) -> u32 {
        let h = hash_key(key);
        let mut best: Option<(u64, u32)> = None;
        let mut first: Option<(u64, u32)> = None;
        for &m in ring.members() {
            for i in 0..ring.vnodes() {
                let p = point(m, i);
                if first.is_none_or(|(f, _)| p < f) {
                    first = Some((p, m));
                }
                if p >= h && best.is_none_or(|(b, _)| p < b) {
                    best = Some((p, m));
                }
            }
        }
        best.or(first).unwrap().1
    }

    /// Inverse of `hash_key`, so tests can aim a key at an exact hash.
    fn unhash(h: u64) -> u64 {
        fn inv_mul(c: u64) -> u64 {
            // Newton's iteration for the inverse of an odd number mod 2^64:
            // each step doubles the correct low bits (3 → 6 → … → 96).
            let mut x = c;
            for _ in 0..5 {
                x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
            }
            x
        }
        fn inv_xorshift(y: u64, s: u32) -> u64 {
            let mut x = y;
            for _ in 0..64 / s {
                x = y ^ (x >> s);
            }
            x
        }
        let mut z = inv_xorshift(h, 31);
        z = inv_xorshift(z.wrapping_mul(inv_mul(MIX2)), 27);
        z = inv_xorshift(z.wrapping_mul(inv_mul(MIX1)), 30);
        z.wrapping_sub(GAMMA)
    }

    /// Pins the hash forever: a change here re-homes every channel.
    #[test]
    fn golden_hashes() {
        // hash_key(0) is splitmix64's first output from seed 0, the value
        // published with the reference implementation.
        assert_eq!(hash_key(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(hash_key(1), 0x910a_2dec_8902_5cc1);
        assert_eq!(hash_key(2), 0x9758_35de_1c97_56ce);
        assert_eq!(hash_key(42), 0xbdd7_3226_2feb_6e95);
        assert_eq!(hash_key(0xdead_beef), 0x4adf_b90f_68c9_eb9b);
        assert_eq!(hash_key(u64::MAX), 0xe4d9_7177_1b65_2c20);
        assert_eq!(hash_bytes(b""), 0xc381_7c01_6ba4_ff30);
        assert_eq!(hash_bytes(b"a"), 0x5f29_c2aa_dd9b_8527);
        assert_eq!(hash_bytes(b"general"), 0xd408_6be0_a008_8208);
        assert_eq!(hash_bytes(b"random"), 0x3e96_8b34_76b6_8385);
        assert_eq!(hash_bytes(b"C024BE91L"), 0x0157_0e8e_ac10_4e3d);
    }

    /// Pins placement forever (hash, point rule, owner rule, and
    /// DEFAULT_VNODES): a change here moves channels between shards.
    #[test]
    fn golden_owners() {
        const GOLDEN: [(u64, u32); 20] = [
            (0x0000_0000_0000_0000, 0),
            (0x0000_0000_0000_0001, 0),
            (0x0000_0000_0000_0002, 0),
            (0x0000_0000_0000_0003, 0),
            (0xcba2_76b4_b881_a9f0, 3),
            (0x8021_81e6_e230_707f, 3),
            (0x8dce_b534_efa5_48a2, 1),
            (0x10bf_51ed_74c7_a3c9, 3),
            (0xd6f8_4a52_88bd_02a4, 2),
            (0x32cc_f775_fe64_5423, 0),
            (0xbeea_83f6_d126_a876, 1),
            (0x8927_69e4_fd73_a80d, 2),
            (0xc89f_7af9_90ab_7e98, 3),
            (0x512a_2640_47d2_2a07, 0),
            (0x3e5b_5974_6445_5d8a, 1),
            (0xbffa_e019_6a52_6891, 2),
            (0x6cae_6a34_7228_d1cc, 2),
            (0x9278_0c3f_f464_962b, 2),
            (0x9f64_d9a9_fe9c_3bde, 2),
            (0x3406_c46a_fac7_2955, 0),
        ];
        let ring = Ring::single_node(4);
        let got: Vec<(u64, u32)> = GOLDEN.iter().map(|&(k, _)| (k, ring.owner(k))).collect();
        assert_eq!(got, GOLDEN);
        // Every member appears, so the list would notice a ring that
        // collapsed onto fewer members.
        for m in 0..4 {
            assert!(GOLDEN.iter().any(|&(_, o)| o == m));
        }
    }

    #[test]
    fn unhash_inverts_hash_key() {
        let mut rng = SplitMix(1);
        for k in [0, 1, u64::MAX]
            .into_iter()
            .chain((0..1000).map(|_| rng.next()))
        {
            assert_eq!(unhash(hash_key(k)), k);
            assert_eq!(hash_key(unhash(k)), k);
        }
    }

    /// Keys aimed exactly at, just past, and around every point, and at both
    /// ends of the circle: the bucket table and the wrap must agree with the
    /// rule in the module doc.
    #[test]
    fn owner_matches_the_rule_at_every_boundary() {
        // Sparse rings (few points, many empty buckets) and a denser one;
        // members far from 0..n.
        let shapes: [(&[u32], u32); 5] = [
            (&[7], 1),
            (&[7, 0x0001_0003], 1),
            (&[u32::MAX, 0, 0x0002_0000, 99], 3),
            (&[5, 6, 0x8000_0000], 16),
            (&[1, 2, 3, 4, 5], 64),
        ];
        for (members, vnodes) in shapes {
            let ring = Ring::new(members, vnodes);
            let points = &ring.inner.points;
            let owners = &ring.inner.owners;
            let last = points.len() - 1;
            let mut aims = vec![0, u64::MAX, points[0], points[last], points[last] + 1];
            for (i, &p) in points.iter().enumerate() {
                aims.extend([p, p.wrapping_sub(1), p.wrapping_add(1)]);
                // Exactly on a point: that point's member; one past it: the
                // next point's member, wrapping after the last.
                assert_eq!(ring.owner(unhash(p)), owners[i]);
                if p != u64::MAX {
                    assert_eq!(ring.owner(unhash(p + 1)), owners[(i + 1) % points.len()]);
                }
            }
            // Past the last point, and at 0: both belong to the first point.
            assert_eq!(ring.owner(unhash(u64::MAX)), owners[0]);
            assert_eq!(ring.owner(unhash(0)), owners[0]);
            let mut rng = SplitMix(u64::from(vnodes));
            aims.extend((0..2000).map(|_| rng.next()));
            for h in aims {
                let key = unhash(h);
                assert_eq!(
                    ring.owner(key),
                    slow_owner(&ring, key),
                    "{members:?}/{vnodes} h={h:#x}"
                );
            }
        }
    }

    /// Points exactly on bucket boundaries (which real rings almost never
    /// produce) must count as inside the bucket they start.
    #[test]
    fn bucket_table_counts_points_below_each_boundary() {
        let top = 1u64 << 63;
        let cases: [&[u64]; 5] = [
            &[0],
            &[top],
            &[0, 1, top - 1, top, top + 1, u64::MAX],
            &[1 << 61, 2 << 61, 3 << 61, 4 << 61, 5 << 61],
            &[0, 1 << 60, 1 << 61, 3 << 61, 7 << 61, u64::MAX],
        ];
        for points in cases {
            let (starts, shift) = bucket_starts(points);
            let buckets = 1u64 << (64 - shift);
            assert!(buckets >= points.len() as u64 && buckets >= 2);
            assert_eq!(starts.len() as u64, buckets + 1);
            for (b, &start) in starts.iter().enumerate().take(buckets as usize) {
                let below = points.iter().filter(|&&p| p < (b as u64) << shift).count();
                assert_eq!(start as usize, below, "{points:?} bucket {b}");
            }
            assert_eq!(starts[buckets as usize] as usize, points.len());
        }
    }

    /// A ring built from the same members in another order, separately, is
    /// the same ring.
    #[test]
    fn owner_does_not_depend_on_member_order() {
        let a = Ring::new(&[0x0003_0001, 4, 0x0001_0000, 17, 2], DEFAULT_VNODES);
        let b = Ring::new(&[2, 17, 0x0001_0000, 0x0003_0001, 4], DEFAULT_VNODES);
        assert_eq!(a.members(), &[2, 4, 17, 0x0001_0000, 0x0003_0001]);
        assert_eq!(a.members(), b.members());
        assert_eq!(a.points(), b.points());
        let mut rng = SplitMix(99);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100_000 {
            let k = rng.next();
            assert_eq!(a.owner(k), b.owner(k));
            seen.insert(a.owner(k));
        }
        // Guards against a ring that trivially agrees by sending
        // everything to one member.
        assert_eq!(seen.len(), 5);
    }

    /// Adding a member moves about 1/(n+1) of the keys, all to it; removing
    /// one moves exactly the keys it owned.
    #[test]
    fn adding_or_removing_one_member_moves_only_its_share() {
        const KEYS: u64 = 200_000;
        for n in 2..=8u32 {
            // Packed (node, core)-style ids, not 0..n.
            let old = Ring::new(
                &(0..n).map(|c| 0x0001_0000 | c).collect::<Vec<_>>(),
                DEFAULT_VNODES,
            );
            let added = 0x0002_0000;
            let grown = old.with_member(added);
            let mut rng = SplitMix(u64::from(n));
            let mut moved = 0u64;
            for _ in 0..KEYS {
                let k = rng.next();
                let (before, after) = (old.owner(k), grown.owner(k));
                if before != after {
                    assert_eq!(after, added, "key {k:#x} moved between old members");
                    moved += 1;
                }
            }
            let expected = KEYS as f64 / f64::from(n + 1);
            let rel = (moved as f64 - expected).abs() / expected;
            assert!(rel < 0.20, "n={n}: moved {moved}, expected ~{expected:.0}");

            // Remove a member from the middle of the grown ring.
            let gone = 0x0001_0000 | (n / 2);
            let shrunk = grown.without_member(gone);
            let mut rng = SplitMix(u64::from(n) + 100);
            let mut owned = 0u64;
            for _ in 0..KEYS {
                let k = rng.next();
                let (before, after) = (grown.owner(k), shrunk.owner(k));
                if before == gone {
                    assert_ne!(after, gone);
                    owned += 1;
                } else {
                    assert_eq!(after, before, "key {k:#x} moved though its owner stayed");
                }
            }
            assert!(owned > 0);
        }
    }

    #[test]
    fn with_and_without_member_keep_vnodes_and_bump_version() {
        let r = Ring::single_node(3);
        assert_eq!(r.version(), 1);
        assert_eq!(r.members(), &[0, 1, 2]);
        assert_eq!(r.vnodes(), DEFAULT_VNODES);
        assert_eq!(r.points(), 3 * DEFAULT_VNODES as usize);

        let r = Ring::new(&[9, 3], 5).with_version(41);
        assert_eq!(r.version(), 41);
        let grown = r.with_member(1);
        assert_eq!(grown.members(), &[1, 3, 9]);
        assert_eq!(
            (grown.vnodes(), grown.points(), grown.version()),
            (5, 15, 42)
        );
        let back = grown.without_member(1);
        assert_eq!(back.members(), &[3, 9]);
        assert_eq!((back.vnodes(), back.points(), back.version()), (5, 10, 43));
        // Back to the same members: the same placement.
        let mut rng = SplitMix(3);
        for _ in 0..10_000 {
            let k = rng.next();
            assert_eq!(back.owner(k), r.owner(k));
        }
        // The source ring is untouched.
        assert_eq!((r.members(), r.version()), (&[3, 9][..], 41));
    }

    #[test]
    fn a_one_member_ring_owns_everything() {
        let r = Ring::new(&[0xABCD_0001], 1);
        let mut rng = SplitMix(4);
        for k in [0, u64::MAX]
            .into_iter()
            .chain((0..1000).map(|_| rng.next()))
        {
            assert_eq!(r.owner(k), 0xABCD_0001);
        }
    }

    #[test]
    #[should_panic(expected = "no members")]
    fn empty_members_panic() {
        Ring::new(&[], 8);
    }

    #[test]
    #[should_panic(expected = "duplicate member 3")]
    fn duplicate_members_panic() {
        Ring::new(&[3, 1, 3], 8);
    }

    #[test]
    #[should_panic(expected = "vnodes must be at least 1")]
    fn zero_vnodes_panic() {
        Ring::new(&[1], 0);
    }

    #[test]
    #[should_panic(expected = "already a member")]
    fn adding_a_present_member_panics() {
        Ring::new(&[1, 2], 8).with_member(2);
    }

    #[test]
    #[should_panic(expected = "not a member")]
    fn removing_an_absent_member_panics() {
        Ring::new(&[1, 2], 8).without_member(3);
    }

    #[test]
    #[should_panic(expected = "no members")]
    fn removing_the_last_member_panics() {
        Ring::new(&[1], 8).without_member(1);
    }

    #[test]
    fn debug_output_stays_short() {
        let s = format!("{:?}", Ring::new(&[3, 1], 2048).with_version(7));
        assert_eq!(
            s,
            "Ring { version: 7, members: [1, 3], vnodes: 2048, points: 4096 }"
        );
    }

    fn counts(ring: &Ring, keys: u64) -> Vec<u64> {
        let members = ring.members();
        let mut counts = vec![0u64; members.len()];
        let mut rng = SplitMix(0x5EED);
        for _ in 0..keys {
            let m = ring.owner(rng.next());
            counts[members.binary_search(&m).unwrap()] += 1;
        }
        counts
    }

    fn worst_deviation(counts: &[u64]) -> f64 {
        let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
        counts
            .iter()
            .map(|&c| (c as f64 - mean).abs() / mean)
            .fold(0.0, f64::max)
    }

    #[test]
    fn spread_within_ten_percent() {
        for n in [2u32, 3, 4, 8, 16] {
            let ring = Ring::single_node(n);
            let c = counts(&ring, 1_000_000);
            let worst = worst_deviation(&c);
            assert!(worst < 0.10, "{n} members: worst {worst:.4} {c:?}");
        }
    }

    /// Not a check: prints the worst deviation per vnodes and ring size,
    /// which is how DEFAULT_VNODES was chosen. Run with
    /// `cargo test --release -- --ignored --nocapture measure_spread`.
    #[test]
    #[ignore]
    fn measure_spread() {
        for vnodes in [256u32, 512, 1024, 2048, 4096] {
            let mut worst = (0.0, 0);
            for n in 2..=64u32 {
                let members: Vec<u32> = (0..n).collect();
                let w = worst_deviation(&counts(&Ring::new(&members, vnodes), 1_000_000));
                if w > worst.0 {
                    worst = (w, n);
                }
                if [2, 3, 4, 8, 16].contains(&n) {
                    println!("vnodes {vnodes} n {n}: {:.2}%", w * 100.0);
                }
            }
            println!(
                "vnodes {vnodes}: worst over 2..=64 {:.2}% at {} members",
                worst.0 * 100.0,
                worst.1
            );
        }
    }
}
