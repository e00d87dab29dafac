"""Just enough of Collada and TGA to read a textured test model, and a ray caster to render it.

Why our own: trimesh needs pycollada for ``.dae`` and embree for fast rays; a triangle mesh of a
few thousand faces renders at 100x100 in well under a second with brute-force Moller-Trumbore in
torch, so no extra dependency is worth it.

World convention: Z up (Blender, the NeRF synthetic scenes). A Collada file's ``<up_axis>`` is
honoured by rotating its geometry into Z-up. Cameras follow the OpenGL/NeRF convention:
camera-to-world matrices whose camera looks along its -Z axis with +Y up and +X right.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import open_verified, read_verified

_NS = {"c": "http://www.collada.org/2005/11/COLLADASchema"}


@dataclass(frozen=True)
class TexturedMesh:
    """A triangle mesh with per-corner texture coordinates and normals.

    Attributes:
        vertices: ``(V, 3)`` float32 positions, Z up.
        faces: ``(F, 3)`` int64 vertex indices.
        uv: ``(F, 3, 2)`` float32 texture coordinates per corner (origin bottom-left), or None.
        normals: ``(F, 3, 3)`` float32 unit normals per corner, or None.
        texture: ``(H, W, 3)`` uint8 image, row 0 at the top, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None
    normals: np.ndarray | None
    texture: np.ndarray | None


# --------------------------------------------------------------------------- TGA


TGA_LIMIT = 1 << 28
"""Most bytes of decoded TGA pixels (256 MiB): a tiny RLE file cannot claim a huge image."""


def read_tga(path: Path) -> np.ndarray:
    """Read a true-colour TGA (uncompressed type 2 or RLE type 10, 24 or 32 bits).

    Returns:
        ``(H, W, 3)`` uint8 RGB, row 0 at the top.

    Raises:
        ValueError: another TGA variant (colour-mapped, grey) or a truncated file.
    """
    raw = read_verified(path)
    if len(raw) < 18:
        raise ValueError(f"{path}: truncated TGA header")
    id_len, cmap_type, img_type = raw[0], raw[1], raw[2]
    width, height = int.from_bytes(raw[12:14], "little"), int.from_bytes(raw[14:16], "little")
    bpp, descriptor = raw[16], raw[17]
    if cmap_type != 0 or img_type not in (2, 10) or bpp not in (24, 32):
        raise ValueError(
            f"{path}: unsupported TGA (type {img_type}, colour map {cmap_type}, "
            f"{bpp} bits); only true-colour 24/32-bit is read"
        )
    channels = bpp // 8
    data = memoryview(raw)[18 + id_len :]
    n = width * height
    if n * channels > TGA_LIMIT:
        raise ValueError(f"{path}: a {width}x{height} TGA is larger than this reader accepts")
    if img_type == 2:
        if len(data) < n * channels:
            raise ValueError(f"{path}: truncated TGA pixel data")
        pixels = np.frombuffer(data[: n * channels], np.uint8).reshape(n, channels)
    else:
        pixels = np.empty((n, channels), np.uint8)
        pos = out = 0
        while out < n:
            if pos >= len(data):
                raise ValueError(f"{path}: truncated RLE TGA data")
            header = data[pos]
            count = (header & 0x7F) + 1
            pos += 1
            if header & 0x80:
                pixels[out : out + count] = np.frombuffer(data[pos : pos + channels], np.uint8)
                pos += channels
            else:
                chunk = np.frombuffer(data[pos : pos + count * channels], np.uint8)
                pixels[out : out + count] = chunk.reshape(count, channels)
                pos += count * channels
            out += count
    image = pixels.reshape(height, width, channels)[..., [2, 1, 0]]  # BGR(A) -> RGB
    if not descriptor & 0x20:  # origin bottom-left: flip so that row 0 is the top
        image = image[::-1]
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------- Collada


def _floats(text: str | None) -> np.ndarray:
    return np.array((text or "").split(), dtype=np.float64)


def _node_matrix(node: ET.Element) -> np.ndarray:
    """Compose a node's transform elements in document order (Collada's rule)."""
    m = np.eye(4)
    for child in node:
        tag = child.tag.split("}")[-1]
        v = _floats(child.text)
        t = np.eye(4)
        if tag == "matrix":
            t = v.reshape(4, 4)
        elif tag == "translate":
            t[:3, 3] = v
        elif tag == "scale":
            t[:3, :3] = np.diag(v)
        elif tag == "rotate":
            axis = v[:3] / (np.linalg.norm(v[:3]) or 1.0)
            a = math.radians(v[3])
            k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            t[:3, :3] = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)
        else:
            continue
        m = m @ t
    return m


_UP_TO_Z = {
    "Y_UP": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64),
    "Z_UP": np.eye(3),
    "X_UP": np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float64),
}
"""Rotations (det +1) taking each Collada up axis onto +Z."""


def read_collada(path: Path) -> TexturedMesh:
    """Read the triangles/polylists of a Collada file, with node transforms and up axis applied.

    Limits: one texture for the whole model (the first ``<image>``, which is what simple test
    models have); polygons are fan-triangulated; skinning, animation and materials without a
    texture are ignored.

    Raises:
        ValueError: no geometry, or an input the parser does not understand.
    """
    path = Path(path)
    root = ET.parse(open_verified(path)).getroot()
    up = (root.findtext("c:asset/c:up_axis", default="Y_UP", namespaces=_NS) or "Y_UP").strip()
    if up not in _UP_TO_Z:
        raise ValueError(f"{path}: unknown up_axis {up!r}")
    sources = {s.get("id"): s for s in root.iter(f"{{{_NS['c']}}}source")}

    def source_array(ref: str) -> np.ndarray:
        src = sources.get(ref.lstrip("#"))
        if src is None:
            raise ValueError(f"{path}: missing source {ref}")
        acc = src.find("c:technique_common/c:accessor", _NS)
        stride = int(acc.get("stride", "1")) if acc is not None else 1
        return _floats(src.findtext("c:float_array", namespaces=_NS)).reshape(-1, stride)

    geometries: dict[str, tuple[np.ndarray, ...]] = {}
    for geom in root.iterfind(".//c:library_geometries/c:geometry", _NS):
        mesh = geom.find("c:mesh", _NS)
        if mesh is None:
            continue
        vertices_el = mesh.find("c:vertices", _NS)
        pos_ref = vertices_el.find("c:input[@semantic='POSITION']", _NS).get("source")
        vertex_id = vertices_el.get("id")
        positions = source_array(pos_ref)[:, :3]
        tris_pos, tris_uv, tris_n = [], [], []
        for prim in list(mesh.iterfind("c:triangles", _NS)) + list(
            mesh.iterfind("c:polylist", _NS)
        ):
            inputs = prim.findall("c:input", _NS)
            n_off = max(int(i.get("offset", "0")) for i in inputs) + 1
            idx = np.array((prim.findtext("c:p", namespaces=_NS) or "").split(), dtype=np.int64)
            idx = idx.reshape(-1, n_off)
            count = int(prim.get("count", "0"))
            if prim.tag.endswith("polylist"):
                vcount = np.array(prim.findtext("c:vcount", namespaces=_NS).split(), np.int64)
            else:
                vcount = np.full(count, 3, np.int64)
            starts = np.concatenate([[0], np.cumsum(vcount)[:-1]])
            # Fan triangulation: (s, s+k, s+k+1) for each polygon starting at corner s.
            corners = np.array(
                [
                    (s, s + k, s + k + 1)
                    for s, c in zip(starts, vcount, strict=True)
                    for k in range(1, c - 1)
                ],
                dtype=np.int64,
            ).reshape(-1, 3)
            by_sem = {}
            for inp in inputs:
                sem, off = inp.get("semantic"), int(inp.get("offset", "0"))
                if sem == "VERTEX" and inp.get("source").lstrip("#") == vertex_id:
                    by_sem["VERTEX"] = (positions, off)
                elif sem in ("TEXCOORD", "NORMAL") and sem not in by_sem:
                    by_sem[sem] = (source_array(inp.get("source")), off)
            if "VERTEX" not in by_sem:
                raise ValueError(f"{path}: primitive without VERTEX input")
            tris_pos.append(positions[idx[corners, by_sem["VERTEX"][1]]])
            if "TEXCOORD" in by_sem:
                arr, off = by_sem["TEXCOORD"]
                tris_uv.append(arr[idx[corners, off]][..., :2])
            if "NORMAL" in by_sem:
                arr, off = by_sem["NORMAL"]
                tris_n.append(arr[idx[corners, off]][..., :3])
        if tris_pos:
            geometries[geom.get("id")] = (
                np.concatenate(tris_pos),
                np.concatenate(tris_uv) if len(tris_uv) == len(tris_pos) else None,
                np.concatenate(tris_n) if len(tris_n) == len(tris_pos) else None,
            )
    if not geometries:
        raise ValueError(f"{path}: no triangle geometry")

    placed_pos, placed_uv, placed_n = [], [], []
    up_rot = _UP_TO_Z[up]

    def visit(node: ET.Element, parent: np.ndarray) -> None:
        m = parent @ _node_matrix(node)
        for inst in node.iterfind("c:instance_geometry", _NS):
            geo = geometries.get(inst.get("url", "").lstrip("#"))
            if geo is None:
                continue
            pos, uv, nrm = geo
            world = pos @ m[:3, :3].T + m[:3, 3]
            placed_pos.append(world @ up_rot.T)
            placed_uv.append(uv)
            if nrm is not None:
                normal_m = np.linalg.inv(m[:3, :3]).T
                nrm = nrm @ normal_m.T @ up_rot.T
                nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
            placed_n.append(nrm)
        for child in node.iterfind("c:node", _NS):
            visit(child, m)

    for scene in root.iterfind(".//c:library_visual_scenes/c:visual_scene", _NS):
        for node in scene.iterfind("c:node", _NS):
            visit(node, np.eye(4))
    if not placed_pos:  # geometry never instanced: take it as is
        for pos, uv, nrm in geometries.values():
            placed_pos.append(pos @ up_rot.T)
            placed_uv.append(uv)
            placed_n.append(None if nrm is None else nrm @ up_rot.T)

    tri = np.concatenate(placed_pos).astype(np.float32)  # (F, 3, 3)
    uv = (
        np.concatenate(placed_uv).astype(np.float32)
        if all(u is not None for u in placed_uv)
        else None
    )
    normals = (
        np.concatenate(placed_n).astype(np.float32)
        if all(n is not None for n in placed_n)
        else None
    )
    texture = None
    image_ref = root.findtext(".//c:library_images/c:image/c:init_from", namespaces=_NS)
    if image_ref and uv is not None:
        texture_path = (path.parent / image_ref.strip().removeprefix("file://")).resolve()
        if not texture_path.is_relative_to(path.parent.resolve()):
            # Why: the model file names its texture; a tampered one must not read other files.
            raise ValueError(f"{path}: texture {image_ref!r} lies outside the model's folder")
        if texture_path.suffix.lower() == ".tga":
            texture = read_tga(texture_path)
        else:
            try:
                from PIL import Image
            except ImportError as exc:
                raise ImportError(f"{texture_path.name} needs Pillow: pip install pillow") from exc
            texture = np.asarray(Image.open(open_verified(texture_path)).convert("RGB"))
    n_faces = tri.shape[0]
    return TexturedMesh(
        vertices=tri.reshape(-1, 3),
        faces=np.arange(3 * n_faces, dtype=np.int64).reshape(n_faces, 3),
        uv=uv,
        normals=normals,
        texture=texture,
    )


# --------------------------------------------------------------------------- rendering


def look_at(
    eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)
) -> np.ndarray:
    """Camera-to-world matrix (OpenGL convention: the camera looks along its -Z)."""
    up_v = np.asarray(up, dtype=np.float64)
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    z = -forward
    x = np.cross(up_v, z)
    if np.linalg.norm(x) < 1e-8:  # looking straight along `up`
        x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def camera_rays(
    height: int, width: int, focal: float, c2w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions ``(H*W, 3)`` through pixel centres (tiny-NeRF convention)."""
    j, i = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    dirs = torch.stack(
        [(i - width / 2) / focal, -(j - height / 2) / focal, -torch.ones_like(i)], dim=-1
    ).reshape(-1, 3)
    dirs = dirs @ c2w[:3, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(dirs), dirs


def _ray_triangle(
    o: torch.Tensor, d: torch.Tensor, tri: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moller-Trumbore for matching rows: ray ``i`` against triangle ``i`` (``(..., 3)``,
    ``(..., 3, 3)``). Returns ``(t, u, v)``, with ``t = inf`` where the ray misses."""
    v0, e1, e2 = tri[..., 0, :], tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]
    p = torch.linalg.cross(d, e2)
    det = (e1 * p).sum(-1)
    ok_det = det.abs() > 1e-12
    inv = 1.0 / torch.where(ok_det, det, torch.ones_like(det))
    tvec = o - v0
    u = (tvec * p).sum(-1) * inv
    q = torch.linalg.cross(tvec, e1)
    v = (d * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    ok = ok_det & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
    return torch.where(ok, t, torch.full_like(t, math.inf)), u, v


def intersect(
    origins: torch.Tensor, dirs: torch.Tensor, tris: torch.Tensor, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of each ray against every triangle, brute force (a reference for tests).

    Returns:
        ``(t, face)``: hit distance ``(R,)`` (inf on a miss), face index ``(R,)`` (-1 on a miss).
    """
    ts, faces = [], []
    for s in range(0, origins.shape[0], chunk):
        o, d = origins[s : s + chunk, None], dirs[s : s + chunk, None]
        t, _, _ = _ray_triangle(
            o.expand(-1, len(tris), -1),
            d.expand(-1, len(tris), -1),
            tris[None].expand(o.shape[0], -1, -1, -1),
        )
        tmin, face = t.min(dim=1)
        ts.append(tmin)
        faces.append(torch.where(torch.isfinite(tmin), face, torch.full_like(face, -1)))
    return torch.cat(ts), torch.cat(faces)


def _sample(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``(H, W, 3)`` float texture at ``(R, 2)`` uv (wrapping, v up)."""
    h, w = texture.shape[:2]
    x = (uv[:, 0] % 1.0) * w - 0.5
    y = (1.0 - uv[:, 1] % 1.0) * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()

    def px(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return texture[yy % h, xx % w]

    top = px(y0, x0) * (1 - fx) + px(y0, x0 + 1) * fx
    bottom = px(y0 + 1, x0) * (1 - fx) + px(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def _candidate_pairs(
    tris: torch.Tensor, c2w: torch.Tensor, height: int, width: int, focal: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(face, pixel) pairs whose ray may hit the face: pixels inside the face's projected
    bounding box (one pixel of margin). Faces reaching behind the camera pair with every pixel.

    Why: testing every ray against every face costs rays x faces; a face of a small mesh
    covers a handful of pixels, so this keeps the exact ray test for a few candidates only.
    """
    w2c = torch.linalg.inv(c2w)
    cam = tris @ w2c[:3, :3].T + w2c[:3, 3]  # (F, 3, 3), camera looks along -z
    depth = -cam[..., 2]
    in_front = (depth > 1e-6).all(dim=1)
    safe = depth.clamp_min(1e-6)
    px = cam[..., 0] / safe * focal + width / 2  # column coordinate (pixel centres at k+0.5)
    py = -cam[..., 1] / safe * focal + height / 2
    x0 = torch.where(in_front, px.min(1).values.floor() - 1, torch.zeros(()))
    x1 = torch.where(in_front, px.max(1).values.ceil() + 1, torch.full((), width - 1.0))
    y0 = torch.where(in_front, py.min(1).values.floor() - 1, torch.zeros(()))
    y1 = torch.where(in_front, py.max(1).values.ceil() + 1, torch.full((), height - 1.0))
    x0, x1 = x0.clamp(0, width - 1).long(), x1.clamp(0, width - 1).long()
    y0, y1 = y0.clamp(0, height - 1).long(), y1.clamp(0, height - 1).long()
    nx, ny = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    keep = (px.max(1).values >= 0) & (px.min(1).values < width) & (py.max(1).values >= 0) & (
        py.min(1).values < height
    ) | ~in_front
    counts = torch.where(keep, nx * ny, torch.zeros_like(nx))
    face = torch.repeat_interleave(torch.arange(len(tris)), counts)
    offset = torch.arange(int(counts.sum())) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    col = x0[face] + offset % nx[face]
    row = y0[face] + offset // nx[face]
    return face, row * width + col


def render(
    mesh: TexturedMesh,
    c2w: np.ndarray,
    height: int,
    width: int,
    focal: float,
    *,
    light: tuple[float, float, float] = (0.3, -0.5, 0.8),
    ambient: float = 0.35,
    background: float = 1.0,
    base_color: tuple[float, float, float] = (0.8, 0.8, 0.8),
) -> np.ndarray:
    """Ray-cast one view: texture colour x (ambient + diffuse Lambert from a fixed light).

    Each pixel's ray is tested exactly (Moller-Trumbore) against the faces whose projection
    may cover it, and the nearest hit wins. The light is fixed in the world, so a surface point
    looks the same from every camera (view-independent shading, as a radiance field would learn
    it). Faces are two-sided.

    Returns:
        ``(H, W, 3)`` float32 in [0, 1]; pixels that hit nothing get ``background``.
    """
    tris = torch.from_numpy(mesh.vertices[mesh.faces]).to(torch.float64)
    c2w_t = torch.from_numpy(np.asarray(c2w, dtype=np.float64))
    origins, dirs = camera_rays(height, width, focal, c2w_t)
    face, pix = _candidate_pairs(tris, c2w_t, height, width, focal)
    t, u, v = _ray_triangle(origins[pix], dirs[pix], tris[face])
    hit = torch.isfinite(t)
    face, pix, t, u, v = face[hit], pix[hit], t[hit], u[hit], v[hit]
    # Nearest hit per pixel: sort by depth, keep each pixel's first occurrence.
    order = torch.argsort(t, stable=True)
    face, pix, u, v = face[order], pix[order], u[order], v[order]
    first = torch.ones_like(pix, dtype=torch.bool)
    sorted_pix, by_pix = torch.sort(pix, stable=True)
    first_sorted = torch.ones_like(first)
    first_sorted[1:] = sorted_pix[1:] != sorted_pix[:-1]
    first = torch.zeros_like(first)
    first[by_pix[first_sorted]] = True
    face, sel, bary = face[first], pix[first], torch.stack([u[first], v[first]], dim=-1)

    rgb = torch.full((height * width, 3), float(background), dtype=torch.float64)
    w = torch.cat([1 - bary.sum(-1, keepdim=True), bary], dim=-1)[:, :, None]  # (R, 3, 1)
    if mesh.uv is not None and mesh.texture is not None:
        uv = (torch.from_numpy(mesh.uv).to(torch.float64)[face] * w).sum(1)
        albedo = _sample(torch.from_numpy(mesh.texture).to(torch.float64) / 255.0, uv)
    else:
        albedo = torch.tensor(base_color, dtype=torch.float64).expand(len(face), 3)
    if mesh.normals is not None:
        normal = (torch.from_numpy(mesh.normals).to(torch.float64)[face] * w).sum(1)
    else:
        tf = tris[face]
        normal = torch.linalg.cross(tf[:, 1] - tf[:, 0], tf[:, 2] - tf[:, 0])
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    facing = torch.where((normal * dirs[sel]).sum(-1, keepdim=True) > 0, -normal, normal)
    light_t = torch.tensor(light, dtype=torch.float64)
    lambert = (facing * (light_t / light_t.norm())).sum(-1, keepdim=True).clamp_min(0)
    rgb[sel] = (albedo * (ambient + (1 - ambient) * lambert)).clamp(0, 1)
    return rgb.reshape(height, width, 3).to(torch.float32).numpy()
