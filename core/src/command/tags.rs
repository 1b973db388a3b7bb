//! Tags on volumes and snapshots: adding, overwriting and deleting them.
//!
//! Invariants it keeps: a tag command names only existing resources, and
//! otherwise changes nothing at all (every resource is checked before the
//! first is edited); deleting every tag keeps the reserved `aws:` ones.

use super::messages::{CommandOutput, CommandResult, MetaError};
use super::store::Records;
use crate::ids::{SnapshotId, VolumeId};
use std::collections::BTreeMap;

impl Records {
    pub(super) fn create_tags(
        &mut self,
        resources: Vec<String>,
        tags: Vec<(String, String)>,
    ) -> CommandResult {
        self.check_resources(&resources)?;
        for r in &resources {
            self.edit_tags(r, |t| {
                for (k, v) in &tags {
                    t.insert(k.clone(), v.clone());
                }
            });
        }
        Ok(CommandOutput::Done)
    }

    pub(super) fn delete_tags(
        &mut self,
        resources: Vec<String>,
        tags: Vec<(String, Option<String>)>,
    ) -> CommandResult {
        self.check_resources(&resources)?;
        for r in &resources {
            self.edit_tags(r, |t| {
                if tags.is_empty() {
                    t.retain(|k, _| k.starts_with("aws:"));
                }
                for (k, v) in &tags {
                    match v {
                        Some(v) if t.get(k) != Some(v) => {}
                        _ => {
                            t.remove(k);
                        }
                    }
                }
            });
        }
        Ok(CommandOutput::Done)
    }

    fn check_resources(&self, resources: &[String]) -> Result<(), MetaError> {
        for r in resources {
            if let Some(v) = VolumeId::parse(r) {
                self.volume(&v)?;
            } else if let Some(s) = SnapshotId::parse(r) {
                self.snapshot(&s)?;
            } else {
                return Err(MetaError::InvalidId(r.clone()));
            }
        }
        Ok(())
    }

    fn edit_tags(&mut self, resource: &str, f: impl FnOnce(&mut BTreeMap<String, String>)) {
        if let Some(id) = VolumeId::parse(resource) {
            if let Some(mut v) = self.volumes.get(&id).cloned() {
                f(&mut v.tags);
                self.put_volume(v);
            }
        } else if let Some(id) = SnapshotId::parse(resource) {
            if let Some(mut s) = self.snapshots.get(&id).cloned() {
                f(&mut s.tags);
                self.put_snapshot(s);
            }
        }
    }
}
