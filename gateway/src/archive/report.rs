//! Progress of one piece of tier work, and the steps it records.

use crate::ctx::Ctx;
use cairn_core::command::{Command, CommandOutput, TierOp};
use cairn_core::tiering::SnapshotTiering;
use cairn_core::SnapshotId;

/// The lease on tier work; renewed with every progress report.
pub const LEASE_MS: u64 = 60_000;

/// Reports progress of one piece of work, renewing its lease.
pub struct Reporter<'a> {
    ctx: &'a Ctx,
    id: &'a SnapshotId,
}

impl<'a> Reporter<'a> {
    pub fn new(ctx: &'a Ctx, id: &'a SnapshotId) -> Self {
        Reporter { ctx, id }
    }

    pub async fn progress(&self, progress: u8) {
        let gateway = self.ctx.gateway_id().to_string();
        for op in [
            TierOp::Claim { gateway: gateway.clone(), lease_ms: LEASE_MS },
            TierOp::Progress { gateway, progress },
        ] {
            let _ = step(self.ctx, self.id, op).await;
        }
    }
}

/// One step of snapshot `id`'s tier work, as this gateway.
pub async fn step(
    ctx: &Ctx,
    id: &SnapshotId,
    op: TierOp,
) -> Result<Option<SnapshotTiering>, String> {
    let cmd = Command::Tier { id: id.clone(), now_ms: ctx.now_ms(), op };
    match ctx.meta.write(&cmd).await.map_err(|e| e.to_string())? {
        Ok(CommandOutput::Tiering(t)) => Ok(Some(t)),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
