#!/usr/bin/env python3
"""Rewrites diagnostic codes written as strings into variants of `crate::diag::Code`.

Usage (from the repository root):  python3 tools/codes_to_enum.py [src] && cargo fmt --all

Why a script: the registry in src/diag/code.rs replaced the loose `&'static str` codes while
other branches moved the code that creates diagnostics (src/expand/, src/graph/). After merging
such a branch, run this again: it turns every remaining string code into `Code::Variant`, adds
`Code` to the file's `use crate::diag::…` line, and lists what it could not place. It is
idempotent (a second run changes nothing).

What it rewrites, for the codes the registry lists (read from src/diag/code.rs):
  - the first argument of `Diagnostic::error(`, `Diagnostic::warning(`, `Diagnostic::global(`;
  - the code argument of the helpers that take one (`CODE_TAKERS` below: name → index);
  - a match arm that yields a tuple starting with a code: `=> ("shape-mismatch", span, …)`
    (with or without braces around it).
A string in the first two places that the registry does not list is reported as unknown: add
a row for it to src/diag/code.rs and run again. The compiler catches anything missed, since
those places take a `Code`.
"""

import os
import re
import sys

REGISTRY = "src/diag/code.rs"
# Functions whose argument at this index (0-based, after any receiver) is a code.
CODE_TAKERS = {"at_layer": 2, "diagnostic_at": 1}

STRING = r'"([a-z0-9]+(?:-[a-z0-9]+)*)"'


def registry_codes(root):
    text = open(os.path.join(root, REGISTRY), encoding="utf-8").read()
    rows = re.findall(r'^\s*([A-Z][A-Za-z0-9]*)\s*=\s*"([a-z0-9-]+)"\s*,', text, re.M)
    return {code: variant for variant, code in rows}


def variant_of(code):
    return "".join(part.capitalize() for part in code.split("-"))


def nth_argument_span(text, open_paren, index):
    """The (start, end) of argument `index` of the call whose `(` is at `open_paren`."""
    depth, arg, start = 0, 0, open_paren + 1
    in_string = False
    pos = open_paren + 1
    while pos < len(text):
        ch = text[pos]
        if in_string:
            if ch == "\\":
                pos += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                return (start, pos) if arg == index else None
            depth -= 1
        elif ch == "," and depth == 0:
            if arg == index:
                return (start, pos)
            arg += 1
            start = pos + 1
        pos += 1
    return None


def rewrite(text, codes, unknown, path):
    edits = []  # (start, end, replacement)

    def consider(start, end, report_unknown=True):
        literal = text[start:end].strip()
        match = re.fullmatch(STRING, literal)
        if not match:
            return
        code = match.group(1)
        if code not in codes:
            if not report_unknown:
                return
            line = text.count("\n", 0, start) + 1
            unknown.append(f"{path}:{line}: \"{code}\"")
            return
        lead = len(text[start:end]) - len(text[start:end].lstrip())
        s = start + lead
        edits.append((s, s + len(literal), f"Code::{codes[code]}"))

    for match in re.finditer(r"Diagnostic::(?:error|warning|global)\(", text):
        span = nth_argument_span(text, match.end() - 1, 0)
        if span:
            consider(*span)
    for name, index in CODE_TAKERS.items():
        for match in re.finditer(r"\b" + name + r"\(", text):
            if text[max(0, match.start() - 3):match.start()] == "fn ":
                continue
            span = nth_argument_span(text, match.end() - 1, index)
            if span:
                consider(*span)
    # Tuples of strings are common in match arms, so an unlisted string here is not reported.
    for match in re.finditer(r"=>\s*\{?\s*\(\s*(" + STRING + r")\s*,", text):
        consider(match.start(1), match.end(1), report_unknown=False)

    for start, end, replacement in sorted(set(edits), reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, bool(edits)


def add_import(text):
    if re.search(r"\bdiag::(?:\{[^}]*\bCode\b|Code\b)", text) or "use super::Code" in text:
        return text
    single = re.search(r"^use crate::diag::([A-Za-z_]+);$", text, re.M)
    if single:
        return text[:single.start()] + f"use crate::diag::{{Code, {single.group(1)}}};" + text[single.end():]
    group = re.search(r"^use crate::diag::\{([^}]*)\};$", text, re.M)
    if group:
        return text[:group.start()] + f"use crate::diag::{{Code, {group.group(1)}}};" + text[group.end():]
    first_use = re.search(r"^use .*;$", text, re.M)
    at = first_use.start() if first_use else 0
    return text[:at] + "use crate::diag::Code;\n" + text[at:]


def main():
    root = os.getcwd()
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    codes = registry_codes(root)
    if not codes:
        sys.exit(f"no codes found in {REGISTRY}: run from the repository root")
    for code, variant in codes.items():
        if variant_of(code) != variant:
            print(f"note: {code} is Code::{variant}, not the mechanical {variant_of(code)}")
    unknown, changed = [], []
    for directory, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            if os.path.normpath(path) == os.path.normpath(REGISTRY):
                continue
            text = open(path, encoding="utf-8").read()
            new, edited = rewrite(text, codes, unknown, path)
            if edited:
                new = add_import(new)
            if new != text:
                open(path, "w", encoding="utf-8").write(new)
                changed.append(path)
    for path in changed:
        print(f"rewrote {path}")
    for entry in unknown:
        print(f"unknown code (add it to {REGISTRY}): {entry}")
    print(f"{len(changed)} file(s) changed, {len(unknown)} unknown code(s)")
    sys.exit(1 if unknown else 0)


if __name__ == "__main__":
    main()
