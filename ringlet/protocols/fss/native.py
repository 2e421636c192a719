"""The DCF evaluation compiled for this machine (AES-NI), with the numpy one as the fallback.

:func:`load` compiles ``dcf_native.c`` once per machine with the system C compiler (``$CC``, else
``cc``) into ``$RINGLET_CACHE_DIR/native/`` (keyed by the source's digest) and loads it with ctypes.
Without a compiler, without AES-NI, or with ``RINGLET_NATIVE=0``, it returns None and
:func:`ringlet.protocols.fss.dcf.evaluate` runs in numpy: the same keys, the same outputs bit for bit
(tested), about 3× slower. Nothing is downloaded; the source ships with the package.
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

from ringlet.protocols.kernels.cache import cache_dir

SOURCE = Path(__file__).with_name("dcf_native.c")


def _cpu_has_aes() -> bool:
    try:
        return " aes " in f" {Path('/proc/cpuinfo').read_text()} ".replace("\n", " ")
    except OSError:
        return False


@functools.cache
def load():
    """The compiled library (a ctypes handle), or None where it cannot be had (see the module)."""
    if os.environ.get("RINGLET_NATIVE", "1") == "0" or not _cpu_has_aes():
        return None
    src = SOURCE.read_bytes()
    digest = hashlib.sha256(src + platform.machine().encode()).hexdigest()[:16]
    lib = cache_dir() / "native" / f"dcf-{platform.machine()}-{digest}.so"
    if not lib.is_file():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not cc:
            return None
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
        cmd = [cc, "-O3", "-maes", "-msse4.1", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
            os.replace(tmp, lib)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            warnings.warn(f"cannot compile the native DCF ({' '.join(cmd)}): "
                          f"{detail.decode(errors='replace')[-300:] or exc}; using numpy", stacklevel=2)
            return None
    handle = ctypes.CDLL(str(lib))
    fn = handle.ringlet_dcf_eval
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p] + \
        [ctypes.c_void_p] * 7
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
    if fn(n, key.bits, p, key.party, aes_key, *ptr) != 0:
        return None
    return out
