"""A compact NeRF: positional encoding, an MLP with a skip connection and a view-direction branch,
and a differentiable volume renderer.

The field maps a 3-D point ``x`` and a viewing direction ``d`` to ``raw = (rgb logits, sigma)``:

    h_0 = gamma(x);  h_i = ReLU(W_i [h_{i-1} (, gamma(x) at a skip)] + b_i)   for i < depth
    sigma = W_sigma h_{depth-1}                  (density: depends on the position only)
    v = ReLU(W_v [W_f h_{depth-1}, gamma(d)]);  rgb = W_rgb v   (colour: view dependent)

and the renderer composites ``raw`` along each ray by the quadrature of Mildenhall et al. (2020):
``alpha_k = 1 - exp(-softplus(sigma_k) delta_k)``, ``T_k = prod_{j<k} (1 - alpha_j)``,
``C = sum_k T_k alpha_k sigmoid(rgb_k)`` (plus ``1 - sum_k T_k alpha_k`` of white background).

For direct feedback, :class:`NeRFRenderer` holds the field as its submodule ``field`` and renders
its output in its own ``forward``: taking the error at ``error_at="field"`` gives ``e = dL/d raw``
per sample point, computed *through the exact renderer* by ordinary autograd (the renderer, which
has no parameters, is the "top" of the graph), and every hidden layer of the field
(:func:`feedback_points`) receives ``B_l e`` per sample point: the setup of Launay et al. (2020,
section 3.1.1).

Hierarchical sampling (``n_importance > 0``, Mildenhall et al. section 5.2): a second field,
``fine``, is evaluated at the coarse samples plus ``n_importance`` depths drawn from the coarse
weights (inverse-transform sampling of the piecewise-constant density along each ray, with the
weights detached, as in the NeRF code). Both renders are trained, ``L = |C_coarse - C|^2 +
|C_fine - C|^2``, and the fine one is the output. For direct feedback each field is its own
sub-network with its own error site: one rule applied to ``field`` and one to ``fine``, each
with its own seed, so the coarse field learns from ``dL/d raw_coarse`` and the fine one from
``dL/d raw_fine``.

References:
    Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields for View Synthesis",
    ECCV 2020.
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020, section 3.1.1 (DFA on NeRF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """``gamma(x) = (x, sin(2^k x), cos(2^k x) for k < n_freqs)``: ``(..., d) -> (..., d(1+2L))``.

    Frequencies ``2^k`` without ``pi``, as in the NeRF authors' code; the input is kept so that
    low frequencies are exact.
    """
    if n_freqs < 0:
        raise ValueError(f"n_freqs must be >= 0, got {n_freqs}")
    scales = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)
    angles = (x[..., None, :] * scales[:, None]).flatten(-2)  # (..., L*d)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


def encoded_width(dims: int, n_freqs: int) -> int:
    return dims * (1 + 2 * n_freqs)


DENSITIES = {"softplus": F.softplus, "relu": F.relu}
"""How the field's raw density becomes ``sigma >= 0`` (:attr:`NeRFConfig.density`)."""


@dataclass(frozen=True)
class NeRFConfig:
    """Shape of the field and the ray sampling.

    The defaults are the NeRF paper's (8 x 256, skip into the fifth layer, 10 and 4 frequencies);
    the experiments use a smaller field for CPU time.

    Attributes:
        depth: hidden layers of the position trunk.
        width: units per trunk layer.
        skips: trunk layers that also receive ``gamma(x)`` (the skip connection).
        view_width: units of the view-direction layer.
        pos_freqs, dir_freqs: frequencies of the positional encodings of ``x`` and ``d``.
        n_samples: stratified samples per ray (of the coarse field).
        n_importance: extra samples per ray drawn from the coarse weights for the fine field
            (0: no hierarchical sampling, one field).
        near, far: the depth range sampled along each ray.
        white_background: composite over white (the Blender scenes' convention) or black.
        density: ``"softplus"`` (default, mip-NeRF's: a density that goes negative everywhere
            early keeps a gradient) or ``"relu"`` (the NeRF authors' and the DFA authors').
        feature_relu: a ReLU after the feature layer, which then is a hidden layer with its own
            feedback point (the DFA authors' field); default: linear, no point.
    """

    depth: int = 8
    width: int = 256
    skips: tuple[int, ...] = (4,)
    view_width: int = 128
    pos_freqs: int = 10
    dir_freqs: int = 4
    n_samples: int = 64
    n_importance: int = 0
    near: float = 2.0
    far: float = 6.0
    white_background: bool = True
    density: str = "softplus"
    feature_relu: bool = False

    def __post_init__(self) -> None:
        if self.density not in DENSITIES:
            raise ValueError(f"density must be one of {sorted(DENSITIES)}, got {self.density!r}")
        for name in ("depth", "width", "view_width", "n_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_importance < 0:
            raise ValueError(f"n_importance must be >= 0, got {self.n_importance}")
        if self.n_importance and self.n_samples < 3:
            raise ValueError("hierarchical sampling needs n_samples >= 3 coarse samples")
        bad = [s for s in self.skips if not 0 < s < self.depth]
        if bad:
            raise ValueError(f"skips {bad} must name trunk layers 1..{self.depth - 1}")
        if not 0 <= self.near < self.far:
            raise ValueError(f"need 0 <= near < far, got near={self.near}, far={self.far}")


class NeRF(nn.Module):
    """The radiance field: points ``(..., 3)`` and directions ``(..., 3)`` -> raw ``(..., 4)``.

    ``raw[..., :3]`` are colour logits (a sigmoid makes them RGB) and ``raw[..., 3]`` the density
    before its softplus; the renderer applies both, so that the error at ``raw`` covers them.
    """

    def __init__(self, config: NeRFConfig) -> None:
        super().__init__()
        self.config = config
        pos = encoded_width(3, config.pos_freqs)
        dirs = encoded_width(3, config.dir_freqs)
        widths = [pos] + [config.width] * (config.depth - 1)
        self.trunk = nn.ModuleList(
            nn.Sequential(nn.Linear(w + (pos if i in config.skips else 0), config.width), nn.ReLU())
            for i, w in enumerate(widths)
        )
        self.sigma = nn.Linear(config.width, 1)
        feature = nn.Linear(config.width, config.width)
        self.feature = nn.Sequential(feature, nn.ReLU()) if config.feature_relu else feature
        self.view = nn.Sequential(nn.Linear(config.width + dirs, config.view_width), nn.ReLU())
        self.rgb = nn.Linear(config.view_width, 3)

    def forward(self, points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        x = positional_encoding(points, self.config.pos_freqs)  # (..., P)
        d = positional_encoding(directions, self.config.dir_freqs)  # (..., D)
        h = x
        for i, layer in enumerate(self.trunk):
            h = layer(torch.cat([h, x], dim=-1) if i in self.config.skips else h)  # (..., W)
        sigma = self.sigma(h)  # (..., 1)
        v = self.view(torch.cat([self.feature(h), d], dim=-1))  # (..., V)
        return torch.cat([self.rgb(v), sigma], dim=-1)  # (..., 4)


def feedback_points(field_path: str, config: NeRFConfig) -> list[str]:
    """Module paths of every hidden layer's output (after its ReLU), the paper's DFA placement;
    the feature layer is one when it has a ReLU (``config.feature_relu``)."""
    prefix = f"{field_path}." if field_path else ""
    feature = [f"{prefix}feature"] if config.feature_relu else []
    return [f"{prefix}trunk.{i}" for i in range(config.depth)] + feature + [f"{prefix}view"]


def camera_rays(
    height: int, width: int, focal: float, c2w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions ``(H, W, 3)`` of the rays through the pixel centres of a camera.

    Camera-to-world ``c2w`` ``(4, 4)`` in the OpenGL convention (the camera looks along its -Z,
    +Y up); directions have unit depth (``z = -1`` in camera space), as in tiny-NeRF, so that
    ``near`` and ``far`` are depths.
    """
    j, i = torch.meshgrid(
        torch.arange(height, dtype=c2w.dtype) + 0.5,
        torch.arange(width, dtype=c2w.dtype) + 0.5,
        indexing="ij",
    )
    dirs = torch.stack(
        [(i - width / 2) / focal, -(j - height / 2) / focal, -torch.ones_like(i)], -1
    )
    directions = dirs @ c2w[:3, :3].T  # (H, W, 3)
    return c2w[:3, 3].expand_as(directions), directions


def stratified_depths(
    n_rays: int,
    config: NeRFConfig,
    *,
    jitter: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample depths ``(n_rays, n_samples)``: bin centres, or one uniform draw per bin (training)."""
    edges = torch.linspace(
        config.near, config.far, config.n_samples + 1, dtype=dtype, device=device
    )
    lower, size = edges[:-1], edges[1:] - edges[:-1]
    if jitter:
        u = torch.rand(n_rays, config.n_samples, dtype=dtype, device=device, generator=generator)
    else:
        u = torch.full((n_rays, config.n_samples), 0.5, dtype=dtype, device=device)
    return lower + u * size


def volume_render(
    raw: torch.Tensor,
    depths: torch.Tensor,
    directions: torch.Tensor,
    white_background: bool,
    density: str = "softplus",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composites ``raw`` ``(R, S, 4)`` at ``depths`` ``(R, S)`` along rays ``(R, 3)``.

    Returns ``(rgb (R, 3), depth (R,), opacity (R,))``, smooth in every input. The last interval is
    "infinite" (``1e10``), so a ray ends at its last sample, as in the NeRF authors' code.
    """
    rgb, depth, opacity, _ = composite(raw, depths, directions, white_background, density)
    return rgb, depth, opacity


def importance_depths(
    depths: torch.Tensor,
    weights: torch.Tensor,
    count: int,
    *,
    jitter: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``count`` depths per ray ``(R, count)`` drawn from the coarse ``weights`` ``(R, S)``.

    The density between the midpoints of the coarse depths is piecewise constant with mass
    ``w_k`` (the interior weights, plus 1e-5 so that an empty ray samples uniformly); depths are
    the inverse of its CDF at ``u`` (uniform draws in training, evenly spaced otherwise). Nothing
    here is differentiated (the NeRF code stops the gradient at the weights too).
    """
    with torch.no_grad():
        edges = 0.5 * (depths[..., 1:] + depths[..., :-1])  # (R, S-1)
        mass = weights[..., 1:-1] + 1e-5  # (R, S-2): one bin between consecutive edges
        cdf = torch.cumsum(mass / mass.sum(dim=-1, keepdim=True), dim=-1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1)  # (R, S-1)
        shape = (*cdf.shape[:-1], count)
        if jitter:
            u = torch.rand(shape, dtype=cdf.dtype, device=cdf.device, generator=generator)
        else:
            u = torch.linspace(0.0, 1.0, count, dtype=cdf.dtype, device=cdf.device).expand(shape)
        u = u.contiguous()
        above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
        below = (above - 1).clamp(min=0)
        cdf_below, cdf_above = cdf.gather(-1, below), cdf.gather(-1, above)
        edge_below, edge_above = edges.gather(-1, below), edges.gather(-1, above)
        span = cdf_above - cdf_below
        span = torch.where(span < 1e-5, torch.ones_like(span), span)
        return edge_below + (u - cdf_below) / span * (edge_above - edge_below)


def composite(
    raw: torch.Tensor,
    depths: torch.Tensor,
    directions: torch.Tensor,
    white_background: bool,
    density: str = "softplus",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`volume_render` plus the compositing weights ``T_k alpha_k`` ``(R, S)``."""
    if raw.shape[:-1] != depths.shape or raw.shape[-1] != 4:
        raise ValueError(
            f"raw {tuple(raw.shape)} and depths {tuple(depths.shape)} do not match: expected "
            "raw (rays, samples, 4) and depths (rays, samples)"
        )
    colour = torch.sigmoid(raw[..., :3])  # (R, S, 3)
    # softplus, not the original ReLU: a ReLU density that goes negative everywhere early in training
    # (the scene is mostly white background) has no gradient left and never recovers; mip-NeRF
    # made the same change
    sigma = DENSITIES[density](raw[..., 3])  # (R, S)
    gaps = depths[..., 1:] - depths[..., :-1]
    gaps = torch.cat([gaps, torch.full_like(gaps[..., :1], 1e10)], dim=-1)  # (R, S)
    gaps = gaps * directions.norm(dim=-1, keepdim=True)  # depth -> distance along the ray
    alpha = 1.0 - torch.exp(-sigma * gaps)
    # transmittance: the light that reaches sample k, prod_{j<k} (1 - alpha_j)
    survive = torch.cumprod(1.0 - alpha + 1e-10, dim=-1)
    transmittance = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)
    weights = alpha * transmittance  # (R, S)
    rgb = (weights[..., None] * colour).sum(dim=-2)  # (R, 3)
    opacity = weights.sum(dim=-1)
    depth = (weights * depths).sum(dim=-1)
    if white_background:
        rgb = rgb + (1.0 - opacity[..., None])
    return rgb, depth, opacity, weights


class NeRFRenderer(nn.Module):
    """Rays ``(R, 3)`` origins and directions -> rendered colours ``(R, 3)``.

    Samples depths (jittered in training mode), evaluates :attr:`field` at every sample point, and
    composites with :func:`volume_render`. The field runs once per forward pass, so that
    ``error_at="field"`` sees one ``(R, S, 4)`` output per step. With ``config.n_importance``
    a second field, :attr:`fine`, renders the coarse samples plus importance samples; the
    forward pass then returns the fine colours and :attr:`coarse_rgb` holds the coarse ones
    of the same pass (both enter the loss).
    """

    def __init__(self, config: NeRFConfig) -> None:
        super().__init__()
        self.config = config
        self.field = NeRF(config)
        self.fine = NeRF(config) if config.n_importance else None
        self.coarse_rgb: torch.Tensor | None = None

    def forward(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        return self.render(origins, directions)[0]

    def render(
        self, origins: torch.Tensor, directions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rgb (R, 3), depth (R,), opacity (R,))`` of a batch of rays (the fine field's when
        hierarchical; the coarse colours are then left in :attr:`coarse_rgb`)."""
        if origins.shape != directions.shape or origins.shape[-1] != 3 or origins.dim() != 2:
            raise ValueError(
                f"expected origins and directions of shape (rays, 3), got {tuple(origins.shape)} "
                f"and {tuple(directions.shape)}"
            )
        depths = stratified_depths(
            origins.shape[0],
            self.config,
            jitter=self.training,
            dtype=origins.dtype,
            device=origins.device,
        )  # (R, S)
        points = origins[:, None, :] + directions[:, None, :] * depths[..., None]  # (R, S, 3)
        unit = directions / directions.norm(dim=-1, keepdim=True)
        raw = self.field(points, unit[:, None, :].expand_as(points))  # (R, S, 4)
        white, density = self.config.white_background, self.config.density
        rgb, depth, opacity, weights = composite(raw, depths, directions, white, density)
        if self.fine is None:
            return rgb, depth, opacity
        self.coarse_rgb = rgb
        extra = importance_depths(
            depths, weights, self.config.n_importance, jitter=self.training
        )  # (R, N)
        depths, _ = torch.sort(torch.cat([depths, extra], dim=-1), dim=-1)  # (R, S + N)
        points = origins[:, None, :] + directions[:, None, :] * depths[..., None]
        raw = self.fine(points, unit[:, None, :].expand_as(points))  # (R, S + N, 4)
        return volume_render(raw, depths, directions, white, density)

    @torch.no_grad()
    def render_image(
        self, height: int, width: int, focal: float, c2w: torch.Tensor, chunk: int = 4096
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Renders a whole view: ``(rgb (H, W, 3), depth (H, W))``, in chunks of rays."""
        origins, directions = camera_rays(height, width, focal, c2w)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        parts = [
            self.render(origins[i : i + chunk], directions[i : i + chunk])
            for i in range(0, len(origins), chunk)
        ]
        rgb = torch.cat([p[0] for p in parts]).reshape(height, width, 3)
        depth = torch.cat([p[1] for p in parts]).reshape(height, width)
        return rgb, depth


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: ``-10 log10(MSE)``."""
    mse = float(torch.mean((prediction.clamp(0, 1) - target) ** 2))
    return -10.0 * math.log10(max(mse, 1e-12))


def ssim(prediction: torch.Tensor, target: torch.Tensor, window: int = 11) -> float:
    """Structural similarity (Wang et al. 2004) of ``(H, W, 3)`` images in [0, 1].

    Gaussian window of standard deviation 1.5, constants ``(0.01, 0.03)^2``, averaged over pixels
    and channels (the usual NeRF evaluation).
    """
    x = prediction.clamp(0, 1).permute(2, 0, 1)[:, None].double()  # (3, 1, H, W)
    y = target.permute(2, 0, 1)[:, None].double()
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]  # (1, 1, k, k)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, kernel)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean())
