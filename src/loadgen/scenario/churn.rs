//! The churn scenario's plans: `connections` users (one connection each)
//! dealt round-robin over `channels` channels, each watching the presence
//! of the next `watch` users in the ring, plus a few Web API connections
//! per worker that fetch the `rtm.connect` URLs of its reconnects. The first
//! connect uses an admin ticket like every scenario; what comes after is
//! the worker's (`loadgen::worker::churn`).

use super::{
    admin, deal, empty_plans, run_tag, subscriber_conns, worker_count, Common, Pending, Setup,
};
use crate::loadgen::admin::par_map;
use crate::loadgen::plan::{ChurnConn, ChurnPlan, Proto};
use crate::loadgen::worker::conn_plan;
use crate::loadgen::{ChurnArgs, Target, TargetKind};

/// Web API connections per worker for the reconnects' `rtm.connect`s.
const API_CONNS_PER_WORKER: usize = 8;

pub(super) fn build(target: &Target, a: &ChurnArgs, common: &Common) -> Result<Setup, String> {
    if target.kind != TargetKind::Transponder {
        return Err("churn speaks Slack RTM and the Web API; only --target transponder".into());
    }
    if a.connections < 2 || a.channels == 0 {
        return Err("churn needs --connections of at least 2 and --channels of at least 1".into());
    }
    if a.watch >= a.connections || a.watch > 500 {
        return Err(format!(
            "churn: --watch {} must be below --connections ({}) and at most 500",
            a.watch, a.connections
        ));
    }
    let admin = admin(target)?;
    let tag = run_tag();
    let chan_names: Vec<String> = (0..a.channels).map(|i| format!("{tag}-c{i}")).collect();
    let user_names: Vec<String> = (0..a.connections).map(|i| format!("{tag}-u{i}")).collect();
    eprintln!(
        "loadgen: creating {} channels and {} users",
        a.channels, a.connections
    );
    let chan_ids = par_map(&chan_names, |n| admin.create_channel(n))?;
    let users = par_map(&user_names, |n| admin.create_user(n))?;
    let pairs: Vec<(usize, usize)> = (0..users.len()).map(|u| (u % a.channels, u)).collect();
    par_map(&pairs, |&(c, u)| {
        admin.add_member(&chan_ids[c], &users[u].id)
    })?;
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let conns = subscriber_conns(target, &ids, &vec![vec![]; users.len()])?;
    let n = users.len();
    let pending = conns.into_iter().enumerate().map(|(u, mut conn)| {
        conn.churn = Some(ChurnConn {
            token: users[u].token.clone(),
            watch: (1..=a.watch).map(|k| ids[(u + k) % n].clone()).collect(),
            batch: u % 2 == 1,
        });
        Pending {
            conn,
            affinity: usize::MAX,
        }
    });
    // Plus API_CONNS_PER_WORKER per worker: far below the open-file limit
    // that CONNS_PER_WORKER_MAX keeps clear of.
    let workers = worker_count(common, n);
    let mut plans = empty_plans(workers, common, 0, 0.0, 0);
    deal(&mut plans, pending);
    for p in &mut plans {
        let first = p.conns.len();
        p.conns.extend(
            (0..API_CONNS_PER_WORKER).map(|_| conn_plan(target.api, Proto::WebApi, vec![])),
        );
        p.churn = Some(ChurnPlan {
            api_conns: (first..p.conns.len()).collect(),
            hold_ms: a.hold_ms,
            pause_ms: a.pause_ms,
        });
    }
    Ok(Setup {
        plans,
        subscribers: vec![],
        typing_fanout: 0,
        runs: true,
    })
}
