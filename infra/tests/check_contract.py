#!/usr/bin/env python3
"""Check that infra/ reads the metrics the binary emits and sets the env vars the docs list.

The alarms and the dashboard must read exactly the metric names the code emits
(docs/METRICS.md), and every MICROBATCH_* variable the tasks get must be listed
in docs/DEPLOY.md so the Rust side can match it. This script fails when:

  * an entry of local.emf (modules/monitoring/metrics.tf) names a metric or a
    Service that docs/METRICS.md does not list as an EMF metric of that service;
  * the monitoring module uses local.emf.<key> for a key that is not defined;
  * the literal namespace "Microbatch" appears outside metrics.tf (a metric
    read that bypasses the checked list);
  * an AWS metric in local.aws_metrics is not one of the AWS metrics the
    alarms are documented to read;
  * a MICROBATCH_* name set in infra/ is missing from docs/DEPLOY.md, or one of
    the names the services must get is not set.

Usage: check_contract.py --infra DIR --metrics METRICS.md --deploy DEPLOY.md [--exclude DIR]...
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import hcl2

# AWS's own metrics the alarms may read (namespace, name).
AWS_METRICS = {
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    ("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds"),
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
}

# The environment the services module must give the tasks (the list).
REQUIRED_ENV = {
    "MICROBATCH_STREAM_NAME",
    "MICROBATCH_BUCKET",
    "MICROBATCH_QUEUE_URL",
    "MICROBATCH_DLQ_URL",
    "MICROBATCH_LEASE_TABLE",
    "MICROBATCH_WAREHOUSE_URL",
    "MICROBATCH_REDSHIFT_IAM_ROLE",
    "MICROBATCH_WEBHOOK_SECRETS",
    "MICROBATCH_LOG_FORMAT",
    "MICROBATCH_METRICS",
}

ENV_NAME = re.compile(r"\bMICROBATCH_[A-Z0-9_]+\b")


def unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def documented_metrics(path: Path) -> dict[str, set[str]]:
    """EMF metric name -> services, from the table in docs/METRICS.md."""
    metrics: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not line.lstrip().startswith("|"):
            continue
        names = re.findall(r"`([A-Za-z0-9]+)`", cells[3])
        if not names:
            continue
        services = set(re.findall(r"\b(produce|consume|import)\b", cells[4]))
        metrics.setdefault(names[0], set()).update(services)
    return metrics


def monitoring_locals(module: Path) -> tuple[dict, dict, str | None]:
    emf, aws, namespace = {}, {}, None
    for file in sorted(module.glob("*.tf")):
        doc = hcl2.loads(file.read_text(encoding="utf-8"))
        for block in doc.get("locals", []):
            if "emf" in block:
                emf = block["emf"]
            if "aws_metrics" in block:
                aws = block["aws_metrics"]
            if "namespace" in block:
                namespace = unquote(block["namespace"])
    return emf, aws, namespace


def tf_files(root: Path, excludes: list[Path]) -> list[Path]:
    out = []
    for f in sorted(root.rglob("*.tf")):
        r = f.resolve()
        if ".terraform" in r.parts or any(r.is_relative_to(e) for e in excludes):
            continue
        out.append(f)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--infra", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--deploy", type=Path, required=True)
    ap.add_argument("--exclude", type=Path, action="append", default=[])
    args = ap.parse_args(argv)
    excludes = [e.resolve() for e in args.exclude]
    errors: list[str] = []

    documented = documented_metrics(args.metrics)
    if not documented:
        errors.append(f"{args.metrics}: found no EMF metric table")

    monitoring = args.infra / "modules" / "monitoring"
    metrics_tf = monitoring / "metrics.tf"
    if not metrics_tf.is_file():
        errors.append(f"{metrics_tf}: missing (the list of metrics the alarms read)")
        emf, aws, namespace = {}, {}, None
    else:
        emf, aws, namespace = monitoring_locals(monitoring)
    if namespace != "Microbatch":
        errors.append(f"{metrics_tf}: local.namespace is {namespace!r}, docs/METRICS.md says Microbatch")
    if not emf:
        errors.append(f"{metrics_tf}: local.emf is empty or missing")

    for key, entry in emf.items():
        name, service = unquote(entry.get("name")), unquote(entry.get("service"))
        if name not in documented:
            errors.append(f"{metrics_tf}: local.emf.{key}: metric {name!r} is not an EMF metric in {args.metrics}")
        elif service not in documented[name]:
            errors.append(
                f"{metrics_tf}: local.emf.{key}: {name} is emitted by {sorted(documented[name])} per {args.metrics}, not {service!r}"
            )
    for key, entry in aws.items():
        pair = (unquote(entry.get("namespace")), unquote(entry.get("name")))
        if pair not in AWS_METRICS:
            errors.append(f"{metrics_tf}: local.aws_metrics.{key}: {pair} is not an AWS metric the alarms are meant to read")

    for f in tf_files(monitoring, excludes):
        text = f.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            for key in re.findall(r"\blocal\.emf\.([A-Za-z0-9_]+)", line):
                if key not in emf:
                    errors.append(f"{f}:{n}: local.emf.{key} is not defined in {metrics_tf.name}")
            for key in re.findall(r"\blocal\.aws_metrics\.([A-Za-z0-9_]+)", line):
                if key not in aws:
                    errors.append(f"{f}:{n}: local.aws_metrics.{key} is not defined in {metrics_tf.name}")

    env_used: dict[str, str] = {}
    env_in_services: set[str] = set()
    services = (args.infra / "modules" / "services").resolve()
    for f in tf_files(args.infra, excludes):
        text = f.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if '"Microbatch"' in line and f.resolve() != metrics_tf.resolve():
                errors.append(f"{f}:{n}: the namespace \"Microbatch\" is read outside {metrics_tf.name}; use local.namespace and local.emf")
            for name in ENV_NAME.findall(line):
                env_used.setdefault(name, f"{f}:{n}")
                if f.resolve().is_relative_to(services):
                    env_in_services.add(name)

    deploy_text = args.deploy.read_text(encoding="utf-8") if args.deploy.is_file() else ""
    if not deploy_text:
        errors.append(f"{args.deploy}: missing")
    documented_env = set(ENV_NAME.findall(deploy_text))
    for name, where in sorted(env_used.items()):
        if name not in documented_env:
            errors.append(f"{where}: {name} is passed to the tasks but not listed in {args.deploy}")
    for name in sorted(REQUIRED_ENV - env_in_services):
        errors.append(f"{services}: {name} is never set for the tasks")

    for e in errors:
        print(e)
    print(
        f"check_contract: {len(emf)} EMF metric(s), {len(aws)} AWS metric(s), {len(env_used)} MICROBATCH_* variable(s): "
        + ("OK" if not errors else f"{len(errors)} problem(s)")
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
