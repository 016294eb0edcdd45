//! Message timestamps: Slack's `"SSSSSSSSSS.UUUUUU"` strings, held as
//! microseconds since the Unix epoch. A `ts` is a message's id: unique and
//! strictly increasing within its channel (the owning channel server
//! assigns it).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Ts(pub u64);

impl Ts {
    pub fn now() -> Ts {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        Ts(d.as_micros() as u64)
    }

    /// The next ts for a channel whose last ts is `last`: the wall clock,
    /// unless it has not moved past `last` (same microsecond, or the clock
    /// stepped back), then `last + 1µs`.
    pub fn next_after(last: Ts, now: Ts) -> Ts {
        if now > last {
            now
        } else {
            Ts(last.0 + 1)
        }
    }

    /// Parses `"1700000000.000123"`; also `"1700000000"` and fewer than six
    /// fraction digits (`"1.5"` is 1.500000). `None` for anything else.
    pub fn parse(s: &str) -> Option<Ts> {
        let (secs, frac) = match s.split_once('.') {
            Some((a, b)) => (a, b),
            None => (s, ""),
        };
        if secs.is_empty() || secs.len() > 12 || frac.len() > 6 {
            return None;
        }
        if !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: u64 = secs.parse().ok()?;
        let mut micros: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..6 {
            micros *= 10;
        }
        secs.checked_mul(1_000_000)?.checked_add(micros).map(Ts)
    }

    pub fn micros(self) -> u64 {
        self.0
    }

    /// `"SSSSSSSSSS.UUUUUU"` on the stack, as `Display` writes it (at least
    /// ten digits of seconds).
    pub fn ascii(self) -> TsChars {
        let mut chars = [b'0'; TS_CHARS_MAX];
        let (mut secs, mut micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        let secs_digits = (secs.checked_ilog10().unwrap_or(0) as usize + 1).max(10);
        let len = secs_digits + 7;
        chars[secs_digits] = b'.';
        for c in chars[secs_digits + 1..len].iter_mut().rev() {
            *c = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        for c in chars[..secs_digits].iter_mut().rev() {
            *c = b'0' + (secs % 10) as u8;
            secs /= 10;
        }
        TsChars::new(chars, len)
    }
}

/// u64 microseconds: up to 14 digits of seconds, a dot, six more.
const TS_CHARS_MAX: usize = 21;

/// A ts's characters ([`Ts::ascii`]).
pub type TsChars = crate::ascii::StackAscii<TS_CHARS_MAX>;

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ascii().as_str())
    }
}

impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_what_the_format_writes() {
        for v in [
            0,
            1,
            999_999,
            1_000_000,
            1_700_000_000_000_123,
            12_345_678_901_234_567,
            u64::MAX,
        ] {
            let want = format!("{:010}.{:06}", v / 1_000_000, v % 1_000_000);
            assert_eq!(&Ts(v).ascii()[..], want.as_bytes());
            assert_eq!(Ts(v).to_string(), want);
        }
    }

    #[test]
    fn formats_like_slack() {
        assert_eq!(Ts(1_700_000_000_000_123).to_string(), "1700000000.000123");
        assert_eq!(Ts(5).to_string(), "0000000000.000005");
    }

    #[test]
    fn parses() {
        assert_eq!(
            Ts::parse("1700000000.000123"),
            Some(Ts(1_700_000_000_000_123))
        );
        assert_eq!(Ts::parse("1700000000"), Some(Ts(1_700_000_000_000_000)));
        assert_eq!(Ts::parse("1.5"), Some(Ts(1_500_000)));
        for bad in ["", ".1", "1.1234567", "a.1", "1.-1", "-1", "1e3"] {
            assert_eq!(Ts::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strictly_increasing() {
        let a = Ts(100);
        assert_eq!(Ts::next_after(a, Ts(50)), Ts(101));
        assert_eq!(Ts::next_after(a, Ts(100)), Ts(101));
        assert_eq!(Ts::next_after(a, Ts(200)), Ts(200));
    }
}
