//! Reading a cluster's keys in etcd from a test (feature `cluster`: the
//! etcd client and tokio come with it).

use etcd_client::{Client, GetOptions};
use transponder::cluster::keys::Keys;

use super::etcd::Etcd;

/// The key prefix the test nodes use (the default).
pub const PREFIX: &str = "/transponder/";

/// Runs `f` with a client of `etcd` on a current-thread runtime.
pub fn with_etcd<T>(etcd: &Etcd, f: impl AsyncFnOnce(&mut Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = Client::connect([&etcd.endpoint], None)
            .await
            .expect("connect to etcd");
        f(&mut client).await
    })
}

/// The CHARM leader's node id, if there is one.
pub fn charm_leader(etcd: &Etcd) -> Option<u16> {
    let keys = Keys::new(PREFIX);
    with_etcd(etcd, async |c| {
        let got = c
            .get(keys.election(), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        // The leader is the candidate with the oldest key.
        got.kvs()
            .iter()
            .min_by_key(|kv| kv.create_revision())
            .and_then(|kv| kv.value_str().ok()?.parse().ok())
    })
}
