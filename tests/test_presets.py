"""The experiments' settings as data (``experiments/presets/*.json``) and the task protocol's names.

A preset is a set of changes to a config's defaults; one that names a field the config lacks must
be refused, since it would run the full setting under another name. Every task module names its
roles alike (``config_for``, ``run_experiment``, ``summary``), and the names they replaced stay
gone."""

from __future__ import annotations

import ast
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from feedback_alignment.experiments import presets
from feedback_alignment.experiments.registry import TASK_MODULES, RunOptions


@dataclass(frozen=True)
class _Inner:
    depth: int = 8
    width: int = 256


@dataclass(frozen=True)
class _Config:
    epochs: int = 10
    sizes: tuple[int, ...] = (200, 200)
    inner: _Inner = field(default_factory=_Inner)
    lr: dict[str, float] = field(default_factory=lambda: {"BP": 1e-3})


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "PRESETS_DIR", tmp_path)
    presets.reload()
    yield tmp_path
    presets.reload()


def _write(folder: Path, task: str, data: dict) -> None:
    (folder / f"{task}.json").write_text(json.dumps(data))


def test_a_preset_changes_the_defaults_field_by_field(preset_dir):
    _write(preset_dir, "t", {"_note": "why", "quick": {"epochs": 1, "sizes": [8, 8, 8],
                                                        "inner": {"depth": 2}}})  # fmt: skip
    quick = presets.preset("t", "quick", _Config())
    assert quick.epochs == 1 and quick.sizes == (8, 8, 8)  # a JSON list becomes a tuple
    assert quick.inner == _Inner(depth=2, width=256)  # a nested config keeps its other fields
    assert quick.lr == {"BP": 1e-3}
    assert presets.preset("t", "full", _Config()) == _Config()  # full: the defaults
    assert presets.names("t") == ("full", "quick")  # "_note" is a note, not a preset


def test_a_mistyped_setting_is_refused_with_the_file_and_the_fields(preset_dir):
    _write(preset_dir, "t", {"quick": {"epoch": 1}})
    with pytest.raises(ValueError, match=r"t\.json \[quick\].*\['epoch'\].*'epochs'"):
        presets.preset("t", "quick", _Config())
    _write(preset_dir, "u", {"quick": {"inner": {"dept": 2}}})
    with pytest.raises(ValueError, match=r"inner.*\['dept'\]"):
        presets.preset("u", "quick", _Config())


def test_an_unknown_preset_names_those_there_are(preset_dir):
    _write(preset_dir, "t", {"quick": {"epochs": 1}})
    with pytest.raises(ValueError, match=r"no preset 'fast'.*\['full', 'quick'\]"):
        presets.preset("t", "fast", _Config())


def test_a_broken_file_is_refused_with_its_path(preset_dir):
    (preset_dir / "t.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"t\.json: not a valid presets file"):
        presets.names("t")
    _write(preset_dir, "u", {"quick": [1, 2]})
    with pytest.raises(ValueError, match=r"u\.json: presets \['quick'\] are not objects"):
        presets.names("u")


def test_a_value_of_the_wrong_kind_is_refused_where_it_is_written(preset_dir):
    _write(preset_dir, "t", {"a": {"epochs": "1"}, "b": {"sizes": 8}, "c": {"inner": 4},
                             "d": {"epochs": True}})  # fmt: skip
    for name, field_name in (("a", "epochs"), ("b", "sizes"), ("c", "inner"), ("d", "epochs")):
        with pytest.raises(ValueError, match=rf"t\.json \[{name}\]\.{field_name}: expected"):
            presets.preset("t", name, _Config())
    _write(preset_dir, "u", {"quick": {"epochs": 1.5}})  # a fraction for a whole number: no
    with pytest.raises(ValueError, match=r"\[quick\]\.epochs: expected"):
        presets.preset("u", "quick", _Config())


def test_a_config_that_refuses_the_preset_names_the_file(preset_dir):
    @dataclass(frozen=True)
    class Checked:
        epochs: int = 10

        def __post_init__(self) -> None:
            if self.epochs < 1:
                raise ValueError("epochs must be positive")

    _write(preset_dir, "t", {"quick": {"epochs": 0}})
    with pytest.raises(ValueError, match=r"t\.json \[quick\]: epochs must be positive"):
        presets.preset("t", "quick", Checked())


def test_presets_do_not_share_their_values(preset_dir):
    _write(preset_dir, "t", {"quick": {"lr": {"BP": 5e-4}}})
    first = presets.preset("t", "quick", _Config())
    first.lr["BP"] = 1.0  # an edit of one config must not reach the next one
    assert presets.preset("t", "quick", _Config()).lr == {"BP": 5e-4}


def test_a_missing_file_or_a_key_given_twice_is_named(preset_dir):
    with pytest.raises(FileNotFoundError, match=r"none\.json: no such presets file"):
        presets.preset("none", "quick", _Config())
    assert presets.preset("none", "full", _Config()) == _Config()  # the defaults need no file
    (preset_dir / "t.json").write_text('{"quick": {"epochs": 1, "epochs": 2}}')
    with pytest.raises(ValueError, match=r"t\.json: not a valid presets file.*\['epochs'\]"):
        presets.names("t")


def test_build_needs_every_required_field(preset_dir):
    @dataclass
    class Required:
        name: str
        epochs: int

    _write(preset_dir, "t", {"tiny": {"name": "tiny"}})
    with pytest.raises(ValueError, match=r"t\.json \[tiny\].*epochs"):
        presets.build("t", "tiny", Required)


def _task_configs() -> dict[str, object]:
    """Each committed preset file's task and the config its presets apply to."""
    from feedback_alignment.experiments import (
        convnets,
        demo,
        graphs,
        language,
        learned_feedback,
        learned_feedback_resnet,
        nerf,
        recommenders,
        resnet,
        resnet_seeds,
    )  # fmt: skip

    return {
        "digits": demo.DemoConfig(),
        "convnets": convnets.ConvConfig(),
        "learned-feedback": learned_feedback.LearnedConfig(),
        "learned-feedback-resnet": learned_feedback_resnet.LearnedResNetConfig(),
        "resnet": resnet.ResNetConfig(),
        "resnet-seeds": resnet_seeds.ResNetSeedsConfig(),
        "graphs": graphs.GraphConfig(),
        "recommenders": recommenders.RecConfig(),
        "recommenders-paper-size": recommenders.RecConfig(),
        "transformer": language.LanguageConfig(),
        "nerf": nerf.NeRFTaskConfig(),
        "nerf-authors": nerf.NeRFTaskConfig(),
    }


def test_every_committed_preset_applies_to_its_tasks_config_and_changes_it():
    from feedback_alignment.experiments.principled.common import Setting

    configs = _task_configs()
    files = {p.stem for p in presets.PRESETS_DIR.glob("*.json")}
    assert files == {*configs, "principled"}
    for task, base in configs.items():
        for name in presets.names(task):
            changed = presets.preset(task, name, base)
            assert name == "full" or changed != base, f"{task} [{name}] changes nothing"
    scales = {
        name: presets.build("principled", name, Setting) for name in ("full", "quick", "tiny")
    }
    assert all(setting.name == name for name, setting in scales.items())


def test_configure_applies_the_preset_then_the_runs_choices(preset_dir):
    from feedback_alignment.experiments.registry import configure

    @dataclass(frozen=True)
    class Runnable:
        epochs: int = 10
        seeds: tuple[int, ...] = (0,)
        tuned: bool = True
        tuned_dir: Path | None = None

    _write(preset_dir, "t", {"quick": {"epochs": 1, "seeds": [0]}})
    options = RunOptions(out_dir=Path("."), quick=True, seeds=(7, 8), tuned=False,
                         tuned_dir=Path("/x"))  # fmt: skip
    config = configure("t", Runnable(), options, options.seeds)
    assert config == Runnable(epochs=1, seeds=(7, 8), tuned=False, tuned_dir=Path("/x"))
    assert configure("t", Runnable(), options).seeds == (0,)  # no seeds given: the preset's
    full = RunOptions(out_dir=Path("."), tuned=False)
    assert configure("t", Runnable(), full) == Runnable(tuned=False)


def test_config_for_reads_the_preset_of_the_run():
    from feedback_alignment.experiments import convnets, nerf
    from feedback_alignment.experiments import principled as p

    quick = RunOptions(out_dir=Path("."), quick=True, seeds=(4,), tuned=False)
    config = convnets.config_for(quick)
    assert (config.epochs, config.train_size, config.seeds, config.tuned) == (1, 4000, (4,), False)
    assert convnets.config_for(RunOptions(out_dir=Path("."))).epochs == convnets.ConvConfig().epochs
    authors = nerf.config_for(quick, "nerf-authors")
    assert authors.model.density == "relu" and authors.model.depth == nerf.QUICK.model.depth
    assert authors.task == "nerf-authors" and authors.lr["DFA"] == authors.lr["BP"] / 5
    assert p.config_for(quick) == p.QUICK and p.config_for(RunOptions(out_dir=Path("."))) == p.FULL
    with pytest.raises(ValueError, match="unknown NeRF task"):
        nerf.config_for(quick, "nerf-fast")


PROTOCOL = ("config_for", "run_experiment", "summary")
REPLACED = ("quick_config", "train_all", "run_all", "summarise", "with_options", "with_overrides",
            "setting_for", "with_setting")  # fmt: skip
"""The names the protocol replaced (a report's or a part's table function was ``table``)."""


def _names(module: object) -> set[str]:
    """Every name a module binds at its top level: defined, assigned or imported."""
    tree = ast.parse(Path(module.__file__).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("module_name", TASK_MODULES)
def test_every_task_module_names_its_roles_alike(module_name):
    module = importlib.import_module(module_name)  # PyG is imported by the runs, not the module
    assert callable(module.config_for)
    if module_name.endswith(".principled"):  # five parts, each a run and a table of its own
        parts = list(module.MODULES.values())
        assert all(callable(getattr(part, role)) for part in parts for role in PROTOCOL[1:])
        assert not any("table" in _names(part) for part in parts)
    else:
        assert all(callable(getattr(module, role)) for role in PROTOCOL)
    assert not _names(module) & set(REPLACED)


def test_no_report_keeps_a_table_function():
    from feedback_alignment.experiments import (
        convnets_report,
        graphs_report,
        language_report,
        nerf_report,
        recommenders_report,
    )  # fmt: skip

    for report in (convnets_report, graphs_report, language_report, nerf_report,
                   recommenders_report):  # fmt: skip
        assert "summary" in _names(report) and "table" not in _names(report), report.__name__


def test_the_committed_presets_hold_the_settings_they_replaced():
    """Pins the values that the code held before they were data (commit 668dc0d)."""
    from feedback_alignment.experiments import language, nerf, recommenders
    from feedback_alignment.experiments import principled as p

    lenet = {"epochs": 1, "batch_size": 32, "train_size": 4000, "test_size": 2000,
             "measurements": 4}  # fmt: skip
    assert presets.changes("convnets", "quick") == lenet
    assert presets.changes("learned-feedback", "quick") == {**lenet, "seeds": (0,)}
    small = {"epochs": 1, "batch_size": 32, "depth": 8, "width": 4, "train_size": 2000,
             "test_size": 1000, "measurements": 2}  # fmt: skip
    assert presets.changes("resnet", "quick") == small
    assert presets.changes("resnet-seeds", "quick") == {**small, "seeds": (0,)}
    assert presets.changes("learned-feedback-resnet", "quick") == {**small, "seeds": (0,)}
    assert presets.changes("graphs", "quick") == {"epochs": 5, "align_every": 5}
    assert presets.changes("recommenders", "quick") == {
        "mlp_dims": (32, 32, 32), "cross_layers": 2, "epochs": 1, "batch_size": 256, "lr": 3e-3,
        "max_train_rows": 8000,
    }  # fmt: skip
    assert recommenders.PAPER_SIZE == {
        "models": ("dcn",), "datasets": ("movielens-100k",), "mlp_dims": (1024, 1024),
        "cross_layers": 6, "batch_size": 512,
    }  # fmt: skip
    q = language.QUICK
    assert (q.d_model, q.n_layer, q.block_size, q.batch_size, q.steps, q.warmup, q.eval_every,
            q.eval_batches, q.sample_chars) == (64, 2, 32, 16, 150, 20, 50, 8, 120)  # fmt: skip
    m = nerf.QUICK.model
    assert (m.depth, m.width, m.skips, m.view_width, m.pos_freqs, m.dir_freqs, m.n_samples,
            m.n_importance) == (4, 64, (2,), 32, 6, 2, 12, 12)  # fmt: skip
    assert (nerf.QUICK.downscale, nerf.QUICK.rays, nerf.QUICK.steps, nerf.QUICK.eval_every,
            nerf.QUICK.test_views) == (2, 256, 300, 100, 3)  # fmt: skip
    assert nerf.AUTHORS.lr == {"BP": 2e-3, "DFA": 4e-4, "Shallow": 2e-3}
    assert p.FULL.bottleneck_widths == (1, 5, 18, 46, 118, 308, 800)
    assert (p.FULL.mlp_epochs, p.QUICK.train_limit, p.TINY.deep) == ((20, 2), 4000, (3, 16))
