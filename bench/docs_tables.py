"""The benchmark tables of the docs pages, generated from ``bench/results``, never copied by hand.

Each benchmark writes ``bench/results/<name>.json`` and, from it, the table
``bench/results/<name>.md``. A page under ``docs/`` shows that table between
``<!-- results:<name>:start -->`` and ``<!-- results:<name>:end -->``; this module puts it there
(the demo, which writes only JSON, is drawn by its own ``DemoResult.table``). A copied table goes
stale the day its benchmark is rerun; a generated one cannot, because ``--check`` (run by
``tests/unit/test_docs.py``) fails naming every block that no longer matches its results.

    .venv/bin/python -m bench.docs_tables          # rewrite every marked block
    .venv/bin/python -m bench.docs_tables --check  # exit 1 naming the stale blocks
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bench.harness import RESULTS, ROOT, between_markers

DOCS = ROOT / "docs"
BLOCK = re.compile(r"<!-- results:([\w-]+):start -->")
HEADING = re.compile(r"^(#+) ", re.MULTILINE)
DEMOTE = 2  # a results file's own headings nest under the page's "## section"


def render(name: str, results: Path = RESULTS) -> str:
    """What the block ``name`` holds: the results table, its headings nested under the page's."""
    if name == "demo":
        return _demo_table(results / "demo.json")
    if name == "headline":  # the README's figures, one row per benchmark
        from bench.headline import table

        return table(results)
    text = (results / f"{name}.md").read_text()
    return HEADING.sub(lambda m: "#" * (len(m[1]) + DEMOTE) + " ", text)


def _demo_table(path: Path) -> str:
    from cli.demo import DemoResult

    return DemoResult.from_dict(json.loads(path.read_text())).table() + "\n"


def names(page: str) -> list[str]:
    """The results blocks a page shows, in order."""
    return BLOCK.findall(page)


def rewrite(page: str, results: Path = RESULTS) -> str:
    """``page`` with every results block replaced by what ``render`` gives."""
    for name in names(page):
        page = between_markers(page, f"results:{name}", render(name, results))
    return page


def stale(pages: list[Path], results: Path = RESULTS) -> list[str]:
    """``page: results:<name>`` for every block that differs from its results."""
    out = []
    for path in pages:
        page = path.read_text()
        for name in names(page):
            if between_markers(page, f"results:{name}", render(name, results)) != page:
                out.append(f"{path.relative_to(ROOT)}: results:{name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming any stale block")
    args = parser.parse_args(argv)
    pages = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
    if args.check:
        found = stale(pages)
        for line in found:
            print(f"stale: {line} (run `python -m bench.docs_tables`)")
        return 1 if found else 0
    for path in pages:
        page = path.read_text()
        if (new := rewrite(page)) != page:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
