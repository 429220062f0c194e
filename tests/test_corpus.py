"""The corpus test: files that batchnb did not write read as Polars/pandas read them, or fail clearly.

Every entry is listed in tests/corpus/ (id, who made the file, format, read_options, expectation). Any run
of this module (`pytest -q tests/test_corpus.py`) ends with a "corpus: N entries" section: one line per entry
with its verdict and what went wrong, then the counts by verdict and by origin/format. Verdicts: ok, clear error (both pass); WRONG (succeeded with a wrong value),
raw exception, unclear error, unexpected error, no error (all fail).
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from corpus import CORPUS, Entry
from corpus.check import Outcome, judge

OUTCOMES: dict[str, tuple[Entry, Outcome]] = {}


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


class SummaryTable:
    """Prints every entry's verdict and the counts by verdict and by origin/format after the run's summary."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not OUTCOMES:
            return
        write = terminalreporter.write_line
        terminalreporter.section(f"corpus: {len(OUTCOMES)} entries")
        for name, (entry, outcome) in sorted(OUTCOMES.items(), key=lambda kv: (kv[1][1].passed, kv[0])):
            write(f"{outcome.verdict:16} {name:36} {entry.origin:10} {entry.fmt:8} {outcome.detail}")
        by_verdict = collections.Counter(o.verdict for _, o in OUTCOMES.values())
        write("by verdict: " + ", ".join(f"{v} {n}" for v, n in by_verdict.most_common()))
        by_kind = collections.Counter((e.origin, e.fmt) for e, _ in OUTCOMES.values())
        write("by origin/format: " + ", ".join(f"{o}/{f} {n}" for (o, f), n in sorted(by_kind.items())))


@pytest.fixture(scope="module", autouse=True)
def summary_table(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("corpus-summary"):
        manager.register(SummaryTable(), "corpus-summary")


def test_corpus_is_large_and_ids_unique():
    assert len(CORPUS) >= 100
    assert len({e.id for e in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("entry", CORPUS, ids=[e.id for e in CORPUS])
def test_corpus_file(entry: Entry, corpus_root: Path):
    folder = corpus_root / entry.id
    folder.mkdir()
    source = entry.make(folder)
    outcome = judge(entry, source, folder / "out")
    OUTCOMES[entry.id] = (entry, outcome)
    assert outcome.passed, f"{outcome.verdict}: {outcome.detail} (expected {entry.expect})"
