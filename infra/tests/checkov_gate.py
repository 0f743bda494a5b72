#!/usr/bin/env python3
"""Gate checkov's JSON report against the reviewed skip-list.

Usage: checkov_gate.py REPORT.json SKIPS.yaml [FRAMEWORK]

Only the skip-list entries of FRAMEWORK (an entry's `framework`, default
terraform) are used, so a dockerfile scan does not call the terraform entries stale.

Fails (exit 1) on a failed check that the skip-list does not accept for that
resource, on a skip-list entry that matches no finding (stale), and on any
parsing error checkov reports. Prints one line per finding and a summary.
"""

from __future__ import annotations

import fnmatch
import json
import sys

import yaml


def load_reports(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        text = fh.read().strip()
    if not text:
        raise SystemExit(f"checkov_gate: {path} is empty: checkov produced no report")
    data = json.loads(text)
    reports = data if isinstance(data, list) else [data]
    return [r for r in reports if isinstance(r, dict)]


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    framework = argv[2] if len(argv) == 3 else "terraform"
    reports = load_reports(argv[0])
    with open(argv[1], encoding="utf-8") as fh:
        skips = (yaml.safe_load(fh) or {}).get("accepted", [])
    skips = [e for e in skips if e.get("framework", "terraform") == framework]
    for entry in skips:
        if not entry.get("check") or not entry.get("resources") or not str(entry.get("reason", "")).strip():
            print(f"checkov_gate: skip-list entry without check, resources or reason: {entry}")
            return 1

    passed = failed = parsing_errors = resources = 0
    findings = []
    for report in reports:
        summary = report.get("summary", {})
        passed += int(summary.get("passed", 0))
        parsing_errors += int(summary.get("parsing_errors", 0))
        resources += int(summary.get("resource_count", 0))
        findings.extend(report.get("results", {}).get("failed_checks", []))
        failed += int(summary.get("failed", 0))

    used = [0] * len(skips)
    unaccepted = []
    accepted = 0
    for f in findings:
        match = None
        for i, entry in enumerate(skips):
            if entry["check"] == f["check_id"] and any(fnmatch.fnmatchcase(f["resource"], p) for p in entry["resources"]):
                match = i
                break
        where = f"{f['resource']} ({f.get('repo_file_path') or f.get('file_path')}:{f.get('file_line_range', ['?'])[0]})"
        if match is None:
            unaccepted.append(f)
            print(f"  FAILED   {f['check_id']} {where}: {f.get('check_name', '')}")
        else:
            used[match] += 1
            accepted += 1
            print(f"  accepted {f['check_id']} {where}")

    stale = [skips[i] for i, n in enumerate(used) if n == 0]
    for entry in stale:
        print(f"  STALE    skip-list entry {entry['check']} {entry['resources']} matches no finding: remove it")
    if parsing_errors:
        print(f"  PARSE    checkov could not parse {parsing_errors} file(s)")
    if resources == 0:
        print("  EMPTY    checkov scanned no resources")

    print(
        f"checkov: {resources} resources, {passed} checks passed, {accepted} accepted by the skip-list, "
        f"{len(unaccepted)} failed, {len(stale)} stale skip(s), {parsing_errors} parsing error(s)"
    )
    return 1 if (unaccepted or stale or parsing_errors or resources == 0) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
