#!/usr/bin/env python3
"""Write or check the inputs/outputs tables of the module READMEs.

Each README.md beside a module's variables.tf holds a generated part between
<!-- BEGIN_TF_DOCS --> and <!-- END_TF_DOCS --> (the terraform-docs markers):
the requirements, an inputs table (name, description, type, default, required)
and an outputs table, taken from the module's *.tf files.

Usage: gen_docs.py --check DIR...   exit 1 if a README's tables are stale
       gen_docs.py --write DIR...   rewrite them
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hcl2
from lark import Token, Tree

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def name_of(node) -> str:
    if isinstance(node, Token):
        return str(node)
    if node.data in ("identifier", "keyword"):
        return str(node.children[0])
    if node.data == "string":
        return "".join(str(t) for c in node.children if isinstance(c, Tree) for t in c.children if isinstance(t, Token))
    return ""


def items(body: Tree):
    for child in body.children:
        if isinstance(child, Tree) and child.data in ("attribute", "block"):
            yield child


def source_of(text: str, node: Tree) -> str:
    return text[node.meta.start_pos : node.meta.end_pos]


def unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return s[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return s


def cell(s: str) -> str:
    """One table cell: a multi-line HCL value on one line, elements comma-separated."""
    out = ""
    for part in (p.strip() for p in s.splitlines()):
        if not part or part.startswith("#"):
            continue
        if out and not out.endswith(("{", "(", "[", ",")) and not part.startswith(("}", ")", "]")):
            out += ","
        out += (" " if out else "") + part
    return " ".join(out.split()).replace("|", "\\|")


def collect(module: Path):
    variables, outputs, providers, required_version = [], [], {}, None
    for file in sorted(module.glob("*.tf")):
        text = file.read_text(encoding="utf-8")
        tree = hcl2.parses_to_tree(text)
        body = next(c for c in tree.children if isinstance(c, Tree) and c.data == "body")
        for block in items(body):
            if block.data != "block":
                continue
            trees = [c for c in block.children if isinstance(c, Tree)]
            kind, labels, inner = name_of(trees[0]), [name_of(t) for t in trees[1:-1]], trees[-1]
            attrs = {}
            for a in items(inner):
                if a.data == "attribute":
                    parts = [c for c in a.children if isinstance(c, Tree)]
                    attrs[name_of(parts[0])] = source_of(text, parts[-1])
            if kind == "variable":
                variables.append(
                    {
                        "name": labels[0],
                        "description": unquote(attrs.get("description", '""')),
                        "type": attrs.get("type", "any"),
                        "default": attrs.get("default"),
                    }
                )
            elif kind == "output":
                outputs.append({"name": labels[0], "description": unquote(attrs.get("description", '""'))})
            elif kind == "terraform":
                required_version = unquote(attrs.get("required_version", '""')) or None
                for b in items(inner):
                    if b.data == "block" and name_of([c for c in b.children if isinstance(c, Tree)][0]) == "required_providers":
                        rp = [c for c in b.children if isinstance(c, Tree)][-1]
                        for a in items(rp):
                            parts = [c for c in a.children if isinstance(c, Tree)]
                            doc = hcl2.loads(f"x = {source_of(text, parts[-1])}\n")["x"]
                            providers[name_of(parts[0])] = unquote(doc.get("version", ""))
    return variables, outputs, providers, required_version


def render(module: Path) -> str:
    variables, outputs, providers, required_version = collect(module)
    lines = ["## Requirements", "", "| Name | Version |", "|------|---------|"]
    if required_version:
        lines.append(f"| terraform | {cell(required_version)} |")
    for name, version in sorted(providers.items()):
        lines.append(f"| {name} | {cell(version)} |")
    lines += ["", "## Inputs", "", "| Name | Description | Type | Default | Required |", "|------|-------------|------|---------|:--------:|"]
    for v in sorted(variables, key=lambda v: (v["default"] is not None, v["name"])):
        default = "n/a" if v["default"] is None else f"`{cell(v['default'])}`"
        required = "yes" if v["default"] is None else "no"
        lines.append(f"| {v['name']} | {cell(v['description'])} | `{cell(v['type'])}` | {default} | {required} |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|------|-------------|"]
    for o in sorted(outputs, key=lambda o: o["name"]):
        lines.append(f"| {o['name']} | {cell(o['description'])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--write", action="store_true")
    ap.add_argument("dirs", nargs="+", type=Path)
    args = ap.parse_args(argv)

    stale = 0
    for d in args.dirs:
        readme = d / "README.md"
        if not readme.is_file():
            print(f"{readme}: missing")
            stale += 1
            continue
        text = readme.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            print(f"{readme}: no {BEGIN} ... {END} section")
            stale += 1
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{BEGIN}\n{render(d)}\n{END}{tail}"
        if new != text:
            if args.write:
                readme.write_text(new, encoding="utf-8")
                print(f"{readme}: updated")
            else:
                print(f"{readme}: inputs/outputs tables are stale; run infra/tests/gen_docs.py --write {d}")
                stale += 1
    if args.check:
        print(f"gen_docs: {len(args.dirs)} README(s), {stale} stale")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
