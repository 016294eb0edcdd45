//! Runs a scenario: builds the plans, starts the worker processes, moves
//! them through the phases together (connect → run → stop → report), shows
//! a progress line, and sums up.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::loadgen::admin::Admin;
use crate::loadgen::plan::{command, Counters, Report};
use crate::loadgen::procfs::{self, rss_of};
use crate::loadgen::report::{self, Latency, ServerMemory, Summary};
use crate::loadgen::scenario::{self, Common, Setup};
use crate::loadgen::{LoadgenArgs, Scenario, Target, TargetKind};

/// After publishing stops, deliveries may still be on their way; wait until
/// everything owed arrived, or nothing arrived for this long …
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// … or at most this long.
const DRAIN_MAX: Duration = Duration::from_secs(20);
/// Pause between the last connection and the memory reading.
const SETTLE: Duration = Duration::from_secs(2);
/// A worker that says nothing for this long has hung.
const WORKER_SILENCE_MAX: Duration = Duration::from_secs(60);

struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
}

pub fn run(args: &LoadgenArgs) -> Result<ExitCode, String> {
    // The server to account must be there before anything is provisioned:
    // a wrong pid is an error, never a zero.
    if let Some(pid) = args.server_pid {
        server_cpu_ticks(pid)?;
    }
    let target = Target {
        kind: args.target,
        admin: match (&args.admin_token, args.target) {
            (Some(t), _) => Some(Admin::new(&args.admin, t)),
            (None, TargetKind::Transponder) => {
                return Err("--admin-token (or TRANSPONDER_ADMIN_TOKEN) is required".into())
            }
            (None, _) => None,
        },
        api: crate::loadgen::admin::http_addr("--api", &args.api)?,
        nats: scenario::nats_addr(&args.nats)?,
        redis: args.redis,
    };
    let common = Common {
        workers: args.workers,
        sources: args.sources,
        in_flight: args.in_flight.max(1),
    };
    let setup = scenario::build(&target, &args.scenario, &common)?;
    let total: usize = setup.plans.iter().map(|p| p.conns.len()).sum();
    let mut procs = spawn(&setup)?;
    let (tx, rx) = mpsc::channel();
    for (w, p) in procs.iter_mut().enumerate() {
        let out = p.child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let r = line
                    .map_err(|e| e.to_string())
                    .and_then(|l| serde_json::from_str::<Report>(&l).map_err(|e| e.to_string()));
                let stop = r.is_err();
                if tx.send((w, r)).is_err() || stop {
                    return;
                }
            }
            let _ = tx.send((w, Err("worker exited".into())));
        });
    }
    drop(tx);
    let mut run = Run {
        procs,
        rx,
        latest: vec![Counters::default(); setup.plans.len()],
        progress: Progress::new(),
    };

    let rss_before = args.server_pid.map(rss_of).transpose()?;
    eprintln!("loadgen: opening {total} connections");
    let connect_cpu_at_start = args.server_pid.map(server_cpu_ticks).transpose()?;
    run.send_all(command::CONNECT)?;
    run.wait_all(
        |r| matches!(r, Report::Connected { .. }),
        |c, p| {
            p.show(&format!(
                "connecting: {} of {total} ready, {} failed",
                c.connected, c.connect_failed
            ))
        },
    )?;
    // The connect phase's server CPU, read before the settle pause below.
    let server_connect_cpu_secs = match (args.server_pid, connect_cpu_at_start) {
        (Some(pid), Some(start)) => {
            Some(server_cpu_ticks(pid)?.saturating_sub(start) as f64 / procfs::ticks_per_sec())
        }
        _ => None,
    };
    let connected = report::sum(&run.latest);
    run.progress.done();
    let mut memory = None;
    if let (Some(pid), Some(before)) = (args.server_pid, rss_before) {
        std::thread::sleep(SETTLE);
        let now = rss_of(pid)?;
        memory = Some(ServerMemory {
            rss_before_bytes: before,
            rss_connected_bytes: now,
            per_connection_bytes: now.saturating_sub(before) as f64
                / connected.connected.max(1) as f64,
            rss_end_bytes: now,
        });
    }

    let mut run_seconds = 0.0;
    let mut delivered_in_run = 0;
    let mut server_cpu_secs = None;
    if setup.runs {
        let secs = match &args.scenario {
            Scenario::IdleHold { hold, .. } => *hold,
            _ => args.duration,
        };
        let owed = |c: &Counters| owed(&setup, c);
        run.send_all(command::RUN)?;
        let started = Instant::now();
        let cpu_at_start = args.server_pid.map(server_cpu_ticks).transpose()?;
        let until = started + Duration::from_secs_f64(secs.max(0.0));
        let mut last = (Instant::now(), 0u64);
        while Instant::now() < until {
            run.poll(until.min(Instant::now() + Duration::from_millis(500)))?;
            let c = report::sum(&run.latest);
            let now = Instant::now();
            if now.duration_since(last.0) >= Duration::from_secs(1) {
                let rate = (c.delivered - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, c.delivered);
                run.progress.show(&format!(
                    "{:>5.1} s: {} delivered ({}/s), {} published, {} connections open",
                    started.elapsed().as_secs_f64(),
                    report::group(c.delivered as f64, 0),
                    report::group(rate, 0),
                    report::group((c.published + c.typing_sent) as f64, 0),
                    c.connected - c.dropped - c.disconnects
                ));
            }
        }
        run.send_all(command::STOP)?;
        // The measured window ends here, for the deliveries and the
        // server's CPU alike.
        run_seconds = started.elapsed().as_secs_f64();
        if let (Some(pid), Some(start)) = (args.server_pid, cpu_at_start) {
            let ticks = server_cpu_ticks(pid)?.saturating_sub(start);
            server_cpu_secs = Some(ticks as f64 / procfs::ticks_per_sec());
        }
        let at_stop = run.wait_stopped()?;
        delivered_in_run = at_stop.delivered + at_stop.typing_received;
        // Drain: wait for what is still on its way.
        let drain_start = Instant::now();
        let mut quiet_since = (Instant::now(), u64::MAX);
        loop {
            run.poll(Instant::now() + Duration::from_millis(200))?;
            let c = report::sum(&run.latest);
            let got = c.delivered + c.typing_received;
            if got >= owed(&c) || drain_start.elapsed() > DRAIN_MAX {
                break;
            }
            if got != quiet_since.1 {
                quiet_since = (Instant::now(), got);
            } else if quiet_since.0.elapsed() > DRAIN_QUIET {
                break;
            }
        }
        run.progress.done();
        if let (Some(pid), Some(m)) = (args.server_pid, memory.as_mut()) {
            m.rss_end_bytes = rss_of(pid)?;
        }
    }

    run.send_all(command::REPORT)?;
    let mut finals = vec![None; run.procs.len()];
    let mut pending = run.procs.len();
    while pending > 0 {
        match run.rx.recv_timeout(WORKER_SILENCE_MAX) {
            Ok((
                w,
                Ok(Report::Final {
                    counters,
                    published,
                    errors,
                    latency,
                }),
            )) => {
                finals[w] = Some((counters, published, errors, latency));
                pending -= 1;
            }
            Ok((_, Ok(_))) => {}
            Ok((w, Err(e))) => {
                if finals[w].is_none() {
                    return Err(format!("worker {w}: {e}"));
                }
            }
            Err(_) => return Err("a worker did not send its report".into()),
        }
    }
    for p in &mut run.procs {
        let _ = p.child.wait();
    }
    let finals: Vec<_> = finals
        .into_iter()
        .map(|f| f.expect("every worker reported"))
        .collect();
    let counters: Vec<Counters> = finals.iter().map(|f| f.0.clone()).collect();
    let c = report::sum(&counters);
    let hist = report::merge_histograms(&finals.iter().map(|f| f.3.clone()).collect::<Vec<_>>())?;
    let mut errors = std::collections::BTreeMap::new();
    for f in &finals {
        for (k, v) in &f.2 {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
    }
    let mut expected = 0u64;
    for f in &finals {
        for (ch, n) in &f.1 {
            expected += n * setup.subscribers.get(*ch as usize).copied().unwrap_or(0);
        }
    }
    // A refused publish owes nothing (fan-out channels have equal subscribers).
    expected = expected
        .saturating_sub(c.publish_refused * setup.subscribers.first().copied().unwrap_or(0));
    expected += c.typing_sent * setup.typing_fanout;
    let delivered = c.delivered + c.typing_received;
    let connect_seconds = c.last_ready_ns.saturating_sub(c.connect_started_ns) as f64 / 1e9;
    let summary = Summary {
        scenario: args.scenario.name().to_string(),
        target: format!("{:?}", args.target).to_lowercase(),
        params: params(args),
        workers: run.procs.len(),
        connections: total as u64,
        connected: c.connected,
        connect_failed: c.connect_failed,
        dropped: c.dropped,
        connects_per_s: if connect_seconds > 0.0 {
            c.connected as f64 / connect_seconds
        } else {
            0.0
        },
        connect_seconds,
        run_seconds,
        published: c.published + c.typing_sent,
        publish_refused: c.publish_refused,
        publishes_per_s: if run_seconds > 0.0 {
            (c.published + c.typing_sent) as f64 / run_seconds
        } else {
            0.0
        },
        expected,
        delivered,
        deliveries_per_s: if run_seconds > 0.0 {
            delivered_in_run as f64 / run_seconds
        } else {
            0.0
        },
        lost: expected.saturating_sub(delivered.saturating_sub(c.reordered)),
        gaps: c.gaps,
        reordered: c.reordered,
        disconnects: c.disconnects,
        presence_received: c.presence_received,
        latency: Latency::of(&hist),
        server_memory: memory,
        loadgen_cpu_us_per_connect: per_connect_us(
            connected.connect_cpu_ns as f64 / 1e9,
            connected.connected,
        ),
        server_cpu_us_per_connect: server_connect_cpu_secs
            .and_then(|secs| per_connect_us(secs, connected.connected)),
        server_cpu_secs,
        server_cpu_util: server_cpu_secs
            .filter(|_| run_seconds > 0.0)
            .map(|cpu| cpu / run_seconds),
        deliveries_per_server_cpu_sec: server_cpu_secs
            .filter(|&cpu| cpu > 0.0)
            .map(|cpu| delivered_in_run as f64 / cpu),
        errors,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary).expect("json"));
    } else {
        summary.print_table();
    }
    Ok(if summary.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Deliveries owed so far, from the live counters.
fn owed(setup: &Setup, c: &Counters) -> u64 {
    let per_event = setup.subscribers.first().copied().unwrap_or(0);
    (c.published - c.publish_refused.min(c.published)) * per_event
        + c.typing_sent * setup.typing_fanout
}

fn params(args: &LoadgenArgs) -> serde_json::Value {
    let mut v = match &args.scenario {
        Scenario::Fanout(f) => serde_json::to_value(f).expect("json"),
        Scenario::ConnectStorm { connections } => serde_json::json!({ "connections": connections }),
        Scenario::IdleHold { connections, hold } => {
            serde_json::json!({ "connections": connections, "hold_s": hold })
        }
        Scenario::TypingStorm {
            channels,
            members,
            interval_ms,
        } => serde_json::json!({
            "channels": channels, "members": members, "interval_ms": interval_ms
        }),
        Scenario::Churn(c) => serde_json::to_value(c).expect("json"),
    };
    v["duration_s"] = args.duration.into();
    v["sources"] = args.sources.into();
    v
}

fn spawn(setup: &Setup) -> Result<Vec<WorkerProc>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut procs = Vec::new();
    for plan in &setup.plans {
        let mut cmd = Command::new(&exe);
        cmd.arg("loadgen-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl in the child before exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // A worker must not outlive the run if the parent dies.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn worker: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let line = serde_json::to_string(plan).expect("json");
        writeln!(stdin, "{line}").map_err(|e| format!("worker plan: {e}"))?;
        procs.push(WorkerProc { child, stdin });
    }
    Ok(procs)
}

struct Run {
    procs: Vec<WorkerProc>,
    rx: mpsc::Receiver<(usize, Result<Report, String>)>,
    latest: Vec<Counters>,
    progress: Progress,
}

impl Run {
    fn send_all(&mut self, cmd: &str) -> Result<(), String> {
        for (w, p) in self.procs.iter_mut().enumerate() {
            writeln!(p.stdin, "{cmd}")
                .and_then(|()| p.stdin.flush())
                .map_err(|e| format!("worker {w}: {e}"))?;
        }
        Ok(())
    }

    /// Takes reports until `deadline`.
    fn poll(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((w, Ok(r))) => {
                    self.take(w, &r);
                }
                Ok((w, Err(e))) => return Err(format!("worker {w}: {e}")),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err("workers are gone".into()),
            }
        }
    }

    fn take(&mut self, w: usize, r: &Report) {
        match r {
            Report::Progress { counters }
            | Report::Connected { counters }
            | Report::Stopped { counters } => self.latest[w] = counters.clone(),
            Report::Final { counters, .. } => self.latest[w] = counters.clone(),
        }
    }

    /// Takes reports until every worker has said it stopped; returns the
    /// sum of their counters at that moment (later progress reports, of
    /// what arrives while draining, do not count).
    fn wait_stopped(&mut self) -> Result<Counters, String> {
        let mut at_stop = vec![None; self.procs.len()];
        let deadline = Instant::now() + WORKER_SILENCE_MAX;
        while at_stop.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((w, Ok(r))) => {
                    if let Report::Stopped { counters } = &r {
                        at_stop[w] = Some(counters.clone());
                    }
                    self.take(w, &r);
                }
                Ok((w, Err(e))) => return Err(format!("worker {w}: {e}")),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err("a worker did not say it stopped".into())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err("workers are gone".into()),
            }
        }
        Ok(report::sum(
            &at_stop.into_iter().flatten().collect::<Vec<_>>(),
        ))
    }

    /// Takes reports until every worker has sent one matching `done`.
    fn wait_all(
        &mut self,
        done: impl Fn(&Report) -> bool,
        show: impl Fn(&Counters, &mut Progress),
    ) -> Result<(), String> {
        let mut finished = vec![false; self.procs.len()];
        let mut last_word = Instant::now();
        while finished.iter().any(|f| !f) {
            match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok((w, Ok(r))) => {
                    last_word = Instant::now();
                    finished[w] |= done(&r);
                    self.take(w, &r);
                }
                Ok((w, Err(e))) => return Err(format!("worker {w}: {e}")),
                Err(mpsc::RecvTimeoutError::Timeout)
                    if last_word.elapsed() > WORKER_SILENCE_MAX =>
                {
                    return Err("workers went silent".into())
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err("workers are gone".into()),
            }
            let c = report::sum(&self.latest);
            show(&c, &mut self.progress);
        }
        Ok(())
    }
}

/// The progress line on stderr: rewritten in place on a terminal, a line
/// every few seconds otherwise.
struct Progress {
    tty: bool,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: Instant::now() - Duration::from_secs(60),
            shown: false,
        }
    }

    fn show(&mut self, line: &str) {
        let every = if self.tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    fn done(&mut self) {
        if self.tty && self.shown {
            eprintln!();
        }
        self.shown = false;
        self.last = Instant::now() - Duration::from_secs(60);
    }
}

/// CPU seconds spent on `connections` handshakes, in µs each; None when
/// nothing connected.
fn per_connect_us(cpu_secs: f64, connections: u64) -> Option<f64> {
    (connections > 0).then(|| cpu_secs * 1e6 / connections as f64)
}

/// The server's CPU ticks so far; an error if it is gone.
fn server_cpu_ticks(pid: u32) -> Result<u64, String> {
    procfs::cpu_ticks(pid).map_err(|e| format!("--server-pid {pid}: {e}"))
}
