"""ringlet: private inference of PyTorch models with secure multi-party computation.

The public API (imported on first use, so that ``import ringlet`` starts nothing)::

    pm = ringlet.compile(module, example_input)   # -> ringlet.PrivateModel
    pm = ringlet.load("dir")                      # a saved PrivateModel

See :mod:`ringlet.private` for what a PrivateModel does.
"""

from __future__ import annotations

_EXPORTS = {
    "compile": ("ringlet.private", "compile"),
    "load": ("ringlet.private", "load"),
    "PrivateModel": ("ringlet.private", "PrivateModel"),
    "InferenceResult": ("ringlet.private", "InferenceResult"),
    "CompileError": ("ringlet.compiler.capture", "CompileError"),
    "ReluConfig": ("ringlet.compiler.config", "ReluConfig"),
    "InputRangeError": ("ringlet.compiler.ranges", "InputRangeError"),
    "ModelMismatchError": ("ringlet.runtime.programs", "ModelMismatchError"),
    "Client": ("ringlet.serve.client", "Client"),
    "AsyncClient": ("ringlet.serve.client", "AsyncClient"),
    "QueryError": ("ringlet.serve.wire", "QueryError"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ringlet' has no attribute {name!r}")
