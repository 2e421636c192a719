"""Save, load and fingerprint a compiled graph: JSON for the structure, safetensors for the tensors.

Files (``FOLDER/STEM.json`` and ``FOLDER/STEM.safetensors``)::

    {"format": "ringlet-graph", "version": 1,
     "input_shape": [C, H, W],
     "postprocess": null | {"op": "softmax", "dim": 1},
     "preprocess": null | {"op": "embedding", "weight": {"tensor": "preprocess/weight"},
                           "ids_shape": [T]},                          # optional
     "nodes": [{"name": N, "kind": K, "inputs": [N, ...], "label": L,
                "out_shape": [D, ...] | null, "params": {KEY: VALUE}}, ...],  # execution order
     "tensors_sha256": HEX}                                                 # of STEM.safetensors

A VALUE is a JSON number, string, bool, null or list of VALUEs, or a tagged object of one key:
``{"tensor": "NODE/KEY"}`` (the tensor of that name in the safetensors file, dtype kept; nested
tensors are named ``NODE/KEY/SUBKEY``), ``{"tuple": [VALUE, ...]}`` (read back as a tuple) or
``{"dict": {...}}`` (a dict that would otherwise read as a tag). Any other object is a dict of
VALUEs. Floats are written by Python's shortest round-trip repr, so float64 values come back bit
for bit; NaN and infinities are refused (JSON has neither).

Loading reads only JSON and safetensors (no pickle, no ``torch.load``, no code runs) and checks the
format and version, the tensors file's sha256 against the JSON, that every kind is registered, that
every input is an earlier node, and that the tensors referenced are exactly the tensors stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal, overload

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from ringlet.compiler.graph import LoweredGraph, Node
from ringlet.compiler.ops import registry

FORMAT = "ringlet-graph"
VERSION = 1
_TAGS = ("tensor", "tuple", "dict")
_NODE_KEYS = ("name", "kind", "inputs", "label", "out_shape", "params")
_TOP_KEYS = ("format", "version", "input_shape", "postprocess", "nodes", "tensors_sha256")
_OPTIONAL_KEYS = ("preprocess",)


class StorageError(ValueError):
    """A graph that cannot be saved, or files that do not hold a valid saved graph."""


# -- encoding (save and fingerprint) ---------------------------------------------------------------
def _encode(value, path: str, tensor_ref):
    """``value`` as JSON data; a tensor becomes ``{"tensor": tensor_ref(path, tensor)}``.

    ``path`` names the value (``node/param/sub``) in errors and is the key of a tensor.
    """
    if isinstance(value, torch.Tensor):
        if tensor_ref is None:
            raise StorageError(f"cannot store {path!r}: a tensor is only allowed in node params")
        return {"tensor": tensor_ref(path, value)}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StorageError(f"cannot store {path!r} = {value!r}: non-finite floats have no JSON form")
        return float(value)
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, f"{path}/{i}", tensor_ref) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensor_ref) for i, v in enumerate(value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise StorageError(f"cannot store {path!r}: dict key {bad[0]!r} is not a string")
        out = {k: _encode(v, f"{path}/{k}", tensor_ref) for k, v in value.items()}
        return {"dict": out} if len(out) == 1 and next(iter(out)) in _TAGS else out
    raise StorageError(f"cannot store {path!r}: a {type(value).__name__} (tensors, numbers, strings, "
                       f"bools, None, tuples, lists and dicts can be stored)")


def _shape_list(shape, path: str) -> list[int] | None:
    if shape is None:
        return None
    try:
        return [int(d) for d in shape]
    except (TypeError, ValueError):
        raise StorageError(f"cannot store {path!r}: {shape!r} is not a shape") from None


def _structure(graph: LoweredGraph, tensor_ref) -> dict:
    """The graph as JSON data (tensors handed to ``tensor_ref``), without the format header."""
    nodes = []
    for node in graph.nodes:
        params = {}
        for key, value in node.params.items():
            if not isinstance(key, str):
                raise StorageError(f"cannot store node {node.name!r}: param key {key!r} is not a string")
            params[key] = _encode(value, f"{node.name}/{key}", tensor_ref)
        nodes.append({"name": node.name, "kind": node.kind, "inputs": list(node.inputs),
                      "label": node.label, "out_shape": _shape_list(node.out_shape, f"{node.name}/out_shape"),
                      "params": params})
    return {"input_shape": _shape_list(graph.input_shape, "input_shape"),
            "postprocess": _encode(graph.postprocess, "postprocess", None), "nodes": nodes,
            **({"preprocess": _encode(graph.preprocess, "preprocess", tensor_ref)} if graph.preprocess else {})}


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _collector(tensors: dict):
    """A ``tensor_ref`` that keeps every tensor under its path (refusing a path seen twice)."""
    def ref(path: str, t: torch.Tensor) -> str:
        if path in tensors:
            raise StorageError(f"cannot store {path!r}: two tensors would have this name")
        tensors[path] = t.detach().cpu().contiguous()
        return path
    return ref


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _dumps(doc: dict) -> str:
    """The JSON text, one line per top-level entry and per node (easy to diff and grep)."""
    parts = []
    for key, value in doc.items():
        if key == "nodes":
            body = ",\n  ".join(json.dumps(n, allow_nan=False) for n in value)
            parts.append(f'"nodes": [\n  {body}\n ]')
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, allow_nan=False)}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


def save_graph(graph: LoweredGraph, folder, stem: str = "graph") -> None:
    """Write ``graph`` to FOLDER/STEM.safetensors (its tensors) and FOLDER/STEM.json (the rest).

    The folder is created if needed; existing files of that stem are replaced.
    """
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": FORMAT, "version": VERSION, **_structure(graph, _collector(tensors))}
    storages = set()
    for key, t in tensors.items():  # safetensors refuses tensors that share memory
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages and t.numel():
            tensors[key] = t.clone()
        storages.add(ptr)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{stem}.safetensors"
    save_file(tensors, str(weights), metadata={"format": "pt"})
    doc["tensors_sha256"] = _sha256_file(weights)
    (folder / f"{stem}.json").write_text(_dumps(doc), encoding="utf-8")


# -- decoding (load) -------------------------------------------------------------------------------
class _Decoder:
    """Turns JSON VALUEs back into params, taking each stored tensor exactly once."""

    def __init__(self, source: str, tensors_file: str, tensors: dict | None):
        self.source = source
        self.tensors_file = tensors_file
        self.tensors = tensors
        self.used: set[str] = set()

    def fail(self, why: str) -> StorageError:
        return StorageError(f"{self.source}: {why}")

    def value(self, v, path: str):
        if isinstance(v, list):
            return [self.value(x, f"{path}/{i}") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            return v
        if len(v) == 1 and next(iter(v)) in _TAGS:
            ((tag, body),) = v.items()
            if tag == "tensor":
                return self.tensor(body, path)
            if tag == "tuple":
                if not isinstance(body, list):
                    raise self.fail(f"{path!r}: a tuple holds a list, got {body!r}")
                return tuple(self.value(x, f"{path}/{i}") for i, x in enumerate(body))
            if not isinstance(body, dict):
                raise self.fail(f"{path!r}: a tagged dict holds an object, got {body!r}")
            v = body
        return {k: self.value(x, f"{path}/{k}") for k, x in v.items()}

    def tensor(self, key, path: str) -> torch.Tensor:
        if not isinstance(key, str):
            raise self.fail(f"{path!r}: a tensor reference is a string, got {key!r}")
        if self.tensors is None:
            raise self.fail(f"{path!r}: tensors are only allowed in node params")
        if key not in self.tensors:
            raise self.fail(f"{path!r} references tensor {key!r}, which {self.tensors_file} does not hold")
        if key in self.used:
            raise self.fail(f"{path!r} references tensor {key!r} a second time")
        self.used.add(key)
        return self.tensors[key]


@overload
def _check_shape(value, what: str, source: str, nullable: Literal[False] = False) -> tuple: ...


@overload
def _check_shape(value, what: str, source: str, nullable: bool) -> tuple | None: ...


def _check_shape(value, what: str, source: str, nullable: bool = False) -> tuple | None:
    if value is None and nullable:
        return None
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise StorageError(f"{source}: {what} must be a list of sizes, got {value!r}")
    return tuple(value)


def _read_json(path: Path) -> dict:
    def refuse(name):
        raise StorageError(f"{path}: holds {name}, which a ringlet graph never does")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise StorageError(f"{path}: not a saved ringlet graph (format {found!r}, expected {FORMAT!r})")
    if type(doc.get("version")) is not int or doc["version"] != VERSION:
        raise StorageError(f"{path}: {FORMAT} version {doc.get('version')!r}; this ringlet reads "
                           f"version {VERSION}")
    missing = [k for k in _TOP_KEYS if k not in doc]
    unknown = [k for k in doc if k not in (*_TOP_KEYS, *_OPTIONAL_KEYS)]
    if missing or unknown:
        raise StorageError(f"{path}: missing keys {missing}, unknown keys {unknown}")
    return doc


def _node(entry, i: int, dec: _Decoder, kinds, earlier: set) -> Node:
    if not isinstance(entry, dict) or sorted(entry) != sorted(_NODE_KEYS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise dec.fail(f"node #{i} must have exactly the keys {list(_NODE_KEYS)}, got {got}")
    name, kind, inputs = entry["name"], entry["kind"], entry["inputs"]
    if not isinstance(name, str) or name in earlier:
        raise dec.fail(f"node #{i}: name {name!r} is not a string or repeats an earlier node's")
    if kind not in kinds:
        raise dec.fail(f"node {name!r} has unknown kind {kind!r} (not registered in ringlet.compiler.ops)")
    if not isinstance(inputs, list):
        raise dec.fail(f"node {name!r}: inputs must be a list of node names, got {inputs!r}")
    for src in inputs:
        if src not in earlier:
            raise dec.fail(f"node {name!r} reads {src!r}, which is not an earlier node")
    if not isinstance(entry["label"], str) or not isinstance(entry["params"], dict):
        raise dec.fail(f"node {name!r}: label must be a string and params an object")
    out_shape = _check_shape(entry["out_shape"], f"node {name!r} out_shape", dec.source, nullable=True)
    params = {k: dec.value(v, f"{name}/{k}") for k, v in entry["params"].items()}
    return Node(name, kind, list(inputs), entry["label"], out_shape, params)


def load_graph(folder, stem: str = "graph") -> LoweredGraph:
    """Read the graph that :func:`save_graph` wrote to FOLDER/STEM.json and FOLDER/STEM.safetensors.

    Raises :class:`StorageError`, naming the file and the entry, for anything that does not check.
    """
    folder = Path(folder)
    json_path, weights_path = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    doc = _read_json(json_path)
    data = weights_path.read_bytes()  # hash and parse the same bytes
    digest = hashlib.sha256(data).hexdigest()
    if digest != doc["tensors_sha256"]:
        raise StorageError(f"{weights_path}: sha256 {digest} differs from the {doc['tensors_sha256']!r} "
                           f"recorded in {json_path}: the tensors file is corrupted or not the one saved "
                           f"with this graph")
    try:
        tensors = load_tensors(data)
    except SafetensorError as exc:
        raise StorageError(f"{weights_path}: not a valid safetensors file ({exc})") from None
    dec = _Decoder(str(json_path), str(weights_path), tensors)
    input_shape = _check_shape(doc["input_shape"], "input_shape", dec.source)
    postprocess = _Decoder(dec.source, dec.tensors_file, None).value(doc["postprocess"], "postprocess")
    if postprocess is not None and (not isinstance(postprocess, dict) or postprocess.get("op") not in
                                    ("softmax", "log_softmax") or type(postprocess.get("dim")) is not int):
        raise dec.fail(f"postprocess must be null or {{'op': 'softmax' | 'log_softmax', 'dim': int}}, "
                       f"got {postprocess!r}")
    if not isinstance(doc["nodes"], list) or not doc["nodes"]:
        raise dec.fail("nodes must be a non-empty list")
    kinds = registry().ops
    earlier: set[str] = set()
    nodes: list[Node] = []
    for i, entry in enumerate(doc["nodes"]):
        nodes.append(_node(entry, i, dec, kinds, earlier))
        earlier.add(nodes[-1].name)
    preprocess = dec.value(doc["preprocess"], "preprocess") if doc.get("preprocess") is not None else None
    if preprocess is not None and (not isinstance(preprocess, dict) or preprocess.get("op") != "embedding"
                                   or not isinstance(preprocess.get("weight"), torch.Tensor)
                                   or preprocess["weight"].ndim != 2
                                   or not isinstance(preprocess.get("ids_shape"), list)
                                   or not all(type(d) is int and d > 0 for d in preprocess["ids_shape"])):
        keys = sorted(preprocess) if isinstance(preprocess, dict) else type(preprocess).__name__
        raise dec.fail(f"preprocess must be null or {{'op': 'embedding', 'weight': a 2-D tensor, "
                       f"'ids_shape': [positive ints]}}; got {keys}")
    unused = sorted(set(tensors) - dec.used)
    if unused:
        raise StorageError(f"{weights_path}: tensors {unused} are referenced by no node of {json_path}")
    return LoweredGraph(nodes, input_shape, postprocess, preprocess)


# -- fingerprint -----------------------------------------------------------------------------------
def fingerprint(graph: LoweredGraph) -> dict:
    """Hash a graph's structure and its weights apart.

    ``{"graph": HEX, "weights": HEX}``: ``graph`` is the sha256 of the canonical JSON (sorted keys,
    no spaces) of the saved structure with each tensor replaced by its dtype and shape; ``weights``
    the sha256 over the tensors in sorted key order, each as the line ``["KEY","DTYPE",[SHAPE]]``
    followed by its raw little-endian bytes. Node order counts; dict order does not.
    """
    tensors: dict[str, torch.Tensor] = {}
    collect = _collector(tensors)

    def ref(path: str, t: torch.Tensor) -> dict:
        collect(path, t)
        return {"dtype": _dtype_name(t), "shape": list(t.shape)}

    doc = {"format": FORMAT + "-fingerprint", "version": VERSION, **_structure(graph, ref)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    weights = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        head = json.dumps([key, _dtype_name(t), list(t.shape)], separators=(",", ":"))
        weights.update(head.encode() + b"\n")
        # numpy's stubs give ndarray __buffer__ (PEP 688) only for Python >= 3.12; it is a buffer
        weights.update(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    return {"graph": hashlib.sha256(text.encode()).hexdigest(), "weights": weights.hexdigest()}


__all__ = ["StorageError", "fingerprint", "load_graph", "save_graph"]
