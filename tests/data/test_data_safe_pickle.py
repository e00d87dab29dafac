"""The pickle reader of data files: hostile payloads never run, real layouts parse."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback_alignment import data
from feedback_alignment.data import graphs, images, safe_pickle
from feedback_alignment.data.errors import DataError


def _proto2_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _payloads(marker: Path) -> dict[str, bytes]:
    """Crafted pickles that, unpickled, create ``marker`` (each route the audit used and more).

    Each is built by hand from opcodes, so the test does not depend on how ``pickle.dumps``
    happens to spell a reduction.
    """
    shell = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w').close()"
    call1 = b"\x85R."  # TUPLE1 REDUCE STOP
    return {
        # __reduce__ -> os.system, as pickle.dumps writes it (GLOBAL posix system)
        "reduce-os-system": b"\x80\x02"
        + _proto2_global(os.name if os.name != "nt" else "nt", "system")
        + _unicode(shell)
        + call1,
        # a numpy test helper that exec()s a string (allowed by a "numpy.*" module allow-list)
        "numpy-runstring": b"\x80\x02"
        + _proto2_global("numpy.testing._private.utils", "runstring")
        + _unicode(py)
        + b"}\x86R.",
        # protocol 4 resolves dotted names attribute by attribute: numpy -> numpy.os -> system
        "stack-global-dotted": b"\x80\x04"
        + b"\x8c\x05numpy"
        + b"\x8c\x09os.system"
        + b"\x93"
        + _unicode(shell)
        + call1,
        # builtins.exec / eval
        "builtins-exec": b"\x80\x02" + _proto2_global("builtins", "exec") + _unicode(py) + call1,
        "builtins-eval": b"\x80\x02" + _proto2_global("builtins", "eval") + _unicode(py) + call1,
        # INST opcode (protocol 0 class call)
        "inst-opcode": b"(" + _unicode(shell) + b"ios\nsystem\n.",
        # copyreg._reconstructor with a class outside the table
        "reconstructor-popen": b"\x80\x02"
        + _proto2_global("copyreg", "_reconstructor")
        + _proto2_global("subprocess", "Popen")
        + _proto2_global("builtins", "object")
        + b"N\x87R.",
        # NEWOBJ of an arbitrary class
        "newobj-popen": b"\x80\x02" + _proto2_global("subprocess", "Popen") + b")\x81.",
        # a defaultdict whose factory is os.system
        "defaultdict-factory": b"\x80\x02"
        + _proto2_global("collections", "defaultdict")
        + _proto2_global("posix", "system")
        + call1,
    }


def test_payloads_are_real(tmp_path: Path) -> None:
    """The reduce payload does create the marker when unpickled normally (so the refusal
    tests below would fail if the reader unpickled)."""
    marker = tmp_path / "ran"
    payload = _payloads(marker)["reduce-os-system"]
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=payload, check=False, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize("route", sorted(_payloads(Path("m"))))
def test_crafted_pickles_never_run(tmp_path: Path, route: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "ind.citeseer.graph"
    path.write_bytes(_payloads(marker)[route])
    with pytest.raises(DataError, match=r"ind\.citeseer\.graph: refusing to read this pickle"):
        safe_pickle.load_pickle(path)
    assert not marker.exists()


def test_crafted_planetoid_download_never_runs(tmp_cache, web, tmp_path: Path) -> None:
    """Through the public API: a hostile canonical download (no pinned digest) is refused by
    `data.load`, naming the data set and the file, and runs nothing."""
    from test_data_graphs import _planetoid_files

    marker = tmp_path / "ran"
    files = _planetoid_files()
    files["ind.citeseer.x"] = _payloads(marker)["reduce-os-system"]
    for remote in data.get_spec("citeseer").sources[0].files:
        web.serve(remote.url, files[remote.target])
    with pytest.raises(DataError, match=r"data set 'citeseer', file .*ind\.citeseer\.x: refus"):
        data.load("citeseer", pyg=False)
    assert not marker.exists()


def test_cifar_batch_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(_payloads(marker)["numpy-runstring"])
    with pytest.raises(DataError, match=r"data_batch_1: refusing .*runstring"):
        images.read_cifar_batch(path)
    assert not marker.exists()


_SAMPLE = {
    "a": np.arange(6, dtype=">i4").reshape(2, 3),
    "f": np.asfortranarray(np.linspace(0, 1, 6).reshape(2, 3)),
    "csr": sp.csr_matrix(np.eye(3, 4, dtype=np.float32)),
    "csc": sp.csc_matrix(np.eye(2)),
    "graph": defaultdict(list, {0: [1, 2], 3: []}),
    "scalar": np.float64(2.5),
    "bytes": b"\x00\xff",
    "mixed": (1, -(2**70), 2.5, None, True, "é", frozenset({1}), {2, 3}, [[]]),
}


@pytest.mark.parametrize("protocol", range(6))
def test_every_protocol_round_trips(protocol: int) -> None:
    out = safe_pickle.loads(pickle.dumps(_SAMPLE, protocol=protocol))
    for key, want in _SAMPLE.items():
        got = out[key]
        if sp.issparse(want):
            assert type(got) is type(want) and (got != want).nnz == 0
        elif isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and np.array_equal(got, want)
            assert got.flags.f_contiguous == want.flags.f_contiguous
        else:
            assert got == want, key
    assert type(out["graph"]) is dict  # never a defaultdict with a factory


def test_python2_layout() -> None:
    """What Python 2's cPickle wrote for a numpy array (BINSTRING data, str dtype code):
    ``latin1`` gives str, ``bytes`` gives bytes, the array is the same."""
    raw = np.arange(3, dtype="<i8").tobytes()
    body = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b"
        b"\x87Rq\x03(K\x01K\x03\x85cnumpy\ndtype\nq\x04U\x02i8K\x00K\x01\x87Rq\x05(K\x03U\x01<NNN"
        b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
        + struct.pack("<I", len(raw))
        + raw
        + b"tb."
    )
    for encoding in ("latin1", "bytes"):
        out = safe_pickle.loads(body, encoding=encoding)
        assert out.dtype == np.int64 and out.tolist() == [0, 1, 2]
    key = b"\x80\x02}U\x04dataK\x01s."
    assert safe_pickle.loads(key) == {"data": 1}
    assert safe_pickle.loads(key, encoding="bytes") == {b"data": 1}


def test_object_and_structured_arrays_are_refused() -> None:
    for array in (np.array([{"x": 1}], dtype=object), np.zeros(2, dtype=[("a", "i4")])):
        with pytest.raises(DataError, match="refusing"):
            safe_pickle.loads(pickle.dumps(array, protocol=2))


def test_sparse_indices_are_checked() -> None:
    """scipy's C code trusts indices; an out-of-range one would read past the arrays."""
    m = sp.csr_matrix(np.eye(3, dtype=np.float32))
    raw = pickle.dumps(m, protocol=2)
    m.indices[0] = 7  # column 7 of a 3-column matrix
    bad = pickle.dumps(m, protocol=2)
    assert raw != bad
    with pytest.raises(DataError, match="invalid sparse matrix"):
        safe_pickle.loads(bad)


def test_every_truncation_and_bit_flip_is_a_data_error() -> None:
    """Each prefix of a Planetoid-like pickle, and each single-bit flip of it, either parses
    or fails with DataError -- never EOFError, KeyError, IndexError..."""
    raw = pickle.dumps(_SAMPLE, protocol=2)
    for cut in range(len(raw)):
        with pytest.raises(DataError):
            safe_pickle.loads(raw[:cut])
    outcomes = {"ok": 0, "refused": 0}
    for pos in range(0, len(raw), 3):
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << (pos % 8)
        try:
            safe_pickle.loads(bytes(flipped))
            outcomes["ok"] += 1
        except DataError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_shared_references_are_not_walked_exponentially() -> None:
    """Memo references let a few hundred bytes describe a DAG with 2**80 paths."""
    value: object = ()
    for _ in range(80):
        value = (value, value)
    out = safe_pickle.loads(pickle.dumps(value, protocol=2))
    depth = 0
    while out:
        out, depth = out[0], depth + 1
    assert depth == 80


def test_deep_nesting_is_a_data_error() -> None:
    raw = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."
    with pytest.raises(DataError, match="nested too deeply"):
        safe_pickle.loads(raw)


_plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(value=_plain, protocol=st.integers(0, 5))
def test_plain_values_match_pickle(value, protocol: int) -> None:
    assert safe_pickle.loads(pickle.dumps(value, protocol=protocol)) == value


def test_real_planetoid_layout_still_reads(tmp_path: Path) -> None:
    from test_data_graphs import _planetoid_files

    for name, payload in _planetoid_files().items():
        (tmp_path / name).write_bytes(payload)
    parts = graphs.read_planetoid(tmp_path, "citeseer")
    assert parts["x"].shape == (7, 3)
