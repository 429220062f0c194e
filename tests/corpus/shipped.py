"""Files that installed packages ship (read in place from site-packages, never copied)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import batchnb as bn
from corpus.spec import OK, Entry, fails, ok_or

__all__ = ["SHIPPED"]


def shipped(package: str, relative: str):
    """A `make` that returns the path of a file inside an installed package."""

    def make(_folder: Path) -> str:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, f"{package} is not installed"
        path = Path(spec.origin).parent / relative
        assert path.is_file(), f"{package} no longer ships {relative}"
        return str(path)

    return make


SK = "datasets/data/"
NOT_UTF8 = "utf|encod"
TOO_MANY_FIELDS = "field"  # DESIGN: a record with more fields than the header names the file and line
COMPRESSED = "compress|gz"


def _e(id, package, relative, fmt="csv", expect=OK, **kw) -> Entry:
    return Entry(id=id, origin=package, fmt=fmt, make=shipped(package, relative), expect=expect, **kw)


SHIPPED: list[Entry] = [
    # sklearn's CSVs start with a line "n_samples,n_features,class names" that is not the header.
    _e("sk-iris-default", "sklearn", SK + "iris.csv"),
    _e("sk-iris-skip1-noheader", "sklearn", SK + "iris.csv", read_options={"skip_rows": 1, "has_header": False}),
    _e("sk-iris-skip1", "sklearn", SK + "iris.csv", read_options={"skip_rows": 1}),
    _e("sk-wine-default", "sklearn", SK + "wine_data.csv", expect=fails(bn.SourceError, "wine_data.csv", "line")),
    _e("sk-wine-skip1-noheader", "sklearn", SK + "wine_data.csv", read_options={"skip_rows": 1, "has_header": False}),
    _e("sk-wine-truncate", "sklearn", SK + "wine_data.csv", read_options={"truncate_ragged_lines": True}),
    _e("sk-cancer-default", "sklearn", SK + "breast_cancer.csv",
       expect=fails(bn.SourceError, "breast_cancer.csv", "line")),
    _e("sk-cancer-skip1-noheader", "sklearn", SK + "breast_cancer.csv",
       read_options={"skip_rows": 1, "has_header": False}, chunk_size=1_000),
    _e("sk-diabetes-gz", "sklearn", SK + "diabetes_data_raw.csv.gz",
       read_options={"separator": " ", "has_header": False}, expect=ok_or(bn.SourceError, COMPRESSED)),
    _e("sk-diabetes-target-gz", "sklearn", SK + "diabetes_target.csv.gz",
       read_options={"has_header": False}, expect=ok_or(bn.SourceError, COMPRESSED)),
    _e("sk-digits-gz", "sklearn", SK + "digits.csv.gz",
       read_options={"has_header": False}, expect=ok_or(bn.SourceError, COMPRESSED)),
    _e("sk-linnerud-exercise", "sklearn", SK + "linnerud_exercise.csv", read_options={"separator": " "}),
    _e("sk-linnerud-physio", "sklearn", SK + "linnerud_physiological.csv", read_options={"separator": " "}),
    # matplotlib's sample data: a comment line before the header, dates, long empty stretches.
    _e("mpl-stocks-comment", "matplotlib", "mpl-data/sample_data/Stocks.csv", read_options={"comment_prefix": "#"}),
    _e("mpl-stocks-skip1", "matplotlib", "mpl-data/sample_data/Stocks.csv", read_options={"skip_rows": 1}),
    _e("mpl-stocks-default", "matplotlib", "mpl-data/sample_data/Stocks.csv",
       expect=fails(bn.SourceError, "stocks.csv", "line")),
    _e("mpl-msft", "matplotlib", "mpl-data/sample_data/msft.csv"),
    _e("mpl-msft-dates", "matplotlib", "mpl-data/sample_data/msft.csv", read_options={"try_parse_dates": True}),
    _e("mpl-xx2x3-spaces", "matplotlib", "mpl-data/sample_data/data_x_x2_x3.csv",
       read_options={"separator": " ", "has_header": False}),
    # numpy's test vectors: comment lines inside the data, hex strings beside integers.
    _e("np-umath-log", "numpy", "_core/tests/data/umath-validation-set-log.csv", read_options={"comment_prefix": "#"}),
    _e("np-umath-exp", "numpy", "_core/tests/data/umath-validation-set-exp.csv", read_options={"comment_prefix": "#"}),
    _e("np-mt19937", "numpy", "random/tests/data/mt19937-testset-1.csv"),
    _e("np-pcg64", "numpy", "random/tests/data/pcg64-testset-1.csv"),
    _e("np-astype-pkl", "numpy", "_core/tests/data/astype_copy.pkl", fmt="pickle",
       expect=fails(bn.SourceError, "astype_copy.pkl")),
    # scipy's whitespace-separated matrices, read with `format="csv"` since .txt says nothing.
    _e("scipy-iris-txt", "scipy", "spatial/tests/data/iris.txt", pass_format=True,
       read_options={"separator": " ", "has_header": False}),
    _e("scipy-random-int", "scipy", "spatial/tests/data/random-int-data.txt", pass_format=True,
       read_options={"separator": " ", "has_header": False}),
    _e("scipy-random-double", "scipy", "spatial/tests/data/random-double-data.txt", pass_format=True,
       read_options={"separator": " ", "has_header": False}),
    _e("scipy-iris-no-format", "scipy", "spatial/tests/data/iris.txt", expect=fails(bn.BatchError, "iris.txt", "format=")),
    # pyarrow's own test files: old Parquet writers, pandas index metadata, a compressed Feather v2.
    _e("pa-parquet-0.7.1", "pyarrow", "tests/data/parquet/v0.7.1.parquet", fmt="parquet"),
    _e("pa-parquet-all-index", "pyarrow", "tests/data/parquet/v0.7.1.all-named-index.parquet", fmt="parquet"),
    _e("pa-parquet-some-index", "pyarrow", "tests/data/parquet/v0.7.1.some-named-index.parquet", fmt="parquet"),
    _e("pa-parquet-col-metadata", "pyarrow", "tests/data/parquet/v0.7.1.column-metadata-handling.parquet",
       fmt="parquet"),
    _e("pa-feather-lz4", "pyarrow", "tests/data/feather/v0.17.0.version.2-compression.lz4.feather", fmt="feather"),
    # PyTables' test files are HDF5 but not pandas tables: refused clearly.
    _e("tables-smpl-f64le", "tables", "tests/smpl_f64le.h5", fmt="hdf5",
       expect=fails(bn.SourceError, "smpl_f64le.h5")),
    _e("tables-compound", "tables", "tests/smpl_compound_chunked.h5", fmt="hdf5",
       expect=fails(bn.SourceError, "smpl_compound_chunked.h5")),
    # joblib's pickles hold numpy arrays written by old Pythons: refused clearly.
    _e("joblib-pickle", "joblib", "test/data/joblib_0.11.0_pickle_py36_np111.pkl", fmt="pickle",
       expect=fails(bn.SourceError, "joblib_0.11.0_pickle_py36_np111.pkl")),
    # tornado's translation table: strings only, nothing to score.
    _e("tornado-strings", "tornado", "test/csv_translations/fr_FR.csv", read_options={"has_header": False},
       expect=fails(bn.ConfigError, "numeric")),
]  # fmt: skip
