//! Churning connections on one worker: each, once its `hello` arrives,
//! says whose presence it watches (`presence_sub`), stays a random while,
//! leaves — every other time with a close frame (and waits for the
//! server's), else by dropping the socket — stays away a while, asks the
//! Web API for a new URL (`rtm.connect` with its user's token, pipelined
//! on one of the worker's Web API connections, taken in turn) and opens it. Between RUN and
//! STOP only; what the server does wrong (a refused URL, a connection it
//! drops, a close it never answers) is counted and the cycle goes on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::Rng;

use super::{Worker, OPEN_TIMEOUT_NS};
use crate::loadgen::admin::split_ws_url;
use crate::loadgen::conn::State;
use crate::loadgen::plan::{ChurnPlan, WorkerPlan};
use crate::loadgen::wire::{slack, webapi};

/// A close frame the server has not answered after this long is a fault.
const CLOSE_REPLY_MAX_NS: u64 = 10_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Opening its websocket (the first time, or after a new URL).
    Connecting,
    /// Up; leaves at `due_ns`.
    Online,
    /// Sent its close frame; the server's answer ends it.
    Closing,
    /// Gone; asks for a new URL at `due_ns`.
    Away,
    /// Waiting for `rtm.connect`'s answer.
    AwaitingUrl,
}

struct Churner {
    conn: usize,
    step: Step,
    due_ns: u64,
    /// Times it has left; even: with a close frame, odd: by dropping.
    leaves: u64,
}

/// The churners of one worker; empty when the scenario is not churn.
#[derive(Default)]
pub(super) struct Churn {
    plan: Option<ChurnPlan>,
    churners: Vec<Churner>,
    /// Connection → its churner.
    of_conn: Vec<Option<usize>>,
    /// Churners by `due_ns`; an entry whose time no longer matches its
    /// churner's is stale and skipped.
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    /// Per Web API connection (in the order of `plan.api_conns`), the
    /// churners waiting for a URL, in the order asked (HTTP/1.1 answers in
    /// order), with when they asked.
    awaiting: Vec<VecDeque<(usize, u64)>>,
    /// The Web API connection the next request goes to.
    next_api: usize,
}

impl Churn {
    pub(super) fn new(plan: &WorkerPlan) -> Churn {
        let mut churn = Churn {
            plan: plan.churn.clone(),
            of_conn: vec![None; plan.conns.len()],
            awaiting: plan
                .churn
                .as_ref()
                .map_or(Vec::new(), |c| vec![VecDeque::new(); c.api_conns.len()]),
            ..Churn::default()
        };
        for (i, c) in plan.conns.iter().enumerate() {
            if c.churn.is_some() {
                churn.of_conn[i] = Some(churn.churners.len());
                churn.churners.push(Churner {
                    conn: i,
                    step: Step::Connecting,
                    due_ns: 0,
                    leaves: 0,
                });
            }
        }
        churn
    }

    fn schedule(&mut self, k: usize, step: Step, due_ns: u64) {
        let c = &mut self.churners[k];
        c.step = step;
        c.due_ns = due_ns;
        self.timers.push(Reverse((due_ns, k)));
    }

    /// A random stay: uniform in [hold/2, 3·hold/2].
    fn hold_ns(&self) -> u64 {
        let hold = self.plan.as_ref().map_or(0, |p| p.hold_ms) * 1_000_000;
        rand::rng().random_range(hold / 2..=hold + hold / 2)
    }

    fn pause_ns(&self) -> u64 {
        self.plan.as_ref().map_or(0, |p| p.pause_ms) * 1_000_000
    }

    /// Which of the Web API connections connection `i` is.
    fn api_slot(&self, i: usize) -> Option<usize> {
        self.plan.as_ref()?.api_conns.iter().position(|&c| c == i)
    }
}

impl Worker {
    /// RUN: the churners that are up leave at random times within one
    /// hold, so they do not all leave together.
    pub(super) fn churn_start(&mut self, now: u64) {
        let ch = &mut self.churn;
        for k in 0..ch.churners.len() {
            if ch.churners[k].step == Step::Online {
                let due = now + ch.hold_ns() * 2 / 3;
                ch.schedule(k, Step::Online, due);
            }
        }
    }

    /// Runs every churner whose time has come.
    pub(super) fn churn_tick(&mut self, now: u64) {
        while let Some(&Reverse((due, k))) = self.churn.timers.peek() {
            if due > now {
                break;
            }
            self.churn.timers.pop();
            let c = &self.churn.churners[k];
            if c.due_ns != due {
                continue; // rescheduled since
            }
            match c.step {
                Step::Online => self.leave(k, now),
                Step::Closing => {
                    let conn = c.conn;
                    self.note_error("churn: the server did not answer a close frame".into());
                    self.counters.dropped += 1;
                    self.drop_socket(conn);
                    let pause = self.churn.pause_ns();
                    self.churn.schedule(k, Step::Away, now + pause);
                }
                Step::Away => self.ask_url(k, now),
                Step::Connecting | Step::AwaitingUrl => {}
            }
        }
        for slot in 0..self.churn.awaiting.len() {
            if let Some(&(_, asked)) = self.churn.awaiting[slot].front() {
                if now.saturating_sub(asked) > OPEN_TIMEOUT_NS {
                    let t = self.churn.plan.as_ref().expect("churn").api_conns[slot];
                    self.fail(t, "rtm.connect not answered after 30 s".into());
                }
            }
        }
    }

    fn leave(&mut self, k: usize, now: u64) {
        let c = &mut self.churn.churners[k];
        let conn = c.conn;
        c.leaves += 1;
        if c.leaves % 2 == 1 {
            self.conns[conn].send_close(1000);
            if let Err(e) = self.conns[conn].flush() {
                self.fail(conn, e);
                return;
            }
            self.churn
                .schedule(k, Step::Closing, now + CLOSE_REPLY_MAX_NS);
        } else {
            self.drop_socket(conn);
            self.counters.disconnects += 1;
            let pause = self.churn.pause_ns();
            self.churn.schedule(k, Step::Away, now + pause);
        }
    }

    fn drop_socket(&mut self, conn: usize) {
        let c = &mut self.conns[conn];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.close();
    }

    fn ask_url(&mut self, k: usize, now: u64) {
        let Some(api) = self.churn.plan.as_ref().map(|p| p.api_conns.clone()) else {
            return;
        };
        // The next Web API connection that is up; those that are gone were
        // counted when they went.
        let Some(slot) = (0..api.len())
            .map(|j| (self.churn.next_api + j) % api.len())
            .find(|&j| self.conns[api[j]].state == State::Ready)
        else {
            let pause = self.churn.pause_ns().max(1_000_000_000);
            self.churn.schedule(k, Step::Away, now + pause);
            return;
        };
        self.churn.next_api = slot + 1;
        let t = api[slot];
        let conn = self.churn.churners[k].conn;
        let cc = self.plan.conns[conn].churn.as_ref().expect("a churner");
        self.tmp.clear();
        webapi::rtm_connect(&mut self.tmp, &self.hosts[t], &cc.token, cc.batch);
        self.conns[t].send(&self.tmp);
        self.churn.awaiting[slot].push_back((k, now));
        self.churn.churners[k].step = Step::AwaitingUrl;
        if let Err(e) = self.conns[t].flush() {
            self.fail(t, e);
        }
    }

    /// `rtm.connect` answered with `url` on connection `i`; false when `i` is
    /// not one of the churn's Web API connections.
    pub(super) fn churn_url(&mut self, i: usize, url: &str, now: u64) -> bool {
        let Some(slot) = self.churn.api_slot(i) else {
            return false;
        };
        let Some((k, _)) = self.churn.awaiting[slot].pop_front() else {
            self.note_error("churn: an rtm.connect answer nobody asked for".into());
            return true;
        };
        let conn = self.churn.churners[k].conn;
        match split_ws_url(url) {
            Ok((addr, path)) => {
                self.churn.churners[k].step = Step::Connecting;
                self.conns[conn].set_ws_path(path);
                self.open(conn, addr, now);
            }
            Err(e) => {
                self.counters.connect_failed += 1;
                self.note_error(format!("churn: rtm.connect url: {e}"));
                let pause = self.churn.pause_ns();
                self.churn.schedule(k, Step::Away, now + pause);
            }
        }
        true
    }

    /// `rtm.connect` was refused on connection `i`; false when `i` is not
    /// one of the churn's Web API connections.
    pub(super) fn churn_url_refused(&mut self, i: usize, why: &str, now: u64) -> bool {
        let Some(slot) = self.churn.api_slot(i) else {
            return false;
        };
        self.counters.connect_failed += 1;
        self.note_error(format!("churn: rtm.connect refused: {why}"));
        if let Some((k, _)) = self.churn.awaiting[slot].pop_front() {
            let pause = self.churn.pause_ns();
            self.churn.schedule(k, Step::Away, now + pause);
        }
        true
    }

    /// A churner's `hello`: watch its users; stay a while.
    pub(super) fn churn_ready(&mut self, i: usize, now: u64) {
        let Some(k) = self.churn.of_conn[i] else {
            return;
        };
        let cc = self.plan.conns[i].churn.as_ref().expect("a churner");
        if !cc.watch.is_empty() {
            self.tmp.clear();
            slack::presence_sub(&mut self.tmp, &cc.watch);
            self.conns[i].send(&self.tmp);
        }
        let hold = self.churn.hold_ns();
        self.churn.schedule(k, Step::Online, now + hold);
    }

    /// Connection `i` ended. True when that was the end of a close the
    /// churner started (not a fault). Otherwise a churner comes back later,
    /// and the churners waiting on a Web API connection that ended ask again.
    pub(super) fn churn_ended(&mut self, i: usize, now: u64) -> bool {
        if let Some(slot) = self.churn.api_slot(i) {
            let pause = self.churn.pause_ns();
            while let Some((k, _)) = self.churn.awaiting[slot].pop_front() {
                self.churn.schedule(k, Step::Away, now + pause);
            }
            return false;
        }
        let Some(k) = self.churn.of_conn[i] else {
            return false;
        };
        let pause = self.churn.pause_ns();
        let expected = self.churn.churners[k].step == Step::Closing;
        self.churn.schedule(k, Step::Away, now + pause);
        if expected {
            self.drop_socket(i);
            self.counters.disconnects += 1;
        }
        expected
    }
}
