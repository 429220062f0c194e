"""A corpus of files batchnb did not write, each with the read_options a user would pass and what must happen.

Files come from installed packages (read in place) or are written at test time by pandas, pyarrow, Polars,
DuckDB or as raw bytes; each is judged against Polars (pandas for HDF5 and pickle) reading it with the same
options, and its scores against a numpy z-score (see check.py).
"""

from __future__ import annotations

from corpus.arrow_files import ARROW
from corpus.handmade import HANDMADE
from corpus.pandas_files import PANDAS
from corpus.polars_duckdb import DUCKDB, POLARS
from corpus.shipped import SHIPPED
from corpus.spec import Entry

__all__ = ["CORPUS", "Entry"]

CORPUS: list[Entry] = [*SHIPPED, *PANDAS, *ARROW, *POLARS, *DUCKDB, *HANDMADE]
