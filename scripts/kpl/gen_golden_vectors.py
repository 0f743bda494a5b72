#!/usr/bin/env python3
"""Write core/tests/fixtures/kpl/golden.json: KPL aggregated records made by the reference
Python implementation (awslabs `aws_kinesis_agg`), for the Rust codec's interop tests.

Each case holds the user records that went in and the aggregated bytes that came out, so the
Rust tests can check both directions: our decoder reads the reference's bytes back into the
same user records, and our encoder writes the same bytes for the same user records.

Run from anywhere (the output path is found from this file's location):

    pip install -r scripts/kpl/requirements.txt
    python scripts/kpl/gen_golden_vectors.py

The inputs are fixed (no randomness) so regenerating with the pinned packages gives the same
file; the script checks each aggregate with the reference deaggregator before writing it.
"""

import base64
import json
import pathlib
import sys
from importlib.metadata import version

import aws_kinesis_agg
from aws_kinesis_agg.aggregator import AggRecord
from aws_kinesis_agg.deaggregator import deaggregate_records

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTPUT = REPO_ROOT / "core" / "tests" / "fixtures" / "kpl" / "golden.json"

# 2**128 - 1: the top of the Kinesis hash-key space.
MAX_HASH_KEY = str(2**128 - 1)


def rec(partition_key, data, explicit_hash_key=None):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return {"partition_key": partition_key, "explicit_hash_key": explicit_hash_key, "data": data}


def cases():
    yield "single_record", "one user record", [rec("pk-1", b'{"id":1}')]

    yield "repeated_partition_keys", "partition keys repeat, so the key table is deduplicated", [
        rec("user-%d" % (i % 3), '{"seq":%d}' % i) for i in range(10)
    ]

    yield "explicit_hash_keys", "explicit hash keys, repeated and distinct, including 0 and 2^128-1", [
        rec("a", b"one", "0"),
        rec("b", b"two", MAX_HASH_KEY),
        rec("c", b"three", "0"),
        rec("a", b"four", "170141183460469231731687303715884105728"),
    ]

    yield "mixed_explicit_hash_keys", "only some records carry an explicit hash key", [
        rec("a", b"no ehk"),
        rec("b", b"with ehk", "12345"),
        rec("a", b"no ehk again"),
    ]

    yield "empty_data", "user records with empty data blobs", [rec("empty", b""), rec("empty", b""), rec("x", b"")]

    yield "unicode_keys", "non-ASCII partition keys and data", [
        rec("ключ", "значение"),
        rec("键🔑", "数据 ✓"),
        rec("ключ", "ещё"),
        rec("é", b"\xc3\xa9"),
    ]

    yield "binary_data", "every byte value, and data that itself starts with the KPL magic", [
        rec("bin", bytes(range(256))),
        rec("bin", aws_kinesis_agg.MAGIC + b"\x00\x01"),
        rec("bin2", bytes(range(255, -1, -1))),
    ]

    yield "multi_byte_varints", "data and key lengths past 127 and 16383 bytes", [
        rec("k" * 200, b"x" * 128),
        rec("small", b"y" * 16384),
        rec("k" * 200, b"z"),
    ]

    yield "many_distinct_keys", "more than 128 distinct keys, so table indexes need two-byte varints", [
        rec("key-%03d" % i, "event %d" % i, str(i * 1000003) if i % 7 == 0 else None) for i in range(300)
    ]


def aggregate(records):
    agg = AggRecord()
    for r in records:
        if not agg.add_user_record(r["partition_key"], r["data"], r["explicit_hash_key"]):
            raise SystemExit("case does not fit in one aggregate; make it smaller")
    return agg.get_contents()


def check_with_reference_deaggregator(records, pk, agg_bytes):
    """The reference deaggregator must give the user records back, or the vector is useless."""
    out = deaggregate_records(
        [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "sequenceNumber": "1",
                    "approximateArrivalTimestamp": 0,
                    "partitionKey": pk,
                    "data": base64.b64encode(agg_bytes),
                }
            }
        ]
    )
    if len(out) != len(records):
        raise SystemExit("reference deaggregator gave %d records, expected %d" % (len(out), len(records)))
    for i, (got, want) in enumerate(zip(out, records)):
        k = got["kinesis"]
        if k["partitionKey"] != want["partition_key"] or base64.b64decode(k["data"]) != want["data"]:
            raise SystemExit("reference deaggregator disagrees at user record %d" % i)
        if k["subSequenceNumber"] != i:
            raise SystemExit("sub-sequence number %r at user record %d" % (k["subSequenceNumber"], i))


def main():
    out_cases = []
    for name, description, records in cases():
        pk, ehk, agg_bytes = aggregate(records)
        check_with_reference_deaggregator(records, pk, agg_bytes)
        out_cases.append(
            {
                "name": name,
                "description": description,
                "records": [
                    {
                        "partition_key": r["partition_key"],
                        "explicit_hash_key": r["explicit_hash_key"],
                        "data_hex": r["data"].hex(),
                    }
                    for r in records
                ],
                "aggregate_partition_key": pk,
                "aggregate_explicit_hash_key": ehk,
                "aggregate_hex": agg_bytes.hex(),
            }
        )

    packages = {name: version(name) for name in ("aws_kinesis_agg", "six", "protobuf")}
    doc = {
        "generator": "scripts/kpl/gen_golden_vectors.py",
        "reference": "aws_kinesis_agg.aggregator.AggRecord (awslabs/kinesis-aggregation, Python)",
        "python": "%d.%d.%d" % sys.version_info[:3],
        "packages": packages,
        "cases": out_cases,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote %d cases to %s" % (len(out_cases), OUTPUT.relative_to(REPO_ROOT)))


if __name__ == "__main__":
    main()
