"""Posed views for view synthesis (NeRF): a rendered textured mesh, tiny-NeRF ``.npz`` files
and Blender-synthetic ``transforms_*.json`` scenes.

Every loader returns :class:`SceneViews` in the tiny-NeRF layout: ``images`` ``(N, H, W, 3)``
float32 in [0, 1], ``poses`` ``(N, 4, 4)`` float32 camera-to-world (OpenGL convention: the
camera looks along its -Z, +Y up, +X right), ``focal`` in pixels, split into train and test.

The ``duck`` scene renders the Collada duck of Debian's ``assimp-testmodels`` (a real textured
mesh, BSD-3) with :mod:`.mesh`. Its camera rig (:func:`duck_rig`), in a Z-up world with the
duck scaled to a bounding sphere of radius :data:`OBJECT_RADIUS` centred at the origin:

* train: ``n_train`` cameras on a Fibonacci spiral over the upper hemisphere between 10 and
  70 degrees elevation, at distance :data:`CAMERA_DISTANCE`, all looking at the origin;
* test: ``n_test`` held-out cameras on a ring at 35 degrees elevation whose azimuths fall
  between those of the training cameras' neighbours (none coincides with a training view);
* field of view 40 degrees horizontally, ``near = 2``, ``far = 6``; white background.

Renders are cached in the data set directory keyed by their parameters, each with its sha256
beside it (``.NAME.npz.sha256``): a render that no longer matches is rendered again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import (
    atomic_path,
    open_verified,
    open_verified_text,
    read_verified,
    verified_bytes,
    write_bytes_atomic,
)
from .errors import DataError, reading
from .mesh import TexturedMesh, look_at, read_collada, render
from .registry import DatasetSpec, register
from .sources import DebianCarrier, Download, RemoteFile

logger = logging.getLogger(__name__)

OBJECT_RADIUS = 1.3
"""Radius of the bounding sphere the mesh is scaled to."""
CAMERA_DISTANCE = 4.0
"""Distance of every camera from the origin (the tiny-NeRF lego scene uses 4.03)."""
FOV_DEGREES = 40.0
RENDER_VERSION = 1
"""Bump when rendering changes, so stale cached renders are not reused."""


@dataclass(frozen=True)
class SceneViews:
    """Posed images of one scene, tiny-NeRF layout, split into train and test views.

    Attributes:
        images: ``(N_train, H, W, 3)`` float32 in [0, 1].
        poses: ``(N_train, 4, 4)`` float32 camera-to-world.
        test_images: ``(N_test, H, W, 3)`` float32 in [0, 1].
        test_poses: ``(N_test, 4, 4)`` float32 camera-to-world.
        focal: Focal length in pixels (``0.5 * W / tan(0.5 * fov_x)``).
        near, far: Depth bounds that contain the scene, for ray sampling.
    """

    images: torch.Tensor
    poses: torch.Tensor
    test_images: torch.Tensor
    test_poses: torch.Tensor
    focal: float
    near: float = 2.0
    far: float = 6.0

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def save_npz(self, path: Path) -> None:
        """Write the tiny-NeRF layout (``images``, ``poses``, ``focal``; test views last,
        listed in ``i_test``), atomically."""
        images = torch.cat([self.images, self.test_images]).numpy()
        poses = torch.cat([self.poses, self.test_poses]).numpy()
        i_test = np.arange(len(self.images), len(images))
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                images=images,
                poses=poses,
                focal=np.float32(self.focal),
                i_test=i_test,
                near=np.float32(self.near),
                far=np.float32(self.far),
            )


# --------------------------------------------------------------------------- file loaders


def load_tiny_nerf_npz(path: Path, *, n_test: int = 6) -> SceneViews:
    """Load a tiny-NeRF ``.npz`` (``images`` (N,H,W,3), ``poses`` (N,4,4), ``focal``).

    Test views: those listed in ``i_test`` when the file has it (ours do), else the last
    ``n_test`` (the tiny-NeRF notebook trains on the first 100 of 106 lego views).

    Raises:
        DataError: the file is damaged, lacks arrays or has inconsistent shapes (it is read
            with ``allow_pickle=False``: an npz cannot run code).
    """
    with reading(path, "a tiny-NeRF npz"), np.load(open_verified(path), allow_pickle=False) as npz:
        missing = {"images", "poses", "focal"} - set(npz.files)
        if missing:
            raise DataError(f"is a tiny-NeRF npz that lacks {sorted(missing)}", file=path)
        images = np.asarray(npz["images"], dtype=np.float32)
        poses = np.asarray(npz["poses"], dtype=np.float32)
        focal = float(npz["focal"])
        i_test = np.asarray(npz["i_test"], dtype=np.int64) if "i_test" in npz.files else None
        near = float(npz["near"]) if "near" in npz.files else 2.0
        far = float(npz["far"]) if "far" in npz.files else 6.0
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or poses.shape != (len(images), 4, 4):
        raise DataError(
            f"holds images {images.shape} and poses {poses.shape}, which do not form a "
            "tiny-NeRF set ((N,H,W,3), (N,4,4))",
            file=path,
        )
    if i_test is not None and (
        i_test.ndim != 1 or (len(i_test) and not 0 <= i_test.min() <= i_test.max() < len(images))
    ):
        raise DataError("lists test views that do not exist (i_test)", file=path)
    images = images[..., :3]
    if images.max() > 1.0:  # stored as 0-255
        images = images / 255.0
    if i_test is None:
        if not 0 < n_test < len(images):
            raise ValueError(f"n_test must be in 1..{len(images) - 1}, got {n_test}")
        i_test = np.arange(len(images) - n_test, len(images))
    train = np.setdiff1d(np.arange(len(images)), i_test)
    t = torch.from_numpy
    return SceneViews(
        t(images[train]), t(poses[train]), t(images[i_test]), t(poses[i_test]), focal, near, far
    )


def read_blender_split(
    root: Path, split: str, *, white_background: bool = True, downscale: int = 1
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Read one split of a Blender-synthetic scene (``transforms_{split}.json``).

    Each frame's ``file_path`` is relative to ``root`` and may omit ``.png``; RGBA images are
    composited over white (the NeRF paper's convention) or black.

    Returns:
        ``(images (N, H, W, 3) float32 in [0,1], poses (N, 4, 4) float32, focal)``.

    Raises:
        DataError: malformed JSON, an image outside ``root``, or images of different sizes.
        ImportError: Pillow is missing (it decodes the PNGs).
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("Blender scenes need Pillow: pip install pillow") from exc
    root = Path(root)
    meta_path = root / f"transforms_{split}.json"
    try:
        meta = json.loads(open_verified_text(meta_path, "utf-8").read())
        angle = float(meta["camera_angle_x"])
        frames = meta["frames"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"is not a Blender transforms file ({exc!r})", file=meta_path) from exc
    images, poses = [], []
    for frame in frames:
        with reading(meta_path, "a Blender transforms file"):
            rel = frame["file_path"]
            pose = np.asarray(frame["transform_matrix"], dtype=np.float32).reshape(4, 4)
        path = root / rel
        if not path.suffix:
            path = path.with_suffix(".png")
        if not path.resolve().is_relative_to(root.resolve()):
            raise DataError(f"names the image {rel!r} outside the scene folder", file=meta_path)
        with reading(path, "an image"), Image.open(open_verified(path)) as im:
            im = im.convert("RGBA")
            if downscale > 1:
                im = im.resize(
                    (im.width // downscale, im.height // downscale), Image.Resampling.BOX
                )
            rgba = np.asarray(im, dtype=np.float32) / 255.0
        bg = 1.0 if white_background else 0.0
        images.append(rgba[..., :3] * rgba[..., 3:] + bg * (1.0 - rgba[..., 3:]))
        poses.append(pose)
    if not images:
        raise DataError("has no frames", file=meta_path)
    if len({im.shape for im in images}) != 1:
        raise DataError("names images that differ in size", file=meta_path)
    width = images[0].shape[1]
    focal = 0.5 * width / math.tan(0.5 * angle)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(poses)), focal


def load_blender_dir(
    root: Path, *, test_split: str = "test", white_background: bool = True, downscale: int = 1
) -> SceneViews:
    """A Blender-synthetic scene (e.g. ``nerf_synthetic/lego``): ``train`` vs ``test_split``.
    ``near = 2``, ``far = 6`` as in the NeRF paper."""
    images, poses, focal = read_blender_split(
        root, "train", white_background=white_background, downscale=downscale
    )
    test_images, test_poses, _ = read_blender_split(
        root, test_split, white_background=white_background, downscale=downscale
    )
    return SceneViews(images, poses, test_images, test_poses, focal)


# --------------------------------------------------------------------------- rendered duck


def normalise(mesh: TexturedMesh, radius: float = OBJECT_RADIUS) -> TexturedMesh:
    """Centre the mesh's bounding box at the origin and scale its bounding sphere to
    ``radius``, so one camera rig fits any model whatever its units."""
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    centred = mesh.vertices - (lo + hi) / 2
    scale = radius / float(np.linalg.norm(centred, axis=1).max())
    return TexturedMesh(centred * scale, mesh.faces, mesh.uv, mesh.normals, mesh.texture)


def duck_rig(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world poses ``(n_train, 4, 4)`` and ``(n_test, 4, 4)`` (see module doc)."""
    golden = math.pi * (3 - math.sqrt(5))
    lo, hi = math.sin(math.radians(10)), math.sin(math.radians(70))
    train = []
    for k in range(n_train):
        z = lo + (hi - lo) * (k + 0.5) / n_train  # uniform in z = uniform area on the sphere
        elevation, azimuth = math.asin(z), k * golden
        train.append(_pose(azimuth, elevation))
    test = [_pose(2 * math.pi * (k + 0.5) / n_test, math.radians(35)) for k in range(n_test)]
    return np.stack(train), np.stack(test)


def _pose(azimuth: float, elevation: float) -> np.ndarray:
    eye = CAMERA_DISTANCE * np.array(
        [
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        ]
    )
    return look_at(eye, np.zeros(3))


def render_views(mesh: TexturedMesh, poses: np.ndarray, size: int) -> np.ndarray:
    """Render ``(N, size, size, 3)`` float32 views with the rig's field of view."""
    focal = 0.5 * size / math.tan(math.radians(FOV_DEGREES) / 2)
    return np.stack([render(mesh, pose, size, size, focal) for pose in poses])


def load_duck_dir(
    directory: Path, *, size: int = 100, n_train: int = 40, n_test: int = 8
) -> SceneViews:
    """Render (or read the cached render of) the Collada duck: ``n_train`` training and
    ``n_test`` held-out views of ``size`` x ``size`` pixels (see the module doc for the rig).

    Raises:
        ValueError: non-positive sizes or counts.
    """
    if size < 8 or n_train < 1 or n_test < 1:
        raise ValueError(
            f"need size >= 8 and at least one view per split, got size={size}, "
            f"n_train={n_train}, n_test={n_test}"
        )
    key = hashlib.sha256(
        json.dumps(
            [RENDER_VERSION, size, n_train, n_test, OBJECT_RADIUS, CAMERA_DISTANCE, FOV_DEGREES]
        ).encode()
    ).hexdigest()[:12]
    cached = directory / f"views-{size}px-{n_train}+{n_test}-{key}.npz"
    record = cached.with_name(f".{cached.name}.sha256")
    if cached.is_file():
        try:  # the render's bytes are read once: those hashed are those parsed
            raw = read_verified(cached)
            intact = record.read_text(encoding="ascii").strip() == hashlib.sha256(raw).hexdigest()
        except (OSError, ValueError):
            intact = False
        if intact:
            with verified_bytes({cached: raw}):
                return load_tiny_nerf_npz(cached)
        logger.warning(
            "cached render %s does not match its recorded sha256; rendering again", cached
        )
    with reading(directory / "duck.dae", "a Collada model with its texture"):
        mesh = normalise(read_collada(directory / "duck.dae"))
    train_poses, test_poses = duck_rig(n_train, n_test)
    logger.info(
        "rendering %d duck views at %dx%d (cached afterwards)", n_train + n_test, size, size
    )
    poses = np.concatenate([train_poses, test_poses])
    images = render_views(mesh, poses, size)
    focal = 0.5 * size / math.tan(math.radians(FOV_DEGREES) / 2)
    t = torch.from_numpy
    views = SceneViews(
        t(images[:n_train]),
        t(poses[:n_train]).float(),
        t(images[n_train:]),
        t(poses[n_train:]).float(),
        focal,
    )
    views.save_npz(cached)
    write_bytes_atomic(record, (hashlib.sha256(cached.read_bytes()).hexdigest() + "\n").encode())
    return views


def prepare_duck(directory: Path) -> None:
    """Render the default views at fetch time, so the first training run does not wait."""
    load_duck_dir(directory)


def load_tiny_nerf_dir(directory: Path, **kwargs: int) -> SceneViews:
    """The tiny-NeRF lego scene (106 views of 100x100; the last 6 are the test views)."""
    return load_tiny_nerf_npz(directory / "tiny_nerf_data.npz", **kwargs)


# --------------------------------------------------------------------------- registry

_ASSIMP = "/usr/share/assimp/models/Collada/"
register(
    DatasetSpec(
        name="duck",
        family="scenes",
        description="Collada duck (assimp test model) rendered: 40 train + 8 test views, "
        "100x100, tiny-NeRF layout",
        license="SCEA Shared Source License 1.0 (model); Debian assimp-testmodels",
        loader=load_duck_dir,
        files=("duck.dae", "duckCM.tga"),
        sources=(
            DebianCarrier(
                "assimp-testmodels",
                {"duck.dae": _ASSIMP + "duck.dae", "duckCM.tga": _ASSIMP + "duckCM.tga"},
            ),
        ),
        size="1.1 MB",
        prepare=prepare_duck,
    )
)

register(
    DatasetSpec(
        name="tiny-nerf-lego",
        family="scenes",
        description="tiny-NeRF lego: 106 views 100x100 (last 6 for test), tiny-NeRF layout",
        license="CC BY 3.0 (NeRF authors)",
        loader=load_tiny_nerf_dir,
        files=("tiny_nerf_data.npz",),
        # No published sha256 could be found: trust on first use (recorded in the manifest by
        # the first download, checked on every load).
        sources=(
            Download(
                (
                    RemoteFile(
                        "https://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf/tiny_nerf_data.npz",
                        None,
                        "tiny_nerf_data.npz",
                    ),
                )
            ),
        ),
        size="13 MB",
    )
)
