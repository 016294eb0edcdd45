//! The mark every load-generator event carries: who sent it, to which
//! channel, its place in that publisher's sequence on that channel and when
//! it left, as `lg:<publisher>:<channel>:<seq>:<sent_ns>:` followed by padding
//! to the requested size. The same bytes ride inside a Slack event's `text`,
//! a NATS payload and a Redis message, so every target is measured alike.

/// The clock the mark carries: CLOCK_MONOTONIC, which every process on one
/// host shares, so a worker can subtract another worker's send time.
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time this process has used so far (every thread, user + system),
/// in ns: what the load generator's own work costs.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub const PREFIX: &[u8] = b"lg:";

/// One decoded mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub publisher: u32,
    pub channel: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Writes the mark and pads with `x` up to `size` bytes (never shorter than
/// the mark itself). Only ASCII, so it is valid inside a JSON string.
pub fn write(out: &mut Vec<u8>, m: Mark, size: usize) {
    use std::io::Write;
    let start = out.len();
    write!(
        out,
        "lg:{}:{}:{}:{}:",
        m.publisher, m.channel, m.seq, m.sent_ns
    )
    .expect("write to Vec");
    let written = out.len() - start;
    if written < size {
        out.resize(start + size, b'x');
    }
}

/// Finds and decodes the first mark in `hay` (a frame, a payload).
pub fn find(hay: &[u8]) -> Option<Mark> {
    let at = memchr::memmem::find(hay, PREFIX)?;
    parse(&hay[at + PREFIX.len()..])
}

fn parse(mut s: &[u8]) -> Option<Mark> {
    let mut field = || -> Option<u64> {
        let end = memchr::memchr(b':', s)?;
        let (digits, rest) = s.split_at(end);
        s = &rest[1..];
        if digits.is_empty() || digits.len() > 20 {
            return None;
        }
        digits.iter().try_fold(0u64, |acc, &d| {
            d.is_ascii_digit()
                .then(|| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))?
        })
    };
    Some(Mark {
        publisher: u32::try_from(field()?).ok()?,
        channel: u32::try_from(field()?).ok()?,
        seq: field()?,
        sent_ns: field()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let m = Mark {
            publisher: 3,
            channel: 70_000,
            seq: 12,
            sent_ns: 987_654_321_000,
        };
        let mut v = b"{\"text\":\"".to_vec();
        write(&mut v, m, 100);
        assert_eq!(v.len(), 9 + 100);
        v.extend_from_slice(b"\"}");
        assert_eq!(find(&v), Some(m));
    }

    #[test]
    fn short_size_keeps_whole_mark() {
        let m = Mark {
            publisher: 1,
            channel: 2,
            seq: 3,
            sent_ns: 4,
        };
        let mut v = Vec::new();
        write(&mut v, m, 1);
        assert_eq!(v, b"lg:1:2:3:4:");
    }

    #[test]
    fn garbage_is_not_a_mark() {
        assert_eq!(find(b"no mark here"), None);
        assert_eq!(find(b"lg:1:2:x:4:"), None);
        assert_eq!(find(b"lg:1:2:3"), None);
        assert_eq!(find(b"lg:99999999999:2:3:4:"), None);
    }
}
