#!/usr/bin/env python3
"""Offline parse-and-reference check of Terraform modules.

`terraform validate` needs the providers, which cannot be downloaded here, and
checkov silently ignores a file it cannot parse. This script stands in for the
provider-independent half of `validate`. For every directory holding *.tf files
(one Terraform module) it fails on:

  * a file that does not parse as HCL2;
  * a duplicate variable, local, output, resource, data source or module call;
  * a reference to an undeclared variable (var.X), local (local.X), module
    (module.X), data source (data.T.N) or resource (T.N);
  * module.X.Y where module X has a local source whose outputs lack Y;
  * a local module source that does not exist, a module argument the module
    does not declare as a variable, or a required variable left unset;
  * each.* or count.* used in a block without for_each or count.

Usage: check_refs.py [--exclude DIR]... PATH...
Exit status 0 when clean, 1 on findings, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import hcl2
    from lark import Token, Tree
    from lark.exceptions import LarkError
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(f"check_refs: python-hcl2 is not installed ({exc})\n")
    sys.exit(2)

# Roots of references that are not declarations of this module.
BUILTIN_ROOTS = {"each", "count", "self", "path", "terraform"}
# Arguments of a module call that are not input variables.
MODULE_META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on"}
# Tree nodes that extend a traversal: a.b, a[0], a[*].b, a.*.b
CHAIN_NODES = {"get_attr_expr_term", "index_expr_term", "attr_splat_expr_term", "full_splat_expr_term"}
INTERPOLATION = re.compile(r"[$%]\{")


@dataclass
class Ref:
    file: Path
    line: int
    root: str
    segments: list[str]
    # The enclosing top-level block: its kind, and whether it has count/for_each.
    owner: str
    has_count: bool
    has_for_each: bool

    def text(self) -> str:
        out = self.root
        for seg in self.segments:
            out += seg if seg in ("[]", "[*]") else "." + seg
        return out


@dataclass
class Decl:
    file: Path
    line: int
    required: bool = False  # variables: no default
    source: str | None = None  # modules: the source string
    args: dict[str, int] = field(default_factory=dict)  # modules: argument -> line


@dataclass
class Module:
    path: Path
    files: list[Path] = field(default_factory=list)
    variables: dict[str, Decl] = field(default_factory=dict)
    locals: dict[str, Decl] = field(default_factory=dict)
    outputs: dict[str, Decl] = field(default_factory=dict)
    resources: dict[str, Decl] = field(default_factory=dict)
    data: dict[str, Decl] = field(default_factory=dict)
    modules: dict[str, Decl] = field(default_factory=dict)
    refs: list[Ref] = field(default_factory=list)
    iterators: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# Tree helpers
# --------------------------------------------------------------------------- #


def first_line(node) -> int:
    if isinstance(node, Token):
        return node.line or 0
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return meta.line
    for child in node.children:
        line = first_line(child)
        if line:
            return line
    return 0


def name_of(node) -> str | None:
    """Text of an identifier / keyword node, or of a plain string label."""
    if isinstance(node, Token):
        return str(node)
    if node.data in ("identifier", "keyword"):
        return str(node.children[0])
    if node.data == "string":
        parts = []
        for child in node.children:
            if isinstance(child, Tree) and child.data == "string_part":
                for tok in child.children:
                    if not isinstance(tok, Token):
                        return None  # an interpolated label
                    parts.append(str(tok))
        return "".join(parts)
    return None


def body_items(body: Tree):
    for child in body.children:
        if isinstance(child, Tree) and child.data in ("attribute", "block"):
            yield child


def attribute_parts(attr: Tree):
    trees = [c for c in attr.children if isinstance(c, Tree)]
    return name_of(trees[0]), trees[-1]


def block_parts(block: Tree):
    trees = [c for c in block.children if isinstance(c, Tree)]
    kind = name_of(trees[0])
    labels = [name_of(t) for t in trees[1:-1]]
    return kind, labels, trees[-1]


def literal_string(expr: Tree) -> str | None:
    """The value of an expression that is a plain quoted string, else None."""
    node = expr
    while isinstance(node, Tree) and node.data == "expr_term" and len(node.children) == 1:
        node = node.children[0]
    if isinstance(node, Tree) and node.data == "string":
        return name_of(node)
    return None


def chain(node):
    """(root, segments) of a traversal such as aws_s3_bucket.this[0].arn, else None."""
    if not isinstance(node, Tree):
        return None
    if node.data == "expr_term":
        kids = node.children
        if len(kids) == 1 and isinstance(kids[0], Tree):
            if kids[0].data == "identifier":
                return name_of(kids[0]), []
            if kids[0].data in CHAIN_NODES:
                return chain(kids[0])
        return None
    if node.data not in CHAIN_NODES:
        return None
    base, rest = node.children[0], node.children[1]
    found = chain(base)
    if found is None:
        return None
    root, segs = found
    segs = list(segs)
    if node.data == "get_attr_expr_term":
        segs.append(name_of([c for c in rest.children if isinstance(c, Tree)][-1]) or "?")
    elif node.data == "index_expr_term":
        segs.append("[]")
    else:
        segs.append("[*]")
        for part in rest.children:
            if isinstance(part, Tree) and part.data == "get_attr":
                segs.append(name_of([c for c in part.children if isinstance(c, Tree)][-1]) or "?")
            elif isinstance(part, Tree):
                segs.append("[]")
    return root, segs


def interpolations(text: str):
    """Expressions inside ${...} and %{...} of a heredoc or template token."""
    for match in INTERPOLATION.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        inner = text[match.end() : i - 1].strip().strip("~").strip()
        if match.group(0) == "%{":
            # Template directives: for x in EXPR / if EXPR / else / endif / endfor
            m = re.match(r"for\s+\w+(?:\s*,\s*\w+)?\s+in\s+(.*)$", inner, re.S)
            if m:
                inner = m.group(1)
            elif inner.startswith("if "):
                inner = inner[3:]
            else:
                continue
        yield inner


# --------------------------------------------------------------------------- #
# Collecting declarations and references
# --------------------------------------------------------------------------- #


class Collector:
    def __init__(self, module: Module, file: Path):
        self.module = module
        self.file = file

    def declare(self, table: dict[str, Decl], kind: str, name: str, node, **extra) -> Decl:
        line = first_line(node)
        if name in table:
            prior = table[name]
            self.module.errors.append(
                f"{self.file}:{line}: duplicate {kind} {name!r} (first declared at {prior.file}:{prior.line})"
            )
        decl = Decl(self.file, line, **extra)
        table[name] = decl
        return decl

    def top_level(self, tree: Tree) -> None:
        body = next(c for c in tree.children if isinstance(c, Tree) and c.data == "body")
        self.collect_iterators(tree)
        for item in body_items(body):
            if item.data == "attribute":
                name, _ = attribute_parts(item)
                self.module.errors.append(f"{self.file}:{first_line(item)}: unexpected top-level argument {name!r}")
                continue
            kind, labels, inner = block_parts(item)
            owner = kind
            has_count = any(a == "count" for a in self.attribute_names(inner))
            has_for_each = any(a == "for_each" for a in self.attribute_names(inner))
            ctx = (owner, has_count, has_for_each)
            if kind == "variable" and len(labels) == 1:
                required = "default" not in self.attribute_names(inner)
                self.declare(self.module.variables, "variable", labels[0], item, required=required)
                self.walk_body(inner, ctx)
            elif kind == "locals":
                for attr in body_items(inner):
                    if attr.data == "attribute":
                        name, expr = attribute_parts(attr)
                        self.declare(self.module.locals, "local", name, attr)
                        self.walk(expr, ctx)
            elif kind == "output" and len(labels) == 1:
                self.declare(self.module.outputs, "output", labels[0], item)
                self.walk_body(inner, ctx)
            elif kind == "resource" and len(labels) == 2:
                self.declare(self.module.resources, "resource", f"{labels[0]}.{labels[1]}", item)
                self.walk_body(inner, ctx)
            elif kind == "data" and len(labels) == 2:
                self.declare(self.module.data, "data source", f"{labels[0]}.{labels[1]}", item)
                self.walk_body(inner, ctx)
            elif kind == "module" and len(labels) == 1:
                args, source = {}, None
                for attr in body_items(inner):
                    if attr.data == "attribute":
                        name, expr = attribute_parts(attr)
                        if name == "source":
                            source = literal_string(expr)
                        elif name not in MODULE_META_ARGS:
                            args[name] = first_line(attr)
                        if name not in ("source", "version", "providers"):
                            self.walk(expr, ctx)
                    else:
                        bkind, _, _ = block_parts(attr)
                        self.module.errors.append(
                            f"{self.file}:{first_line(attr)}: module {labels[0]!r}: blocks of type {bkind!r} are not expected here"
                        )
                self.declare(self.module.modules, "module call", labels[0], item, source=source, args=args)
            elif kind == "check":
                # A check block may declare scoped data sources for its assertions.
                for nested in body_items(inner):
                    if nested.data == "block":
                        nkind, nlabels, _ = block_parts(nested)
                        if nkind == "data" and len(nlabels) == 2:
                            self.declare(self.module.data, "data source", f"{nlabels[0]}.{nlabels[1]}", nested)
                self.walk_body(inner, ctx)
            elif kind in ("provider", "import"):
                self.walk_body(inner, ctx)
            elif kind in ("terraform", "moved", "removed"):
                continue
            else:
                self.module.errors.append(
                    f"{self.file}:{first_line(item)}: unsupported top-level block {kind!r} with labels {labels}"
                )

    @staticmethod
    def attribute_names(body: Tree) -> list[str]:
        return [attribute_parts(a)[0] for a in body_items(body) if a.data == "attribute"]

    def collect_iterators(self, tree: Tree) -> None:
        for node in tree.iter_subtrees():
            if node.data == "for_intro":
                for child in node.children:
                    if isinstance(child, Tree) and child.data == "identifier":
                        self.module.iterators.add(name_of(child))
            elif node.data == "block":
                kind, labels, inner = block_parts(node)
                if kind == "dynamic" and labels and labels[0]:
                    self.module.iterators.add(labels[0])
                    for attr in body_items(inner):
                        if attr.data == "attribute":
                            name, expr = attribute_parts(attr)
                            if name == "iterator":
                                found = chain(expr)
                                if found:
                                    self.module.iterators.add(found[0])

    def walk_body(self, body: Tree, ctx) -> None:
        for item in body_items(body):
            if item.data == "attribute":
                name, expr = attribute_parts(item)
                if name in ("provider", "iterator"):
                    continue
                self.walk(expr, ctx)
            else:
                kind, _, inner = block_parts(item)
                if kind == "lifecycle":
                    for attr in body_items(inner):
                        if attr.data == "attribute" and attribute_parts(attr)[0] == "ignore_changes":
                            continue
                        if attr.data == "attribute":
                            self.walk(attribute_parts(attr)[1], ctx)
                        else:
                            self.walk_body(block_parts(attr)[2], ctx)
                else:
                    self.walk_body(inner, ctx)

    def walk(self, node, ctx, in_chain: bool = False) -> None:
        if isinstance(node, Token):
            text = str(node)
            if (node.type.startswith("HEREDOC") or node.type == "TEMPLATE_STRING") and INTERPOLATION.search(text):
                for inner in interpolations(text):
                    try:
                        sub = hcl2.parses_to_tree(f"x = {inner}\n")
                    except LarkError as exc:
                        self.module.errors.append(
                            f"{self.file}:{node.line}: cannot parse template interpolation {inner!r}: {str(exc).splitlines()[0]}"
                        )
                        continue
                    for t in sub.iter_subtrees_topdown():
                        if t.data == "attribute":
                            self.walk(attribute_parts(t)[1], ctx)
                            break
            return
        if node.data in CHAIN_NODES:
            if not in_chain:
                found = chain(node)
                if found is not None:
                    self.record(found, node, ctx)
            base, *rest = node.children
            self.walk(base, ctx, in_chain=True)
            for child in rest:
                self.walk(child, ctx)
            return
        if node.data == "expr_term" and in_chain:
            kids = node.children
            if len(kids) == 1 and isinstance(kids[0], Tree) and kids[0].data in CHAIN_NODES:
                self.walk(kids[0], ctx, in_chain=True)
                return
        for child in node.children:
            self.walk(child, ctx)

    def record(self, found, node, ctx) -> None:
        root, segs = found
        owner, has_count, has_for_each = ctx
        self.module.refs.append(Ref(self.file, first_line(node), root, segs, owner, has_count, has_for_each))


# --------------------------------------------------------------------------- #
# Checking
# --------------------------------------------------------------------------- #


class Checker:
    def __init__(self) -> None:
        self.cache: dict[Path, Module] = {}

    def load(self, path: Path) -> Module:
        path = path.resolve()
        if path in self.cache:
            return self.cache[path]
        module = Module(path)
        self.cache[path] = module
        for file in sorted(path.glob("*.tf")):
            module.files.append(file)
            try:
                tree = hcl2.parses_to_tree(file.read_text(encoding="utf-8"))
            except (LarkError, UnicodeDecodeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                module.errors.append(f"{file}: parse error: {first}")
                continue
            Collector(module, file).top_level(tree)
        return module

    def check(self, path: Path) -> list[str]:
        module = self.load(path)
        errors = list(module.errors)
        for ref in module.refs:
            problem = self.check_ref(module, ref)
            if problem:
                errors.append(f"{ref.file}:{ref.line}: {problem}")
        for name, call in module.modules.items():
            errors.extend(self.check_call(module, name, call))
        return errors

    def check_ref(self, module: Module, ref: Ref) -> str | None:
        root, segs = ref.root, ref.segments
        attr = segs[0] if segs and segs[0] not in ("[]", "[*]") else None
        if root in module.iterators:
            return None
        if root == "each":
            if not ref.has_for_each:
                return f"{ref.text()}: each.* is used in a {ref.owner} block without for_each"
            return None
        if root == "count":
            if not ref.has_count:
                return f"{ref.text()}: count.* is used in a {ref.owner} block without count"
            return None
        if root in BUILTIN_ROOTS:
            return None
        if root == "var":
            if attr is None or attr not in module.variables:
                return f"reference to undeclared input variable: {ref.text()}"
            return None
        if root == "local":
            if attr is None or attr not in module.locals:
                return f"reference to undeclared local value: {ref.text()}"
            return None
        if root == "data":
            key = f"{segs[0]}.{segs[1]}" if len(segs) >= 2 else None
            if key is None or key not in module.data:
                return f"reference to undeclared data source: {ref.text()}"
            return None
        if root == "module":
            if attr is None or attr not in module.modules:
                return f"reference to undeclared module: {ref.text()}"
            output = next((s for s in segs[1:] if s not in ("[]", "[*]")), None)
            target = self.module_target(module, module.modules[attr])
            if output is not None and target is not None and output not in target.outputs:
                return f"{ref.text()}: module {attr!r} ({module.modules[attr].source}) has no output {output!r}"
            return None
        if attr is None:
            return None  # a bare iterator or an index into a local name
        if f"{root}.{attr}" not in module.resources:
            return f"reference to undeclared resource: {root}.{attr}"
        return None

    def module_target(self, module: Module, call: Decl) -> Module | None:
        if call.source and call.source.startswith(("./", "../")):
            target = (module.path / call.source).resolve()
            if target.is_dir():
                return self.load(target)
        return None

    def check_call(self, module: Module, name: str, call: Decl) -> list[str]:
        where = f"{call.file}:{call.line}"
        if call.source is None:
            return [f"{where}: module {name!r} has no literal source"]
        if not call.source.startswith(("./", "../")):
            return []  # registry or remote module: nothing to check offline
        target_dir = (module.path / call.source).resolve()
        if not target_dir.is_dir() or not any(target_dir.glob("*.tf")):
            return [f"{where}: module {name!r}: source {call.source!r} is not a directory with .tf files"]
        target = self.load(target_dir)
        errors = []
        for arg, line in call.args.items():
            if arg not in target.variables:
                errors.append(f"{call.file}:{line}: module {name!r}: unsupported argument {arg!r} ({call.source} declares no such variable)")
        for var, decl in target.variables.items():
            if decl.required and var not in call.args:
                errors.append(f"{where}: module {name!r}: missing required argument {var!r}")
        return errors


def module_dirs(paths: list[Path], excludes: list[Path]) -> list[Path]:
    found = set()
    for root in paths:
        files = [root] if root.is_file() else root.rglob("*.tf")
        for file in files:
            resolved = file.resolve()
            if ".terraform" in resolved.parts:
                continue
            if any(resolved.is_relative_to(ex) for ex in excludes):
                continue
            found.add(resolved.parent)
    return sorted(found)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--exclude", action="append", type=Path, default=[], help="directory to skip (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)

    for path in args.paths:
        if not path.exists():
            parser.error(f"{path} does not exist")
    excludes = [e.resolve() for e in args.exclude]
    dirs = module_dirs(args.paths, excludes)
    if not dirs:
        print("check_refs: no .tf files found", file=sys.stderr)
        return 1

    checker = Checker()
    errors: list[str] = []
    files = refs = 0
    for d in dirs:
        errors.extend(checker.check(d))
        files += len(checker.cache[d].files)
        refs += len(checker.cache[d].refs)
    cwd = Path.cwd()

    def rel(line: str) -> str:
        return line.replace(str(cwd) + "/", "")

    for err in errors:
        print(rel(err))
    if not args.quiet:
        status = "OK" if not errors else f"{len(errors)} problem(s)"
        print(f"check_refs: {len(dirs)} module(s), {files} file(s), {refs} reference(s): {status}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
