"""Scenes: TGA and Collada readers, the ray caster, tiny-NeRF and Blender loaders, the duck."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_cached
from feedback_alignment import data
from feedback_alignment.data import mesh, scenes


def _tga(path: Path, rgb: np.ndarray, *, rle: bool, top_left: bool) -> None:
    h, w, _ = rgb.shape
    rows = rgb if top_left else rgb[::-1]
    bgr = rows[..., ::-1].reshape(-1, 3)
    header = bytes([0, 0, 10 if rle else 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + w.to_bytes(2, "little")
    header += h.to_bytes(2, "little") + bytes([24, 0x20 if top_left else 0])
    if rle:  # one raw packet per pixel, except a run for the first two pixels
        body = bytes([0x81]) + bgr[0].tobytes()
        for px in bgr[2:]:
            body += bytes([0x00]) + px.tobytes()
        assert (bgr[0] == bgr[1]).all()
    else:
        body = bgr.tobytes()
    path.write_bytes(header + body)


@pytest.mark.parametrize("rle", [False, True])
@pytest.mark.parametrize("top_left", [False, True])
def test_read_tga(tmp_path: Path, rle: bool, top_left: bool) -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    rgb[:, 1] = rgb[:, 0]  # a run for the RLE packet, whichever row is stored first
    _tga(tmp_path / "t.tga", rgb, rle=rle, top_left=top_left)
    np.testing.assert_array_equal(mesh.read_tga(tmp_path / "t.tga"), rgb)
    (tmp_path / "bad.tga").write_bytes(bytes([0, 1, 1]) + bytes(15))
    with pytest.raises(ValueError, match="unsupported TGA"):
        mesh.read_tga(tmp_path / "bad.tga")


_DAE = """<?xml version="1.0"?>
<COLLADA xmlns="http://www.collada.org/2005/11/COLLADASchema" version="1.4.1">
 <asset><up_axis>{up}</up_axis></asset>
 <library_images><image id="img"><init_from>tex.tga</init_from></image></library_images>
 <library_geometries><geometry id="g"><mesh>
  <source id="p"><float_array id="pa" count="12">0 0 0  1 0 0  1 1 0  0 1 0</float_array>
   <technique_common><accessor source="#pa" count="4" stride="3"/></technique_common></source>
  <source id="t"><float_array id="ta" count="8">0 0 1 0 1 1 0 1</float_array>
   <technique_common><accessor source="#ta" count="4" stride="2"/></technique_common></source>
  <vertices id="v"><input semantic="POSITION" source="#p"/></vertices>
  <polylist count="1"><input offset="0" semantic="VERTEX" source="#v"/>
   <input offset="1" semantic="TEXCOORD" source="#t"/><vcount>4</vcount>
   <p>0 0 1 1 2 2 3 3</p></polylist>
 </mesh></geometry></library_geometries>
 <library_visual_scenes><visual_scene id="s"><node id="n">
  <translate>0 0 5</translate><instance_geometry url="#g"/></node></visual_scene>
 </library_visual_scenes>
</COLLADA>"""


def _write_quad(tmp_path: Path, up: str) -> Path:
    (tmp_path / "q.dae").write_text(_DAE.format(up=up))
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4] = (255, 0, 0)  # top half (v > 0.5) red, bottom half blue
    texture[4:] = (0, 0, 255)
    _tga(tmp_path / "tex.tga", texture, rle=False, top_left=True)
    return tmp_path / "q.dae"


def test_collada_quad_transforms_up_axis_and_texture(tmp_path: Path) -> None:
    m = mesh.read_collada(_write_quad(tmp_path, "Z_UP"))
    assert m.faces.shape == (2, 3) and m.uv.shape == (2, 3, 2)  # quad fan-triangulated
    np.testing.assert_allclose(m.vertices[:, 2], 5.0)  # node translation applied
    y_up = mesh.read_collada(_write_quad(tmp_path, "Y_UP"))
    # Y-up file: its +Y becomes world +Z and its +Z (the translation) becomes world -Y.
    np.testing.assert_allclose(sorted(set(y_up.vertices[:, 2].round(6))), [0.0, 1.0])
    np.testing.assert_allclose(y_up.vertices[:, 1], -5.0)
    assert m.texture.shape == (8, 8, 3)


def test_render_matches_brute_force_and_samples_texture(tmp_path: Path) -> None:
    m = mesh.read_collada(_write_quad(tmp_path, "Z_UP"))
    c2w = mesh.look_at(np.array([0.5, 0.5, 8.0]), np.array([0.5, 0.5, 5.0]), up=(0.0, 1.0, 0.0))
    h = w = 24
    focal = 0.5 * w / math.tan(math.radians(30) / 2)
    image = mesh.render(m, c2w, h, w, focal, ambient=1.0, background=0.0)
    origins, dirs = mesh.camera_rays(h, w, focal, torch.from_numpy(c2w))
    _, face = mesh.intersect(origins, dirs, torch.from_numpy(m.vertices[m.faces]).double())
    covered = (face >= 0).reshape(h, w).numpy()
    assert covered.sum() > 50
    np.testing.assert_array_equal(image.max(-1) > 0, covered)
    rows = np.flatnonzero(covered.any(1))
    top, bottom = image[rows[2]][covered[rows[2]]], image[rows[-3]][covered[rows[-3]]]
    assert (top[:, 0] > 0.9).all() and (top[:, 2] < 0.1).all()  # image top = texture v=1 red
    assert (bottom[:, 2] > 0.9).all() and (bottom[:, 0] < 0.1).all()


def test_look_at_convention() -> None:
    c2w = mesh.look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3))
    np.testing.assert_allclose(c2w[:3, 2], [0, -1, 0], atol=1e-12)  # camera looks along -Z
    np.testing.assert_allclose(c2w[:3, 1], [0, 0, 1], atol=1e-12)  # +Y is world up
    np.testing.assert_allclose(np.linalg.det(c2w[:3, :3]), 1.0)


def _views(n: int, size: int = 4) -> scenes.SceneViews:
    rng = np.random.default_rng(0)
    poses = torch.from_numpy(
        np.stack([mesh.look_at(np.array([4.0, i, 1.0]), np.zeros(3)) for i in range(n)]).astype(
            np.float32
        )
    )
    images = torch.from_numpy(rng.random((n, size, size, 3), dtype=np.float32))
    return scenes.SceneViews(images[:-2], poses[:-2], images[-2:], poses[-2:], 5.5)


def test_tiny_nerf_npz_round_trip_and_plain_layout(tmp_path: Path) -> None:
    v = _views(6)
    v.save_npz(tmp_path / "ours.npz")
    back = scenes.load_tiny_nerf_npz(tmp_path / "ours.npz")
    assert torch.equal(back.images, v.images) and torch.equal(back.test_poses, v.test_poses)
    assert back.focal == pytest.approx(5.5)
    # The original tiny_nerf_data.npz has only images, poses, focal: last n_test are test.
    np.savez(
        tmp_path / "plain.npz",
        images=np.zeros((5, 4, 4, 3), np.float32),
        poses=np.tile(np.eye(4, dtype=np.float32), (5, 1, 1)),
        focal=np.float32(3.0),
    )
    plain = scenes.load_tiny_nerf_npz(tmp_path / "plain.npz", n_test=1)
    assert plain.images.shape == (4, 4, 4, 3) and plain.test_images.shape == (1, 4, 4, 3)
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"lacks \['focal', 'poses'\]"):
        scenes.load_tiny_nerf_npz(tmp_path / "bad.npz")


def test_tiny_nerf_download_path(tmp_cache, web, tmp_path: Path) -> None:
    _views(5).save_npz(tmp_path / "t.npz")
    web.serve(
        data.get_spec("tiny-nerf-lego").sources[0].files[0].url, (tmp_path / "t.npz").read_bytes()
    )
    v = data.load("tiny-nerf-lego")
    assert v.images.shape == (3, 4, 4, 3) and v.poses.shape == (3, 4, 4)


def test_blender_json(tmp_path: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        frames = []
        for i in range(n):
            rgba = np.zeros((8, 8, 4), np.uint8)
            rgba[2:6, 2:6] = (255, 0, 0, 255)  # opaque red square on a transparent field
            image_mod.fromarray(rgba, "RGBA").save(tmp_path / split / f"r_{i}.png")
            pose = mesh.look_at(np.array([4.0, float(i), 1.0]), np.zeros(3))
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        (tmp_path / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": 0.6911112070083618, "frames": frames})
        )
    v = scenes.load_blender_dir(tmp_path)
    assert v.images.shape == (3, 8, 8, 3) and v.test_poses.shape == (2, 4, 4)
    assert v.images.dtype == torch.float32
    assert v.focal == pytest.approx(0.5 * 8 / math.tan(0.5 * 0.6911112070083618))
    assert v.images[0, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent -> white background
    assert v.images[0, 3, 3].tolist() == [1.0, 0.0, 0.0]
    black = scenes.load_blender_dir(tmp_path, white_background=False, downscale=2)
    assert black.images.shape == (3, 4, 4, 3) and black.images[0, 0, 0].sum() == 0
    (tmp_path / "transforms_val.json").write_text("{}")
    with pytest.raises(ValueError, match="not a Blender transforms file"):
        scenes.read_blender_split(tmp_path, "val")


def test_duck_rig_is_documented() -> None:
    train, test = scenes.duck_rig(40, 8)
    assert train.shape == (40, 4, 4) and test.shape == (8, 4, 4)
    eyes = np.concatenate([train, test])[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), scenes.CAMERA_DISTANCE)
    elevation = np.degrees(np.arcsin(eyes[:, 2] / scenes.CAMERA_DISTANCE))
    assert elevation[:40].min() >= 10 and elevation[:40].max() <= 70
    np.testing.assert_allclose(elevation[40:], 35)
    forward = -np.concatenate([train, test])[:, :3, 2]  # every camera looks at the origin
    np.testing.assert_allclose(forward, -eyes / scenes.CAMERA_DISTANCE, atol=1e-12)
    train_dirs = eyes[:40] / np.linalg.norm(eyes[:40], axis=1, keepdims=True)
    for e in eyes[40:]:  # no test camera coincides with a training camera
        assert (train_dirs @ (e / np.linalg.norm(e))).max() < 0.999


def test_duck_real_upright_and_visible() -> None:
    require_cached("duck")
    v = data.load("duck")
    assert v.images.shape == (40, 100, 100, 3) and v.test_images.shape == (8, 100, 100, 3)
    assert v.poses.shape == (40, 4, 4) and v.poses.dtype == torch.float32
    assert v.focal == pytest.approx(50 / math.tan(math.radians(20)))
    imgs = torch.cat([v.images, v.test_images]).numpy()
    assert imgs.min() >= 0 and imgs.max() <= 1
    duck = imgs.min(-1) < 0.95  # not white background
    fill = duck.mean((1, 2))
    assert (fill > 0.1).all() and (fill < 0.6).all()  # visible, and framed with a margin
    # Upright: the orange beak sits in the upper half of the duck in every view showing it.
    # Orange vs yellow by hue (green/red ratio), which shading does not change.
    ratio = imgs[..., 1] / np.maximum(imgs[..., 0], 1e-3)
    beak = duck & (imgs[..., 0] > 0.3) & (ratio > 0.4) & (ratio < 0.62)
    eyes = torch.cat([v.poses, v.test_poses])[:, :3, 3].numpy()
    elevation = np.degrees(np.arcsin(eyes[:, 2] / np.linalg.norm(eyes, axis=1)))
    checked = 0
    for k in range(len(imgs)):
        if beak[k].sum() < 5 or elevation[k] > 30:  # from above, the beak projects mid-body
            continue
        rows = np.flatnonzero(duck[k].any(1))
        assert np.flatnonzero(beak[k].any(1)).mean() < (rows[0] + rows[-1]) / 2, k
        checked += 1
    assert checked >= 10
    # Yellow body: the texture was applied.
    body = imgs[duck]
    assert np.median(body[:, 0]) > 0.6 and np.median(body[:, 2]) < 0.3
