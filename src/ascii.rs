//! Short ASCII text on the stack: an id's or a ts's characters, written
//! into a frame without a `String` per event.

/// Up to `N` ASCII bytes, `bytes[..len]`.
pub struct StackAscii<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackAscii<N> {
    /// `bytes[..len]`, which must be ASCII.
    pub fn new(bytes: [u8; N], len: usize) -> StackAscii<N> {
        debug_assert!(bytes[..len].is_ascii(), "ASCII only");
        StackAscii { bytes, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self).expect("ASCII")
    }
}

impl<const N: usize> std::ops::Deref for StackAscii<N> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
