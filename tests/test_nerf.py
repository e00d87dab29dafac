"""NeRF: the renderer against finite differences, DFA's per-sample-point signal in float64, training.

The error of DFA is ``e = dL/d raw`` at the field's output, per sample point, computed *through the
exact renderer*; the reference below gets it from ``volume_render`` by autograd on an untouched copy
of the field and projects it by hand with the documented slicing and scaling (``oracle.py``).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import feedback_alignment as fa
from feedback_alignment.models.nerf import (
    NeRFConfig,
    NeRFRenderer,
    camera_rays,
    feedback_points,
    positional_encoding,
    psnr,
    ssim,
    volume_render,
)
from oracle import project, slices

TINY = NeRFConfig(depth=3, width=6, skips=(2,), view_width=5, pos_freqs=2, dir_freqs=1, n_samples=5)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rays(n: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 4 towards points near the origin (the duck's rig)."""
    origins = F.normalize(torch.randn(n, 3, dtype=dtype), dim=-1) * 4.0
    targets = 0.3 * torch.randn(n, 3, dtype=dtype)
    return origins, (targets - origins) / 4.0


def test_volume_render_matches_finite_differences():
    torch.set_default_dtype(torch.float64)
    raw = torch.randn(3, 5, 4, requires_grad=True)
    depths = (torch.linspace(2, 6, 5) + 0.1 * torch.rand(3, 5)).requires_grad_()
    directions = torch.randn(3, 3, requires_grad=True)
    for white in (True, False):
        assert torch.autograd.gradcheck(
            lambda r, z, d, w=white: volume_render(r, z, d, w), (raw, depths, directions)
        )


def test_volume_render_composites_an_opaque_sample_and_the_background():
    raw = torch.full((2, 3, 4), -60.0)  # black, no density
    raw[0, 1, 3] = 1e4  # ray 0 meets an opaque sample in the middle
    raw[0, 1, :3] = 30.0  # white there
    depths = torch.tensor([[2.0, 3.0, 4.0]] * 2)
    rgb, depth, opacity = volume_render(raw, depths, torch.tensor([[0, 0, -1.0]] * 2), False)
    torch.testing.assert_close(rgb[0], torch.ones(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(rgb[1], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(depth[0], torch.tensor(3.0))
    torch.testing.assert_close(opacity, torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    white, _, _ = volume_render(raw, depths, torch.tensor([[0, 0, -1.0]] * 2), True)
    torch.testing.assert_close(white[1], torch.ones(3), atol=1e-6, rtol=0)  # background shows


def test_camera_rays_point_along_minus_z_through_the_centre():
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.0, 0.0, 4.0])
    origins, directions = camera_rays(4, 6, 10.0, c2w)
    assert origins.shape == directions.shape == (4, 6, 3)
    torch.testing.assert_close(directions[..., 2], -torch.ones(4, 6))
    torch.testing.assert_close(directions.mean(dim=(0, 1)), torch.tensor([0.0, 0.0, -1.0]))
    assert directions[0, -1, 0] > 0 and directions[0, -1, 1] > 0  # top right: +x, +y


def test_positional_encoding_and_metrics():
    x = torch.randn(2, 7, 3)
    assert positional_encoding(x, 4).shape == (2, 7, 27)
    torch.testing.assert_close(positional_encoding(x, 4)[..., :3], x)
    image = torch.rand(16, 16, 3)
    assert psnr(image, image) > 100 and ssim(image, image) == pytest.approx(1.0)
    assert psnr(image.clamp(0, 0.5), image) < psnr(image.clamp(0, 0.9), image)
    with pytest.raises(ValueError, match="skips"):
        NeRFConfig(depth=3, skips=(3,))
    with pytest.raises(ValueError, match="do not match"):
        volume_render(torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 3), True)


@pytest.mark.parametrize("shared", [True, False])
def test_dfa_error_per_sample_point_is_taken_through_the_renderer(shared):
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = NeRFRenderer(TINY).double().eval()  # eval: fixed sample depths, the same in both
    ref = copy.deepcopy(model)
    rule = fa.DFA(seed=4, shared=shared)
    points = feedback_points("field", TINY)
    rule.apply(model, points=points, error_at="field")
    origins, directions = _rays(4)
    target = torch.rand(4, 3)

    arrived: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), rule.recording(model) as record:
        rgb = model(origins, directions)
    for name, h in record:
        h.register_hook(lambda grad, name=name: arrived.__setitem__(name, grad))
    F.mse_loss(rgb, target).backward()
    assert [name for name, _ in record] == points

    # e = dL/d raw through the exact renderer, on the untouched copy
    captured = {}
    handle = ref.field.register_forward_hook(lambda m, a, out: captured.setdefault("raw", out))
    loss = F.mse_loss(ref(origins, directions), target)
    handle.remove()
    raw = captured["raw"]
    assert raw.shape == (4, TINY.n_samples, 4)  # (rays, samples, raw)
    error = torch.autograd.grad(loss, raw, retain_graph=True)[0]
    widths = [h.shape[-1] for _, h in record]
    feedback = slices(
        model.state_dict()[fa.FEEDBACK_BUFFER], widths, shared=shared, scaling="principled"
    )
    assert model.state_dict()[fa.FEEDBACK_BUFFER].shape[0] == 4  # d_out = raw's 4 channels
    for (name, h), b in zip(record, feedback, strict=True):  # B_l e per sample point
        torch.testing.assert_close(arrived[name], project(error, b, h), rtol=1e-10, atol=1e-14)

    # the first layer by hand: delta = (B_0 e) * relu'(a_0), dW = delta^T gamma(x)
    h0 = dict(record)["field.trunk.0"]
    delta = project(error, feedback[0], h0) * (h0 > 0)
    depths = torch.linspace(2, 6, TINY.n_samples + 1)
    mids = (depths[:-1] + depths[1:]) / 2
    gamma = positional_encoding(origins[:, None] + directions[:, None] * mids[:, None], 2)
    first = model.field.trunk[0][0]
    torch.testing.assert_close(first.weight.grad, delta.reshape(-1, 6).T @ gamma.reshape(-1, 15))
    # the top (density and colour layers) gets the true gradient
    top = [ref.field.sigma.weight, ref.field.rgb.weight, ref.field.rgb.bias]
    for got, want in zip(
        [model.field.sigma.weight, model.field.rgb.weight, model.field.rgb.bias],
        torch.autograd.grad(loss, top),
        strict=True,
    ):
        torch.testing.assert_close(got.grad, want)


@pytest.mark.parametrize("rule_name", ["BP", "DFA", "Shallow"])
def test_a_few_steps_lower_the_loss(rule_name):
    torch.manual_seed(0)
    config = NeRFConfig(
        depth=3, width=32, skips=(2,), view_width=16, pos_freqs=4, dir_freqs=2, n_samples=16
    )
    model = NeRFRenderer(config)
    rule = {"BP": fa.BP, "DFA": fa.DFA, "Shallow": fa.Shallow}[rule_name]()
    if rule_name == "BP":
        rule.apply(model)
    else:
        rule.apply(model, points=feedback_points("field", config), error_at="field")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    origins, directions = _rays(128, torch.float32)
    # a red ball of radius 0.8 at the origin on white: the colour depends on whether a ray hits it
    closest = (origins * directions).sum(-1, keepdim=True) / (directions**2).sum(-1, keepdim=True)
    miss = (origins - closest * directions).norm(dim=-1, keepdim=True)
    target = torch.where(miss < 0.8, torch.tensor([0.9, 0.1, 0.1]), torch.ones(3))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(model(origins, directions), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert min(losses[-5:]) < 0.8 * losses[0], losses
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    if rule_name == "Shallow":
        assert moved == {
            "field.sigma.weight",
            "field.sigma.bias",
            "field.rgb.weight",
            "field.rgb.bias",
        }
    else:
        assert "field.trunk.0.0.weight" in moved and "field.feature.weight" in moved


def test_nerf_task_writes_results_table_and_images(tmp_path):
    from dataclasses import replace

    from feedback_alignment.experiments import nerf
    from feedback_alignment.experiments.registry import RunOptions, tasks

    assert "nerf" in tasks()
    config = replace(nerf.QUICK, downscale=5, steps=6, eval_every=3, rays=64, test_views=2)
    report = nerf.run(RunOptions(out_dir=tmp_path, quick=True, progress=False), config)
    for name in ("results.json", "table.md", "test_views.png", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert "| Shallow |" in report.markdown and "QUICK MODE" in report.markdown
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["rule"] for r in runs] == ["BP", "DFA", "Shallow"]
    assert all(len(r["psnr_per_view"]) == 2 and r["psnr"] > 0 for r in runs)
    with pytest.raises(ValueError, match="unknown rules"):
        nerf.NeRFTaskConfig(rules=("FA",))


def test_nerf_authors_task_trains_the_authors_field_with_its_own_rates_and_table(tmp_path):
    from dataclasses import replace

    from feedback_alignment.experiments import nerf, tuning
    from feedback_alignment.experiments.registry import RunOptions, tasks

    assert "nerf-authors" in tasks() and "nerf-authors" in tuning.tunables()
    authors = nerf.AUTHORS
    assert authors.model.density == "relu" and authors.model.feature_relu
    assert authors.lr["DFA"] == pytest.approx(authors.lr["BP"] / 5)  # the authors' ratio
    # the ``nerf`` task is unchanged: softplus density, linear feature layer, its own rates
    assert nerf.NeRFTaskConfig().model.density == "softplus"
    assert not nerf.NeRFTaskConfig().model.feature_relu
    # each task reads its own stored rates
    (tmp_path / "nerf.json").write_text(json.dumps({"arms": {"DFA": {"values": {"lr": 7e-3}}}}))
    tuned = replace(authors, tuned_dir=tmp_path)
    assert nerf.learning_rates(tuned)["DFA"] == authors.lr["DFA"]
    assert nerf.learning_rates(replace(nerf.NeRFTaskConfig(), tuned_dir=tmp_path))["DFA"] == 7e-3
    config = replace(
        nerf.QUICK_AUTHORS, downscale=5, steps=6, eval_every=3, rays=64, test_views=2, tuned=False
    )
    out = tmp_path / "run"
    out.mkdir()
    report = nerf.run(RunOptions(out_dir=out, quick=True, progress=False, tuned=False), config)
    assert (out / "nerf_authors_quick.json").is_file() and "### nerf-authors" in report.markdown
    assert "relu density, feature layer with a ReLU and its own feedback point" in report.markdown
    payload = json.loads((out / "results.json").read_text())
    assert payload["task"] == "nerf-authors" and payload["config"]["model"]["density"] == "relu"


# ---- hierarchical sampling: two fields, two error sites -----------------------------------------


def _hierarchical(seed: int = 0):
    from feedback_alignment.models.nerf import NeRFConfig, NeRFRenderer

    torch.manual_seed(seed)
    config = NeRFConfig(depth=3, width=8, skips=(1,), view_width=4, pos_freqs=2, dir_freqs=1,
                        n_samples=6, n_importance=5, near=1.0, far=3.0)  # fmt: skip
    return NeRFRenderer(config).double()


def _target_rays(count: int = 7):
    g = torch.Generator().manual_seed(1)
    origins = torch.randn(count, 3, generator=g, dtype=torch.float64) * 0.1
    directions = torch.randn(count, 3, generator=g, dtype=torch.float64)
    target = torch.rand(count, 3, generator=g, dtype=torch.float64)
    return origins, directions, target


def test_importance_depths_follow_the_coarse_weights():
    from feedback_alignment.models.nerf import importance_depths

    depths = torch.linspace(0.0, 10.0, 11).expand(2, 11)
    weights = torch.zeros(2, 11)
    weights[0, 3] = 1.0  # all mass in the bin between midpoints 2.5 and 3.5
    drawn = importance_depths(depths, weights, 200, jitter=True, generator=torch.Generator())
    inside = ((drawn[0] >= 2.5) & (drawn[0] <= 3.5)).float().mean()
    assert inside > 0.99
    spread = importance_depths(depths, weights, 200, jitter=False)[1]  # empty ray: uniform
    assert spread.min() >= 0.5 - 1e-6 and spread.max() <= 9.5 + 1e-6
    assert (spread[1:] >= spread[:-1]).all() and abs(float(spread.mean()) - 5.0) < 0.1


def test_hierarchical_dfa_trains_each_field_from_its_own_error():
    """Each field's gradient is DFA's from its own loss term only: the coarse field's equals a
    run with the coarse loss alone, the fine field's a run with the fine loss alone (same
    samples, same feedback), and neither equals backprop's."""
    from feedback_alignment.experiments.nerf import place_rule

    origins, directions, target = _target_rays()

    def gradients(model, which: str) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)  # the same jittered and importance samples in every call
        rgb = model(origins, directions)
        terms = {"coarse": F.mse_loss(model.coarse_rgb, target), "fine": F.mse_loss(rgb, target)}
        loss = terms["coarse"] + terms["fine"] if which == "both" else terms[which]
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    dfa = _hierarchical()
    bp = copy.deepcopy(dfa)
    rules = place_rule("DFA", dfa, seed=3)
    assert len(rules) == 2
    both = gradients(dfa, "both")
    coarse_only, fine_only = gradients(dfa, "coarse"), gradients(dfa, "fine")
    for name, grad in both.items():
        alone = coarse_only if name.startswith("field.") else fine_only
        torch.testing.assert_close(grad, alone[name], rtol=1e-10, atol=1e-12)
    assert not any(n.startswith("fine.") for n in coarse_only)  # no error of the fine term
    backprop = gradients(bp, "both")
    first = "fine.trunk.0.0.weight"
    assert not torch.allclose(both[first], backprop[first])
    assert not torch.allclose(both["field.trunk.0.0.weight"], backprop["field.trunk.0.0.weight"])
    torch.testing.assert_close(both["fine.rgb.weight"], backprop["fine.rgb.weight"])  # top layer
    keys = set(dfa.state_dict())
    assert {"field." + fa.FEEDBACK_BUFFER, "fine." + fa.FEEDBACK_BUFFER} <= keys


def test_the_two_fields_get_their_own_feedback_matrices():
    from feedback_alignment.experiments.nerf import place_rule

    model = _hierarchical()
    place_rule("DFA", model, seed=3)
    origins, directions, target = _target_rays()
    F.mse_loss(model(origins, directions), target).backward()
    state = model.state_dict()
    assert not torch.equal(
        state["field." + fa.FEEDBACK_BUFFER], state["fine." + fa.FEEDBACK_BUFFER]
    )


def test_the_dfa_authors_field_options() -> None:
    """Issue 22 item 5: ReLU density (the NeRF and DFA authors') and a feature layer with a ReLU
    and its own feedback point; the defaults (softplus, linear feature, no point) unchanged."""
    assert TINY.density == "softplus" and not TINY.feature_relu
    assert "field.feature" not in feedback_points("field", TINY)
    raw = torch.tensor([[[0.0, 0.0, 0.0, -2.0], [0.0, 0.0, 0.0, 3.0]]])
    depths, rays = torch.tensor([[2.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    _, _, soft = volume_render(raw, depths, rays, False)
    _, _, hard = volume_render(raw, depths, rays, False, density="relu")
    # relu: the first sample is empty (sigma 0), the second opaque; softplus lets light stop early
    assert hard.item() == pytest.approx(1.0) and soft.item() == pytest.approx(1.0)
    _, depth_relu, _ = volume_render(raw, depths, rays, False, density="relu")
    _, depth_soft, _ = volume_render(raw, depths, rays, False)
    assert depth_relu.item() == pytest.approx(3.0) and depth_soft.item() < 3.0
    with pytest.raises(ValueError, match="density must be one of"):
        NeRFConfig(density="exp")

    authors = NeRFConfig(**{**TINY.__dict__, "density": "relu", "feature_relu": True})
    points = feedback_points("field", authors)
    assert points[-2:] == ["field.feature", "field.view"]
    torch.manual_seed(0)
    model = NeRFRenderer(authors).double()
    rule = fa.DFA(seed=1)
    rule.apply(model, points=points, error_at="field")
    origins, directions = _rays(3)
    F.mse_loss(model(origins, directions), torch.rand(3, 3, dtype=torch.float64)).backward()
    assert rule.layout(model).names[-2:] == ("field.feature", "field.view")
    assert model.field.feature[0].weight.grad is not None  # trained by its own point's signal


# ---- a ReLU density can start dead ---------------------------------------------------------------


def test_density_at_init_finds_a_dead_relu_field_and_draws_no_random_number():
    """A field whose raw density is <= 0 everywhere gets no error under any rule (zero opacity,
    zero weight on its colours): the measurement must see it, and must not move torch's random
    stream or the model's mode (the runs' numbers stay those of the committed tables)."""
    from types import SimpleNamespace

    from feedback_alignment.experiments import nerf
    from feedback_alignment.experiments.nerf_report import dead_at_init

    torch.manual_seed(0)
    config = NeRFConfig(depth=3, width=8, skips=(1,), view_width=4, pos_freqs=2, dir_freqs=1,
                        n_samples=6, n_importance=5, near=1.0, far=3.0, density="relu")  # fmt: skip
    model = NeRFRenderer(config).double()
    origins, directions, _ = _target_rays(40)
    scene = SimpleNamespace(origins=origins, directions=directions)
    with torch.no_grad():  # kill the fine field: a very negative bias on its density output
        model.fine.sigma.bias.fill_(-1e3)
    state = torch.get_rng_state()
    model.train()
    alive = nerf.density_at_init(model, scene)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert alive["fine"] == 0.0 and 0.0 <= alive["coarse"] <= 1.0
    # the dead field indeed gets no gradient, under BP
    model.zero_grad()
    rgb = model(origins, directions)
    (rgb.square().sum() + model.coarse_rgb.square().sum()).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.fine.parameters())
    # the caption names the seed and the field, once per seed
    runs = [SimpleNamespace(seed=s, rule=r, density_alive_at_init=a) for s, r, a in
            [(0, "BP", alive), (0, "DFA", alive), (1, "BP", {"coarse": 0.4, "fine": 0.7})]]  # fmt: skip
    text = dead_at_init(runs)
    assert "seed 0: fine" in text and "seed 1" not in text and text.count("seed 0") == 1
    assert dead_at_init([]) == "" and "No field" in dead_at_init(runs[2:])
