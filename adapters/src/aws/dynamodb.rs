//! The lease table on Amazon DynamoDB, in the KCL's schema, so that operators recognise it and
//! KCL tooling reads it.
//!
//! | attribute | type | holds |
//! |---|---|---|
//! | `leaseKey` (hash key) | S | the shard id |
//! | `leaseOwner` | S | the worker holding it; absent when free |
//! | `leaseCounter` | N | bumped by every take, renewal, checkpoint and release |
//! | `checkpoint` | S | a sequence number, `TRIM_HORIZON` or `SHARD_END` |
//! | `checkpointSubSequenceNumber` | N | the user record inside a KPL aggregate |
//! | `ownerSwitchesSinceCheckpoint` | N | takes by another owner since the last checkpoint |
//! | `parentShardId` | SS | the shard's parents (the KCL's name is singular); absent if none |
//! | `childShardIds` | SS | the shard's children, added as their leases are created |
//! | `startingHashKey`, `endingHashKey` | S | the shard's hash-key range |
//!
//! Every write is conditional as the KCL's are: a create on `attribute_not_exists(leaseKey)`;
//! a take, renewal, checkpoint, release and delete on the `leaseCounter` last seen (and, for all
//! but a take, on still being the owner). A write that loses answers `ConditionalCheckFailed`,
//! which maps to [`ErrorKind::Conflict`](microbatch_core::ports::ErrorKind::Conflict). Listings
//! are consistent scans: the coordinator decides on them.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use microbatch_core::kpl::HashKeyRange;
use microbatch_core::ports::{Checkpoint, Lease, LeaseStore, PortError};
use microbatch_core::position::{Position, SequenceNumber, ShardId};

use super::{Aws, port_error};

const SERVICE: &str = "dynamodb";

pub const LEASE_KEY: &str = "leaseKey";
pub const LEASE_OWNER: &str = "leaseOwner";
pub const LEASE_COUNTER: &str = "leaseCounter";
pub const CHECKPOINT: &str = "checkpoint";
pub const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub const PARENTS: &str = "parentShardId";
pub const CHILDREN: &str = "childShardIds";
pub const STARTING_HASH_KEY: &str = "startingHashKey";
pub const ENDING_HASH_KEY: &str = "endingHashKey";

const TRIM_HORIZON: &str = "TRIM_HORIZON";
const SHARD_END: &str = "SHARD_END";

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB lease table.
#[derive(Debug, Clone)]
pub struct DynamoLeases {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn checkpoint_values(c: &Checkpoint) -> (String, u32) {
    match c {
        Checkpoint::TrimHorizon => (TRIM_HORIZON.into(), 0),
        Checkpoint::ShardEnd => (SHARD_END.into(), 0),
        Checkpoint::At(p) => (p.seq.as_str().to_owned(), p.sub),
    }
}

/// The item a new lease is created as: the KCL's attribute names and types.
pub fn kcl_item(lease: &Lease) -> Item {
    let (checkpoint, sub) = checkpoint_values(&lease.checkpoint);
    let mut item = Item::from([
        (LEASE_KEY.into(), s(lease.shard.as_str())),
        (LEASE_COUNTER.into(), n(lease.counter)),
        (CHECKPOINT.into(), s(checkpoint)),
        (CHECKPOINT_SUB.into(), n(sub)),
        (OWNER_SWITCHES.into(), n(0)),
    ]);
    if let Some(owner) = &lease.owner {
        item.insert(LEASE_OWNER.into(), s(owner));
    }
    // A string set cannot be empty: no parents, no attribute (as the KCL writes it).
    if !lease.parents.is_empty() {
        item.insert(
            PARENTS.into(),
            AttributeValue::Ss(lease.parents.iter().map(ToString::to_string).collect()),
        );
    }
    if let Some(range) = lease.hash_range {
        item.insert(STARTING_HASH_KEY.into(), s(range.start.to_string()));
        item.insert(ENDING_HASH_KEY.into(), s(range.end.to_string()));
    }
    item
}

/// A lease read back from its item; an attribute of the wrong type or value is an error naming
/// it (a table another tool wrote, or not a lease table at all).
pub fn lease_of_item(item: &Item) -> Result<Lease, PortError> {
    let key = item.get(LEASE_KEY).and_then(|v| v.as_s().ok()).ok_or_else(|| {
        PortError::invalid(SERVICE, format!("an item without a string {LEASE_KEY}: {item:?}"))
    })?;
    let shard = ShardId::new(key.as_str());
    let invalid =
        |what: &str| PortError::invalid(SERVICE, format!("the lease of {shard} has an invalid {what}"));
    let number = |name: &str| -> Result<u64, PortError> {
        match item.get(name) {
            None => Ok(0),
            Some(v) => v
                .as_n()
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| invalid(name)),
        }
    };
    let owner = match item.get(LEASE_OWNER) {
        None | Some(AttributeValue::Null(_)) => None,
        Some(v) => Some(v.as_s().map_err(|_| invalid(LEASE_OWNER))?.clone()),
    };
    let text = item
        .get(CHECKPOINT)
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| invalid(CHECKPOINT))?;
    let checkpoint = match text.as_str() {
        TRIM_HORIZON => Checkpoint::TrimHorizon,
        SHARD_END => Checkpoint::ShardEnd,
        seq => Checkpoint::At(Position::new(
            SequenceNumber::parse(seq).map_err(|_| invalid(&format!("{CHECKPOINT} {seq:?}")))?,
            u32::try_from(number(CHECKPOINT_SUB)?).map_err(|_| invalid(CHECKPOINT_SUB))?,
        )),
    };
    let mut parents: Vec<ShardId> = match item.get(PARENTS) {
        None => Vec::new(),
        Some(v) => v
            .as_ss()
            .map_err(|_| invalid(PARENTS))?
            .iter()
            .map(ShardId::new)
            .collect(),
    };
    parents.sort();
    let hash_range = match (item.get(STARTING_HASH_KEY), item.get(ENDING_HASH_KEY)) {
        (Some(a), Some(b)) => {
            let (a, b) = (
                a.as_s().map_err(|_| invalid(STARTING_HASH_KEY))?,
                b.as_s().map_err(|_| invalid(ENDING_HASH_KEY))?,
            );
            Some(HashKeyRange::parse(a, b).map_err(|_| invalid("hash-key range"))?)
        }
        _ => None,
    };
    Ok(Lease {
        counter: number(LEASE_COUNTER)?,
        owner,
        checkpoint,
        parents,
        hash_range,
        shard,
    })
}

/// The KCL's lease attributes and their DynamoDB types (its `DynamoDBLeaseSerializer`).
pub const KCL_ATTRIBUTES: &[(&str, &str)] = &[
    (LEASE_KEY, "S"),
    (LEASE_OWNER, "S"),
    (LEASE_COUNTER, "N"),
    (CHECKPOINT, "S"),
    (CHECKPOINT_SUB, "N"),
    (OWNER_SWITCHES, "N"),
    (PARENTS, "SS"),
    (CHILDREN, "SS"),
    (STARTING_HASH_KEY, "S"),
    (ENDING_HASH_KEY, "S"),
];

fn type_of(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::L(_) => "L",
        AttributeValue::M(_) => "M",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "unknown",
    }
}

/// Whether `item` reads as a KCL lease: only KCL attributes, each of the KCL's type, and the
/// ones every lease has. The error names the first attribute that does not.
pub fn check_kcl_item(item: &Item) -> Result<(), String> {
    for (name, value) in item {
        let Some((_, expected)) = KCL_ATTRIBUTES.iter().find(|(n, _)| n == name) else {
            return Err(format!("{name} is not a KCL lease attribute"));
        };
        if type_of(value) != *expected {
            return Err(format!("{name} is {}, the KCL's is {expected}", type_of(value)));
        }
    }
    for required in [LEASE_KEY, LEASE_COUNTER, CHECKPOINT, CHECKPOINT_SUB] {
        if !item.contains_key(required) {
            return Err(format!("{required} is missing"));
        }
    }
    Ok(())
}

impl DynamoLeases {
    pub fn new(aws: &Aws, table: impl Into<String>) -> Self {
        DynamoLeases {
            client: aws.dynamodb(),
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `microbatch check`: the table exists with hash key `leaseKey` (S), and every item in it
    /// reads as a KCL lease.
    pub async fn probe(&self) -> Result<String, String> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("lease table {:?}", self.table), e).to_string())?;
        let table = out
            .table()
            .ok_or_else(|| format!("lease table {:?}: no description", self.table))?;
        let hash = table
            .key_schema()
            .iter()
            .find(|k| k.key_type().as_str() == "HASH")
            .map(|k| k.attribute_name().to_owned());
        let typed = table
            .attribute_definitions()
            .iter()
            .any(|d| d.attribute_name() == LEASE_KEY && d.attribute_type().as_str() == "S");
        if hash.as_deref() != Some(LEASE_KEY) || !typed || table.key_schema().len() != 1 {
            return Err(format!(
                "lease table {:?}: the key must be the hash key {LEASE_KEY} (S) alone, as the KCL's; it is {:?}",
                self.table,
                table.key_schema()
            ));
        }
        let items = self.items().await.map_err(|e| e.to_string())?;
        for item in &items {
            check_kcl_item(item).map_err(|e| format!("lease table {:?}: {e} in {item:?}", self.table))?;
            lease_of_item(item).map_err(|e| e.to_string())?;
        }
        let status = table.table_status().map_or("unknown", |s| s.as_str());
        Ok(format!(
            "dynamodb lease table {:?}: {status}, {} lease(s)",
            self.table,
            items.len()
        ))
    }

    /// Every item of the table as stored, for tests and operators (a consistent scan).
    pub async fn items(&self) -> Result<Vec<Item>, PortError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| {
                    port_error(SERVICE, &format!("cannot scan the lease table {}", self.table), e)
                })?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Applies `update` (an update expression over `:counter`, `:one`, and `values`) if the
    /// item still has the counter of `seen` — and `seen`'s owner, when `owned` — and returns
    /// the lease as it is now.
    async fn conditional(
        &self,
        seen: &Lease,
        owned: bool,
        update: &str,
        values: impl IntoIterator<Item = (&'static str, AttributeValue)>,
    ) -> Result<Lease, PortError> {
        let mut condition = format!("{LEASE_COUNTER} = :counter");
        let mut call = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(seen.shard.as_str()))
            .update_expression(update)
            .expression_attribute_values(":counter", n(seen.counter))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        if owned {
            match &seen.owner {
                Some(owner) => {
                    condition.push_str(&format!(" AND {LEASE_OWNER} = :seen_owner"));
                    call = call.expression_attribute_values(":seen_owner", s(owner));
                }
                None => condition.push_str(&format!(" AND attribute_not_exists({LEASE_OWNER})")),
            }
        }
        for (name, value) in values {
            call = call.expression_attribute_values(name, value);
        }
        let out = call
            .condition_expression(condition)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("cannot update the lease of {}", seen.shard), e))?;
        let item = out.attributes().ok_or_else(|| {
            PortError::unavailable(SERVICE, format!("the update of {} returned no item", seen.shard))
        })?;
        lease_of_item(item)
    }
}

impl LeaseStore for DynamoLeases {
    async fn list(&self) -> Result<Vec<Lease>, PortError> {
        let mut leases = self
            .items()
            .await?
            .iter()
            .map(lease_of_item)
            .collect::<Result<Vec<_>, _>>()?;
        leases.sort_by(|a, b| a.shard.cmp(&b.shard));
        Ok(leases)
    }

    /// Creates the lease, then names the shard among its parents' children (those whose lease
    /// is still there), as the KCL records lineage.
    async fn create(&self, lease: &Lease) -> Result<(), PortError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(kcl_item(lease)))
            .condition_expression(format!("attribute_not_exists({LEASE_KEY})"))
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("cannot create the lease of {}", lease.shard), e))?;
        for parent in &lease.parents {
            // Lineage only: no counter moves, so no holder's conditional write is disturbed.
            let added = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(LEASE_KEY, s(parent.as_str()))
                .update_expression(format!("ADD {CHILDREN} :child"))
                .condition_expression(format!("attribute_exists({LEASE_KEY})"))
                .expression_attribute_values(":child", AttributeValue::Ss(vec![lease.shard.to_string()]))
                .send()
                .await;
            match added {
                Ok(_) => {}
                // The parent finished and was deleted: nothing to record it on.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => {
                    return Err(port_error(
                        SERVICE,
                        &format!("cannot record {} as a child of {parent}", lease.shard),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, PortError> {
        let switches = if lease.owner.as_deref() == Some(owner) {
            0
        } else {
            1
        };
        self.conditional(
            lease,
            false,
            &format!("SET {LEASE_OWNER} = :owner ADD {LEASE_COUNTER} :one, {OWNER_SWITCHES} :switches"),
            [(":owner", s(owner)), (":switches", n(switches))],
        )
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, PortError> {
        self.conditional(lease, true, &format!("ADD {LEASE_COUNTER} :one"), [])
            .await
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Lease, PortError> {
        let (text, sub) = checkpoint_values(checkpoint);
        self.conditional(
            lease,
            true,
            &format!(
                "SET {CHECKPOINT} = :checkpoint, {CHECKPOINT_SUB} = :sub, {OWNER_SWITCHES} = :zero \
                 ADD {LEASE_COUNTER} :one"
            ),
            [(":checkpoint", s(text)), (":sub", n(sub)), (":zero", n(0))],
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), PortError> {
        self.conditional(
            lease,
            true,
            &format!("REMOVE {LEASE_OWNER} ADD {LEASE_COUNTER} :one"),
            [],
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, lease: &Lease) -> Result<(), PortError> {
        let mut call = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(lease.shard.as_str()))
            .expression_attribute_values(":counter", n(lease.counter));
        let condition = match &lease.owner {
            Some(owner) => {
                call = call.expression_attribute_values(":seen_owner", s(owner));
                format!("{LEASE_COUNTER} = :counter AND {LEASE_OWNER} = :seen_owner")
            }
            None => format!("{LEASE_COUNTER} = :counter AND attribute_not_exists({LEASE_OWNER})"),
        };
        call.condition_expression(condition)
            .send()
            .await
            .map_err(|e| port_error(SERVICE, &format!("cannot delete the lease of {}", lease.shard), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_kcl_shaped(item: &Item) {
        if let Err(e) = check_kcl_item(item) {
            panic!("{e}: {item:?}");
        }
    }

    fn lease() -> Lease {
        Lease {
            shard: ShardId::new("shardId-000000000003"),
            owner: Some("worker-a".into()),
            counter: 7,
            checkpoint: Checkpoint::At(Position::new(
                SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap(),
                2,
            )),
            parents: vec![
                ShardId::new("shardId-000000000000"),
                ShardId::new("shardId-000000000001"),
            ],
            hash_range: Some(HashKeyRange::new(0, u128::MAX / 2).unwrap()),
        }
    }

    #[test]
    fn items_have_the_kcl_names_and_types_and_read_back() {
        let lease = lease();
        let item = kcl_item(&lease);
        assert_kcl_shaped(&item);
        assert_eq!(item[CHECKPOINT_SUB], n(2));
        assert_eq!(item[ENDING_HASH_KEY], s((u128::MAX / 2).to_string()));
        assert_eq!(lease_of_item(&item).unwrap(), lease);
        let fresh = Lease {
            owner: None,
            parents: vec![],
            checkpoint: Checkpoint::TrimHorizon,
            hash_range: None,
            ..lease.clone()
        };
        let item = kcl_item(&fresh);
        assert_kcl_shaped(&item);
        assert!(!item.contains_key(LEASE_OWNER) && !item.contains_key(PARENTS));
        assert_eq!(item[CHECKPOINT], s("TRIM_HORIZON"));
        assert_eq!(lease_of_item(&item).unwrap(), fresh);
        let ended = Lease {
            checkpoint: Checkpoint::ShardEnd,
            ..fresh
        };
        assert_eq!(kcl_item(&ended)[CHECKPOINT], s("SHARD_END"));
    }

    #[test]
    fn a_foreign_item_is_refused_naming_the_attribute() {
        let mut item = kcl_item(&lease());
        item.insert(LEASE_COUNTER.into(), s("seven"));
        let err = lease_of_item(&item).unwrap_err();
        assert!(err.message.contains("leaseCounter"), "{err}");
        let mut item = kcl_item(&lease());
        item.insert(CHECKPOINT.into(), s("LATEST"));
        let err = lease_of_item(&item).unwrap_err();
        assert!(err.message.contains("LATEST"), "{err}");
        let err = lease_of_item(&Item::new()).unwrap_err();
        assert!(err.message.contains("leaseKey"), "{err}");
    }
}
