//! TEMPORARY placeholder until the ring module lands.
pub const DEFAULT_VNODES: u32 = 256;
pub fn hash_key(key: u64) -> u64 {
    let mut z = key.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    hash_key(h)
}
#[derive(Clone, Debug)]
pub struct Ring {
    members: Vec<u32>,
    points: Vec<(u64, u32)>,
    vnodes: u32,
    version: u64,
}
impl Ring {
    pub fn new(members: &[u32], vnodes: u32) -> Ring {
        let mut m = members.to_vec();
        m.sort();
        let mut points = vec![];
        for &mm in &m {
            for i in 0..vnodes {
                points.push((hash_key(((mm as u64) << 32) | i as u64), mm));
            }
        }
        points.sort();
        Ring {
            members: m,
            points,
            vnodes,
            version: 1,
        }
    }
    pub fn single_node(shards: u32) -> Ring {
        Ring::new(&(0..shards).collect::<Vec<_>>(), DEFAULT_VNODES)
    }
    pub fn owner(&self, key: u64) -> u32 {
        let h = hash_key(key);
        let i = self.points.partition_point(|p| p.0 < h);
        self.points[i % self.points.len()].1
    }
    pub fn members(&self) -> &[u32] {
        &self.members
    }
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }
    pub fn points(&self) -> usize {
        self.points.len()
    }
    pub fn version(&self) -> u64 {
        self.version
    }
}
