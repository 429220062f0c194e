"""HTML that shows an output path links to it as a file, whatever the directory is called.

An output directory is named by whoever made it: `javascript:alert(1)` is a valid relative path, and
must never reach a browser as a `javascript:` (or `data:`, or any other) URL.
"""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import make_frame, write_source

import batchnb as bn
from batchnb.record.snapshot import ChunkBoard
from batchnb.views.html import errors_html, status_html

HOSTILE = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "'\"><script>alert(1)</script>",
    "out#frag?x=1&y=<b>",
    " javascript:alert(1)",
]


class Page(HTMLParser):
    """The links, tags and text of an HTML fragment, as a browser would see them."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.text = ""
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.links.append(dict(attrs))

    def handle_data(self, data) -> None:
        self.text += data


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> bn.JobResult:
    """A real finished job's result, whose `output` each test replaces with a name to render."""
    root = tmp_path_factory.mktemp("links")
    source = write_source(make_frame(2_000), "parquet", root / "src.parquet")
    return bn.BatchJob(source, str(root / "out"), chunk_size=1_000, engine="sequential").run(progress=None)


def link_of(markup: str) -> str:
    page = Page(markup)
    assert "script" not in page.tags, markup
    (link,) = page.links
    return link["href"]


@pytest.mark.parametrize("name", HOSTILE)
def test_relative_output_links_as_a_dot_slash_path_of_that_name(finished, tmp_path, monkeypatch, name) -> None:
    monkeypatch.chdir(tmp_path)
    markup = dataclasses.replace(finished, output=name)._repr_html_()

    href = link_of(markup)
    assert href.startswith("./"), href
    assert urlparse(href).scheme == "", href
    assert unquote(href[2:]) == Path(name).as_posix()  # the directory of that name, beside the notebook
    assert not set(href) & set(" \"'<>#?"), href  # percent-encoded: no fragment, query or markup
    assert name in Page(markup).text  # shown as given, escaped


@pytest.mark.parametrize("name", HOSTILE)
def test_output_outside_the_working_folder_links_as_its_file_uri(finished, tmp_path, monkeypatch, name) -> None:
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    output = str(tmp_path / "shared" / name)
    markup = dataclasses.replace(finished, output=output)._repr_html_()

    href = link_of(markup)
    assert href == Path(output).resolve().as_uri()
    assert urlparse(href).scheme == "file"
    assert output in Page(markup).text


def test_output_under_the_working_folder_links_relative(finished, monkeypatch) -> None:
    out = Path(finished.output)
    monkeypatch.chdir(out.parent)
    assert link_of(dataclasses.replace(finished, output=str(out))._repr_html_()) == "./out"
    assert link_of(finished._repr_html_()) == "./out"


def test_every_html_view_escapes_what_an_output_names(finished) -> None:
    """Status, errors, reasons and job names come from someone's state: text, never markup."""
    evil = "'\"><script>alert(1)</script><a href=javascript:alert(1)>x</a>"
    failed = {"chunk": 1, "attempt": 1, "delay": None, "type": "E", "message": evil, "traceback": evil}
    markups = [
        dataclasses.replace(finished, reason=evil)._repr_html_(),
        bn.Progress(name=evil, status="failed", last_error=evil)._repr_html_(),
        status_html(evil, evil),
        errors_html(ChunkBoard(errors=(failed,))),
    ]
    for markup in markups:
        page = Page(markup)
        assert "script" not in page.tags, markup
        assert all(link["href"].startswith(("./", "file://")) for link in page.links), markup
        assert evil in page.text, markup
