//! Drain requests from the admin API (`POST`/`DELETE /v1/drain?region=`):
//! the control thread writes or deletes `drain/<region>`, and every node
//! (this one too) acts on the key when its watch sees it (`follow.rs`), as
//! it would on a key an operator wrote with etcdctl. The admin API never
//! calls etcd itself: its shard would wait on the network.

use super::Ctx;
use crate::cluster::region::{drain_value, DrainCommand, DrainReply};
use crate::limits;

/// Serves the node's drain requests, one at a time, for as long as the
/// node lives.
pub async fn serve(ctx: &Ctx) {
    let Some(requests) = ctx.shared.drains.clone() else {
        return std::future::pending().await;
    };
    while let Ok((command, reply)) = requests.recv_async().await {
        answer(ctx, command, reply).await;
    }
    // Every sender is gone (the node is leaving): nothing more to write.
    std::future::pending::<()>().await
}

async fn answer(ctx: &Ctx, command: DrainCommand, reply: DrainReply) {
    let mut etcd = ctx.etcd();
    let write = async {
        match &command {
            DrainCommand::Start { region, to, rate } => etcd
                .put(ctx.keys.drain(region), drain_value(to, *rate), None)
                .await
                .map(drop),
            DrainCommand::Stop { region } => {
                etcd.delete(ctx.keys.drain(region), None).await.map(drop)
            }
        }
    };
    let result = match tokio::time::timeout(limits::CLUSTER_REQUEST_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("etcd: {e}")),
        Err(_) => Err("etcd did not answer in time".to_string()),
    };
    match &result {
        Ok(()) => tracing::info!(node = ctx.id, ?command, "drain request written"),
        Err(e) => tracing::warn!(node = ctx.id, ?command, "drain request not written: {e}"),
    }
    let _ = reply.send(result);
}
