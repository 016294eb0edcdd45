//! Memory per channel on a channel server, in-process: a conversation with
//! one member, one subscribed gateway shard and no history — the channel
//! server's entry for it, built with the server's own code. Prints figures;
//! asserts nothing. `benches/channel_density.rs` measures the whole server
//! (warm-up from the store, the gateway side, the users' channel lists).
//!
//! `cargo bench --bench channel_memory` (CHANNELS=n to choose the count,
//! default 4,000,000).

use std::time::Instant;

use transponder::channel::ChannelServer;
use transponder::ids::Id;
use transponder::shard::message::NewChannel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn main() {
    let n: usize = std::env::var("CHANNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000);
    let mut rng = rand::rng();
    let member = Id::parse("U0000000001").unwrap();
    // Ids generated up front so the measurement holds only server state.
    let ids: Vec<Id> = (0..n).map(|_| Id::generate('C', &mut rng)).collect();

    // Routing state only: the channel server entry with one gateway bit.
    // Each reading follows a purge of what the allocator holds freed (the
    // tables' earlier sizes), as the server does every few seconds.
    let before = rss_bytes();
    let mut routing = ChannelServer::new(64);
    for id in &ids {
        routing.subscribe_gateway(Id::generate('U', &mut rng), 1);
        let _ = id;
    }
    transponder::heap::release_now();
    let routing_bytes = (rss_bytes() - before) as f64 / n as f64;
    drop(routing);
    transponder::heap::release_now();

    // A real conversation: record + member + gateway bit.
    let before = rss_bytes();
    let t = Instant::now();
    let mut cs = ChannelServer::new(64);
    for id in &ids {
        cs.create(NewChannel {
            id: *id,
            private: false,
        })
        .unwrap();
        cs.set_member(*id, member, true).unwrap();
        assert!(cs.subscribe_gateway(*id, 1));
    }
    let secs = t.elapsed().as_secs_f64();
    transponder::heap::release_now();
    let full_bytes = (rss_bytes() - before) as f64 / n as f64;
    assert_eq!(cs.len(), n);

    println!("channel memory ({} channels, {})", n, chrono_free_date());
    println!(
        "  {:<58} {:>8.1} B/channel",
        "routing entry (user channel, 1 gateway shard, no history)", routing_bytes
    );
    println!(
        "  {:<58} {:>8.1} B/channel",
        "conversation (record, 1 member, 1 gateway)", full_bytes
    );
    println!(
        "  {:<58} {:>8.0} channels/s",
        "creation rate (single thread)",
        n as f64 / secs
    );
    println!(
        "  projected for 16M conversations: {:.2} GiB",
        full_bytes * 16e6 / (1u64 << 30) as f64
    );
}

fn chrono_free_date() -> String {
    let out = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
