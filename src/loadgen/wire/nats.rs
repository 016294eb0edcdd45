//! The NATS client protocol (text, CRLF-framed), as nats-server speaks it on
//! its websocket listener: INFO → CONNECT + SUB… + PING → PONG means the
//! subscriptions are in place. Deliveries are `MSG <subject> <sid>
//! [reply] <bytes>`. See nats-server's `server/parser.go`.

use super::Unit;
use crate::loadgen::mark;

/// Subject a load-generator channel maps to.
pub fn subject(channel: u32) -> String {
    format!("lg.{channel}")
}

/// One connection's protocol state.
pub struct Session {
    /// Subjects to subscribe to once the server says INFO.
    subjects: Vec<String>,
    connected: bool,
    ready: bool,
}

impl Session {
    pub fn new(subjects: Vec<String>) -> Self {
        Session {
            subjects,
            connected: false,
            ready: false,
        }
    }

    pub fn parse(&mut self, buf: &[u8], out: &mut Vec<Unit>) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
                if rest.len() > 64 * 1024 {
                    return Err("NATS control line over 64 KiB".into());
                }
                return Ok(used);
            };
            let line = &rest[..eol];
            let op_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
            let op = &line[..op_end];
            if op.eq_ignore_ascii_case(b"MSG") {
                let size: usize = line
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(line)))?;
                let start = eol + 2;
                if rest.len() < start + size + 2 {
                    return Ok(used);
                }
                let payload = &rest[start..start + size];
                if let Some(m) = mark::find(payload) {
                    out.push(Unit::Delivery(m));
                }
                used += start + size + 2;
                continue;
            }
            used += eol + 2;
            if op.eq_ignore_ascii_case(b"PING") {
                out.push(Unit::Send(b"PONG\r\n".to_vec()));
            } else if op.eq_ignore_ascii_case(b"PONG") {
                if !self.ready {
                    self.ready = true;
                    out.push(Unit::Ready);
                }
            } else if op.eq_ignore_ascii_case(b"INFO") {
                if !self.connected {
                    self.connected = true;
                    out.push(Unit::Send(self.hello()));
                }
            } else if op.eq_ignore_ascii_case(b"-ERR") {
                out.push(Unit::Closed(String::from_utf8_lossy(line).into_owned()));
            } else if !op.eq_ignore_ascii_case(b"+OK") {
                return Err(format!(
                    "unknown NATS operation {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }

    /// CONNECT, one SUB per subject, and a PING whose PONG confirms them.
    fn hello(&self) -> Vec<u8> {
        let mut v = br#"CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"transponder-loadgen","lang":"rust","version":"0.1","protocol":1,"echo":true}"#.to_vec();
        v.extend_from_slice(b"\r\n");
        for (sid, s) in self.subjects.iter().enumerate() {
            v.extend_from_slice(format!("SUB {s} {}\r\n", sid + 1).as_bytes());
        }
        v.extend_from_slice(b"PING\r\n");
        v
    }
}

/// `PUB <subject> <bytes>` and the payload.
pub fn publish(out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_then_messages_split_anywhere() {
        let stream = b"INFO {\"server_id\":\"x\"}\r\n+OK\r\nPONG\r\nPING\r\nMSG lg.7 1 11\r\nlg:1:7:0:5:\r\nMSG lg.7 1 r.1 12\r\nlg:1:7:1:5:x\r\n";
        // Fed in two pieces cut at every point, the units are the same.
        for cut in 0..stream.len() {
            let mut s = Session::new(vec![subject(7)]);
            let mut out = Vec::new();
            let mut buf = stream[..cut].to_vec();
            let used = s.parse(&buf, &mut out).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&stream[cut..]);
            let used = s.parse(&buf, &mut out).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(out.len(), 5, "cut at {cut}: {out:?}");
            match &out[0] {
                Unit::Send(b) => {
                    let t = String::from_utf8_lossy(b);
                    assert!(t.starts_with("CONNECT {"));
                    assert!(t.contains("SUB lg.7 1\r\nPING\r\n"));
                }
                u => panic!("{u:?}"),
            }
            assert_eq!(out[1], Unit::Ready);
            assert_eq!(out[2], Unit::Send(b"PONG\r\n".to_vec()));
            assert!(matches!(out[3], Unit::Delivery(m) if m.seq == 0));
            assert!(matches!(out[4], Unit::Delivery(m) if m.seq == 1));
        }
    }

    #[test]
    fn err_closes() {
        let mut s = Session::new(vec![]);
        let mut out = Vec::new();
        s.parse(b"-ERR 'Slow Consumer'\r\n", &mut out).unwrap();
        assert!(matches!(&out[0], Unit::Closed(m) if m.contains("Slow")));
        assert!(s.parse(b"BOGUS\r\n", &mut out).is_err());
    }
}
