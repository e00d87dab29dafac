"""The NeRF task's data: a registry scene's training views flattened into rays, and its test views.

Kept apart from the task (:mod:`.nerf`) so that the tuner, the task and the tests read one loader;
``hold_out`` keeps one training view out of the rays as the tuner's validation view, so no choice
ever reads a test view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from feedback_alignment.models.nerf import camera_rays


@dataclass
class Scene:
    """Views as flat training rays plus the held-out cameras."""

    origins: torch.Tensor  # (N*H*W, 3)
    directions: torch.Tensor  # (N*H*W, 3)
    colours: torch.Tensor  # (N*H*W, 3)
    test_images: torch.Tensor  # (M, H, W, 3)
    test_poses: torch.Tensor  # (M, 4, 4)
    focal: float
    near: float
    far: float
    val_image: torch.Tensor | None = None  # (H, W, 3): a training view held out (tuning)
    val_pose: torch.Tensor | None = None  # (4, 4)


def load_scene(name: str, downscale: int = 1, hold_out: int | None = None) -> Scene:
    """Loads a registry scene and flattens its training views into rays.

    ``hold_out``: index of a training view kept out of the rays as the validation view (what the
    tuner scores; the test views are never read for a choice).
    """
    from feedback_alignment import data

    views = data.load(name)

    def shrink(images: torch.Tensor) -> torch.Tensor:
        if downscale == 1:
            return images
        nchw = images.permute(0, 3, 1, 2)
        return F.avg_pool2d(nchw, downscale).permute(0, 2, 3, 1).contiguous()

    images, test_images = shrink(views.images), shrink(views.test_images)
    height, width = images.shape[1:3]
    focal = views.focal / downscale
    poses = views.poses
    val_image = val_pose = None
    if hold_out is not None:
        keep = [i for i in range(len(images)) if i != hold_out]
        val_image, val_pose = images[hold_out], poses[hold_out]
        images, poses = images[keep], poses[keep]
    origins, directions = zip(
        *(camera_rays(height, width, focal, pose) for pose in poses), strict=True
    )
    return Scene(
        origins=torch.stack(origins).reshape(-1, 3),
        directions=torch.stack(directions).reshape(-1, 3),
        colours=images.reshape(-1, 3),
        test_images=test_images,
        test_poses=views.test_poses,
        focal=focal,
        near=views.near,
        far=views.far,
        val_image=val_image,
        val_pose=val_pose,
    )
