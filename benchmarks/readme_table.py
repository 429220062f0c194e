"""Copy benchmarks/results/latest.md into the README between its benchmark markers (never typed by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"


def main(readme: Path = ROOT / "README.md", table: Path = ROOT / "benchmarks" / "results" / "latest.md") -> int:
    """Replace what lies between the markers with the report, every table of it; the rest stays as it is."""
    text = readme.read_text()
    report = table.read_text().strip()
    if BEGIN not in text or END not in text:
        print(f"{readme.name} has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
