"""Small helpers shared by the engine, the data preparation and the tools."""
import glob
import hashlib
import json
import os
import sys
import uuid
from typing import IO, Any, Callable, Iterable

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["atomic_write", "write_json", "file_sha256", "unwrap_model", "run_tool"]


def atomic_write(path: str, write: Callable[[IO[bytes]], Any], remove_stale: bool = True) -> None:
    """Write the file ``path`` so that it is, at every moment, either absent / the old file or the
    complete new one.

    ``write(f)`` fills a new temporary file ``.<name>.<random>.tmp`` in the same folder (so that
    the rename stays on one file system), which is flushed, ``fsync``-ed and renamed over ``path``
    with ``os.replace`` (atomic on POSIX and Windows); then the folder is ``fsync``-ed so that the
    rename survives a crash of the machine. On an exception the temporary file is removed; a
    SIGKILL leaves it behind (hidden, ``.tmp``: never taken for a checkpoint), and the next
    :func:`atomic_write` of the same ``path`` removes it (``remove_stale=False`` where several
    processes may write the same file at once, e.g. DDP ranks filling one dataset cache: there a
    stale temporary file is another process's file in progress).
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")) if remove_stale else ():
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never follows or reuses an existing file
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(obj: Any, path: str, remove_stale: bool = True, **dump_kwargs) -> None:
    """``json.dump(obj)`` into ``path`` through :func:`atomic_write` (readers never see half a file)."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, **dump_kwargs).encode("utf-8")), remove_stale=remove_stale)


def file_sha256(path: str) -> str:
    """Hex SHA-256 of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside (Distributed)DataParallel wrappers, or the model itself."""
    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model


def run_tool(name: str, make_files: Callable[[], Iterable[str]]) -> None:
    """The end of a picture-writing tool's ``main``: print the files ``make_files()`` writes, or
    exit with one line ``name: error`` for the input errors the tools raise (missing file, unknown
    dataset or key, bad value)."""
    try:
        written = list(make_files())
    except (FileNotFoundError, KeyError, IndexError, ValueError) as e:
        sys.exit(f"{name}: {e}")
    for path in written:
        print(path)
