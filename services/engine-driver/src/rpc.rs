//! `optimism_syncStatus` served from what this EL applied, so tools that expect an op-node
//! (op-batcher, op-proposer, dashboards) can point at the light CL.
//!
//! `unsafe_l2`/`cross_unsafe_l2` = the EL's latest block, `safe_l2`/`local_safe_l2`/
//! `pending_safe_l2` = its safe block, `finalized_l2` = its finalized block (read from the EL
//! at request time, so the answer matches the EL), each with the L1 origin and sequence number
//! of the target that named that block. `current_l1` = the mirrored `current_l1` (the newest
//! target's, once the EL's safe head reached that target's safe), and `head_l1`, `safe_l1`,
//! `finalized_l1` (and the deprecated `current_l1_finalized` = `finalized_l1`) = the
//! validator's view of its L1 carried by that same target. Both survive a restart: they are
//! kept in this driver's KV key and read back at start-up ([`crate::served`]).
//!
//! Never a half-filled status: op-batcher starts from a status with an empty `head_l1`,
//! `safe_l2` or `unsafe_l2` as "not in sync", and from a `current_l1` that went back as "the
//! sequencer restarted"; an unset L1 origin would make it restart its channels from a zero L1
//! block. So until every one of those is known (no target yet, the EL's head is a block no
//! target named — e.g. during its initial sync — or targets from a validator without the L1
//! view), the method answers JSON-RPC error -32000 ("sync status not ready: …"), which
//! op-batcher and op-proposer log and retry.

use std::net::SocketAddr;

use jsonrpsee::RpcModule;
use jsonrpsee::server::{Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use lightcl_core::status::{L1BlockRef, L2BlockRef, SyncStatus};

use crate::el::{EngineClient, FullHeads};
use crate::served::Served;

struct Ctx {
    el: EngineClient,
    served: Served,
}

/// Starts the JSON-RPC server on `addr`; returns the bound address and its handle.
pub async fn serve_sync_status(
    addr: SocketAddr,
    el: EngineClient,
    served: Served,
) -> Result<(SocketAddr, ServerHandle), std::io::Error> {
    let server = Server::builder().build(addr).await?;
    let bound = server.local_addr()?;
    let mut m = RpcModule::new(Ctx { el, served });
    m.register_async_method("optimism_syncStatus", |_params, ctx, _| async move {
        let heads = ctx.el.heads_full().await.map_err(|e| {
            ErrorObjectOwned::owned(
                -32000,
                format!("execution client unavailable: {e}"),
                None::<()>,
            )
        })?;
        let status = sync_status(&heads, &ctx.served).map_err(|why| {
            ErrorObjectOwned::owned(-32000, format!("sync status not ready: {why}"), None::<()>)
        })?;
        serde_json::to_value(&status)
            .map_err(|e| ErrorObjectOwned::owned(-32603, e.to_string(), None::<()>))
    })
    .map_err(std::io::Error::other)?;
    tracing::info!(addr = %bound, "optimism_syncStatus JSON-RPC listening");
    Ok((bound, server.start(m)))
}

/// The status for the EL's full heads, or why there is none yet.
pub fn sync_status(heads: &FullHeads, served: &Served) -> Result<SyncStatus, String> {
    let Some(l1) = served.l1() else {
        return Err("no target applied yet (current_l1 unknown)".to_owned());
    };
    if l1.current.is_unset() {
        return Err("current_l1 unknown: no target's safe head applied yet".to_owned());
    }
    if l1.view.head.is_unset() {
        return Err("head_l1 unknown: the applied target carries no L1 view (a validator \
                    without head_l1/safe_l1/finalized_l1)"
            .to_owned());
    }
    let refs = served.refs();
    let full = |what: &str, b: L1BlockRef| -> Result<L2BlockRef, String> {
        match refs.get(&b.hash).filter(|k| k.number == b.number) {
            Some(k) if !k.l1origin.is_unset() => Ok(k),
            _ => Err(format!(
                "the EL's {what} block #{} {} was named by no target seen (L1 origin unknown)",
                b.number, b.hash
            )),
        }
    };
    let unsafe_l2 = full("latest", heads.latest)?;
    let safe_l2 =
        full("safe", heads.safe.ok_or_else(|| "the EL has no safe block yet".to_owned())?)?;
    let finalized_l2 = match heads.finalized {
        Some(f) => full("finalized", f)?,
        None => L2BlockRef::default(),
    };
    let finalized_l1 = l1.view.finalized;
    Ok(SyncStatus {
        current_l1: l1.current,
        current_l1_finalized: (!finalized_l1.is_unset()).then_some(finalized_l1),
        head_l1: l1.view.head,
        safe_l1: l1.view.safe,
        finalized_l1,
        unsafe_l2,
        safe_l2,
        finalized_l2,
        pending_safe_l2: Some(safe_l2),
        cross_unsafe_l2: Some(unsafe_l2),
        local_safe_l2: Some(safe_l2),
    })
}

#[cfg(test)]
pub(crate) mod tests;
