//! Leases: which shards a consumer worker holds, in the manner of the KCL's lease taker,
//! renewer and cleaner.
//!
//! A [`Lease`] is one row of the lease table (KCL schema, see the DynamoDB and SQLite adapters).
//! The consumer's lease loop lists the table and the stream's shards every so often and hands
//! both to [`LeaseCoordinator::plan`] with the time; the [`LeasePlan`] says which leases to
//! create (new shards), renew (held ones), take (free, expired, this worker's own from before a
//! restart, or one stolen to balance), delete (finished and no longer needed) and which are lost.
//!
//! A lease is expired when its counter has not moved for the failover time *as this worker
//! observed it*: no clock is compared across machines, so skewed clocks cannot steal leases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::kpl::HashKeyRange;
use crate::ports::ShardInfo;
use crate::position::{Position, ShardId};
use crate::time::Timestamp;

/// How far a shard has been processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// Nothing yet: start at the oldest record (KCL `TRIM_HORIZON`).
    TrimHorizon,
    /// Every record up to and including this one is done.
    At(Position),
    /// The shard is closed and fully done (KCL `SHARD_END`); its children may start.
    ShardEnd,
}

/// A shard lease, as the KCL's lease table keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub shard: ShardId,
    pub owner: Option<String>,
    /// Bumped on every renewal and take; a lease whose counter has not moved for the failover
    /// time is expired.
    pub counter: u64,
    pub checkpoint: Checkpoint,
    pub parents: Vec<ShardId>,
    /// The shard's hash-key range, when the lease was created from a listing (KCL
    /// `startingHashKey` / `endingHashKey`): kept for operators and KCL tools, not decided on.
    pub hash_range: Option<HashKeyRange>,
}

impl Lease {
    /// The lease a new shard starts with: nobody's, from the oldest record.
    pub fn new_for(shard: &ShardInfo) -> Self {
        Lease {
            shard: shard.id.clone(),
            owner: None,
            counter: 0,
            checkpoint: Checkpoint::TrimHorizon,
            parents: shard
                .parent
                .iter()
                .chain(shard.adjacent_parent.iter())
                .cloned()
                .collect(),
            hash_range: Some(shard.range),
        }
    }
}

/// What to do with the lease table now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeasePlan {
    /// Shards without a lease: create one each (a conditional create; another worker may win),
    /// in this order — parents first — and no further after a failure.
    pub create: Vec<Lease>,
    /// Held by this worker: renew them (bump the counter).
    pub renew: Vec<Lease>,
    /// Take them: this worker's own from before a restart first, then free or expired ones up to
    /// this worker's share, then at most one stolen from the busiest worker.
    pub take: Vec<Lease>,
    /// This worker thought it held them, but the table says otherwise: stop processing, drop
    /// their buffers (another worker re-reads from the checkpoint).
    pub lost: Vec<ShardId>,
    /// Finished leases nobody needs: a parent whose children are all being read, or a shard
    /// gone from the stream.
    pub delete: Vec<Lease>,
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

    /// The shards held now, sorted.
    pub fn held(&self) -> Vec<ShardId> {
        let mut held: Vec<ShardId> = self.held.iter().cloned().collect();
        held.sort();
        held
    }

    /// Records that a take, renewal or checkpoint succeeded (or that the lease was given up or
    /// finished when `held` is false).
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

    /// Forgets a deleted lease.
    pub fn forget(&mut self, shard: &ShardId) {
        self.held.remove(shard);
        self.observed.remove(shard);
    }

    /// Plans the next round from the lease table (read consistently) and, when the stream could
    /// be listed, its shards.
    pub fn plan(&mut self, leases: &[Lease], shards: Option<&[ShardInfo]>, now: Timestamp) -> LeasePlan {
        let mut plan = LeasePlan::default();
        let by_shard: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.shard, l)).collect();
        if let Some(shards) = shards {
            // Parents before children: a child whose parents have no lease is read at once (their
            // leases are deleted only once they are finished), so the lease loop creates in this
            // order and stops at the first failure.
            let mut create: Vec<&ShardInfo> = shards
                .iter()
                .filter(|s| !by_shard.contains_key(&s.id) && !finished_ancestor(s, shards, &by_shard))
                .collect();
            create.sort_by_key(|s| (ancestors(s, shards), s.id.clone()));
            plan.create = create.into_iter().map(Lease::new_for).collect();
            plan.delete = deletable(leases, shards);
        }
        let mut own = Vec::new();
        let mut free = Vec::new();
        // Live leases per other owner, for the share and for stealing.
        let mut others: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
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
            let parents_done = lease.parents.iter().all(|p| {
                by_shard
                    .get(p)
                    .is_none_or(|pl| pl.checkpoint == Checkpoint::ShardEnd)
            });
            match &lease.owner {
                // This worker's own lease that it does not hold: it held it before a restart
                // (a stable worker id), or lost track of it after a write whose answer was lost.
                // Nobody else may take it before the failover time, so waiting would only stall.
                Some(_) if mine => {
                    if parents_done {
                        own.push(lease.clone());
                    }
                }
                Some(o) if !stale => others.entry(o.as_str()).or_default().push(lease),
                _ => {
                    if parents_done {
                        free.push(lease.clone());
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
        let workers = others.len() + 1;
        let share = active.div_ceil(workers).min(self.max_leases);
        let mut room = share.saturating_sub(plan.renew.len());
        own.sort_by(|a, b| a.shard.cmp(&b.shard));
        // Its own come back whole (up to the limit), whatever the share: stealing evens out later.
        let own_taken = own.len().min(self.max_leases.saturating_sub(plan.renew.len()));
        room = room.saturating_sub(own_taken);
        plan.take.extend(own.into_iter().take(own_taken));
        // Free leases before expired ones of others, then by shard id: deterministic.
        free.sort_by(|a, b| (a.owner.is_some(), &a.shard).cmp(&(b.owner.is_some(), &b.shard)));
        let free_count = free.len();
        plan.take.extend(free.into_iter().take(room));
        room = room.saturating_sub(free_count);
        // Still under the share with nothing free: steal one lease from the busiest worker, if it
        // holds more than the share (one at a time, as the KCL does, so two workers converge
        // instead of trading leases back and forth).
        if room > 0
            && let Some((_, victims)) = others
                .iter()
                .filter(|(_, held)| held.len() > share)
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            && let Some(victim) = victims.iter().max_by(|a, b| a.shard.cmp(&b.shard))
            && victim.parents.iter().all(|p| {
                by_shard
                    .get(p)
                    .is_none_or(|pl| pl.checkpoint == Checkpoint::ShardEnd)
            })
        {
            plan.take.push((*victim).clone());
        }
        plan.lost.sort();
        plan
    }
}

/// How many ancestors `shard` has in the listing.
fn ancestors(shard: &ShardInfo, shards: &[ShardInfo]) -> usize {
    let mut depth = 0;
    let mut frontier: Vec<&ShardId> = shard.parent.iter().chain(shard.adjacent_parent.iter()).collect();
    let mut seen = HashSet::new();
    while let Some(id) = frontier.pop() {
        if !seen.insert(id) {
            continue;
        }
        depth += 1;
        if let Some(p) = shards.iter().find(|s| &s.id == id) {
            frontier.extend(p.parent.iter().chain(p.adjacent_parent.iter()));
        }
    }
    depth
}

/// Whether `shard` is a closed shard some descendant of which has a lease: it was finished and
/// its lease deleted, and must not get a new one (its records would be read again).
fn finished_ancestor(shard: &ShardInfo, shards: &[ShardInfo], leases: &HashMap<&ShardId, &Lease>) -> bool {
    if !shard.closed {
        return false;
    }
    let mut frontier = vec![&shard.id];
    let mut seen = HashSet::new();
    while let Some(id) = frontier.pop() {
        for child in shards
            .iter()
            .filter(|s| s.parent.as_ref() == Some(id) || s.adjacent_parent.as_ref() == Some(id))
        {
            if leases.contains_key(&child.id) {
                return true;
            }
            if seen.insert(&child.id) {
                frontier.push(&child.id);
            }
        }
    }
    false
}

/// Finished leases to delete: a parent at `SHARD_END` once every child shard has a lease that
/// has moved past `TRIM_HORIZON` (its children no longer need it to tell that it ended), or a
/// finished shard the stream no longer lists (trimmed after its retention).
fn deletable(leases: &[Lease], shards: &[ShardInfo]) -> Vec<Lease> {
    let by_shard: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.shard, l)).collect();
    leases
        .iter()
        .filter(|lease| lease.checkpoint == Checkpoint::ShardEnd)
        .filter(|lease| {
            if !shards.iter().any(|s| s.id == lease.shard) {
                return true;
            }
            let children: Vec<&ShardInfo> = shards
                .iter()
                .filter(|s| {
                    s.parent.as_ref() == Some(&lease.shard)
                        || s.adjacent_parent.as_ref() == Some(&lease.shard)
                })
                .collect();
            !children.is_empty()
                && children.iter().all(|c| {
                    by_shard
                        .get(&c.id)
                        .is_some_and(|cl| cl.checkpoint != Checkpoint::TrimHorizon)
                })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::SequenceNumber;

    fn lease(shard: &str, owner: Option<&str>, counter: u64) -> Lease {
        Lease {
            shard: ShardId::new(shard),
            owner: owner.map(str::to_owned),
            counter,
            checkpoint: Checkpoint::TrimHorizon,
            parents: vec![],
            hash_range: None,
        }
    }

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> ShardInfo {
        ShardInfo {
            id: ShardId::new(id),
            parent: parent.map(ShardId::new),
            adjacent_parent: None,
            range: HashKeyRange::FULL,
            closed,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    fn names(leases: &[Lease]) -> Vec<&str> {
        leases.iter().map(|l| l.shard.as_str()).collect()
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
        let plan = c.plan(&leases, None, t(0));
        assert_eq!(names(&plan.take), ["a", "b"]);
        assert!(plan.renew.is_empty() && plan.lost.is_empty());
    }

    #[test]
    fn a_lease_whose_counter_stands_still_for_the_failover_time_expires() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let leases = [lease("a", Some("dead"), 7)];
        assert!(c.plan(&leases, None, t(0)).take.is_empty());
        assert!(c.plan(&leases, None, t(9)).take.is_empty());
        assert_eq!(c.plan(&leases, None, t(10)).take.len(), 1);
        // A renewal by its owner resets the observation.
        assert!(
            c.plan(&[lease("a", Some("dead"), 8)], None, t(11))
                .take
                .is_empty()
        );
    }

    /// Found by the kill -9 test: a restarted process got a new worker id and waited the failover
    /// time for the leases its previous life held. With a stable id it takes them back at once.
    #[test]
    fn a_restarted_worker_takes_back_its_own_leases_at_once() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let leases = [lease("a", Some("me"), 40), lease("b", Some("other"), 3)];
        let plan = c.plan(&leases, None, t(0));
        assert_eq!(names(&plan.take), ["a"], "without waiting for the failover time");
        // Another worker's fresh lease is not taken, and nothing is stolen at an even split.
        assert!(plan.lost.is_empty());
    }

    #[test]
    fn held_leases_are_renewed_and_lost_ones_reported() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        c.confirm(&lease("a", Some("me"), 1), true, t(0));
        c.confirm(&lease("b", Some("me"), 1), true, t(0));
        let plan = c.plan(
            &[lease("a", Some("me"), 1), lease("b", Some("thief"), 2)],
            None,
            t(1),
        );
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
        assert!(
            c.plan(&[parent.clone(), child.clone()], None, t(0))
                .take
                .is_empty()
        );
        let ended = Lease {
            checkpoint: Checkpoint::ShardEnd,
            ..parent
        };
        let plan = c.plan(&[ended, child], None, t(1));
        assert_eq!(names(&plan.take), ["c"]);
    }

    #[test]
    fn never_takes_more_than_the_limit() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 1);
        let plan = c.plan(&[lease("a", None, 0), lease("b", None, 0)], None, t(0));
        assert_eq!(plan.take.len(), 1);
    }

    #[test]
    fn a_worker_under_its_share_steals_one_lease_from_the_busiest() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let leases = [
            lease("a", Some("busy"), 1),
            lease("b", Some("busy"), 1),
            lease("c", Some("busy"), 1),
            lease("d", Some("busy"), 1),
        ];
        let plan = c.plan(&leases, None, t(0));
        assert_eq!(names(&plan.take), ["d"], "one at a time, though the share is two");
        // At an even split nobody steals.
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        c.confirm(&lease("a", Some("me"), 1), true, t(0));
        let even = [lease("a", Some("me"), 1), lease("b", Some("other"), 1)];
        assert!(c.plan(&even, None, t(0)).take.is_empty());
    }

    #[test]
    fn new_shards_get_leases() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let shards = [shard("a", None, false), shard("b", Some("a"), false)];
        let plan = c.plan(&[lease("a", None, 0)], Some(&shards), t(0));
        assert_eq!(names(&plan.create), ["b"]);
        assert_eq!(plan.create[0].parents, [ShardId::new("a")]);
        assert!(
            c.plan(&[], None, t(0)).create.is_empty(),
            "no listing, nothing planned"
        );
    }

    #[test]
    fn finished_parents_are_deleted_once_their_children_are_read() {
        let mut c = LeaseCoordinator::new("me", Duration::from_secs(10), 10);
        let shards = [
            shard("p", None, true),
            shard("c1", Some("p"), false),
            shard("c2", Some("p"), false),
        ];
        let ended = Lease {
            checkpoint: Checkpoint::ShardEnd,
            ..lease("p", None, 9)
        };
        let started = Lease {
            checkpoint: Checkpoint::At(Position::new(SequenceNumber::from_u128(5), 0)),
            ..lease("c1", Some("x"), 2)
        };
        let fresh = lease("c2", None, 0);
        let plan = c.plan(&[ended.clone(), started.clone(), fresh], Some(&shards), t(0));
        assert!(
            plan.delete.is_empty(),
            "c2 has not started: it still needs to see p ended"
        );
        let c2 = Lease {
            checkpoint: Checkpoint::ShardEnd,
            ..lease("c2", None, 4)
        };
        let plan = c.plan(&[ended.clone(), started.clone(), c2], Some(&shards), t(1));
        assert_eq!(names(&plan.delete), ["p"]);
        // A shard gone from the stream (trimmed) goes too, once finished, and only then.
        let gone = [shard("c1", Some("p"), false)];
        let unfinished = lease("q", Some("x"), 1);
        let plan = c.plan(&[ended, started.clone(), unfinished], Some(&gone), t(2));
        assert_eq!(names(&plan.delete), ["p"]);
        // Once deleted, a finished parent still listed gets no new lease: its children have one.
        let plan = c.plan(&[started], Some(&shards), t(3));
        assert_eq!(names(&plan.create), ["c2"]);
    }
}
