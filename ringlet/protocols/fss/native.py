"""The DCF evaluation compiled for this machine, with the numpy one as the fallback.

:func:`load` compiles ``dcf_native.c`` once per machine and kind with the system C compiler
(``$CC``, else ``cc``) into ``$RINGLET_CACHE_DIR/native/`` (keyed by the source's digest and the
kind) and loads it with ctypes. The kind is chosen at run time from the CPU's flags: ``vaes``
(VAES + AVX-512F: four AES blocks per instruction) where the CPU has both, else ``aesni``;
``RINGLET_NATIVE=aesni`` forces the latter, ``RINGLET_NATIVE=0`` the numpy evaluation. With
OpenMP (``-fopenmp``, where the compiler takes it) the chunks of a batch run on torch's thread
count. Without a compiler or without AES-NI it returns None and
:func:`ringlet.protocols.fss.dcf.evaluate` runs in numpy: the same keys, the same outputs bit for
bit (tested for every kind the CPU runs), about 3× slower. Nothing is downloaded; the source
ships with the package.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from ringlet.protocols.kernels.cache import cache_dir

SOURCE = Path(__file__).with_name("dcf_native.c")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_has_aes() -> bool:
    return "aes" in _cpu_flags()


KINDS = {  # kind -> (compiler flags, CPU flags it needs)
    "aesni": (["-maes", "-msse4.1"], {"aes", "sse4_1"}),
    "vaes": (["-maes", "-msse4.1", "-mavx512f", "-mvaes", "-DRINGLET_VAES"], {"aes", "vaes", "avx512f"}),
}


def kind() -> str | None:
    """The build this machine runs: ``vaes``, ``aesni`` or None (numpy)."""
    want = os.environ.get("RINGLET_NATIVE", "1")
    flags = _cpu_flags()
    if want == "0" or "aes" not in flags:
        return None
    if want == "aesni":
        return "aesni"
    return "vaes" if KINDS["vaes"][1] <= flags else "aesni"


def _compile(cc: str, out: Path, flags: list[str]) -> None:
    base = [cc, "-O3", *flags, "-shared", "-fPIC", "-o", str(out), str(SOURCE)]
    try:
        subprocess.run(base[:2] + ["-fopenmp"] + base[2:], check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError:  # no OpenMP here: one thread
        subprocess.run(base, check=True, capture_output=True, timeout=120)


@functools.cache
def load(which: str | None = None):
    """The compiled library's entry point (a ctypes function) of kind ``which`` (default:
    :func:`kind`), or None where it cannot be had (see the module)."""
    which = which or kind()
    if which is None or not KINDS[which][1] <= _cpu_flags():
        return None
    src = SOURCE.read_bytes()
    digest = hashlib.sha256(src + platform.machine().encode() + which.encode()).hexdigest()[:16]
    lib = cache_dir() / "native" / f"dcf-{which}-{platform.machine()}-{digest}.so"
    if not lib.is_file():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            return None
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
        try:
            _compile(cc, tmp, KINDS[which][0])
            os.replace(tmp, lib)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            warnings.warn(f"cannot compile the native DCF ({cc} {' '.join(KINDS[which][0])}): "
                          f"{detail.decode(errors='replace')[-300:] or exc}; using numpy", stacklevel=2)
            return None
    handle = ctypes.CDLL(str(lib))
    fn = handle.ringlet_dcf_eval
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                   *([ctypes.c_void_p] * 7), ctypes.c_int]
    return fn


def evaluate(fn, key, xs: np.ndarray, aes_key: bytes) -> np.ndarray | None:
    """P×N int64 outputs of ``key`` at xs (uint64), or None if this key's shape is not supported."""
    n, p = len(key), key.payloads
    if p > 4:
        return None
    arrays = [np.ascontiguousarray(a) for a in (key.seed, xs, key.cw_seed, key.cw_t, key.cw_v,
                                                 key.cw_last)]
    out = np.empty((p, n), dtype=np.int64)
    ptr = [a.ctypes.data for a in arrays] + [out.ctypes.data]
    if fn(n, key.bits, p, key.party, aes_key, *ptr, torch.get_num_threads()) != 0:
        return None
    return out
