//! The lease coordinator: which shards this consumer worker should hold, in the manner of the
//! KCL's lease taker and renewer.
//!
//! The consumer lists the lease table every so often and hands the leases to [`LeaseCoordinator::plan`]
//! with the time; the plan says which leases to renew, which to take and which are lost. A lease
//! is expired when its counter has not moved for the failover time *as this worker observed it*:
//! no clock is compared across machines, so skewed clocks cannot steal leases.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::ports::{Checkpoint, Lease};
use crate::position::ShardId;
use crate::time::Timestamp;

/// What to do with the lease table now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeasePlan {
    /// Held by this worker: renew them (bump the counter).
    pub renew: Vec<Lease>,
    /// Free or expired, and this worker is under its share: take them.
    pub take: Vec<Lease>,
    /// This worker thought it held them, but the table says otherwise: stop processing, drop
    /// their buffers (another worker re-reads from the checkpoint).
    pub lost: Vec<ShardId>,
}

/// Lease bookkeeping for one worker.
#[derive(Debug)]
pub struct LeaseCoordinator {
    owner: String,
    failover: Duration,
    max_leases: usize,
    /// Counter of each lease when it was last seen to change, and when.
    observed: HashMap<ShardId, (u64, Timestamp)>,
    held: HashSet<ShardId>,
}

impl LeaseCoordinator {
    pub fn new(owner: impl Into<String>, failover: Duration, max_leases: usize) -> Self {
        LeaseCoordinator {
            owner: owner.into(),
            failover,
            max_leases: max_leases.max(1),
            observed: HashMap::new(),
            held: HashSet::new(),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn holds(&self, shard: &ShardId) -> bool {
        self.held.contains(shard)
    }

    /// Records that a take or renewal succeeded (or that the lease was given up when `held` is
    /// false).
    pub fn confirm(&mut self, lease: &Lease, held: bool, now: Timestamp) {
        self.observed.insert(lease.shard.clone(), (lease.counter, now));
        if held {
            self.held.insert(lease.shard.clone());
        } else {
            self.held.remove(&lease.shard);
        }
    }

    /// Marks a lease as lost (a conditional write failed).
    pub fn lose(&mut self, shard: &ShardId) {
        self.held.remove(shard);
    }

    pub fn plan(&mut self, leases: &[Lease], now: Timestamp) -> LeasePlan {
        let mut plan = LeasePlan::default();
        let by_shard: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.shard, l)).collect();
        let mut expired = Vec::new();
        let mut owners: HashSet<&str> = HashSet::from([self.owner.as_str()]);
        for lease in leases {
            let seen = self
                .observed
                .entry(lease.shard.clone())
                .or_insert((lease.counter, now));
            if seen.0 != lease.counter {
                *seen = (lease.counter, now);
            }
            let stale = now.saturating_since(seen.1) >= self.failover;
            let mine = lease.owner.as_deref() == Some(self.owner.as_str());
            if mine && self.held.contains(&lease.shard) {
                if lease.checkpoint != Checkpoint::ShardEnd {
                    plan.renew.push(lease.clone());
                }
                continue;
            }
            if self.held.contains(&lease.shard) {
                plan.lost.push(lease.shard.clone());
            }
            if lease.checkpoint == Checkpoint::ShardEnd {
                continue;
            }
            match &lease.owner {
                Some(o) if !stale => {
                    owners.insert(o.as_str());
                }
                _ => {
                    let parents_done = lease.parents.iter().all(|p| {
                        by_shard
                            .get(p)
                            .is_none_or(|pl| pl.checkpoint == Checkpoint::ShardEnd)
                    });
                    if parents_done {
                        expired.push(lease.clone());
                    }
                }
            }
        }
        for shard in &plan.lost {
            self.held.remove(shard);
        }
        for shard in self.held.iter() {
            if !by_shard.contains_key(shard) {
                plan.lost.push(shard.clone());
            }
        }
        self.held.retain(|s| by_shard.contains_key(s));
        let active = leases
            .iter()
            .filter(|l| l.checkpoint != Checkpoint::ShardEnd)
            .count();
        let share = active.div_ceil(owners.len()).min(self.max_leases);
        let room = share.saturating_sub(plan.renew.len());
        // Free leases before expired ones of others, then by shard id: deterministic.
        expired.sort_by(|a, b| (a.owner.is_some(), &a.shard).cmp(&(b.owner.is_some(), &b.shard)));
        plan.take = expired.into_iter().take(room).collect();
        plan.lost.sort();
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(shard: &str, owner: Option<&str>, counter: u64) -> Lease {
        Lease {
            shard: ShardId::new(shard),
            owner: owner.map(str::to_owned),
            counter,
            checkpoint: Checkpoint::TrimHorizon,
            parents: vec![],
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn takes_free_leases_up_to_a_fair_share() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let leases = [
            lease("a", None, 0),
            lease("b", None, 0),
            lease("c", Some("other"), 5),
            lease("d", Some("other"), 5),
        ];
        let plan = c.plan(&leases, t(0));
        assert_eq!(
            plan.take.iter().map(|l| l.shard.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(plan.renew.is_empty() && plan.lost.is_empty());
    }

    #[test]
    fn a_lease_whose_counter_stands_still_for_the_failover_time_expires() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let leases = [lease("a", Some("dead"), 7)];
        assert!(c.plan(&leases, t(0)).take.is_empty());
        assert!(c.plan(&leases, t(9)).take.is_empty());
        assert_eq!(c.plan(&leases, t(10)).take.len(), 1);
        // A renewal by its owner resets the observation.
        assert!(c.plan(&[lease("a", Some("dead"), 8)], t(11)).take.is_empty());
    }

    #[test]
    fn held_leases_are_renewed_and_lost_ones_reported() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        c.confirm(&lease("a", Some("me"), 1), true, t(0));
        c.confirm(&lease("b", Some("me"), 1), true, t(0));
        let plan = c.plan(&[lease("a", Some("me"), 1), lease("b", Some("thief"), 2)], t(1));
        assert_eq!(plan.renew.len(), 1);
        assert_eq!(plan.lost, [ShardId::new("b")]);
        assert!(!c.holds(&ShardId::new("b")));
    }

    #[test]
    fn children_wait_for_their_parents_to_end() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let parent = lease("p", Some("other"), 3);
        let mut child = lease("c", None, 0);
        child.parents = vec![ShardId::new("p")];
        assert!(c.plan(&[parent.clone(), child.clone()], t(0)).take.is_empty());
        let ended = Lease {
            checkpoint: Checkpoint::ShardEnd,
            ..parent
        };
        let plan = c.plan(&[ended, child], t(1));
        assert_eq!(
            plan.take.iter().map(|l| l.shard.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
    }

    #[test]
    fn never_takes_more_than_the_limit() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 1);
        let plan = c.plan(&[lease("a", None, 0), lease("b", None, 0)], t(0));
        assert_eq!(plan.take.len(), 1);
    }
}
