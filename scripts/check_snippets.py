#!/usr/bin/env python3
"""Checks that the C++ blocks of README.md are the compiled snippets they quote.

Every ```cpp block in the README follows a marker line naming its source:

    <!-- snippet: using-it examples/readme/snippets.cpp -->
    ```cpp
    ...
    ```

and its text must equal the regions of that file between two `// [snippet using-it]` lines
(each region dedented; several regions of one name joined by a blank line). The source file is a
program that CMake builds and CTest runs (readme_snippets), so the README's code compiles and runs.

    python3 scripts/check_snippets.py            # exit 1 with a diff when a block has drifted
    python3 scripts/check_snippets.py --update   # rewrite the README's blocks from the sources

Python 3 standard library only (CTest: docs.readme_snippets).
"""

import argparse
import difflib
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- snippet: (\S+) (\S+) -->$")
REGION = re.compile(r"^\s*// \[snippet (\S+)\]\s*$")


def regions(path):
    """{name: text} for every `// [snippet name]` region of the file."""
    pieces, open_at = {}, {}
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = REGION.match(line)
        if not m:
            continue
        name = m.group(1)
        if name in open_at:
            body = textwrap.dedent("\n".join(lines[open_at.pop(name) + 1:i])).strip("\n")
            pieces.setdefault(name, []).append(body)
        else:
            open_at[name] = i
    if open_at:
        raise SystemExit(f"{path}: snippet region(s) {sorted(open_at)} not closed")
    return {name: "\n\n".join(parts) for name, parts in pieces.items()}


def blocks(readme_lines):
    """(name, source, first line, end line) of every marked block; fails on an unmarked one."""
    out, i = [], 0
    while i < len(readme_lines):
        line = readme_lines[i]
        if line.strip() == "```cpp":
            m = MARKER.match(readme_lines[i - 1].strip()) if i > 0 else None
            if not m:
                raise SystemExit(f"README.md:{i + 1}: a ```cpp block without a "
                                 "'<!-- snippet: NAME FILE -->' line before it")
            end = i + 1
            while end < len(readme_lines) and readme_lines[end].strip() != "```":
                end += 1
            out.append((m.group(1), m.group(2), i + 1, end))
            i = end
        i += 1
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the README's blocks")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    a = ap.parse_args()
    readme = pathlib.Path(a.readme)
    lines = readme.read_text().splitlines()
    found = blocks(lines)
    sources, used, drifted = {}, set(), []
    for name, src, first, end in reversed(found):  # from the end: replacing keeps line numbers
        if src not in sources:
            path = ROOT / src
            if not path.is_file():
                raise SystemExit(f"README.md:{first}: snippet source {src} does not exist")
            sources[src] = regions(path)
        if name not in sources[src]:
            raise SystemExit(f"README.md:{first}: {src} has no region '// [snippet {name}]'")
        used.add((src, name))
        want = sources[src][name].split("\n")
        have = lines[first:end]
        if have != want:
            drifted.append((name, src, first, have, want))
            lines[first:end] = want
    unused = sorted(f"{src}: {n}" for src, names in sources.items() for n in names
                    if (src, n) not in used)
    if a.update:
        if drifted:
            readme.write_text("\n".join(lines) + "\n")
        print(f"check_snippets: {len(found)} blocks, {len(drifted)} rewritten")
    else:
        for name, src, first, have, want in reversed(drifted):
            sys.stdout.writelines(difflib.unified_diff(
                [l + "\n" for l in have], [l + "\n" for l in want],
                f"README.md:{first + 1} ({name})", f"{src} [snippet {name}]"))
        if drifted:
            print(f"check_snippets: {len(drifted)} of {len(found)} README blocks differ from their "
                  "sources; run python3 scripts/check_snippets.py --update")
    if unused:
        print("check_snippets: regions no README block quotes: " + ", ".join(unused))
    if (drifted and not a.update) or unused:
        return 1
    if not a.update:
        print(f"check_snippets: {len(found)} README blocks match their sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
