"""Real data sets for the experiments: one registry, offline sources first.

Each data set declares ordered sources -- the local cache, an offline *carrier* (a pip or Debian
package that ships the files, read without importing it), then the canonical download checked
against a pinned sha256. The library parses the standard formats itself.

Example:
    >>> from feedback_alignment import data
    >>> digits = data.load("digits")            # ImageData, x_train (1438, 1, 8, 8)
    >>> [s.name for s in data.list_specs("graphs")]
    ['citeseer', 'cora', 'pubmed']

Every load checks each cached file against its pinned sha256 (or the digest recorded when it was
first fetched, for files without a published one) and repairs a damaged file from its source or
fails; every failure is a :class:`DataError` naming the data set, the file and the fix. Pickled
formats (Planetoid, CIFAR-10) are parsed without unpickling (:mod:`.safe_pickle`).

The cache lives in ``$FEEDBACK_ALIGNMENT_DATA`` if set, else
``$XDG_CACHE_HOME/feedback-alignment`` (default ``~/.cache/feedback-alignment``).
``python -m feedback_alignment.data list`` shows what exists and what is cached.
:func:`requirements` says, without importing anything heavy, which optional packages a data set's
parser still needs (``pip install "feedback-alignment[data]"`` installs them).
"""

from . import graphs, images, ratings, scenes, text
from .cache import ENV_VAR, cache_root, dataset_dir
from .errors import DataError
from .graphs import GraphData
from .images import ImageData
from .ratings import CTRData
from .registry import (
    FAMILIES,
    DatasetSpec,
    DataUnavailableError,
    MissingDependencyError,
    check,
    discard,
    ensure,
    get_spec,
    is_cached,
    list_specs,
    load,
    requirements,
)
from .scenes import SceneViews
from .text import CharCorpus

__all__ = [
    "ENV_VAR",
    "FAMILIES",
    "CTRData",
    "CharCorpus",
    "DataError",
    "DataUnavailableError",
    "DatasetSpec",
    "GraphData",
    "ImageData",
    "MissingDependencyError",
    "SceneViews",
    "cache_root",
    "check",
    "dataset_dir",
    "discard",
    "ensure",
    "get_spec",
    "graphs",
    "images",
    "is_cached",
    "list_specs",
    "load",
    "ratings",
    "requirements",
    "scenes",
    "text",
]
