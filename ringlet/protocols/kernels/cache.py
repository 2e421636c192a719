"""Per-machine caches of measured choices: where they live and what a machine is.

A cache is one JSON file under ``$RINGLET_CACHE_DIR`` (default ``~/.cache/ringlet``), keyed by the
machine (:func:`machine_key`: CPU model, torch version, torch threads) and an entry key. It is
written atomically (a temporary file, then ``os.replace``); an unreadable or corrupt file is
ignored with a warning and rewritten by the next choice, never an error.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

CACHE_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("RINGLET_CACHE_DIR") or Path.home() / ".cache" / "ringlet")


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def machine_key() -> str:
    """What the timings depend on besides the layer: CPU model, torch version, torch threads."""
    return f"{_cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


class MachineCache:
    """An on-disk cache of measured choices (one JSON file; see the module docstring);
    ``what`` names it in warnings."""

    _lock = threading.Lock()  # threads of one process write one at a time

    def __init__(self, path, what: str = "measurement"):
        self.path = Path(path)
        self.what = what
        self._data: dict | None = None

    def _read(self, quiet: bool = False) -> dict:
        empty = {"version": CACHE_VERSION, "machines": {}}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return empty
        except OSError as exc:
            if not quiet:
                warnings.warn(f"cannot read the {self.what} cache {self.path}: {exc}; "
                              f"ignoring it", stacklevel=3)
            return empty
        try:
            data = json.loads(text)
            if (not isinstance(data, dict) or data.get("version") != CACHE_VERSION
                    or not isinstance(data.get("machines"), dict)
                    or not all(isinstance(v, dict) for v in data["machines"].values())):
                raise ValueError("not a version-1 cache of machines")
        except ValueError as exc:
            if not quiet:
                warnings.warn(f"ignoring the corrupt {self.what} cache {self.path} ({exc}); "
                              f"it will be rewritten", stacklevel=3)
            return empty
        return data

    def get(self, machine: str, key: str) -> dict | None:
        if self._data is None:
            self._data = self._read()
        entry = self._data["machines"].get(machine, {}).get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, machine: str, key: str, entry: dict) -> None:
        with self._lock:
            data = self._read(quiet=self._data is not None)  # merge with what other processes wrote meanwhile
            data["machines"].setdefault(machine, {})[key] = entry
            self._data = data
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError as exc:
                warnings.warn(f"cannot write the {self.what} cache {self.path}: {exc}",
                              stacklevel=3)
                try:
                    tmp.unlink()
                except OSError:
                    pass
