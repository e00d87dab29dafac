"""Principled DFA training: MLP claims, alignment over training, the bottleneck, best practices, convs.

Five experiments on real images, one module per claim, each a registered task; ``principled`` is
the group of all five (:func:`~feedback_alignment.experiments.registry.resolve` expands it):

=========================== ==============================================================================
task                        what it measures
=========================== ==============================================================================
``principled-mlp``          tanh MLPs 1x800 and 7x240 (Nøkland 2016) with BP, FA, DFA and Shallow
``principled-alignment``    per-layer update angle and signal cosine of DFA through training (plots)
``principled-bottleneck``   a b-wide middle layer (784-800-b-800-10): narrow, and 800 wide with only b
                            units trained (the paper's masked variant); alignment and accuracy vs b
``principled-practices``    one-factor ablations of DFA: activation, feedback scale and distribution,
                            BatchNorm, dropout, learning rate, optimiser, zero initialisation
``principled-conv``         a small conv net under BP, DFA, Shallow and DFA with frozen convolutions
=========================== ==============================================================================

The shared recipe, data and training run are in :mod:`.common`. The numbers beside ours come from
:mod:`feedback_alignment.experiments.papers`: Nøkland's MNIST errors are ``[unverified]``, and the
bottleneck logs are CIFAR-10 (which cannot be had offline here), so they are context, not targets.
The MLP and conv parts compare rules, so their rules each get their own learning rate (searched on
validation data: :data:`TUNED_PARTS`); the other parts study DFA alone under the shared recipe.

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Launay, Poli, Krzakala, "Principled Training of Neural Networks with Direct Feedback Alignment",
    arXiv:1906.04554, 2019.
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020.
    Refinetti, d'Ascoli, Ohana, Goldt, "Align, then memorise: the dynamics of learning with
    feedback alignment", ICML 2021.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.principled import alignment, bottleneck, conv, mlp, practices
from feedback_alignment.experiments.principled.bottleneck import PartlyTrained, bottleneck_mlp
from feedback_alignment.experiments.principled.common import (
    FULL,
    QUICK,
    TINY,
    Run,
    Setting,
    block_mlp,
    spearman,
)
from feedback_alignment.experiments.registry import (
    RunOptions,
    TaskReport,
    register_group,
    register_task,
    run_seeds,
)
from feedback_alignment.experiments.results import write_json, write_table

log = logging.getLogger(__name__)

__all__ = [
    "FULL", "PARTS", "PART_TITLES", "QUICK", "TINY", "PartlyTrained", "Run", "Setting",
    "block_mlp", "bottleneck_mlp", "config_for", "rerender", "run_parts", "spearman",
]  # fmt: skip

MODULES: dict[str, ModuleType] = {
    "mlp": mlp,
    "alignment": alignment,
    "bottleneck": bottleneck,
    "practices": practices,
    "conv": conv,
}
"""Each claim's module: ``run_experiment(setting, seeds, progress)``, ``summary(result,
setting)`` (the table), ``plots``: the task protocol's names (:class:`.registry.Experiment`)."""

TUNED_PARTS: dict[str, ModuleType] = {"mlp": mlp, "conv": conv}
"""The parts that compare rules, so whose rules each get their own searched learning rate
(``principled-<part>`` in :mod:`~feedback_alignment.experiments.tuning`); the other three study
DFA alone under the shared recipe."""
PARTS: tuple[str, ...] = tuple(MODULES)
"""The five experiments, in the order the group runs them."""
PART_TITLES: dict[str, str] = {part: module.TITLE for part, module in MODULES.items()}


def config_for(options: RunOptions) -> Setting:
    """The run's setting: preset ``options.preset`` of ``presets/principled.json`` (:data:`QUICK`
    or :data:`FULL`); the seeds and rates are the run's, given to :func:`run_parts`."""
    return QUICK if options.quick else FULL


def run_parts(
    parts: Sequence[str],
    out_dir: Path,
    setting: Setting,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
    rates: Mapping[str, Mapping[str, float]] | None = None,
) -> TaskReport:
    """Runs ``parts`` with ``setting``; writes ``<part>.json`` (the runs), the table as
    ``principled_<part>.json``/``.md`` and the plots into ``out_dir``. ``rates``: part -> (arm ->
    learning rate), for the parts that compare rules (:data:`TUNED_PARTS`)."""
    unknown = [p for p in parts if p not in MODULES]
    if unknown:
        raise ValueError(f"unknown principled parts {unknown}; choose from {list(MODULES)}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    sections, files = [], []
    for part in parts:
        start = time.perf_counter()
        extra = {"rates": (rates or {}).get(part, {})} if part in TUNED_PARTS else {}
        result = MODULES[part].run_experiment(setting, tuple(seeds), progress, **extra)
        seconds = time.perf_counter() - start
        section, written = _write_part(part, result, setting, seconds, seeds, out_dir)
        sections.append(section)
        files += written
        log.info("principled / %s done in %.0f s", part, seconds)
    name = "principled" if len(parts) > 1 else f"principled-{parts[0]}"
    return TaskReport(name, "\n\n".join(sections), files)


def _write_part(
    part: str,
    result: dict[str, Any],
    setting: Setting,
    seconds: float,
    seeds: Sequence[int],
    out_dir: Path,
) -> tuple[str, list[Path]]:
    module = MODULES[part]
    table = module.summary(result, setting)
    heading = f"### principled / {module.TITLE} ({setting.name} mode, {seconds:.0f} s)"
    markdown = heading + "\n\n" + table.to_markdown()
    payload = {"part": part, "setting": setting, "seconds": seconds, "quick": setting.quick}
    payload.update(result)
    json_path = write_json(out_dir / f"{part}.json", payload)
    md_path = out_dir / f"{part}.md"
    md_path.write_text(markdown + "\n")
    # the seeds the part ran (the alignment part monitors one run, of the first seed)
    ran = sorted({r.seed for r in result["runs"]}) or list(seeds)
    tables = write_table(out_dir, table, ran)
    return markdown, [json_path, md_path, *tables, *module.plots(result, setting, out_dir)]


def rerender(part: str, out_dir: Path) -> TaskReport:
    """Rebuilds a part's tables and plots from its ``<part>.json`` (no training).

    For reading old results with newer table code; the runs themselves are not changed.
    """
    payload = json.loads((out_dir / f"{part}.json").read_text())
    setting = Setting(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in payload["setting"].items()}
    )
    runs = [
        Run(**{**r, "signal_cosine": {k: tuple(v) for k, v in r["signal_cosine"].items()}})
        for r in payload["runs"]
    ]
    result = {k: v for k, v in payload.items() if k not in ("part", "setting", "seconds", "quick")}
    result["runs"] = runs
    if part == "bottleneck":
        result["curves"] = bottleneck.curves(runs)
    seeds = sorted({r.seed for r in runs})
    markdown, files = _write_part(part, result, setting, payload["seconds"], seeds, out_dir)
    return TaskReport(f"principled-{part}", markdown, files)


def _task(part: str) -> Callable[[RunOptions], TaskReport]:
    def run(options: RunOptions) -> TaskReport:
        rates = None
        if part in TUNED_PARTS:  # arm -> lr, committed or from --tune (empty with --hand-set)
            stored = tuning.with_tuned(
                TUNED_PARTS[part].TUNED_TASK, {}, enabled=options.tuned,
                directory=options.tuned_dir,
            )  # fmt: skip
            rates = {part: stored}
        # three seeds by default: all five parts fit the family's 45-minute budget with them
        return run_parts(
            (part,), options.out_dir, config_for(options), run_seeds(options), options.progress,
            rates,
        )  # fmt: skip

    return run


DESCRIPTIONS = {
    "mlp": "tanh MLPs 1x800 and 7x240: BP, FA, DFA, Shallow (Nøkland 2016)",
    "alignment": "DFA's per-layer update angle and signal cosine through training",
    "bottleneck": "DFA through a narrow (or partly trained) middle layer, width swept",
    "practices": "ablations of DFA: activation, feedback, BatchNorm, dropout, lr, init",
    "conv": "a small conv net under BP, DFA, DFA with frozen convs, Shallow (does DFA train convs?)",
}
for _part in PARTS:
    register_task(f"principled-{_part}", DESCRIPTIONS[_part])(_task(_part))
register_group(
    "principled",
    "Launay 2019 / Nøkland 2016: MLP claims, alignment, bottleneck, best practices, convs",
    tuple(f"principled-{part}" for part in PARTS),
)
