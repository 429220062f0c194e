"""Compressed CSV and NDJSON inputs (.gz, .zst, .bz2, .xz, a .zip holding one file).

A compressed stream cannot be cut into byte ranges, so each compressed file is decompressed once, in one
streaming pass of bounded memory, into a staged copy under the job's work directory (beside the Arrow copies
of pickles), and the staged copies are planned and read as the plain files they are. The job's identity and
fingerprint stay those of the original files.

A staged copy is named after its original's path and version (size and modification time, or an object's
ETag) and carries the original's modification time: a resumed run reuses a copy that matches and stages again
one that is missing or was touched. Decompression is deterministic, so a copy staged again has the same bytes
and the stored byte-range plan stays valid. Which user's file each copy stands for travels with the dataset
(`DatasetInfo.origins`), so messages name the user's file.
"""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import hashlib
import io
import lzma
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from batchnb import storage
from batchnb.errors import SourceError
from batchnb.files import atomic_file, is_own, private_dir
from batchnb.formats import COMPRESSION_SUFFIXES
from batchnb.sources.sniff import COMPRESSIONS, check_content, kind_name, sniff, sniff_bytes

__all__ = ["Workdir", "arrow_copies", "stage"]

BLOCK = 4 * 2**20
_ARROW_CODECS = {"gzip": "gzip", "bzip2": "bz2", "zstd": "zstd"}
_REMOTE_MTIME_NS = 946_684_800 * 10**9  # 2000-01-01: a staged copy of an object, until someone touches it


@dataclass(frozen=True)
class Workdir:
    """Where a job keeps copies of its inputs (decompressed text, pickles as Arrow): `output/_batchnb/converted`."""

    output: Path

    def path(self) -> Path:
        """The folder, made here as real directories: never through a link planted in a received output."""
        return private_dir(self.output, "converted", purpose="a staged copy")


def stage(paths: tuple[str, ...], fmt: str, workdir: Workdir) -> tuple[str, ...]:
    """`paths` with each compressed CSV/NDJSON file replaced by its staged plain copy; every file's first bytes
    are checked against `fmt` (local files always, object-store files when they may need decompressing)."""
    out = []
    for path in paths:
        if storage.is_url(path) and fmt not in ("csv", "json"):
            out.append(path)  # one request per object would be the cost; the reader names a wrong file
            continue
        kind = sniff(path)
        check_content(path, fmt, kind)
        out.append(_staged(path, kind, workdir) if kind in COMPRESSIONS else path)
    return tuple(out)


def _version(path: str) -> tuple[str, int]:
    """A tag of the original's path and version, and the modification time its staged copy carries."""
    if storage.is_url(path):
        found = storage.info(path) or {}
        ident, mtime_ns = f"{path}|{found.get('size')}|{found.get('version')}", _REMOTE_MTIME_NS
    else:
        st = os.stat(path)
        ident, mtime_ns = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}", st.st_mtime_ns
    return hashlib.sha256(ident.encode()).hexdigest()[:16], mtime_ns


def _inner_name(path: str, member: str | None) -> str:
    """data.csv.gz -> data.csv; a zip whose name has no inner suffix takes its member's."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if Path(name).suffix.lower() in COMPRESSION_SUFFIXES:
        name = name[: -len(Path(name).suffix)]
    if member and not Path(name).suffix:
        name += Path(member).suffix
    return name


def _staged(path: str, kind: str, workdir: Workdir) -> str:
    member = _only_member(path) if kind == "zip" else None
    tag, mtime_ns = _version(path)
    inner = Path(_inner_name(path, member))
    path_tag = hashlib.sha256((path if storage.is_url(path) else os.path.abspath(path)).encode()).hexdigest()[:8]
    prefix = f"{inner.stem}-{path_tag}-"
    folder = workdir.path()
    target = folder / f"{prefix}{tag[:12]}{inner.suffix}"
    if is_own(target) and target.stat().st_mtime_ns == mtime_ns:
        return str(target)
    _decompress(path, kind, member, target)
    os.utime(target, ns=(mtime_ns, mtime_ns))
    for old in glob.glob(glob.escape(str(folder / prefix)) + "*" + glob.escape(inner.suffix)):
        if old != str(target):  # a copy of an earlier version of the same file
            Path(old).unlink(missing_ok=True)
    return str(target)


def _open_temp(tmp: Path, mode: str) -> IO:
    """The fresh temp `atomic_file` made, opened without following a link swapped in for it."""
    return os.fdopen(os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW), mode, encoding=None if "b" in mode else "utf-8")


def _only_member(path: str) -> str:
    """The one file a zip archive holds; several or none is a SourceError naming them."""
    try:
        with storage.open_input(path) as raw, zipfile.ZipFile(raw) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir() and not _is_metadata(i.filename)]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(
            f"cannot open zip archive {path!r}: {exc}; the file is truncated or corrupt, fetch it again"
        ) from exc
    if len(names) == 1:
        return names[0]
    if not names:
        raise SourceError(f"zip archive {path!r} holds no file: nothing to read; check that it was fully written")
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} files)" if len(names) > 5 else "")
    msg = (
        f"zip archive {path!r} holds {len(names)} files ({shown}); batchnb reads a zip holding one file: "
        "extract them and pass a glob of the files (one dataset), or zip each file on its own"
    )
    raise SourceError(msg)


def _is_metadata(name: str) -> bool:
    """Entries macOS adds to archives it makes (resource forks), not data."""
    return name.startswith("__MACOSX/") or Path(name).name.startswith("._") or Path(name).name == ".DS_Store"


@contextlib.contextmanager
def _open_stream(path: str, kind: str, member: str | None) -> Iterator[io.BufferedIOBase | IO[bytes]]:
    with storage.open_input(path) as raw, _decoder(raw, path, kind, member) as stream:
        yield stream


def _decoder(raw: IO[bytes], path: str, kind: str, member: str | None) -> io.BufferedIOBase | IO[bytes]:
    """Arrow's codecs where it has them (bzip2 twice as fast as the standard library), else the stdlib's."""
    import pyarrow as pa

    codec = _ARROW_CODECS.get(kind)
    try:
        if codec is not None and pa.Codec.is_available(codec):
            return pa.input_stream(raw, compression=codec)
        if kind == "gzip":
            return gzip.GzipFile(fileobj=raw, mode="rb")
        if kind == "bzip2":
            return bz2.BZ2File(raw)
        if kind == "xz":
            return lzma.LZMAFile(raw)
        if kind == "zip" and member is not None:
            return zipfile.ZipFile(raw).open(member)
    except Exception as exc:
        raise _corrupt(path, kind, exc) from exc
    msg = f"cannot decompress {path!r}: this pyarrow has no zstd codec; decompress it first (`unzstd`) or reinstall pyarrow"
    raise SourceError(msg)


def _decompress(path: str, kind: str, member: str | None, target: Path) -> None:
    """One streaming pass into a temporary name, renamed into place once whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name, never a symlink someone planted; a concurrent plan() writes its own.
    with atomic_file(target) as tmp:
        with _open_temp(tmp, "wb") as dst, _open_stream(path, kind, member) as src:
            written = 0
            while block := _read(src, path, kind):
                if not written:
                    _check_inner(path, kind, block)
                _write(dst, block, tmp)
                written += len(block)
        if not written:
            raise SourceError(
                f"source file {path!r} is {kind_name(kind)} and holds no data (0 bytes once decompressed)"
            )


def _corrupt(path: str, kind: str, exc: BaseException) -> SourceError:
    return SourceError(
        f"cannot decompress {path!r} ({kind_name(kind)}): {exc}; the file is truncated or corrupt, fetch it again"
    )


def _read(src: io.BufferedIOBase | IO[bytes], path: str, kind: str) -> bytes:
    try:
        return src.read(BLOCK)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        raise _corrupt(path, kind, exc) from exc


def _write(dst: IO[bytes], block: bytes, tmp: Path) -> None:
    try:
        dst.write(block)
    except OSError as exc:
        msg = (
            f"cannot write the decompressed copy {str(tmp)!r}: {exc}; a compressed input is staged decompressed "
            "under the output directory: free space there, or decompress the file yourself onto a larger disk"
        )
        raise SourceError(msg) from exc


def _check_inner(path: str, kind: str, head: bytes) -> None:
    inner = sniff_bytes(head)
    if inner is not None:
        msg = (
            f"source file {path!r} is {kind_name(kind)} and holds {kind_name(inner)}, not CSV or NDJSON text: "
            "decompress it and pass the file it holds with the matching `format=`"
        )
        raise SourceError(msg)


def arrow_copies(paths: tuple[str, ...], workdir: Workdir, load: Callable[[str], pl.DataFrame]) -> dict[str, str]:
    """Arrow IPC copies of `paths` in the job's work directory, reused while the input is unchanged:
    copy -> the user's file, in the order of `paths`."""
    folder = workdir.path()
    out = {}
    for p in paths:
        st = os.stat(p)
        tag = hashlib.sha256(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        target = folder / f"{Path(p).stem}-{tag}.arrow"
        if not target.exists():
            frame = load(p)
            with atomic_file(target) as tmp:  # never a planted link
                frame.write_ipc(tmp)
        out[str(target)] = p
    return out
