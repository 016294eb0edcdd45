//! Redis pub/sub over RESP2: SUBSCRIBE confirmations, `message` pushes,
//! PUBLISH replies. A connection with nothing to subscribe (a publisher, an
//! idle client) sends PING and is ready at its PONG.

use super::Unit;
use crate::loadgen::mark;

/// Channel name a load-generator channel maps to.
pub fn channel(channel: u32) -> String {
    format!("lg.{channel}")
}

/// One connection's protocol state.
pub struct Session {
    channels: Vec<String>,
    confirmed: usize,
    ready: bool,
}

/// One parsed RESP value (only the shapes pub/sub uses).
enum Value<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int,
    Bulk(&'a [u8]),
    Array(Vec<Value<'a>>),
}

impl Session {
    pub fn new(channels: Vec<String>) -> Self {
        Session {
            channels,
            confirmed: 0,
            ready: false,
        }
    }

    /// The first command, sent once the TCP connection is up.
    pub fn opening(&self, out: &mut Vec<u8>) {
        if self.channels.is_empty() {
            command(out, &[b"PING"]);
        } else {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(self.channels.iter().map(|c| c.as_bytes()));
            command(out, &args);
        }
    }

    pub fn parse(&mut self, buf: &[u8], out: &mut Vec<Unit>) -> Result<usize, String> {
        let mut used = 0;
        while let Some((v, n)) = value(&buf[used..], 0)? {
            used += n;
            match v {
                Value::Simple(s) if s.eq_ignore_ascii_case(b"PONG") => self.ready_once(out),
                Value::Simple(_) => {}
                Value::Error(e) => out.push(Unit::Nack(String::from_utf8_lossy(e).into_owned())),
                Value::Int => {
                    if self.ready {
                        out.push(Unit::Ack);
                    }
                }
                Value::Array(items) => match items.as_slice() {
                    [Value::Bulk(kind), _, Value::Bulk(payload)] if *kind == b"message" => {
                        if let Some(m) = mark::find(payload) {
                            out.push(Unit::Delivery(m));
                        }
                    }
                    [Value::Bulk(kind), _, Value::Int] if *kind == b"subscribe" => {
                        self.confirmed += 1;
                        if self.confirmed == self.channels.len() {
                            self.ready_once(out);
                        }
                    }
                    _ => {}
                },
                Value::Bulk(_) => {}
            }
        }
        Ok(used)
    }

    fn ready_once(&mut self, out: &mut Vec<Unit>) {
        if !self.ready {
            self.ready = true;
            out.push(Unit::Ready);
        }
    }
}

/// Parses one value at the start of `b`: `Ok(None)` when incomplete.
fn value(b: &[u8], depth: usize) -> Result<Option<(Value<'_>, usize)>, String> {
    if depth > 4 {
        return Err("RESP nested too deep".into());
    }
    let Some(eol) = memchr::memmem::find(b, b"\r\n") else {
        if b.len() > 64 * 1024 {
            return Err("RESP line over 64 KiB".into());
        }
        return Ok(None);
    };
    if eol == 0 {
        return Err("empty RESP line".into());
    }
    let line = &b[1..eol];
    let int = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP length {:?}", String::from_utf8_lossy(line)))
    };
    let head = eol + 2;
    Ok(Some(match b[0] {
        b'+' => (Value::Simple(line), head),
        b'-' => (Value::Error(line), head),
        b':' => (Value::Int, head),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Value::Bulk(&[]), head)));
            }
            let n = n as usize;
            if b.len() < head + n + 2 {
                return Ok(None);
            }
            (Value::Bulk(&b[head..head + n]), head + n + 2)
        }
        b'*' => {
            let n = int()?.max(0) as usize;
            let mut items = Vec::with_capacity(n.min(8));
            let mut at = head;
            for _ in 0..n {
                match value(&b[at..], depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(items), at)
        }
        other => return Err(format!("unknown RESP type byte {other:#04x}")),
    }))
}

/// Appends one command as a RESP array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_then_messages_split_anywhere() {
        let stream = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nlg.1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$4\r\nlg.2\r\n:2\r\n*3\r\n$7\r\nmessage\r\n$4\r\nlg.2\r\n$12\r\nlg:0:2:9:5:x\r\n";
        for cut in 0..stream.len() {
            let mut s = Session::new(vec![channel(1), channel(2)]);
            let mut out = Vec::new();
            let mut buf = stream[..cut].to_vec();
            let used = s.parse(&buf, &mut out).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&stream[cut..]);
            let used = s.parse(&buf, &mut out).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(out.len(), 2, "cut {cut}: {out:?}");
            assert_eq!(out[0], Unit::Ready);
            assert!(matches!(out[1], Unit::Delivery(m) if m.channel == 2 && m.seq == 9));
        }
    }

    #[test]
    fn publisher_pong_then_acks() {
        let mut s = Session::new(vec![]);
        let mut cmd = Vec::new();
        s.opening(&mut cmd);
        assert_eq!(cmd, b"*1\r\n$4\r\nPING\r\n");
        let mut out = Vec::new();
        s.parse(b"+PONG\r\n:10\r\n-ERR wrong\r\n", &mut out)
            .unwrap();
        assert_eq!(out[0], Unit::Ready);
        assert_eq!(out[1], Unit::Ack);
        assert!(matches!(&out[2], Unit::Nack(e) if e.contains("wrong")));
        assert!(s.parse(b"?x\r\n", &mut out).is_err());
    }
}
