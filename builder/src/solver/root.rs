//! The root filesystem a file step (`COPY`, `ADD`, `WORKDIR`, and the source side of
//! `COPY --from`) works in.
//!
//! Where overlayfs works, the parents' snapshots are mounted on the host as an overlay with a
//! fresh upper directory, as BuildKit mounts snapshots for its file operations: whatever the
//! step writes lands in the upper directory, which is the step's diff, and the commit renames
//! it into the snapshot store. Nothing of the parents is copied, and the new files are written
//! once (a copy of the parents would be written, then walked, then written again as the new
//! snapshot). Elsewhere, or without parents, or if the mount fails, the step works in a copy of
//! the parents, whose diff gives the same layer.

use std::fs;
use std::path::{Path, PathBuf};

use berth_layerstore::digest::Digest;
use berth_layerstore::snapshot::{Active, Rootfs, SnapshotStore, overlay_supported};
use berth_runner::sandbox::OverlayMount;

/// A step's writable root. The mount (if any) is declared first so that it is dropped, and
/// unmounted, before the active snapshot under it is removed.
pub(super) struct StepRoot {
    mount: Option<OverlayMount>,
    active: Active,
    path: PathBuf,
}

impl StepRoot {
    /// A root over `parents` (bottom first), named `key` in the snapshot store.
    pub(super) fn prepare(
        snapshots: &SnapshotStore,
        key: &str,
        parents: &[Digest],
    ) -> Result<StepRoot, String> {
        if !parents.is_empty() && overlay_supported() {
            let active = snapshots.prepare(key, parents).map_err(|e| e.to_string())?;
            if let Rootfs::Overlay {
                lowerdirs,
                upper,
                work,
            } = active.rootfs().clone()
            {
                let target = active.dir().join("merged");
                fs::create_dir(&target)
                    .map_err(|e| format!("creating {}: {e}", target.display()))?;
                match OverlayMount::mount(&lowerdirs, &upper, &work, &target) {
                    Ok(mount) => {
                        return Ok(StepRoot {
                            mount: Some(mount),
                            active,
                            path: target,
                        });
                    }
                    // Too many parents for one mount(2) call, for one: copy them instead.
                    Err(err) => {
                        tracing::debug!(%err, key, "overlay mount failed; copying the parents");
                        active.abort().map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        let active = snapshots
            .prepare_copy(key, parents)
            .map_err(|e| e.to_string())?;
        let path = active
            .copy_dir()
            .ok_or("a copy snapshot without a directory")?
            .to_path_buf();
        Ok(StepRoot {
            mount: None,
            active,
            path,
        })
    }

    /// The root, as the step sees `/`.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// A private directory beside the root (same filesystem), removed with it, for files the
    /// step stages before placing them (downloads, here-documents).
    pub(super) fn scratch(&self) -> &Path {
        self.active.dir()
    }

    /// Unmounts the root and hands back the active snapshot, ready to commit.
    pub(super) fn finish(mut self) -> Result<Active, String> {
        if let Some(mount) = self.mount.take() {
            mount.unmount().map_err(|e| e.to_string())?;
        }
        Ok(self.active)
    }

    /// Unmounts and removes the root without committing anything.
    pub(super) fn abort(self) -> Result<(), String> {
        self.finish()?.abort().map_err(|e| e.to_string())
    }
}
