"""moto in server mode, for the test suite, with the harness's fixes for moto's own faults.

Run by scripts/moto/start: `python server.py --port PORT` (127.0.0.1 only). Everything else is
moto 5.2's server as `moto_server` starts it. The fixes are moto bugs that would otherwise look
like microbatch bugs in the integration tests; none of them is worked around in product code,
and adapters/tests/aws_harness.rs proves each one is in place:

1. Kinesis calls run one at a time. moto's shard append is not thread-safe: concurrent
   PutRecords to one shard lose records and hand out duplicate sequence numbers (396 of 20,000
   lost with 4 parallel producers, on this machine).
2. A shard's newest and oldest sequence numbers are read in O(1). moto lists every key of the
   shard for each put, so puts slow with the shard's size.
3. Records are routed to open shards only, by inclusive hash-key ranges, as Kinesis does. moto
   routes to the first shard whose range matches, closed parents included, and treats the range's
   end as exclusive (a record hashed to a shard's EndingHashKey fails with a 500).
4. A split or merge leaves the parents' records where they are, as Kinesis does. moto moves a
   split parent's records into the children (re-put with new sequence numbers) and copies merged
   parents' records into the child: the same records twice, under new sequence numbers.
"""

import argparse
import signal
import sys
import threading
from collections import OrderedDict

from moto.kinesis import models as kinesis
from moto.kinesis.exceptions import InvalidArgumentError
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.utilities.utils import md5_hash
from werkzeug.serving import run_simple

KINESIS_LOCK = threading.Lock()


def serialize_kinesis(app):
    """WSGI middleware: one Kinesis call at a time (fix 1). The response is read inside the lock,
    so a lazily produced body is produced under it too."""

    def middleware(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("Kinesis_"):
            with KINESIS_LOCK:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return middleware


def newest(self):
    """Fix 2: the newest sequence number of the shard, without listing its keys."""
    return next(reversed(self.records)) if self.records else 0


def oldest(self):
    return next(iter(self.records)) if self.records else 0


def shard_for_key(self, partition_key, explicit_hash_key):
    """Fix 3: the open shard whose inclusive range holds the key (moto's checks kept)."""
    if not isinstance(partition_key, str) or len(partition_key) > 256:
        raise InvalidArgumentError("partition_key")
    if explicit_hash_key:
        if not isinstance(explicit_hash_key, str):
            raise InvalidArgumentError("explicit_hash_key")
        key = int(explicit_hash_key)
        if key >= 2**128:
            raise InvalidArgumentError("explicit_hash_key")
    else:
        key = int(md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
            return shard
    return None


def keeping_records(reshard):
    """Fix 4: run moto's split or merge with the parents' records set aside, then put them back,
    so that moto has nothing to move or copy."""

    def wrapper(self, *shard_ids_and_key):
        parents = [self.shards[s] for s in shard_ids_and_key if s in self.shards]
        kept = [(p, p.records) for p in parents]
        for p in parents:
            p.records = OrderedDict()
        try:
            return reshard(self, *shard_ids_and_key)
        finally:
            for p, records in kept:
                p.records = records

    return wrapper


def patch():
    kinesis.Shard.get_max_sequence_number = newest
    kinesis.Shard.get_min_sequence_number = oldest
    kinesis.Stream.get_shard_for_key = shard_for_key
    split, merge = kinesis.Stream.split_shard, kinesis.Stream.merge_shards
    # split_shard(shard, new_starting_hash_key): only the first argument is a shard.
    kinesis.Stream.split_shard = lambda self, shard, key: keeping_records(
        lambda s, *_: split(s, shard, key)
    )(self, shard)
    kinesis.Stream.merge_shards = keeping_records(merge)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    patch()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        "127.0.0.1",
        args.port,
        serialize_kinesis(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
