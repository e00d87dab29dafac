"""Task ``nerf``: neural view synthesis trained by BP, DFA and Shallow (Launay et al. 2020, §3.1.1).

A compact NeRF (:mod:`feedback_alignment.models.nerf`) is fitted to the posed training views of a
scene from the data registry (the rendered ``duck`` by default; the tiny-NeRF ``.npz`` and
Blender-synthetic layouts load through the same :class:`~feedback_alignment.data.scenes.SceneViews`)
and evaluated on held-out views by PSNR and SSIM.

DFA follows the paper: a feedback point after every hidden layer of the field, and the error
``e = dL/d raw`` taken per sample point *after the exact volume renderer*: the renderer is the top of
the graph, so ``e`` is ordinary autograd through it (``error_at="field"``). The paper trained DFA
with a lower learning rate than BP (1e-4 vs 5e-4); we keep the ratio at rates chosen for our scale.
Shallow trains only the density and colour output layers and, as the paper says, cannot capture the
geometry. Sampling is hierarchical, as in NeRF: a coarse field on stratified samples and a fine
field on those plus importance samples drawn from the coarse weights, the loss the sum of both
renders' errors; under DFA each field is its own sub-network with its own error site and feedback
(:func:`place_rule`).

References:
    Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields for View Synthesis",
    ECCV 2020.
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020, section 3.1.1 and table 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F

from feedback_alignment.experiments import presets, tuning
from feedback_alignment.experiments.nerf_report import plot_curves, save_images, summary
from feedback_alignment.experiments.nerf_scene import Scene, load_scene
from feedback_alignment.experiments.nerf_schema import RULES, NeRFResult, NeRFTaskConfig
from feedback_alignment.experiments.papers import LAUNAY_2020_PSNR
from feedback_alignment.experiments.registry import RunOptions, TaskReport, configure, register_task
from feedback_alignment.experiments.results import (
    write_results,
    write_table,
)
from feedback_alignment.experiments.run import apply_rule, fit, run_jobs, threads
from feedback_alignment.models.nerf import (
    NeRFConfig,
    NeRFRenderer,
    feedback_points,
    psnr,
    ssim,
)
from feedback_alignment.rules import Rule

QUICK = presets.preset("nerf", "quick", NeRFTaskConfig())
"""About half a minute per rule on one loaded CPU core (50 x 50 views; ``presets/nerf.json``)."""


def config_for(options: RunOptions, task: str = "nerf") -> NeRFTaskConfig:
    """The run's settings: preset ``options.preset`` (:data:`QUICK` or the defaults), with the
    authors' field for ``task="nerf-authors"`` (:func:`authors_field`), and the run's choice of
    tuned or hand-set rates (the seeds are the run's, given to :func:`run_experiment`)."""
    if task not in ("nerf", "nerf-authors"):
        raise ValueError(f"unknown NeRF task {task!r}; choose nerf or nerf-authors")
    config = configure("nerf", NeRFTaskConfig(), options)
    return authors_field(config) if task == "nerf-authors" else config


FINE_SEED_OFFSET = 10_000
"""The fine field's feedback seed is the run's seed plus this (its own matrices)."""


def place_rule(name: str, model: NeRFRenderer, seed: int) -> list[Rule]:
    """Applies ``name`` (one of :data:`RULES`); DFA/Shallow take the error through the renderer.

    Explicit points (after every hidden layer of the field), as the paper placed them. With
    hierarchical sampling each field is a sub-network with its own rule, error site (its own
    output, ``dL/d raw`` through the renderer) and seeded feedback.
    """
    if name == "BP":
        return [apply_rule("BP", model)]
    if model.fine is None:
        points = feedback_points("field", model.config)
        return [apply_rule(name, model, seed, points=points, error_at="field")]
    points = feedback_points("", model.config)
    return [
        apply_rule(name, model.field, seed, points=points),
        apply_rule(name, model.fine, seed + FINE_SEED_OFFSET, points=points),
    ]


def build_model(config: NeRFTaskConfig, scene: Scene) -> NeRFRenderer:
    """``config``'s field(s) with the scene's near and far planes (seed the caller's RNG first:
    the initial weights are drawn here)."""
    shape = {**asdict(config.model), "near": scene.near, "far": scene.far}
    return NeRFRenderer(NeRFConfig(**shape))


PROBE_RAYS = 512
"""Rays of the fixed probe batch of :func:`density_at_init` (every k-th training ray)."""


@torch.no_grad()
def density_at_init(model: NeRFRenderer, scene: Scene) -> dict[str, float]:
    """Per field (``"coarse"``, ``"fine"``), the fraction of sample points whose raw density is
    positive, on a fixed probe batch of :data:`PROBE_RAYS` training rays (every k-th ray, the
    bin-centre samples of evaluation mode).

    Why: with a ReLU density (the DFA authors' field, ``density="relu"``) a field whose raw density
    is <= 0 at every sample renders nothing (zero opacity, hence zero weight on its colours), so
    the error at its output, dL/d raw, is zero and it never learns, under BP as under DFA; a seed
    whose fine field starts that way renders the background whatever the rule. A softplus density
    is never dead (the fraction then only describes the init). The measurement draws no random
    number (the runs' numbers are unchanged) and restores the model's mode.
    """
    was_training = model.training
    model.eval()
    found: dict[str, float] = {}
    fields = {"coarse": model.field, "fine": model.fine}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, raw, name=name: found.__setitem__(
                name, (raw[..., 3] > 0).float().mean().item()
            )
        )
        for name, module in fields.items()
        if module is not None
    ]
    try:
        step = max(1, len(scene.origins) // PROBE_RAYS)
        index = torch.arange(0, len(scene.origins), step)[:PROBE_RAYS]
        model(scene.origins[index], scene.directions[index])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return found


def dead_fields(config: NeRFTaskConfig, seeds: Iterable[int]) -> dict[int, list[str]]:
    """Per seed, the fields of ``config``'s model that start dead (no positive raw density on
    the probe batch; :func:`density_at_init`), built by :func:`build_model` as in training: e.g.
    ``dead_fields(AUTHORS, range(20))`` counts how often the authors' ReLU field starts dead."""
    scene = load_scene(config.scene, config.downscale)
    dead = {}
    for seed in seeds:
        torch.manual_seed(seed)
        alive = density_at_init(build_model(config, scene), scene)
        dead[seed] = [name for name, fraction in alive.items() if fraction == 0.0]
    return dead


def render_view(
    model: NeRFRenderer, scene: Scene, index: int, pose: torch.Tensor | None = None
) -> torch.Tensor:
    """Renders held-out view ``index`` (or the camera ``pose``) as ``(H, W, 3)`` (evaluation
    mode: bin-centre samples)."""
    height, width = scene.test_images.shape[1:3]
    was_training = model.training
    model.eval()
    camera = scene.test_poses[index] if pose is None else pose
    rgb, _ = model.render_image(height, width, scene.focal, camera)
    model.train(was_training)
    return rgb.clamp(0, 1)


def learning_rates(config: NeRFTaskConfig) -> dict[str, float]:
    """``config.lr`` with the stored tuned rates in place where ``config.tuned``."""
    return tuning.with_tuned(
        config.task, config.lr, enabled=config.tuned, directory=config.tuned_dir
    )


def adam_eps(config: NeRFTaskConfig) -> dict[str, float]:
    """``config.eps`` with the stored tuned epsilons in place where ``config.tuned``.

    Why epsilon is in DFA's search space. Under DFA the fine field of seed 0 died within
    100 steps at every rate tried (its mean density 0.75 -> 0.00; the image stays uniform, 8 dB):
    the density component of the error, dL/d raw, has the same sign at nearly every sample early on
    (less density whitens the mostly white image), so ``B e`` gives every hidden layer the same
    "less density" direction, and Adam's normalised step keeps pushing at full rate as that error
    shrinks, until the softplus saturates and the error at raw is zero. A larger epsilon makes Adam's
    step proportional to small gradients (SGD-like), so the push fades with the error: at eps 1e-3
    the same seed's fine density stayed at 0.6-0.9 over 200 steps. A positive density bias, density
    noise (std 1), a warm-up of the coarse field alone, a lower fine-field rate and beta2 0.9 did not
    prevent the collapse. BP does not collapse and keeps Adam's default. A 10-trial search of
    DFA's (lr, eps) on seed 0 failed in every trial, so none is stored for the ``nerf`` task
    (docs/REPRODUCTION.md, NeRF); ``nerf-authors`` stores its searched 1.7e-3.
    """
    return tuning.with_tuned(
        config.task, config.eps, "eps", enabled=config.tuned, directory=config.tuned_dir
    )


def train_one(
    rule_name: str,
    seed: int,
    config: NeRFTaskConfig,
    scene: Scene,
    progress: bool = True,
    lr: float | None = None,
    report: tuning.Report | None = None,
    eps: float | None = None,
) -> tuple[NeRFResult, list[torch.Tensor]]:
    """Fits one field with one rule; returns its test metrics and its renders of the test views.

    With ``report`` (a tuner's trial) the learning curve is the PSNR of the scene's validation
    view, passed to ``report(step, psnr)``, and the result's ``psnr`` is that view's at the end;
    no test view is rendered.
    """
    torch.manual_seed(seed)
    model = build_model(config, scene)
    alive = density_at_init(model, scene)  # before the rule: the plain field, as it starts
    place_rule(rule_name, model, seed)
    rate = learning_rates(config)[rule_name] if lr is None else lr
    epsilon = adam_eps(config)[rule_name] if eps is None else eps
    optimizer = torch.optim.Adam(model.parameters(), lr=rate, eps=epsilon)
    generator = torch.Generator().manual_seed(seed)

    def batches(_: int) -> Iterator[torch.Tensor]:
        for _step in range(config.steps):
            yield torch.randint(0, len(scene.colours), (config.rays,), generator=generator)

    def loss(index: torch.Tensor) -> torch.Tensor:
        rgb, target = model(scene.origins[index], scene.directions[index]), scene.colours[index]
        if model.fine is None:
            return F.mse_loss(rgb, target)
        return F.mse_loss(model.coarse_rgb, target) + F.mse_loss(rgb, target)  # coarse + fine

    def test_view() -> dict[str, float]:
        return {"psnr": psnr(render_view(model, scene, 0), scene.test_images[0])}

    def validate() -> dict[str, float]:
        if scene.val_image is None:
            raise ValueError("a tuning trial needs a scene with a held-out view (hold_out=)")
        return {"psnr": psnr(render_view(model, scene, 0, scene.val_pose), scene.val_image)}

    done = fit(
        model,
        optimizer,
        batches,
        loss,
        total_steps=config.steps,
        # NeRF's exponential decay to final_lr_factor at the last step
        lr_at=lambda step, base: base * config.final_lr_factor ** (step / config.steps),
        evaluate=validate if report is not None else test_view,
        eval_every=config.eval_every,
        on_evaluate=None if report is None else (lambda step, m: report(step, m["psnr"])),
        label=f"{rule_name:>7} seed {seed}",
        progress=progress,
    )
    curve = [(step, m["psnr"]) for step, m in done.evaluations]
    if report is not None:
        value = curve[-1][1] if curve else math.nan
        trial = NeRFResult(rule_name, seed, value, math.nan, [], done.seconds, curve, done.losses,
                           lr=rate, eps=epsilon)  # fmt: skip
        return trial, []
    count = len(scene.test_images) if config.test_views is None else config.test_views
    renders = [render_view(model, scene, i) for i in range(min(count, len(scene.test_images)))]
    psnrs = [psnr(r, t) for r, t in zip(renders, scene.test_images, strict=False)]
    ssims = [ssim(r, t) for r, t in zip(renders, scene.test_images, strict=False)]
    result = NeRFResult(
        lr=rate,
        eps=epsilon,
        rule=rule_name,
        seed=seed,
        psnr=sum(psnrs) / len(psnrs),
        ssim=sum(ssims) / len(ssims),
        psnr_per_view=psnrs,
        seconds=done.seconds,
        curve=curve,
        train_loss=done.losses,
        density_alive_at_init=alive,
    )
    return result, renders


def _train_job(scene: Scene, job: tuple) -> tuple[NeRFResult, list[torch.Tensor]]:
    """One (rule, seed) run, as :func:`run_jobs` calls it."""
    rule, seed, config, progress = job
    return train_one(rule, seed, config, scene, progress)


def run_experiment(
    config: NeRFTaskConfig,
    seeds: tuple[int, ...] = (0,),
    progress: bool = True,
    workers: int = 1,
) -> tuple[list[NeRFResult], dict[str, list[torch.Tensor]], Scene]:
    """Every rule for every seed (over ``workers`` processes); returns the results, the first
    seed's renders and the scene."""
    scene = load_scene(config.scene, config.downscale)
    pairs = [(rule, seed) for seed in seeds for rule in config.rules]
    bars = progress and workers == 1
    with threads(config.threads):
        done = run_jobs(
            _train_job,
            [(rule, seed, config, bars) for rule, seed in pairs],
            config.task,
            shared=scene,
            workers=workers,
            progress=progress,
            label=lambda job: job[:2],
        )
    results, renders = [], {}
    for result, images in done:
        results.append(result)
        renders.setdefault(result.rule, images)
    return results, renders, scene


@register_task(
    "nerf", "NeRF on the rendered duck: BP, DFA, Shallow; test PSNR (Launay 2020 §3.1.1)"
)
def run(options: RunOptions, config: NeRFTaskConfig | None = None) -> TaskReport:
    """Trains every rule; writes ``results.json``, the table, ``test_views.png``, ``curves.png``."""
    config = (
        config_for(options)
        if config is None
        else replace(config, tuned=options.tuned, tuned_dir=options.tuned_dir)
    )
    seeds = options.seeds[:1] if options.quick else options.seeds
    results, renders, scene = run_experiment(
        config, tuple(seeds), options.progress, options.workers
    )
    out = options.out_dir
    table = summary(results, config, options.quick)
    write_results(
        out, config.task, options.quick, seeds, config=config, paper_psnr=LAUNAY_2020_PSNR,
        runs=results,
    )  # fmt: skip
    (out / "table.md").write_text(table.to_markdown() + "\n")
    files = [out / "results.json", out / "table.md", *write_table(out, table, seeds)]
    files += [
        save_images(scene, renders, out / "test_views.png", options.quick),
        plot_curves(results, out / "curves.png", options.quick),
    ]
    markdown = (
        f"### {config.task} (Launay et al. 2020, §3.1.1)\n\n"
        + table.to_markdown()
        + "\n\n![test views](test_views.png)"
    )
    return TaskReport(config.task, markdown, files)


# --- tuning --------------------------------------------------------------------------------

TUNING_STEPS = 700
"""Steps of a tuning trial (about a third of the full run's, to fit the budget)."""

HOLD_OUT_VIEW = 0
"""The training view held out as the validation view of the tuning trials."""

_SCENES: dict[bool, Scene] = {}


def _objective(
    full: NeRFTaskConfig, short: NeRFTaskConfig
) -> Callable[[str, dict[str, float], tuning.Report, bool], float]:
    """A tuning objective over the settings ``full`` (``short`` in quick mode): the PSNR
    of the held-out training view after a shortened run of ``arm`` at ``values["lr"]``."""

    def objective(arm: str, values: dict[str, float], report: tuning.Report, quick: bool) -> float:
        base = short if quick else full
        steps = 60 if quick else TUNING_STEPS
        config = replace(base, steps=steps, eval_every=max(steps // 4, 1), rules=(arm,))
        if quick not in _SCENES:
            _SCENES[quick] = load_scene(config.scene, config.downscale, hold_out=HOLD_OUT_VIEW)
        with threads(config.threads):
            result, _ = train_one(
                arm, 0, config, _SCENES[quick], False, values["lr"], report, values.get("eps")
            )
        return result.psnr

    return objective


def register_search(full: NeRFTaskConfig, short: NeRFTaskConfig) -> None:
    """Declares the search of task ``full.task``: each rule's rate, and DFA's Adam epsilon
    (:func:`adam_eps` says why), 8 trials of :data:`TUNING_STEPS` steps on seed 0."""
    tuning.register_tunable(
        tuning.Tunable(
            task=full.task,
            arms=RULES,
            space=lambda arm: {
                "lr": tuning.Param(1e-4, 1e-2),
                **({"eps": tuning.Param(1e-8, 1e-2)} if arm == "DFA" else {}),
            },
            defaults=lambda arm: {
                "lr": full.lr[arm],
                **({"eps": full.eps[arm]} if arm == "DFA" else {}),
            },
            objective=_objective(full, short),
            direction="maximize",
            metric="PSNR of a held-out training view (dB)",
            trials=8,
            schedule=f"Each trial trains seed 0 for {TUNING_STEPS} of the full run's {full.steps} "
            f"steps (the same exponential decay over its length) without training view "
            f"{HOLD_OUT_VIEW}, and is scored on that view.",
        )
    )


register_search(NeRFTaskConfig(), QUICK)


# --- the authors' field (issue 22) ---------------------------------------------------------


def authors_field(config: NeRFTaskConfig, task: str = "nerf-authors") -> NeRFTaskConfig:
    """``config`` with the DFA authors' choices for the field (LightOn's NeRF code, as issue 22
    read it): a ReLU density (ours: softplus), a ReLU after the feature layer, which then is a
    hidden layer with its own feedback point (ours: linear, no point), and DFA's hand-set rate a
    fifth of BP's (their 1e-4 against 5e-4; ours a quarter); the two ReLUs are preset ``field``
    of ``presets/nerf-authors.json``. The searched rates replace the hand-set ones once stored
    (``tuned/nerf-authors.json``)."""
    config = presets.preset("nerf-authors", "field", config)
    return replace(config, lr={**config.lr, "DFA": config.lr["BP"] / 5}, task=task)


AUTHORS = authors_field(NeRFTaskConfig())
"""The ``nerf`` task's settings with the authors' field."""

QUICK_AUTHORS = authors_field(QUICK)


@register_task(
    "nerf-authors",
    "NeRF with the DFA authors' field (ReLU density, feature layer with its own point): BP, DFA, "
    "Shallow",
)
def run_authors(options: RunOptions) -> TaskReport:
    """Task ``nerf``'s run with the authors' field (:data:`AUTHORS`; :data:`QUICK_AUTHORS` in
    quick mode)."""
    return run(options, config_for(options, "nerf-authors"))


register_search(AUTHORS, QUICK_AUTHORS)
