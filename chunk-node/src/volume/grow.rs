//! Growing a live volume (ModifyVolume). The size changes under the
//! volume's exclusive gate, so between two writes and never inside a freeze:
//! a freeze taken before covers the old size, one taken after the new. The
//! file is extended first (the new space is a hole: zeros), then change
//! tracking marks the new blocks changed since every earlier freeze, then
//! the size is published. Blocks past a restore's manifest are not in its
//! hydration map, so they count as local and a hydrating volume grows too.
//! NBD connections opened before keep the size they were given.

use crate::error::ChunkNodeError;
use crate::volume::host::VolumeHost;
use std::sync::atomic::Ordering;

impl VolumeHost {
    /// Grows volume `id` to `size` bytes; the same size is a retry, a smaller
    /// one is refused. Returns the volume's size.
    pub async fn grow(&self, id: &str, size: u64) -> Result<u64, ChunkNodeError> {
        let vol = self.get(id).ok_or_else(|| ChunkNodeError::VolumeNotFound(id.into()))?;
        let guard = vol.gate.clone().write_owned().await;
        let current = vol.size();
        if size == current {
            return Ok(current);
        }
        if size < current {
            return Err(ChunkNodeError::InvalidArgument("a volume cannot shrink"));
        }
        tokio::task::spawn_blocking(move || {
            let _held = guard;
            if vol.deleted.load(Ordering::Acquire) {
                return Err(ChunkNodeError::VolumeNotFound(vol.id.clone()));
            }
            let io = |e| ChunkNodeError::io("grow", &vol.path, e);
            vol.file.set_len(size).map_err(io)?;
            crate::disk::files::fsync_dir(vol.path.parent().unwrap_or(&vol.path))?;
            vol.tracking().grow(size);
            vol.size.store(size, Ordering::Release);
            tracing::info!(volume = %vol.id, from = current, to = size, "volume grown");
            Ok(size)
        })
        .await?
    }
}
