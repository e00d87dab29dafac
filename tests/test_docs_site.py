"""The documentation site builds with `mkdocs build --strict` and holds what it promises.

The site is built once per session into a temporary folder (never into the repository): 5-15 s
on the 2-core machine, depending on its load (2026-12-05). Strict mode fails on a broken link, a missing nav page or a
docstring mkdocstrings cannot read. The checks: every public name has an API entry, every example
script a page, every committed tuned file its table, and the generated pages their sources.
"""

from __future__ import annotations

import ast
import html
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

for _module in ("mkdocs", "mkdocstrings", "material", "mkdocstrings_handlers.python"):
    pytest.importorskip(_module, reason=f"the docs site needs {_module} (the docs extra)")


def _hook():
    spec = importlib.util.spec_from_file_location("docs_hooks_pages", ROOT / "docs/hooks/pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed after {seconds:.0f} s:\n{log}"
    assert "WARNING" not in log, log
    print(f"docs site built in {seconds:.1f} s")
    return out


def _text(page: Path) -> str:
    """The visible text of a built page (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _static_all(path: Path) -> list[str]:
    """A module's ``__all__`` read without importing it."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "__all__"
        ]:
            return list(ast.literal_eval(node.value))
    return []


def _anchors(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "api").rglob("index.html"):
        ids.update(re.findall(r'id="(feedback_alignment[\w.]*)"', page.read_text(encoding="utf-8")))
    return ids


def test_the_build_stays_out_of_the_repository(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert not site.resolve().is_relative_to(ROOT)


def test_every_public_name_has_an_api_entry(site: Path) -> None:
    import feedback_alignment as fa

    anchors = _anchors(site)
    subpackages = {"data", "models"}  # documented on their own pages, name by name
    missing = [
        name
        for name in fa.__all__
        if name not in subpackages and f"feedback_alignment.{name}" not in anchors
    ]
    packages = ["models", "data", "pipeline", "rules", "integrations"]
    packages += ["integrations.huggingface", "integrations.lightning"]  # each imported on its own
    for package in packages:
        path = ROOT / "src/feedback_alignment" / (package.replace(".", "/") + ".py")
        names = (
            _static_all(path)  # the trainer libraries need not be installed
            if path.is_file()
            else importlib.import_module(f"feedback_alignment.{package}").__all__
        )
        for name in names:
            # the rules are documented once, under fa (the same objects)
            where = "feedback_alignment" if package == "rules" else f"feedback_alignment.{package}"
            if f"{where}.{name}" not in anchors:
                missing.append(f"{package}.{name}")
    assert not missing, f"no API entry for {missing}"


def test_every_example_script_has_a_page(site: Path) -> None:
    hook = _hook()
    index = _text(site / "examples" / "index.html")
    for script in hook.example_scripts(ROOT):
        page = site / script.with_suffix("") / "index.html"
        assert page.is_file(), f"no page for {script}"
        text = _text(page)
        assert f"python {script.as_posix()}" in text
        source = (ROOT / script).read_text(encoding="utf-8")
        last = [line for line in source.splitlines() if line.strip()][-1].strip()
        assert last in text, f"the page of {script} does not show its code"
        assert script.as_posix() in index


def test_hyperparameter_tables_are_the_committed_json(site: Path) -> None:
    text = _text(site / "hyperparameters" / "index.html")
    tuned = sorted((ROOT / "src/feedback_alignment/experiments/tuned").glob("*.json"))
    assert tuned
    for path in tuned:
        stored = json.loads(path.read_text())
        assert f"{stored['task']}" in text
        for arm, entry in stored["arms"].items():
            values = ", ".join(f"{k} {v:.3g}" for k, v in entry["values"].items())
            row = f"{arm.rpartition('/')[2]} | {values}"
            assert values.split(",")[0] in text, f"{path.name}: {arm} {values} not on the page"
            assert row.split(" | ")[0] in text
        assert stored["provenance"]["command"] in text


def test_generated_pages_render_their_sources(site: Path) -> None:
    changelog = _text(site / "changelog" / "index.html")
    assert "The direct rules' feedback matrix for a given seed changed" in changelog
    assert (site / "distributed" / "index.html").is_file()
    papers = _text(site / "papers" / "index.html")
    for key in ("nokland2016dfa", "lillicrap2016fa", "launay2020scales", "bacho2022fdfa"):
        assert key in papers
    reproduction = _text(site / "REPRODUCTION" / "index.html")
    assert "Claims, one by one" in reproduction


def test_hook_pages_for_examples(tmp_path: Path) -> None:
    hook = _hook()
    (tmp_path / "examples" / "distributed").mkdir(parents=True)
    (tmp_path / "examples" / "a.py").write_text(
        '"""Train a thing.\n\nMore words.\n\nRun::\n\n    python examples/a.py\n"""\nx = \'```\'\n'
    )
    (tmp_path / "examples" / "distributed" / "b.py").write_text("print('no docstring')\n")
    (tmp_path / "examples" / "_helper.py").write_text('"""private"""\n')
    scripts = hook.example_scripts(tmp_path)
    assert [s.as_posix() for s in scripts] == ["examples/a.py", "examples/distributed/b.py"]
    page = hook.example_page(tmp_path, scripts[0])
    assert page.startswith("# `examples/a.py`")
    assert "Run:\n\n    python examples/a.py" in page  # reST's '::' read as Markdown
    assert "````python\n" in page  # a fence longer than the code's own backticks
    assert "no module docstring" in hook.example_page(tmp_path, scripts[1])
    index = hook.examples_index(tmp_path, scripts)
    assert "[`examples/a.py`](a.md): Train a thing." in index
    assert "(distributed/b.md)" in index
    nav = [{"Home": "index.md"}, {"Examples": "examples/index.md"}]
    entries = [{"a.py": "examples/a.md"}]
    assert hook._expand_examples(nav, entries)
    assert nav[1] == {"Examples": ["examples/index.md", {"a.py": "examples/a.md"}]}


def test_hook_tuned_tables_mark_values_at_an_edge(tmp_path: Path) -> None:
    hook = _hook()
    folder = tmp_path / "src/feedback_alignment/experiments/tuned"
    folder.mkdir(parents=True)
    stored = {
        "task": "toy",
        "metric": "validation error %",
        "direction": "minimize",
        "schedule": "One epoch.",
        "sampler": "TPE",
        "trials_per_arm": 2,
        "space": {"m/DFA": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
        "arms": {"m/DFA": {"values": {"lr": 0.0099}, "value": 5.0, "default_value": 6.0,
                           "trials": 2, "pruned": 0}},
        "provenance": {"command": "feedback-alignment reproduce --tasks toy --tune",
                       "commit": "abc1234", "date": "2026-12-05"},
    }  # fmt: skip
    (folder / "toy.json").write_text(json.dumps(stored))
    table = hook.tuned_tables(tmp_path)
    assert "| m | DFA | lr 0.0099 (edge) | lr [0.0001, 0.01] log | 5 / 6 | 2 (0) |" in table
    assert "`feedback-alignment reproduce --tasks toy --tune`, commit abc1234" in table
