"""Read the pickles of data files (Planetoid, CIFAR-10) without unpickling them.

Why not :mod:`pickle` with a restricted ``find_class``: an allow-list of *modules* still hands
the attacker every callable in them (a numpy test helper that runs ``exec``, dotted names such
as ``numpy.os.system`` that protocol 4 resolves attribute by attribute), and ``BUILD`` calls
``__setstate__`` or sets attributes on whatever object it is given. A crafted
``ind.citeseer.x`` therefore runs code on ``data.load`` (issue 11).

This module is a small interpreter of the pickle opcodes instead. It reads the opcodes with the
argument readers of :mod:`pickletools` (which only parse) and builds *plain data only*: ints,
floats, strings, bytes, lists, tuples, dicts, sets, and -- through a fixed table of the exact
``(module, name)`` pairs that those files name -- numpy arrays of plain numeric dtypes and scipy
CSR/CSC matrices, each constructed by this module from validated fields. No callable named by a
file is ever called: a global is looked up in :data:`ALLOWED` and becomes a token; anything
else, and every opcode that could call or import something (``INST``, ``OBJ``, ``NEWOBJ_EX``,
``EXT*``, persistent ids, out-of-band buffers), is refused with a :class:`~.errors.DataError`
naming the file.
"""

from __future__ import annotations

import codecs
import io
import math
import pickletools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import read_verified
from .errors import DataError, reading

ALLOWED: dict[tuple[str, str], str] = {
    # numpy arrays as numpy pickles them (protocol 0-4) and their dtypes and scalars
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    # how Python 3 writes bytes into protocol-2 pickles
    ("_codecs", "encode"): "encode",
    # Python 2 protocol 0/1 objects, and the containers Planetoid's graph files use
    ("copy_reg", "_reconstructor"): "reconstructor",
    ("copyreg", "_reconstructor"): "reconstructor",
    ("__builtin__", "object"): "object",
    ("builtins", "object"): "object",
    ("collections", "defaultdict"): "defaultdict",
    ("collections", "OrderedDict"): "dict",
    **{(m, n): n for m in ("__builtin__", "builtins") for n in ("list", "tuple", "set", "dict")},
    ("__builtin__", "bytes"): "bytes",  # how protocols 0-2 write b""
    ("builtins", "bytes"): "bytes",
    ("__builtin__", "frozenset"): "frozenset",
    ("builtins", "frozenset"): "frozenset",
    # scipy sparse matrices (old and new module paths)
    ("scipy.sparse.csr", "csr_matrix"): "csr",
    ("scipy.sparse._csr", "csr_matrix"): "csr",
    ("scipy.sparse.csc", "csc_matrix"): "csc",
    ("scipy.sparse._csc", "csc_matrix"): "csc",
}
"""Every ``(module, name)`` a data pickle may name, mapped to what this module builds for it."""

_PLAIN_DTYPE = re.compile(r"[<>|=]?[biuf?][1248]?|[<>|=]?c(8|16)")
"""Dtype codes accepted: booleans, integers, floats, complex. No objects, strings, records."""


@dataclass(frozen=True)
class _Global:
    """A global named by the pickle; a token, never the object itself."""

    module: str
    name: str
    kind: str


class _Dtype:
    """A dtype being rebuilt (``REDUCE`` gives the code, ``BUILD`` the byte order)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.value = dtype


class _Array:
    """An array being rebuilt; ``BUILD`` fills ``value``."""

    value: np.ndarray | None = None


class _Sparse:
    """A scipy matrix being rebuilt; ``BUILD`` gives its fields."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.value: Any = None


class _Mark:
    """The MARK sentinel on the stack."""


_MARK = _Mark()
_REFUSED_OPS = {
    "INST": "calls a class named by the file",
    "OBJ": "calls a class named by the file",
    "NEWOBJ_EX": "calls a class with keyword arguments",
    "EXT1": "imports through the extension registry",
    "EXT2": "imports through the extension registry",
    "EXT4": "imports through the extension registry",
    "PERSID": "asks for a persistent object",
    "BINPERSID": "asks for a persistent object",
    "NEXT_BUFFER": "asks for an out-of-band buffer",
    "READONLY_BUFFER": "asks for an out-of-band buffer",
}


class Refused(DataError):
    """The pickle asks for something outside :data:`ALLOWED` or is malformed."""


def load_pickle(path: Path, *, encoding: str = "latin1") -> Any:
    """Parse the pickle in ``path`` into plain data, arrays and sparse matrices.

    Args:
        path: The file.
        encoding: How Python 2 ``str`` values are returned: ``"latin1"`` as ``str`` (what
            ``pickle.load(..., encoding="latin1")`` gives), ``"bytes"`` as ``bytes``.

    Raises:
        DataError: the file names a global outside :data:`ALLOWED`, uses a refused opcode, or
            is truncated or malformed; the message names the file.
    """
    if encoding not in ("latin1", "bytes"):
        raise ValueError(f"encoding must be 'latin1' or 'bytes', got {encoding!r}")
    with reading(path, "a data pickle"):
        raw = read_verified(path)  # the bytes whose digest the load checked
        return loads(raw, encoding=encoding, source=str(path))


def loads(raw: bytes, *, encoding: str = "latin1", source: str = "<bytes>") -> Any:
    """Parse a pickle held in memory; see :func:`load_pickle`."""
    machine = _Machine(encoding, source)
    with reading(source, "a data pickle"):
        return machine.run(io.BytesIO(raw))


class _Machine:
    """The stack machine: the pickle virtual machine restricted to building data."""

    def __init__(self, encoding: str, source: str) -> None:
        self.encoding = encoding
        self.source = source
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}

    def refuse(self, why: str) -> Refused:
        return Refused(f"refusing to read this pickle: it {why}", file=self.source)

    # ------------------------------------------------------------------ the loop

    def run(self, stream: io.BytesIO) -> Any:
        handlers = self._handlers()
        while True:
            code = stream.read(1)
            if not code:
                raise self.refuse("ends before its STOP opcode (truncated)")
            op = pickletools.code2op.get(code.decode("latin-1"))
            if op is None:
                raise self.refuse(f"holds an unknown opcode {code!r}")
            if op.name in _REFUSED_OPS:
                raise self.refuse(f"uses opcode {op.name}, which {_REFUSED_OPS[op.name]}")
            if op.name == "STOP":
                if len(self.stack) != 1 or self.marks:
                    raise self.refuse("ends with a malformed stack")
                return _finalise(self.stack.pop(), {})
            arg = self._read_arg(op, stream)
            handlers[op.name](arg)

    def _read_arg(self, op: pickletools.OpcodeInfo, stream: io.BytesIO) -> Any:
        if op.arg is None:
            return None
        if op.name == "STRING":  # pickletools decodes it as ASCII; Python 2 wrote bytes
            line = stream.readline()
            if (
                not line.endswith(b"\n")
                or len(line) < 3
                or line[0] not in b"'\""
                or line[-2] != line[0]
            ):
                raise self.refuse("holds a malformed STRING")
            data = codecs.escape_decode(line[1:-2])[0]
            return data.decode("latin-1")
        return op.arg.reader(stream)

    def _handlers(self) -> dict[str, Callable[[Any], None]]:
        def push(value: Any) -> None:
            # Not ``self.stack.append``: MARK swaps ``self.stack`` for a new list.
            self.stack.append(value)

        simple = {
            "INT": push,
            "BININT": push,
            "BININT1": push,
            "BININT2": push,
            "LONG": push,
            "LONG1": push,
            "LONG4": push,
            "FLOAT": push,
            "BINFLOAT": push,
            "UNICODE": push,
            "SHORT_BINUNICODE": push,
            "BINUNICODE": push,
            "BINUNICODE8": push,
            "BINBYTES": push,
            "SHORT_BINBYTES": push,
            "BINBYTES8": push,
            "BYTEARRAY8": lambda a: push(bytes(a)),
            "STRING": self._string,
            "BINSTRING": self._string,
            "SHORT_BINSTRING": self._string,
            "NONE": lambda _: push(None),
            "NEWTRUE": lambda _: push(True),
            "NEWFALSE": lambda _: push(False),
            "EMPTY_LIST": lambda _: push([]),
            "EMPTY_TUPLE": lambda _: push(()),
            "EMPTY_DICT": lambda _: push({}),
            "EMPTY_SET": lambda _: push(set()),
            "PROTO": lambda _: None,
            "FRAME": lambda _: None,
        }
        return {
            **simple,
            "APPEND": self._append,
            "APPENDS": self._appends,
            "LIST": lambda _: push(self._pop_mark()),
            "TUPLE": lambda _: push(tuple(self._pop_mark())),
            "TUPLE1": lambda _: self._tuple(1),
            "TUPLE2": lambda _: self._tuple(2),
            "TUPLE3": lambda _: self._tuple(3),
            "DICT": lambda _: push(self._pairs(self._pop_mark(), {})),
            "SETITEM": self._setitem,
            "SETITEMS": self._setitems,
            "ADDITEMS": self._additems,
            "FROZENSET": lambda _: push(frozenset(self._pop_mark())),
            "POP": lambda _: self._pop() if self.stack else self._pop_mark(),
            "DUP": lambda _: push(self._top()),
            "MARK": self._mark,
            "POP_MARK": lambda _: self._pop_mark(),
            "PUT": self._put,
            "BINPUT": self._put,
            "LONG_BINPUT": self._put,
            "MEMOIZE": lambda _: self._put(len(self.memo)),
            "GET": self._get,
            "BINGET": self._get,
            "LONG_BINGET": self._get,
            "GLOBAL": self._global,
            "STACK_GLOBAL": self._stack_global,
            "REDUCE": self._reduce,
            "NEWOBJ": self._newobj,
            "BUILD": self._build,
        }

    # ------------------------------------------------------------------ stack helpers

    def _pop(self) -> Any:
        if not self.stack:
            raise self.refuse("pops from an empty stack")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise self.refuse("reads an empty stack")
        return self.stack[-1]

    def _mark(self, _: Any) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise self.refuse("closes a MARK it never opened")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def _tuple(self, n: int) -> None:
        if len(self.stack) < n:
            raise self.refuse("builds a tuple from too few items")
        items = tuple(self.stack[-n:])
        del self.stack[-n:]
        self.stack.append(items)

    def _string(self, value: str) -> None:
        # pickletools returns Python 2 strings decoded as latin-1.
        self.stack.append(value.encode("latin-1") if self.encoding == "bytes" else value)

    def _container(self, kind: type) -> Any:
        target = self._top()
        if not isinstance(target, kind):
            raise self.refuse(f"adds items to a {type(target).__name__}")
        return target

    def _append(self, _: Any) -> None:
        value = self._pop()
        self._container(list).append(value)

    def _appends(self, _: Any) -> None:
        items = self._pop_mark()
        self._container(list).extend(items)

    def _pairs(self, items: list[Any], target: dict[Any, Any]) -> dict[Any, Any]:
        if len(items) % 2:
            raise self.refuse("gives a dict an odd number of items")
        for key, value in zip(items[::2], items[1::2], strict=True):
            target[_hashable(key, self)] = value
        return target

    def _setitem(self, _: Any) -> None:
        value, key = self._pop(), self._pop()
        self._pairs([key, value], self._container(dict))

    def _setitems(self, _: Any) -> None:
        items = self._pop_mark()
        self._pairs(items, self._container(dict))

    def _additems(self, _: Any) -> None:
        items = self._pop_mark()
        self._container(set).update(_hashable(i, self) for i in items)

    def _put(self, index: Any) -> None:
        self.memo[int(index)] = self._top()

    def _get(self, index: Any) -> None:
        try:
            self.stack.append(self.memo[int(index)])
        except KeyError:
            raise self.refuse(f"refers to memo entry {index} that was never stored") from None

    # ------------------------------------------------------------------ objects

    def _lookup(self, module: str, name: str) -> _Global:
        kind = ALLOWED.get((module, name))
        if kind is None:
            raise self.refuse(
                f"names {module}.{name}, which data files never need "
                "(only numpy arrays, scipy sparse matrices and plain containers are read)"
            )
        return _Global(module, name, kind)

    def _global(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self.stack.append(self._lookup(module, name))

    def _stack_global(self, _: Any) -> None:
        name, module = self._pop(), self._pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise self.refuse("names a global with non-string parts")
        self.stack.append(self._lookup(module, name))

    def _reduce(self, _: Any) -> None:
        args, func = self._pop(), self._pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self.refuse("calls something that is not an allowed global")
        self.stack.append(_call(func, args, self))

    def _newobj(self, _: Any) -> None:
        args, cls = self._pop(), self._pop()
        if not isinstance(cls, _Global) or cls.kind not in ("csr", "csc") or args != ():
            raise self.refuse(f"creates an object of {_describe(cls)}")
        self.stack.append(_Sparse(cls.kind))

    def _build(self, _: Any) -> None:
        state = self._pop()
        target = self._top()
        if isinstance(target, _Array):
            target.value = _array_from_state(state, self)
        elif isinstance(target, _Dtype):
            target.value = _dtype_from_state(target.value, state, self)
        elif isinstance(target, _Sparse):
            target.value = _sparse_from_state(target.kind, state, self)
        else:
            raise self.refuse(f"sets the state of a {type(target).__name__}")


# ---------------------------------------------------------------------- builders


def _describe(obj: Any) -> str:
    return f"{obj.module}.{obj.name}" if isinstance(obj, _Global) else type(obj).__name__


def _hashable(value: Any, machine: _Machine) -> Any:
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return value
    if isinstance(value, tuple) and all(isinstance(v, (str, bytes, int, float)) for v in value):
        return value
    raise machine.refuse(f"uses a {type(value).__name__} as a dict key or set member")


def _plain_dtype(code: Any, machine: _Machine) -> np.dtype:
    if isinstance(code, bytes):
        code = code.decode("latin-1")
    if not isinstance(code, str) or not _PLAIN_DTYPE.fullmatch(code):
        raise machine.refuse(f"asks for numpy dtype {code!r} (only plain numbers are read)")
    return np.dtype(code)


def _call(func: _Global, args: tuple[Any, ...], machine: _Machine) -> Any:
    """What ``func(*args)`` would have built, built here from validated plain values."""
    kind = func.kind
    if kind == "encode":
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise machine.refuse("calls _codecs.encode with unexpected arguments")
        return args[0].encode("latin-1")
    if kind == "bytes":
        if args:
            raise machine.refuse("calls bytes with arguments")
        return b""
    if kind == "dtype":
        if not args:
            raise machine.refuse("builds a dtype without a code")
        return _Dtype(_plain_dtype(args[0], machine))
    if kind == "reconstruct":
        if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].kind == "ndarray"):
            raise machine.refuse("rebuilds an array of a class other than numpy.ndarray")
        return _Array()
    if kind == "scalar":
        if len(args) != 2 or not isinstance(args[0], _Dtype):
            raise machine.refuse("builds a numpy scalar without a dtype")
        dtype, raw = args[0].value, _raw_bytes(args[1], machine)
        if len(raw) != dtype.itemsize:
            raise machine.refuse("builds a numpy scalar from the wrong number of bytes")
        return np.frombuffer(raw, dtype, 1)[0]
    if kind == "frombuffer":
        if len(args) != 4 or not isinstance(args[1], _Dtype):
            raise machine.refuse("builds an array from a buffer with unexpected arguments")
        return _make_array(args[0], args[1].value, args[2], args[3] == "F", machine)
    if kind == "reconstructor":
        cls = args[0] if args else None
        ok = (
            len(args) == 3
            and isinstance(cls, _Global)
            and cls.kind in ("csr", "csc")
            and isinstance(args[1], _Global)
            and args[1].kind == "object"
            and args[2] is None
        )
        if not ok:
            raise machine.refuse(f"rebuilds an object of {_describe(cls)}")
        return _Sparse(cls.kind)  # type: ignore[union-attr]
    if kind == "defaultdict":
        factory = args[0] if args else None
        if len(args) > 1 or not (
            factory is None
            or (isinstance(factory, _Global) and factory.kind in ("list", "set", "dict"))
        ):
            raise machine.refuse(f"builds a defaultdict of {_describe(factory)}")
        return {}
    containers: dict[str, Callable[[Any], Any]] = {
        "list": list,
        "tuple": tuple,
        "set": set,
        "frozenset": frozenset,
    }
    if kind in containers:
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
            raise machine.refuse(f"calls {func.name} with unexpected arguments")
        items = list(args[0]) if args else []
        if kind in ("set", "frozenset"):
            items = [_hashable(i, machine) for i in items]
        return containers[kind](items)
    if kind == "dict":
        if not args:
            return {}
        if len(args) == 1 and isinstance(args[0], list):
            flat = []
            for pair in args[0]:
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise machine.refuse("builds a dict from something other than pairs")
                flat.extend(pair)
            return machine._pairs(flat, {})
        raise machine.refuse("calls dict with unexpected arguments")
    raise machine.refuse(f"calls {func.module}.{func.name}")


def _raw_bytes(raw: Any, machine: _Machine) -> bytes:
    if isinstance(raw, str):  # Python 2 str read as latin-1
        return raw.encode("latin-1")
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    raise machine.refuse(f"gives array data as a {type(raw).__name__} (object arrays are refused)")


def _make_array(raw: Any, dtype: np.dtype, shape: Any, fortran: bool, machine: _Machine):
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise machine.refuse(f"gives an array the shape {shape!r}")
    data = _raw_bytes(raw, machine)
    count = math.prod(shape)
    if count * dtype.itemsize != len(data):
        raise machine.refuse(
            f"gives an array of shape {shape} and dtype {dtype} {len(data)} bytes, "
            f"not {count * dtype.itemsize}"
        )
    flat = np.frombuffer(data, dtype, count)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="A")


def _array_from_state(state: Any, machine: _Machine) -> np.ndarray:
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]  # (version, shape, dtype, is_fortran, data)
    if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], _Dtype)):
        raise machine.refuse("gives an array a malformed state")
    shape, dtype, fortran, raw = state
    return _make_array(raw, dtype.value, shape, bool(fortran), machine)


def _dtype_from_state(dtype: np.dtype, state: Any, machine: _Machine) -> np.dtype:
    # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    if not (isinstance(state, tuple) and len(state) >= 5):
        raise machine.refuse("gives a dtype a malformed state")
    order = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
    if order not in ("<", ">", "|", "=") or any(s is not None for s in state[2:5]):
        raise machine.refuse("asks for a structured or sub-array dtype")
    return dtype.newbyteorder(order) if order in "<>" else dtype


def _sparse_from_state(kind: str, state: Any, machine: _Machine) -> Any:
    if not isinstance(state, dict):
        raise machine.refuse("gives a sparse matrix a malformed state")
    fields = {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in state.items()}
    try:
        parts = [fields[k] for k in ("data", "indices", "indptr", "_shape")]
    except KeyError as exc:
        raise machine.refuse(f"gives a sparse matrix no {exc.args[0]!r}") from None
    data, indices, indptr, shape = (_finalise(p, {}) for p in parts)
    arrays_ok = all(isinstance(a, np.ndarray) and a.ndim == 1 for a in (data, indices, indptr))
    if not arrays_ok or not isinstance(shape, tuple) or len(shape) != 2:
        raise machine.refuse("gives a sparse matrix fields of the wrong kind")
    if not all(np.issubdtype(a.dtype, np.integer) for a in (indices, indptr)):
        raise machine.refuse("gives a sparse matrix non-integer indices")
    import scipy.sparse

    cls = scipy.sparse.csr_matrix if kind == "csr" else scipy.sparse.csc_matrix
    try:
        matrix = cls((data, indices, indptr), shape=shape)
        # Why the full check: scipy's C routines trust the indices; out-of-range ones would
        # read or write outside the arrays later (todense), so they are checked here.
        matrix.check_format(full_check=True)
    except (ValueError, TypeError) as exc:
        raise machine.refuse(f"holds an invalid sparse matrix ({exc})") from None
    return matrix


def _finalise(obj: Any, seen: dict[int, Any]) -> Any:
    """Replace the placeholders by the arrays, dtypes and matrices they became."""
    if isinstance(obj, (_Array, _Dtype, _Sparse)):
        if obj.value is None:
            raise Refused("refusing to read this pickle: an object was never given its state")
        return obj.value
    if isinstance(obj, _Global):
        raise Refused(f"refusing to read this pickle: it returns the global {_describe(obj)}")
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, list):
        out: list[Any] = []
        seen[key] = out
        out.extend(_finalise(v, seen) for v in obj)
        return out
    if isinstance(obj, dict):
        out_d: dict[Any, Any] = {}
        seen[key] = out_d
        for k, v in obj.items():
            out_d[k] = _finalise(v, seen)
        return out_d
    if isinstance(obj, (tuple, set, frozenset)):
        # Memoised too: a tuple holding the same tuple twice, 60 levels deep, is a few bytes
        # of pickle but 2**60 paths for a walk that does not remember what it has seen.
        seen[key] = type(obj)(_finalise(v, seen) for v in obj)
        return seen[key]
    return obj
