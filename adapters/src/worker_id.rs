//! A consumer worker's stable name in the lease table.
//!
//! A worker takes back at once the leases held under its own name (the lease coordinator), so a
//! process restarted after a crash goes on within a second instead of waiting the failover time
//! for leases its earlier life left — but only if it comes back under the same name. Unless the
//! configuration names it (`consumer.worker_id`), the name is kept in the data directory:
//! `worker-<n>.id`, each slot held by one running process through an advisory lock on
//! `worker-<n>.lock`, so two consumers sharing a data directory never share a name, and a
//! process killed with `kill -9` leaves its slot (the kernel drops the lock) to its successor.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context as _;

/// How many processes may share one data directory.
const SLOTS: u32 = 64;

/// A worker name, with the lock that keeps it this process's while it lives.
#[derive(Debug)]
pub struct WorkerId {
    pub id: String,
    _lock: Option<File>,
}

impl WorkerId {
    /// A name given by the configuration (nothing to lock: the operator keeps it unique).
    pub fn configured(id: &str) -> Self {
        WorkerId {
            id: id.to_owned(),
            _lock: None,
        }
    }

    /// The name of the first free slot of `data_dir`, created on first use.
    pub fn claim(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
        for slot in 0..SLOTS {
            let lock_path = data_dir.join(format!("worker-{slot}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("cannot open {}", lock_path.display()))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
                }
            }
            let id_path = data_dir.join(format!("worker-{slot}.id"));
            let id = match File::open(&id_path) {
                Ok(mut f) => {
                    let mut id = String::new();
                    f.read_to_string(&mut id)
                        .with_context(|| format!("cannot read {}", id_path.display()))?;
                    id.trim().to_owned()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", id_path.display())),
            };
            let id = if id.is_empty() {
                let id = new_id(slot);
                let mut f =
                    File::create(&id_path).with_context(|| format!("cannot write {}", id_path.display()))?;
                f.write_all(id.as_bytes())
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write {}", id_path.display()))?;
                id
            } else {
                id
            };
            return Ok(WorkerId {
                id,
                _lock: Some(lock),
            });
        }
        anyhow::bail!(
            "{} processes already run on {}; name this worker with consumer.worker_id",
            SLOTS,
            data_dir.display()
        )
    }
}

/// `<host>-<slot>-<8 random hex>`: readable in the lease table, unique across machines.
fn new_id(slot: u32) -> String {
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{slot}-{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_survives_its_process_and_is_never_shared() {
        let dir = tempfile::tempdir().unwrap();
        let first = WorkerId::claim(dir.path()).unwrap();
        let second = WorkerId::claim(dir.path()).unwrap();
        assert_ne!(first.id, second.id, "two live processes, two names");
        let name = first.id.clone();
        drop(first);
        let again = WorkerId::claim(dir.path()).unwrap();
        assert_eq!(again.id, name, "the slot and its name come back");
    }
}
