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
    presets._load.cache_clear()
    yield tmp_path
    presets._load.cache_clear()


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
    with pytest.raises(KeyError, match=r"no preset 'fast'.*\['full', 'quick'\]"):
        presets.preset("t", "fast", _Config())
    with pytest.raises(KeyError, match="no preset 'quick'"):  # a task without a file: full only
        presets.preset("none", "quick", _Config())


def test_a_broken_file_is_refused_with_its_path(preset_dir):
    (preset_dir / "t.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"t\.json: not valid JSON"):
        presets.names("t")
    _write(preset_dir, "u", {"quick": [1, 2]})
    with pytest.raises(ValueError, match=r"u\.json: presets \['quick'\] are not objects"):
        presets.names("u")


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
        language,
        learned_feedback,
        learned_feedback_resnet,
        nerf,
        recommenders,
        resnet,
        resnet_seeds,
    )  # fmt: skip

    graphs = pytest.importorskip("feedback_alignment.experiments.graphs")
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


def _defined_names(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    tree = ast.parse(Path(module.__file__).read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} | {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
        if isinstance(t, ast.Name)
    }  # fmt: skip


@pytest.mark.parametrize("module_name", TASK_MODULES)
def test_every_task_module_names_its_roles_alike(module_name):
    if module_name.endswith(".graphs"):
        pytest.importorskip("torch_geometric")
    module = importlib.import_module(module_name)
    assert callable(module.config_for)
    if module_name.endswith(".principled"):  # five parts, each a run and a table of its own
        parts = module.MODULES.values()
        assert all(callable(getattr(part, role)) for part in parts for role in PROTOCOL[1:])
    else:
        assert all(callable(getattr(module, role)) for role in PROTOCOL)
    assert not _defined_names(module_name) & set(REPLACED)
