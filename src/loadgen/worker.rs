//! A load-generator worker process (`transponder loadgen-worker`): one
//! thread, one mio event loop, up to ~15,000 connections. It reads its
//! [`WorkerPlan`] and then commands on stdin, and prints [`Report`] lines on
//! stdout. It exits when told to report, or when stdin closes (the parent is
//! gone).

mod churn;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use hdrhistogram::serialization::{Serializer, V2Serializer};
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::loadgen::conn::{Conn, State};
use crate::loadgen::mark::{self, Mark};
use crate::loadgen::plan::{command, ConnPlan, Counters, Proto, PubPlan, Report, Via, WorkerPlan};
use crate::loadgen::wire::{http, nats, resp, slack, webapi, Unit};

const STDIN: Token = Token(usize::MAX - 1);
/// A connection that is not ready after this long has failed.
const OPEN_TIMEOUT_NS: u64 = 30_000_000_000;
const PROGRESS_EVERY_NS: u64 = 500_000_000;
/// Distinct error texts kept; the rest are counted under "other".
const ERROR_KINDS_MAX: usize = 32;
/// Rate mode: a publisher whose witness is this far behind stops sending.
const RATE_BACKLOG_MAX: u64 = 1_000_000;
/// Latencies above this are clamped into the top bucket (1 minute).
const LATENCY_MAX_NS: u64 = 60_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Connecting,
    Connected,
    Running,
    Stopped,
}

/// One publisher's state on this worker.
struct Publisher {
    plan: PubPlan,
    /// Next sequence number per channel (index into plan.channels).
    seqs: Vec<u64>,
    next_channel: usize,
    sent: u64,
    /// Its own events its witness has received.
    witnessed: u64,
    /// Rate mode: when the next event is due.
    next_due_ns: u64,
    /// RTM message ids.
    next_id: u64,
}

/// A typing-storm connection's sending side.
struct Typer {
    conn: usize,
    channel: String,
    next_due_ns: u64,
    /// Send times, in order; receivers match the k-th `user_typing` from
    /// this user to the k-th send.
    sent_ns: Vec<u64>,
}

struct Worker {
    plan: WorkerPlan,
    poll: Poll,
    conns: Vec<Conn>,
    hosts: Vec<String>,
    /// For each connection, the publisher it witnesses.
    witness_of: Vec<Option<usize>>,
    pubs: Vec<Publisher>,
    typers: Vec<Typer>,
    /// Typing storm: user → typer index.
    typer_of_user: HashMap<u64, usize>,
    /// Typing storm: (receiving connection, sending user) → events seen.
    typing_seen: HashMap<(usize, u64), usize>,
    counters: Counters,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    phase: Phase,
    next_to_start: usize,
    opening: usize,
    scratch: Vec<u8>,
    units: Vec<Unit>,
    tmp: Vec<u8>,
    text: Vec<u8>,
    stdin_buf: Vec<u8>,
    run_started_ns: u64,
    /// This process's CPU time when the connect command came.
    connect_cpu_start_ns: u64,
    churn: churn::Churn,
}

/// Entry point of `transponder loadgen-worker`.
pub fn main() -> ExitCode {
    raise_nofile_limit();
    // Unbuffered: whatever follows the plan line stays for the event loop,
    // which watches fd 0 with epoll (a std buffer would hide it).
    let mut buf = Vec::new();
    let eol = loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            break i;
        }
        let mut chunk = [0u8; 64 * 1024];
        match read_stdin(&mut chunk) {
            Ok(0) | Err(_) => {
                eprintln!("loadgen-worker: expected a plan on stdin");
                return ExitCode::from(2);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let rest = buf.split_off(eol + 1);
    let plan: WorkerPlan = match serde_json::from_slice(&buf) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadgen-worker: bad plan: {e}");
            return ExitCode::from(2);
        }
    };
    match Worker::new(plan).and_then(|mut w| {
        w.stdin_buf = rest;
        if w.handle_commands()? {
            return Ok(());
        }
        w.run()
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// read(2) on fd 0, bypassing std's buffered stdin.
fn read_stdin(buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read into a buffer we own, of its length.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Raises the soft open-file limit to the hard one (20,000 on the dev VMs).
fn raise_nofile_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

impl Worker {
    fn new(plan: WorkerPlan) -> io::Result<Worker> {
        let poll = Poll::new()?;
        // SAFETY: fcntl on our own stdin; nonblocking so the loop never
        // waits on it.
        unsafe {
            let fd = io::stdin().as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        poll.registry().register(
            &mut SourceFd(&io::stdin().as_raw_fd()),
            STDIN,
            Interest::READABLE,
        )?;
        let conns: Vec<Conn> = plan
            .conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Conn::new(
                    &c.proto,
                    c.channels.clone(),
                    (i as u32).wrapping_mul(2_654_435_761),
                )
            })
            .collect();
        let hosts = plan.conns.iter().map(|c| c.addr.to_string()).collect();
        let mut witness_of = vec![None; conns.len()];
        for (i, p) in plan.publishers.iter().enumerate() {
            witness_of[p.witness] = Some(i);
        }
        let pubs = plan
            .publishers
            .iter()
            .map(|p| Publisher {
                seqs: vec![0; p.channels.len()],
                plan: p.clone(),
                next_channel: 0,
                sent: 0,
                witnessed: 0,
                next_due_ns: 0,
                next_id: 1,
            })
            .collect();
        let typers: Vec<Typer> = plan
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.types_into.as_ref().map(|ch| Typer {
                    conn: i,
                    channel: ch.clone(),
                    next_due_ns: 0,
                    sent_ns: Vec::new(),
                })
            })
            .collect();
        let typer_of_user = typers
            .iter()
            .enumerate()
            .map(|(t, ty)| (plan.conns[ty.conn].user, t))
            .collect();
        Ok(Worker {
            churn: churn::Churn::new(&plan),
            latency: Histogram::new_with_bounds(1_000, LATENCY_MAX_NS, 3).expect("bounds"),
            plan,
            poll,
            conns,
            hosts,
            witness_of,
            pubs,
            typers,
            typer_of_user,
            typing_seen: HashMap::new(),
            counters: Counters::default(),
            errors: BTreeMap::new(),
            phase: Phase::Idle,
            next_to_start: 0,
            opening: 0,
            scratch: vec![0; 256 * 1024],
            units: Vec::new(),
            tmp: Vec::new(),
            text: Vec::new(),
            stdin_buf: Vec::new(),
            run_started_ns: 0,
            connect_cpu_start_ns: 0,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_progress = mark::now_ns() + PROGRESS_EVERY_NS;
        let mut next_timeout_scan = mark::now_ns();
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == STDIN {
                    if self.read_commands()? {
                        return Ok(());
                    }
                    continue;
                }
                let i = ev.token().0;
                if ev.is_writable() {
                    let host = &self.hosts[i];
                    let r = self.conns[i].on_writable(host, &mut self.units);
                    self.after_io(i, r);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    let r = self.conns[i].on_readable(&mut self.scratch, &mut self.units);
                    self.after_io(i, r);
                }
            }
            let now = mark::now_ns();
            // Churn opens connections while running too.
            if matches!(self.phase, Phase::Connecting | Phase::Running) && now >= next_timeout_scan
            {
                self.expire_opening(now);
                next_timeout_scan = now + 1_000_000_000;
            }
            if self.phase == Phase::Connecting {
                self.start_connects(now);
                if self.next_to_start == self.conns.len() && self.opening == 0 {
                    self.phase = Phase::Connected;
                    self.counters.connect_cpu_ns =
                        mark::process_cpu_ns().saturating_sub(self.connect_cpu_start_ns);
                    self.emit(&Report::Connected {
                        counters: self.counters.clone(),
                    })?;
                }
            }
            if self.phase == Phase::Running {
                self.publish(now);
                self.type_some(now);
                self.churn_tick(now);
            }
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY_NS;
                self.emit(&Report::Progress {
                    counters: self.counters.clone(),
                })?;
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        if self.phase == Phase::Running
            && (self.plan.rate > 0.0 || !self.typers.is_empty() || self.pubs.is_empty())
        {
            return Duration::from_millis(1);
        }
        if self.phase == Phase::Running {
            // Windowed publishing restarts on deliveries; this only covers a
            // witness that has gone quiet.
            return Duration::from_millis(5);
        }
        Duration::from_millis(50)
    }

    /// Handles the units a connection produced and what its I/O returned.
    fn after_io(&mut self, i: usize, r: Result<(), String>) {
        let mut units = std::mem::take(&mut self.units);
        let now = mark::now_ns();
        for u in units.drain(..) {
            self.on_unit(i, u, now);
        }
        self.units = units;
        let r = r.and_then(|()| self.conns[i].flush());
        if let Err(e) = r {
            self.fail(i, e);
        }
    }

    fn on_unit(&mut self, i: usize, u: Unit, now: u64) {
        match u {
            Unit::Ready => {
                if self.conns[i].state != State::Ready {
                    self.conns[i].state = State::Ready;
                    self.counters.connected += 1;
                    self.counters.last_ready_ns = now;
                    self.opening -= 1;
                    self.churn_ready(i, now);
                }
            }
            Unit::Delivery(m) => self.delivered(i, m, now),
            Unit::Typing { user } => self.typing_received(i, user, now),
            Unit::Presence { users } => self.counters.presence_received += users,
            Unit::Ack => self.counters.publish_acked += 1,
            Unit::Nack(e) => {
                if !self.churn_url_refused(i, &e, now) {
                    self.counters.publish_refused += 1;
                    self.note_error(format!("refused: {e}"));
                }
            }
            Unit::Ticket(url) => {
                if !self.churn_url(i, &url, now) {
                    self.note_error(format!("an rtm.connect answer nobody asked for: {url}"));
                }
            }
            Unit::Send(bytes) => self.conns[i].send(&bytes),
            Unit::Closed(why) => self.fail(i, why),
        }
    }

    fn delivered(&mut self, i: usize, m: Mark, now: u64) {
        self.counters.delivered += 1;
        self.record_latency(now, m.sent_ns);
        match self.conns[i].check_seq(m.channel, m.seq) {
            Some((gap, reordered)) => {
                self.counters.gaps += gap;
                self.counters.reordered += u64::from(reordered);
            }
            None => self.note_error(format!(
                "event for channel {} on a connection not subscribed to it",
                m.channel
            )),
        }
        if let Some(p) = self.witness_of[i] {
            if self.pubs[p].plan.id == m.publisher {
                self.pubs[p].witnessed += 1;
            }
        }
    }

    fn typing_received(&mut self, i: usize, user: u64, now: u64) {
        self.counters.typing_received += 1;
        let Some(&t) = self.typer_of_user.get(&user) else {
            return;
        };
        let k = self.typing_seen.entry((i, user)).or_insert(0);
        let sent = self.typers[t].sent_ns.get(*k).copied();
        *k += 1;
        if let Some(sent) = sent {
            self.record_latency(now, sent);
        }
    }

    /// Send-to-receive time, clamped into the histogram's range.
    fn record_latency(&mut self, now: u64, sent_ns: u64) {
        let _ = self
            .latency
            .record(now.saturating_sub(sent_ns).clamp(1_000, LATENCY_MAX_NS));
    }

    fn fail(&mut self, i: usize, why: String) {
        if self.conns[i].state == State::Closed {
            return;
        }
        if self.churn_ended(i, mark::now_ns()) {
            return; // the end of a close the churner started
        }
        let c = &mut self.conns[i];
        match c.state {
            State::Ready => self.counters.dropped += 1,
            State::Waiting | State::Closed => {}
            _ => {
                self.counters.connect_failed += 1;
                self.opening -= 1;
            }
        }
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.close();
        self.note_error(why);
    }

    fn note_error(&mut self, why: String) {
        let mut key: String = why.chars().take(160).collect();
        if !self.errors.contains_key(&key) && self.errors.len() >= ERROR_KINDS_MAX {
            key = "other".into();
        }
        *self.errors.entry(key).or_insert(0) += 1;
    }

    fn start_connects(&mut self, now: u64) {
        while self.next_to_start < self.conns.len() && self.opening < self.plan.in_flight {
            let i = self.next_to_start;
            self.next_to_start += 1;
            if self.counters.connect_started_ns == 0 {
                self.counters.connect_started_ns = now;
            }
            self.open(i, self.plan.conns[i].addr, now);
        }
    }

    /// Starts connecting connection `i` to `addr` from its source address.
    fn open(&mut self, i: usize, addr: std::net::SocketAddrV4, now: u64) {
        let source = self.plan.sources[i % self.plan.sources.len()];
        self.opening += 1;
        let c = &mut self.conns[i];
        if let Err(e) = c.start(source, addr, now) {
            c.state = State::Connecting;
            self.fail(i, format!("connect: {e}"));
            return;
        }
        if let Err(e) = c.upgrade_now(&self.hosts[i]) {
            return self.fail(i, e);
        }
        // Writable too: whatever a later write leaves queued goes on the
        // writable edge.
        let r = self.poll.registry().register(
            c.stream.as_mut().expect("started"),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = r {
            self.fail(i, format!("connect: {e}"));
        }
    }

    fn expire_opening(&mut self, now: u64) {
        for i in 0..self.next_to_start {
            let c = &self.conns[i];
            if matches!(
                c.state,
                State::Connecting | State::Upgrading | State::Opening
            ) && now.saturating_sub(c.started_ns) > OPEN_TIMEOUT_NS
            {
                self.fail(i, format!("not ready after 30 s ({:?})", c.state));
            }
        }
    }

    /// Sends what each publisher may send now.
    fn publish(&mut self, now: u64) {
        for p in 0..self.pubs.len() {
            let (conn, witness) = (self.pubs[p].plan.conn, self.pubs[p].plan.witness);
            if self.conns[conn].state != State::Ready || self.conns[witness].state != State::Ready {
                continue;
            }
            let mut sent_any = false;
            loop {
                let pb = &self.pubs[p];
                let in_flight = pb.sent - pb.witnessed;
                let may = if self.plan.rate > 0.0 {
                    pb.next_due_ns <= now && in_flight < RATE_BACKLOG_MAX
                } else {
                    in_flight < self.plan.window
                };
                if !may {
                    break;
                }
                self.publish_one(p, now);
                sent_any = true;
            }
            if sent_any {
                if let Err(e) = self.conns[conn].flush() {
                    self.fail(conn, e);
                }
            }
        }
    }

    fn publish_one(&mut self, p: usize, now: u64) {
        let pb = &mut self.pubs[p];
        let ci = pb.next_channel;
        pb.next_channel = (ci + 1) % pb.plan.channels.len();
        let (channel, ref name) = pb.plan.channels[ci];
        let m = Mark {
            publisher: pb.plan.id,
            channel,
            seq: pb.seqs[ci],
            sent_ns: now,
        };
        pb.seqs[ci] += 1;
        pb.sent += 1;
        if self.plan.rate > 0.0 {
            let step = (1e9 / self.plan.rate) as u64;
            pb.next_due_ns = if pb.next_due_ns == 0 {
                now + step
            } else {
                pb.next_due_ns + step
            };
        }
        self.text.clear();
        mark::write(&mut self.text, m, self.plan.size);
        self.tmp.clear();
        let conn = pb.plan.conn;
        match (&self.plan.conns[conn].proto, pb.plan.via) {
            (Proto::Slack { .. }, _) => {
                slack::message(&mut self.tmp, pb.next_id, name, &self.text);
                pb.next_id += 1;
            }
            (Proto::Nats { .. }, _) => nats::publish(&mut self.tmp, name, &self.text),
            (Proto::Redis, _) => {
                resp::command(&mut self.tmp, &[b"PUBLISH", name.as_bytes(), &self.text])
            }
            (Proto::AdminHttp { token, transient }, Via::Connection) => http::publish(
                &mut self.tmp,
                &self.hosts[conn],
                token,
                name,
                &self.text,
                *transient,
            ),
            (Proto::PublishStream { transient, .. }, _) => {
                self.tmp.extend_from_slice(b"{\"channel\":\"");
                self.tmp.extend_from_slice(name.as_bytes());
                self.tmp
                    .extend_from_slice(b"\",\"event\":{\"type\":\"message\",\"text\":\"");
                self.tmp.extend_from_slice(&self.text);
                self.tmp.extend_from_slice(if *transient {
                    b"\"},\"transient\":true}"
                } else {
                    b"\"},\"transient\":false}"
                });
            }
            (Proto::WebApi, _) => {
                let token = &pb.plan.tokens[(pb.sent as usize) % pb.plan.tokens.len()];
                webapi::post_message(&mut self.tmp, &self.hosts[conn], token, name, &self.text);
            }
            (Proto::AdminHttp { .. }, _) => {
                unreachable!("only Via::Connection publishes over HTTP")
            }
        }
        self.conns[conn].send(&self.tmp);
        self.counters.published += 1;
    }

    fn type_some(&mut self, now: u64) {
        let interval = self.plan.typing_interval_ms.max(1) * 1_000_000;
        let n = self.typers.len() as u64;
        for t in 0..self.typers.len() {
            let conn = self.typers[t].conn;
            if self.conns[conn].state != State::Ready {
                continue;
            }
            let ty = &mut self.typers[t];
            if ty.next_due_ns == 0 {
                // Spread the first events over one interval.
                ty.next_due_ns = self.run_started_ns + interval * t as u64 / n.max(1);
            }
            if ty.next_due_ns > now {
                continue;
            }
            ty.next_due_ns += interval;
            self.tmp.clear();
            slack::typing(&mut self.tmp, ty.sent_ns.len() as u64 + 1, &ty.channel);
            ty.sent_ns.push(now);
            self.conns[conn].send(&self.tmp);
            self.counters.typing_sent += 1;
            if let Err(e) = self.conns[conn].flush() {
                self.fail(conn, e);
            }
        }
    }

    /// Reads commands; true when the worker should exit.
    fn read_commands(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 256];
        loop {
            match read_stdin(&mut buf) {
                Ok(0) => return Ok(true), // the parent is gone
                Ok(n) => self.stdin_buf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.handle_commands()
    }

    /// Carries out the whole command lines buffered; true when the worker
    /// should exit.
    fn handle_commands(&mut self) -> io::Result<bool> {
        while let Some(eol) = self.stdin_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.stdin_buf.drain(..=eol).collect();
            let cmd = String::from_utf8_lossy(&line).trim().to_string();
            match cmd.as_str() {
                command::CONNECT => {
                    self.phase = Phase::Connecting;
                    self.connect_cpu_start_ns = mark::process_cpu_ns();
                    self.start_connects(mark::now_ns());
                }
                command::RUN => {
                    self.phase = Phase::Running;
                    self.run_started_ns = mark::now_ns();
                    self.churn_start(self.run_started_ns);
                }
                command::STOP => {
                    self.phase = Phase::Stopped;
                    self.emit(&Report::Stopped {
                        counters: self.counters.clone(),
                    })?;
                }
                command::REPORT => {
                    self.final_report()?;
                    return Ok(true);
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("unknown command {other:?}"),
                    ))
                }
            }
        }
        Ok(false)
    }

    fn final_report(&mut self) -> io::Result<()> {
        let mut published: BTreeMap<u32, u64> = BTreeMap::new();
        for p in &self.pubs {
            for (i, (c, _)) in p.plan.channels.iter().enumerate() {
                *published.entry(*c).or_insert(0) += p.seqs[i];
            }
        }
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.latency, &mut bytes)
            .map_err(|e| io::Error::other(format!("histogram: {e:?}")))?;
        use base64::Engine;
        let report = Report::Final {
            counters: self.counters.clone(),
            published: published.into_iter().collect(),
            errors: std::mem::take(&mut self.errors).into_iter().collect(),
            latency: base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        self.emit(&report)
    }

    fn emit(&self, r: &Report) -> io::Result<()> {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// The plan for one connection, used by the parent's scenario builders.
pub fn conn_plan(addr: std::net::SocketAddrV4, proto: Proto, mut channels: Vec<u32>) -> ConnPlan {
    channels.sort_unstable();
    channels.dedup();
    ConnPlan {
        addr,
        proto,
        channels,
        types_into: None,
        user: 0,
        churn: None,
    }
}
