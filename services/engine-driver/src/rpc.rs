//! `optimism_syncStatus` served from what this EL applied, so tools that expect an op-node
//! (op-batcher, op-proposer, dashboards) can point at the light CL.
//!
//! `unsafe_l2`/`cross_unsafe_l2` = the EL's latest block, `safe_l2`/`local_safe_l2`/
//! `pending_safe_l2` = its safe block, `finalized_l2` = its finalized block (read from the EL
//! at request time, so the answer matches the EL), with L1 origins and sequence numbers from
//! the targets that named those blocks; `current_l1` = the mirrored `current_l1`. The L1 heads
//! (`head_l1`, `safe_l1`, `finalized_l1`) are not known to the driver and are reported unset.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jsonrpsee::RpcModule;
use jsonrpsee::server::{Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use lightcl_core::status::{L1BlockRef, L2BlockRef, SyncStatus};
use tokio::sync::watch;

use crate::driver::RefCache;
use crate::el::{EngineClient, FullHeads};

struct Ctx {
    el: EngineClient,
    refs: Arc<Mutex<RefCache>>,
    current_l1: watch::Receiver<Option<L1BlockRef>>,
}

/// Starts the JSON-RPC server on `addr`; returns the bound address and its handle.
pub async fn serve_sync_status(
    addr: SocketAddr,
    el: EngineClient,
    refs: Arc<Mutex<RefCache>>,
    current_l1: watch::Receiver<Option<L1BlockRef>>,
) -> Result<(SocketAddr, ServerHandle), std::io::Error> {
    let server = Server::builder().build(addr).await?;
    let bound = server.local_addr()?;
    let mut m = RpcModule::new(Ctx { el, refs, current_l1 });
    m.register_async_method("optimism_syncStatus", |_params, ctx, _| async move {
        let heads = ctx.el.heads_full().await.map_err(|e| {
            ErrorObjectOwned::owned(
                -32000,
                format!("execution client unavailable: {e}"),
                None::<()>,
            )
        })?;
        let status = sync_status(&heads, &ctx.refs, *ctx.current_l1.borrow());
        serde_json::to_value(&status)
            .map_err(|e| ErrorObjectOwned::owned(-32603, e.to_string(), None::<()>))
    })
    .map_err(std::io::Error::other)?;
    tracing::info!(addr = %bound, "optimism_syncStatus JSON-RPC listening");
    Ok((bound, server.start(m)))
}

/// The status for the EL's full heads.
fn sync_status(
    heads: &FullHeads,
    refs: &Mutex<RefCache>,
    current_l1: Option<L1BlockRef>,
) -> SyncStatus {
    let refs = refs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let enrich = |b: Option<L1BlockRef>| -> L2BlockRef {
        let Some(b) = b else { return L2BlockRef::default() };
        let known = refs.get(&b.hash);
        L2BlockRef {
            hash: b.hash,
            number: b.number,
            parent_hash: b.parent_hash,
            timestamp: b.timestamp,
            l1origin: known.map(|k| k.l1origin).unwrap_or_default(),
            sequence_number: known.map_or(0, |k| k.sequence_number),
        }
    };
    let unsafe_l2 = enrich(Some(heads.latest));
    let safe_l2 = enrich(heads.safe);
    let finalized_l2 = enrich(heads.finalized);
    SyncStatus {
        current_l1: current_l1.unwrap_or_default(),
        current_l1_finalized: None,
        head_l1: L1BlockRef::default(),
        safe_l1: L1BlockRef::default(),
        finalized_l1: L1BlockRef::default(),
        unsafe_l2,
        safe_l2,
        finalized_l2,
        pending_safe_l2: Some(safe_l2),
        cross_unsafe_l2: Some(unsafe_l2),
        local_safe_l2: Some(safe_l2),
    }
}
