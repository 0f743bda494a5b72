use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::catalog::Source;
use crate::position::SequenceNumber;

fn catalog(tables: usize) -> Catalog {
    let mut text = String::new();
    for t in 0..tables {
        text.push_str(&format!(
            "[[events]]\ntype = \"e{t}\"\n[[events.outputs]]\ntable = \"t{t}\"\ncolumns = [ {{ name = \"v\", type = \"text\", pointer = \"/v\" }} ]\n"
        ));
    }
    Catalog::load([Source {
        name: "c.toml".into(),
        text,
    }])
    .unwrap()
}

fn pos(seq: u128) -> Position {
    Position::new(SequenceNumber::from_u128(seq), 0)
}

fn policy() -> BatchPolicy {
    BatchPolicy {
        max_rows: 3,
        max_bytes: 100,
        max_age: Duration::from_secs(1),
        budget_bytes: 250,
    }
}

#[test]
fn cuts_on_rows_and_reports_the_descriptor() {
    let c = catalog(1);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let shard = ShardId::new("s1");
    let t0 = Timestamp::from_millis(1_714_564_800_000);
    let a = b.add(TableId(0), &shard, &pos(10), t0, b"a\n", t0);
    assert!(a.opened && a.flushed.is_empty());
    assert!(!b.add(TableId(0), &shard, &pos(11), t0, b"b\n", t0).opened);
    let out = b
        .add(
            TableId(0),
            &shard,
            &pos(12),
            Timestamp::from_millis(1_714_564_800_500),
            b"c\n",
            t0,
        )
        .flushed;
    assert_eq!(out.len(), 1);
    let batch = &out[0];
    assert_eq!(batch.reason, FlushReason::Rows);
    assert_eq!((batch.rows, &batch.data[..]), (3, &b"a\nb\nc\n"[..]));
    assert_eq!((batch.first.clone(), batch.last.clone()), (pos(10), pos(12)));
    assert_eq!(
        batch.key(crate::batch::Compression::None),
        "loads/t0/2024/05/01/12/s1-10-12.csv"
    );
    let meta = batch.metadata(crate::batch::Compression::None);
    assert_eq!(batch.columns[0], "_event_id");
    assert_eq!(meta.columns_sha256, crate::batch::columns_digest(&batch.columns));
    assert_eq!(meta.column_count as usize, batch.columns.len());
    assert_eq!(meta.csv_bytes, 6);
    assert_eq!(
        batch.schema_key(),
        format!("schemas/t0/{}", meta.columns_sha256) + ".json"
    );
    assert_eq!(meta.max_received_at, Timestamp::from_millis(1_714_564_800_500));
    assert_eq!(b.allocated_bytes(), 0);
}

#[test]
fn checksum_is_sha256_of_the_bytes() {
    let c = catalog(1);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let t0 = Timestamp::from_millis(0);
    b.add(TableId(0), &ShardId::new("s"), &pos(1), t0, b"abc", t0);
    let batch = b.flush_all().remove(0);
    assert_eq!(
        batch.sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn cuts_on_age_at_tick_and_tells_the_next_deadline() {
    let c = catalog(2);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let s = ShardId::new("s");
    b.add(
        TableId(0),
        &s,
        &pos(1),
        Timestamp::from_millis(0),
        b"x\n",
        Timestamp::from_millis(0),
    );
    b.add(
        TableId(1),
        &s,
        &pos(2),
        Timestamp::from_millis(0),
        b"y\n",
        Timestamp::from_millis(400),
    );
    assert_eq!(b.next_deadline(), Some(Timestamp::from_millis(1000)));
    assert!(b.tick(Timestamp::from_millis(999)).is_empty());
    let out = b.tick(Timestamp::from_millis(1000));
    assert_eq!(
        out.iter().map(|b| (b.table_id, b.reason)).collect::<Vec<_>>(),
        [(TableId(0), FlushReason::Age)]
    );
    assert_eq!(b.next_deadline(), Some(Timestamp::from_millis(1400)));
}

#[test]
fn a_row_that_would_overflow_its_buffer_cuts_it_first() {
    let c = catalog(1);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let s = ShardId::new("s");
    let t = Timestamp::from_millis(0);
    b.add(TableId(0), &s, &pos(1), t, &[b'a'; 60], t);
    let out = b.add(TableId(0), &s, &pos(2), t, &[b'b'; 60], t);
    assert_eq!(out.flushed.len(), 1);
    assert_eq!(out.flushed[0].reason, FlushReason::Bytes);
    assert!(out.opened, "the second row opens a new buffer");
}

#[test]
fn an_oversize_row_goes_out_alone() {
    let c = catalog(1);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let t = Timestamp::from_millis(0);
    let out = b.add(TableId(0), &ShardId::new("s"), &pos(1), t, &[b'z'; 101], t);
    assert!(out.opened);
    assert_eq!(out.flushed[0].reason, FlushReason::Oversize);
    assert_eq!(b.allocated_bytes(), 0);
}

#[test]
fn the_budget_flushes_the_oldest_buffer_first() {
    let c = catalog(3);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let s = ShardId::new("s");
    for (i, t) in [0u32, 1, 2].into_iter().enumerate() {
        let now = Timestamp::from_millis(i as i64);
        let out = b.add(TableId(t), &s, &pos(i as u128), now, &[b'r'; 90], now);
        if t < 2 {
            assert!(out.flushed.is_empty());
        } else {
            assert_eq!(out.flushed.len(), 1);
            assert_eq!(
                (out.flushed[0].table_id, out.flushed[0].reason),
                (TableId(0), FlushReason::Budget)
            );
        }
        assert!(b.allocated_bytes() <= 250);
    }
}

#[test]
fn shards_drain_or_discard_alone() {
    let c = catalog(1);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let t = Timestamp::from_millis(0);
    let (s1, s2) = (ShardId::new("s1"), ShardId::new("s2"));
    b.add(TableId(0), &s1, &pos(1), t, b"1\n", t);
    b.add(TableId(0), &s2, &pos(1), t, b"2\n", t);
    let out = b.flush_shard(&s1);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].shard.as_str(), out[0].reason), ("s1", FlushReason::Drain));
    assert_eq!(b.discard_shard(&s2), 1);
    assert_eq!(b.buffered_rows(), 0);
    assert_eq!(b.allocated_bytes(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Add { table: u32, shard: u8, len: usize },
    Tick { advance_ms: u64 },
    FlushShard { shard: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..4, 0u8..3, 1usize..140).prop_map(|(table, shard, len)| Op::Add { table, shard, len }),
        2 => (0u64..1500).prop_map(|advance_ms| Op::Tick { advance_ms }),
        1 => (0u8..3).prop_map(|shard| Op::FlushShard { shard }),
    ]
}

proptest! {
    /// No row lost or duplicated over any sequence of adds, ticks and flushes; the budget is never
    /// exceeded; every batch is one table and one shard, in order, within the limits.
    #[test]
    fn batcher_invariants(ops in prop::collection::vec(op(), 1..200), max_rows in 1usize..6) {
        let c = catalog(4);
        let policy = BatchPolicy { max_rows, max_bytes: 120, max_age: Duration::from_secs(1), budget_bytes: 300 };
        let mut b = Batcher::new(policy, &c).unwrap();
        let mut now = Timestamp::from_millis(0);
        let mut seq = 0u128;
        let mut added: Vec<(u32, u8, u128)> = Vec::new();
        let mut out: Vec<Batch> = Vec::new();
        for op in ops {
            match op {
                Op::Add { table, shard, len } => {
                    seq += 1;
                    // Each row names itself, so the output can be checked row by row.
                    let mut row = format!("{table}:{shard}:{seq}:").into_bytes();
                    row.resize(len.max(row.len() + 1), b'.');
                    *row.last_mut().unwrap() = b'\n';
                    let shard_id = ShardId::new(format!("s{shard}"));
                    out.extend(b.add(TableId(table), &shard_id, &pos(seq), now, &row, now).flushed);
                    added.push((table, shard, seq));
                }
                Op::Tick { advance_ms } => {
                    now = now.saturating_add(Duration::from_millis(advance_ms));
                    out.extend(b.tick(now));
                }
                Op::FlushShard { shard } => out.extend(b.flush_shard(&ShardId::new(format!("s{shard}")))),
            }
            prop_assert!(b.allocated_bytes() <= policy.budget_bytes, "budget exceeded: {}", b.allocated_bytes());
        }
        out.extend(b.flush_all());
        prop_assert_eq!(b.allocated_bytes(), 0);
        let mut seen: Vec<(u32, u8, u128)> = Vec::new();
        for batch in &out {
            prop_assert!(batch.rows as usize <= max_rows);
            prop_assert!(batch.data.len() <= 120 || batch.reason == FlushReason::Oversize);
            prop_assert_eq!(&batch.sha256, &Batch::checksum(&batch.data));
            let rows: Vec<(u32, u8, u128)> = batch.data.split(|b| *b == b'\n').filter(|r| !r.is_empty()).map(|r| {
                let text = std::str::from_utf8(r).unwrap();
                let mut parts = text.split(':');
                (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
            }).collect();
            prop_assert_eq!(rows.len() as u64, batch.rows);
            let one_table_and_shard =
                rows.iter().all(|r| TableId(r.0) == batch.table_id && format!("s{}", r.1) == batch.shard.as_str());
            prop_assert!(one_table_and_shard);
            prop_assert!(rows.windows(2).all(|w| w[0].2 < w[1].2), "rows keep their order");
            prop_assert_eq!(pos(rows[0].2), batch.first.clone());
            prop_assert_eq!(pos(rows[rows.len() - 1].2), batch.last.clone());
            seen.extend(rows);
        }
        seen.sort();
        added.sort();
        prop_assert_eq!(seen, added);
    }
}

/// Found by the simulation (seed 941 of `microbatch-sim`): one event whose exploded array made
/// more rows of a table than `max_rows` was cut into two batches that both ran from that event to
/// that event, so both got the key `…-1001.3-1001.3.csv`; the second write replaced the first
/// and its rows were never loaded. A cut between two rows of one record now shows in the key.
#[test]
fn a_cut_inside_one_record_never_gives_two_batches_one_key() {
    let c = catalog(1);
    let shard = ShardId::new("s");
    let t0 = Timestamp::from_millis(1_714_564_800_000);
    let p = Position::new(SequenceNumber::from_u128(1001), 3);
    let run = || {
        let mut b = Batcher::new(policy(), &c).unwrap();
        let mut out = Vec::new();
        // Four rows of one record: max_rows (3) cuts after the third.
        for row in [b"a\n", b"b\n", b"c\n", b"d\n"] {
            out.extend(b.add(TableId(0), &shard, &p, t0, row, t0).flushed);
        }
        // The next record's rows, then a cut between records.
        out.extend(b.add(TableId(0), &shard, &pos(1002), t0, b"e\n", t0).flushed);
        out.extend(b.flush_all());
        out
    };
    let batches = run();
    let keys: Vec<String> = batches
        .iter()
        .map(|b| b.key(crate::batch::Compression::None))
        .collect();
    assert_eq!(
        keys,
        [
            "loads/t0/2024/05/01/12/s-1001.3-1001.3.csv",
            "loads/t0/2024/05/01/12/s-1001.3r3-1002.csv",
        ]
    );
    assert_eq!(batches[0].data, b"a\nb\nc\n");
    assert_eq!(batches[1].data, b"d\ne\n");
    // A replay of the same records cuts the same way: the same keys, the same bytes.
    let again: Vec<(String, Vec<u8>)> = run()
        .into_iter()
        .map(|b| (b.key(crate::batch::Compression::None), b.data))
        .collect();
    let first: Vec<(String, Vec<u8>)> = keys
        .into_iter()
        .zip(batches.into_iter().map(|b| b.data))
        .collect();
    assert_eq!(again, first);
}

#[test]
fn a_byte_cut_inside_one_record_names_its_rows_too() {
    let c = catalog(1);
    let shard = ShardId::new("s");
    let t0 = Timestamp::from_millis(1_714_564_800_000);
    let mut b = Batcher::new(policy(), &c).unwrap();
    let row = [b'x'; 59];
    let mut keys = Vec::new();
    // Rows of 60 bytes under a 100-byte limit: each row of the record goes out on its own.
    for _ in 0..3 {
        let mut r = row.to_vec();
        r.push(b'\n');
        keys.extend(
            b.add(TableId(0), &shard, &pos(7), t0, &r, t0)
                .flushed
                .iter()
                .map(|b| b.key(crate::batch::Compression::None)),
        );
    }
    keys.extend(
        b.flush_all()
            .iter()
            .map(|b| b.key(crate::batch::Compression::None)),
    );
    assert_eq!(
        keys,
        [
            "loads/t0/2024/05/01/12/s-7-7r0.csv",
            "loads/t0/2024/05/01/12/s-7r1-7r1.csv",
            "loads/t0/2024/05/01/12/s-7r2-7.csv",
        ]
    );
}
