"""Files on disk: every write is atomic (temp file, fsync, rename), every table is checksummed.

A job killed mid-write leaves either the old file or no file, never half of one; a table edited
or truncated after it was written is detected when read, not silently plotted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) files; outputs are for sharing, as open() would make them.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


class CorruptFileError(RuntimeError):
    """A stored file does not match the checksum written beside it, or does not parse."""


def _atomic(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(path: str | Path, value: Any) -> Path:
    return write_bytes(path, _json_bytes(value))


def read_json(path: str | Path) -> Any:
    """A JSON file; one that does not parse (truncated, overwritten) is an error naming the file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for binary garbage
        raise CorruptFileError(f"{path}: not valid JSON ({e})") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV table and its checksum (the checksum last, so it vouches for the table)."""
    return _write_checked(path, df.to_csv(index=False).encode())


def _write_checked(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    write_bytes(path, data)
    write_text(_checksum_path(path), sha256(data) + "\n")  # last: it vouches for the file
    return path


def write_checked_json(path: str | Path, value: Any) -> Path:
    """Write a JSON file and its checksum, as write_table does (a derived record that a later job
    reads and that must not be used when edited or truncated: a sweep's choice, tuning.py)."""
    return _write_checked(path, _json_bytes(value))


def read_checked_json(path: str | Path) -> Any:
    """A JSON file written by write_checked_json, refusing one that does not match its checksum."""
    try:
        return json.loads(verified_bytes(path))
    except ValueError as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e})") from None


def verified_bytes(path: str | Path) -> bytes:
    """A checksummed file's contents, refusing a file that does not match its checksum (a table the
    report links but does not read is verified with this too)."""
    path = Path(path)
    data = path.read_bytes()
    check = _checksum_path(path)
    if not check.exists():
        raise CorruptFileError(f"{path}: checksum file {check.name} is missing")
    if check.read_text().strip() != sha256(data):
        raise CorruptFileError(f"{path}: contents do not match its checksum (truncated or edited?)")
    return data


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV table written by write_table, refusing one whose checksum does not match."""
    data = verified_bytes(path)
    if not data.strip():
        return pd.DataFrame()
    return pd.read_csv(io.BytesIO(data))


def write_dir(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Fill a fresh temp directory, then rename it into place: all of it appears, or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, DIR_MODE)
        old = None
        if path.exists():  # aside first: at every moment either the old or the new one is in place
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
