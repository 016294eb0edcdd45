//! Named scenarios, turned into worker plans for a target: who connects,
//! who subscribes to what, who publishes where. For Transponder the users,
//! channels and memberships are provisioned through the admin API first; for
//! NATS and Redis subscriptions are made on the wire.

mod churn;

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::loadgen::admin::{par_map, Admin};
use crate::loadgen::plan::{ConnPlan, Proto, PubPlan, Via, WorkerPlan};
use crate::loadgen::wire::{nats, resp};
use crate::loadgen::worker::conn_plan;
use crate::loadgen::{Scenario, Target, TargetKind};

/// Connections one worker process holds at most (the open-file limit is
/// 20,000 per process on the dev VMs).
pub const CONNS_PER_WORKER_MAX: usize = 15_000;

/// Everything the driver needs to run a scenario.
pub struct Setup {
    pub plans: Vec<WorkerPlan>,
    /// Subscribers per load-generator channel, to know how many deliveries
    /// each published event owes.
    pub subscribers: Vec<u64>,
    /// Typing storm: deliveries each typing event owes.
    pub typing_fanout: u64,
    /// Whether the scenario has a timed run phase after connecting.
    pub runs: bool,
}

/// Knobs shared by every scenario.
pub struct Common {
    pub workers: Option<usize>,
    pub sources: usize,
    pub in_flight: usize,
}

fn sources(n: usize) -> Vec<Ipv4Addr> {
    (0..n.clamp(1, 250))
        .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
        .collect()
}

/// A short random tag so names from two runs never collide.
fn run_tag() -> String {
    format!("lg{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Where one connection goes before it is assigned to a worker.
struct Pending {
    conn: ConnPlan,
    /// Connections with the same affinity land on the same worker.
    affinity: usize,
}

/// Builds the plans. For Transponder this provisions over the admin API.
pub fn build(target: &Target, scenario: &Scenario, common: &Common) -> Result<Setup, String> {
    match scenario {
        Scenario::Fanout(f) => {
            if f.channels == 0 || f.subscribers == 0 || f.publishers == 0 {
                return Err("fanout needs at least 1 channel, subscriber and publisher".into());
            }
            if f.publishers > f.channels {
                return Err(format!(
                    "fanout: {} publishers for {} channels; each channel has one publisher, so \
                     --publishers must not exceed --channels",
                    f.publishers, f.channels
                ));
            }
            if f.via != Via::Connection && target.kind != TargetKind::Transponder {
                return Err(
                    "--via rtm, stream and web are Transponder's; use --via connection".into(),
                );
            }
            fanout(target, f, common)
        }
        Scenario::ConnectStorm { connections } => idle(target, *connections, common, false),
        Scenario::IdleHold { connections, .. } => idle(target, *connections, common, true),
        Scenario::TypingStorm {
            channels,
            members,
            interval_ms,
        } => {
            if target.kind != TargetKind::Transponder {
                return Err(
                    "typing-storm speaks Slack RTM typing; only --target transponder".into(),
                );
            }
            if *members < 2 {
                return Err("typing-storm needs --members of at least 2".into());
            }
            typing(target, *channels, *members, *interval_ms, common)
        }
        Scenario::Churn(c) => churn::build(target, c, common),
    }
}

fn admin(target: &Target) -> Result<&Admin, String> {
    target.admin.as_ref().ok_or_else(|| {
        "--target transponder needs --admin-token (or TRANSPONDER_ADMIN_TOKEN)".into()
    })
}

/// Connection plans for `users` (Transponder: one ticket each) or, for
/// NATS and Redis, one subscriber per entry of `subs`.
fn subscriber_conns(
    target: &Target,
    users: &[String],
    subs: &[Vec<u32>],
) -> Result<Vec<ConnPlan>, String> {
    match target.kind {
        TargetKind::Transponder => {
            let admin = admin(target)?;
            let tickets = par_map(users, |u| admin.ticket(u))?;
            Ok(tickets
                .into_iter()
                .zip(subs)
                .map(|((addr, path), chans)| conn_plan(addr, Proto::Slack { path }, chans.clone()))
                .collect())
        }
        TargetKind::Nats => Ok(subs
            .iter()
            .map(|chans| {
                conn_plan(
                    target.nats.0,
                    Proto::Nats {
                        path: target.nats.1.clone(),
                    },
                    chans.clone(),
                )
            })
            .collect()),
        TargetKind::Redis => Ok(subs
            .iter()
            .map(|chans| conn_plan(target.redis, Proto::Redis, chans.clone()))
            .collect()),
    }
}

fn fanout(
    target: &Target,
    f: &crate::loadgen::FanoutArgs,
    common: &Common,
) -> Result<Setup, String> {
    let (c, s, p) = (f.channels, f.subscribers, f.publishers);
    let tag = run_tag();
    // Channel c belongs to publisher c % p; the publisher's witness is one
    // of the channel's s subscribers, the other s-1 are plain subscribers.
    let owned: Vec<Vec<u32>> = (0..p)
        .map(|pi| (0..c as u32).filter(|ch| *ch as usize % p == pi).collect())
        .collect();
    let plain: Vec<Vec<u32>> = (0..c as u32)
        .flat_map(|ch| std::iter::repeat_n(vec![ch], s - 1))
        .collect();
    let mut names: Vec<String> = (0..c).map(|i| nats::subject(i as u32)).collect();
    let mut users: Vec<String> = Vec::new();
    // `--via web`: publisher pi posts as these users, members of its channels.
    let mut poster_tokens: Vec<Vec<String>> = vec![Vec::new(); p];
    if target.kind == TargetKind::Transponder {
        let admin = admin(target)?;
        eprintln!(
            "loadgen: creating {c} channels and {} users",
            p + plain.len()
        );
        let chan_names: Vec<String> = (0..c).map(|i| format!("{tag}-c{i}")).collect();
        names = par_map(&chan_names, |n| admin.create_channel(n))?;
        let user_names: Vec<String> = (0..p + plain.len())
            .map(|i| format!("{tag}-u{i}"))
            .collect();
        users = par_map(&user_names, |n| admin.create_user(n).map(|u| u.id))?;
        let mut memberships: Vec<(usize, usize)> = Vec::new();
        for (pi, chans) in owned.iter().enumerate() {
            memberships.extend(chans.iter().map(|&ch| (ch as usize, pi)));
        }
        for (j, chans) in plain.iter().enumerate() {
            memberships.push((chans[0] as usize, p + j));
        }
        eprintln!("loadgen: adding {} memberships", memberships.len());
        par_map(&memberships, |&(ch, u)| {
            admin.add_member(&names[ch], &users[u])
        })?;
        if f.via == Via::Web {
            poster_tokens = web_posters(admin, &tag, &owned, &names, f.tokens())?;
        }
    } else if target.kind == TargetKind::Redis {
        names = (0..c).map(|i| resp::channel(i as u32)).collect();
    }
    let all_subs: Vec<Vec<u32>> = owned.iter().chain(plain.iter()).cloned().collect();
    let conns = subscriber_conns(target, &users, &all_subs)?;
    let mut conns = conns.into_iter();
    let witnesses: Vec<ConnPlan> = conns.by_ref().take(p).collect();
    let workers = worker_count(common, p * 2 + plain.len());

    let mut plans = empty_plans(workers, common, f.size, f.rate, f.window(s));
    // Publisher pi, its witness and its publishing connection go to worker
    // pi % workers; plain subscribers are dealt round-robin.
    for (pi, witness) in witnesses.into_iter().enumerate() {
        let plan = &mut plans[pi % workers];
        let w = plan.conns.len();
        plan.conns.push(witness);
        let gateway = plan.conns[w].addr;
        let conn = match (f.via, target.kind) {
            (Via::Rtm, _) => w,
            (Via::Stream, _) => {
                let admin = admin(target)?;
                plan.conns.push(conn_plan(
                    gateway,
                    Proto::PublishStream {
                        token: admin.token().to_string(),
                        transient: !f.persist,
                    },
                    vec![],
                ));
                w + 1
            }
            (Via::Web, _) => {
                plan.conns
                    .push(conn_plan(target.api, Proto::WebApi, vec![]));
                w + 1
            }
            (Via::Connection, kind) => {
                plan.conns.push(publisher_conn(target, kind, f.persist)?);
                w + 1
            }
        };
        plan.publishers.push(PubPlan {
            id: pi as u32,
            conn,
            witness: w,
            via: f.via,
            channels: owned[pi]
                .iter()
                .map(|&ch| (ch, names[ch as usize].clone()))
                .collect(),
            tokens: std::mem::take(&mut poster_tokens[pi]),
        });
    }
    deal(
        &mut plans,
        conns.map(|conn| Pending {
            conn,
            affinity: usize::MAX,
        }),
    );
    Ok(Setup {
        plans,
        subscribers: vec![s as u64; c],
        typing_fanout: 0,
        runs: true,
    })
}

/// `--via web`: `per_publisher` posting users for each publisher, members
/// of its channels (`owned[pi]`) but never connected, so they owe no
/// deliveries; their tokens, per publisher.
fn web_posters(
    admin: &Admin,
    tag: &str,
    owned: &[Vec<u32>],
    channel_ids: &[String],
    per_publisher: usize,
) -> Result<Vec<Vec<String>>, String> {
    let names: Vec<String> = (0..owned.len() * per_publisher)
        .map(|i| format!("{tag}-w{i}"))
        .collect();
    eprintln!("loadgen: creating {} posting users", names.len());
    let posters = par_map(&names, |n| admin.create_user(n))?;
    let memberships: Vec<(u32, &str)> = posters
        .iter()
        .enumerate()
        .flat_map(|(k, u)| {
            owned[k / per_publisher]
                .iter()
                .map(move |&ch| (ch, u.id.as_str()))
        })
        .collect();
    par_map(&memberships, |&(ch, u)| {
        admin.add_member(&channel_ids[ch as usize], u)
    })?;
    Ok(posters
        .chunks(per_publisher)
        .map(|c| c.iter().map(|u| u.token.clone()).collect())
        .collect())
}

/// The connection a publisher sends on when it doesn't use RTM.
fn publisher_conn(target: &Target, kind: TargetKind, persist: bool) -> Result<ConnPlan, String> {
    Ok(match kind {
        TargetKind::Transponder => {
            let admin = admin(target)?;
            conn_plan(
                admin.addr()?,
                Proto::AdminHttp {
                    token: admin.token().to_string(),
                    transient: !persist,
                },
                vec![],
            )
        }
        TargetKind::Nats => conn_plan(
            target.nats.0,
            Proto::Nats {
                path: target.nats.1.clone(),
            },
            vec![],
        ),
        TargetKind::Redis => conn_plan(target.redis, Proto::Redis, vec![]),
    })
}

/// Connect storm and idle hold: `n` connections that subscribe to nothing.
/// Transponder: one user per 10 connections, like people with a few devices.
fn idle(target: &Target, n: usize, common: &Common, runs: bool) -> Result<Setup, String> {
    let mut users = Vec::new();
    if target.kind == TargetKind::Transponder {
        let admin = admin(target)?;
        let tag = run_tag();
        let names: Vec<String> = (0..n.div_ceil(10)).map(|i| format!("{tag}-u{i}")).collect();
        eprintln!("loadgen: creating {} users", names.len());
        let ids = par_map(&names, |n| admin.create_user(n).map(|u| u.id))?;
        users = (0..n).map(|i| ids[i / 10].clone()).collect();
    }
    let conns = subscriber_conns(target, &users, &vec![vec![]; n])?;
    let workers = worker_count(common, n);
    let mut plans = empty_plans(workers, common, 0, 0.0, 0);
    deal(
        &mut plans,
        conns.into_iter().map(|conn| Pending {
            conn,
            affinity: usize::MAX,
        }),
    );
    Ok(Setup {
        plans,
        subscribers: vec![],
        typing_fanout: 0,
        runs,
    })
}

/// Typing storm: `channels` × `members`, everyone typing into their
/// channel; a channel's members share a worker so typing latency can be
/// matched send-to-receive.
fn typing(
    target: &Target,
    channels: usize,
    members: usize,
    interval_ms: u64,
    common: &Common,
) -> Result<Setup, String> {
    let admin = admin(target)?;
    let tag = run_tag();
    let chan_names: Vec<String> = (0..channels).map(|i| format!("{tag}-c{i}")).collect();
    let user_names: Vec<String> = (0..channels * members)
        .map(|i| format!("{tag}-u{i}"))
        .collect();
    eprintln!(
        "loadgen: creating {channels} channels and {} users",
        user_names.len()
    );
    let chan_ids = par_map(&chan_names, |n| admin.create_channel(n))?;
    let users = par_map(&user_names, |n| admin.create_user(n).map(|u| u.id))?;
    let pairs: Vec<(usize, usize)> = (0..users.len()).map(|u| (u / members, u)).collect();
    par_map(&pairs, |&(c, u)| admin.add_member(&chan_ids[c], &users[u]))?;
    let conns = subscriber_conns(target, &users, &vec![vec![]; users.len()])?;
    let workers = worker_count(common, users.len());
    let mut plans = empty_plans(workers, common, 0, 0.0, 0);
    for p in &mut plans {
        p.typing_interval_ms = interval_ms;
    }
    let pending = conns.into_iter().enumerate().map(|(u, mut conn)| {
        let c = u / members;
        conn.types_into = Some(chan_ids[c].clone());
        conn.user = crate::ids::Id::parse(&users[u]).map_or(0, |id| id.raw());
        Pending { conn, affinity: c }
    });
    deal(&mut plans, pending);
    Ok(Setup {
        plans,
        subscribers: vec![],
        typing_fanout: members as u64 - 1,
        runs: true,
    })
}

fn worker_count(common: &Common, conns: usize) -> usize {
    let needed = conns.div_ceil(CONNS_PER_WORKER_MAX).max(1);
    common.workers.unwrap_or(needed).max(needed)
}

fn empty_plans(
    workers: usize,
    common: &Common,
    size: usize,
    rate: f64,
    window: u64,
) -> Vec<WorkerPlan> {
    (0..workers)
        .map(|w| WorkerPlan {
            worker: w,
            sources: sources(common.sources),
            in_flight: common.in_flight,
            conns: Vec::new(),
            publishers: Vec::new(),
            size,
            rate,
            window,
            typing_interval_ms: 0,
            churn: None,
        })
        .collect()
}

/// Deals connections to workers: by affinity when given, else round-robin.
fn deal(plans: &mut [WorkerPlan], conns: impl Iterator<Item = Pending>) {
    let n = plans.len();
    for (i, p) in conns.enumerate() {
        let w = if p.affinity == usize::MAX {
            i % n
        } else {
            p.affinity % n
        };
        plans[w].conns.push(p.conn);
    }
}

/// The NATS websocket URL, split.
pub fn nats_addr(url: &str) -> Result<(SocketAddrV4, String), String> {
    crate::loadgen::admin::split_ws_url(url)
}
