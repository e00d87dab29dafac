"""``bench --memory``: the measurement itself (exact on known allocations, agreeing with a count
of the tensors autograd saves), its ordering on tiny models (BP grows linearly with depth,
checkpointing much slower), the forward-time arm never faked, the CLI and the committed table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from feedback_alignment.bench import memory
from feedback_alignment.cli import main

MIB = 2**20
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_peak_of_known_allocations_is_exact():
    def allocations() -> None:
        a = torch.empty(256, 1024)  # 1 MiB
        b = torch.empty(512, 1024)  # 2 MiB, 3 held
        del a  # 2 held
        c = torch.empty(512, 1024)  # 4 held: the peak
        del b, c

    measured = memory.profiled_memory(allocations)
    assert measured.peak == 4 * MIB
    assert measured.forward_end == 0  # everything was freed before the (empty) backward


def test_the_end_of_the_forward_is_what_the_graph_keeps():
    x = torch.ones(1024, 256, requires_grad=True)  # 1 MiB, held before: not counted

    def forward() -> torch.Tensor:
        y = x * 2  # 1 MiB, saved by y * y
        return (y * y).sum()  # y * y (1 MiB) is freed once summed

    measured = memory.profiled_memory(forward)
    # y and the scalars (the loss, the wrapped 2): a few bytes over 1 MiB
    assert MIB <= measured.forward_end <= MIB + 64
    assert measured.peak >= 2 * MIB  # in the backward: x.grad and y at least
    assert x.grad is not None
    x.grad = None
    assert memory.saved_for_backward(forward, [x]) == MIB  # y, once (saved twice)


def test_bp_grows_linearly_with_depth_and_checkpointing_much_slower():
    """The validation of the method on tiny models (a few seconds): BP's peak rises by the same
    amount per block at every depth; with each block checkpointed only its input is kept; the
    profiler's memory at the end of the forward is the bytes autograd saved."""
    for family in memory.MODELS:
        result = memory.run_model(family, size="tiny", arms=["BP", "BP + checkpoint"])
        assert result.depths == [2, 4, 8]
        bp, ckpt = ([p.__dict__ for p in arm.points] for arm in result.arms)
        peaks = [p["peak_mib"] for p in bp]
        first, second = peaks[1] - peaks[0], peaks[2] - peaks[1]  # 2 and 4 more blocks
        assert first > 0 and second == pytest.approx(2 * first, rel=0.1), (family, peaks)
        # a checkpointed block keeps its input: one of the MLP block's four saved activations
        assert memory.per_block(ckpt) < 0.4 * memory.per_block(bp), (family, ckpt, bp)
        assert ckpt[-1]["peak_mib"] < 0.5 * bp[-1]["peak_mib"]
        for point in bp:  # the allocator and the saved-tensor count agree (the loss aside)
            assert point["forward_end_mib"] == pytest.approx(point["saved_mib"], rel=0.01)
        assert all(p["saved_mib"] is None for p in ckpt)  # hidden by checkpoint's own hooks


def test_the_rules_run_and_keep_what_bp_keeps():
    """DFA and (backward-time) DRTP keep each block's graph for the backward pass, as BP does."""
    result = memory.run_model("mlp", size="tiny", depths=[4], arms=["BP", "DFA", "DRTP"])
    bp, dfa, drtp = (arm.points[0] for arm in result.arms)
    assert all(arm.status == "ok" for arm in result.arms)
    for rule in (dfa, drtp):
        assert rule.forward_end_mib == pytest.approx(bp.forward_end_mib, rel=0.05)


def test_forward_time_drtp_is_never_faked(monkeypatch):
    monkeypatch.setattr(memory, "forward_time_available", lambda: False)
    result = memory.run_model("mlp", size="tiny", arms=["BP", memory.FORWARD_TIME])
    arm = result.arms[1]
    assert arm.status == "not available" and arm.points == []
    assert "no forward_time option" in arm.note
    from dataclasses import asdict

    payload = {
        "machine": memory.machine_description("cpu"),
        "models": [asdict(result)],
    }
    assert f"| {memory.FORWARD_TIME} | not available" in memory.to_markdown(payload)


def _hand_written_forward_time_peak(depth: int, width: int = 64, batch: int = 64) -> int:
    """Peak of a step where each block learns during the forward pass, written here by hand: a
    hook at each block output runs that block's local backward with a fixed random signal and
    passes the output on detached, so the block's graph is freed at once."""
    torch.manual_seed(0)
    model = memory.ResidualMLP(32, width, depth, 10)
    signal = torch.randn(batch, width) / batch  # stands in for B_l (-y*/n)

    def learn_now(module, inputs, output):
        torch.autograd.backward(output, signal)
        return output.detach()

    for block in model.blocks:
        block.register_forward_hook(learn_now)
    x, y = torch.randn(batch, 32), torch.randint(0, 10, (batch,))

    def forward() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(x), y)

    forward().backward()  # allocates every .grad
    for parameter in model.parameters():
        parameter.grad.zero_()
    return memory.profiled_memory(forward).peak


def test_the_method_sees_a_forward_time_update_as_flat_in_depth():
    """Whatever the library's forward-time DRTP does, the measurement can show the goal: a step
    that frees each block's graph during the forward pass peaks at the same bytes at every depth
    (BP's tiny MLP grows by about 0.06 MiB per block, test above)."""
    peaks = [_hand_written_forward_time_peak(depth) for depth in (2, 4, 8)]
    assert max(peaks) - min(peaks) < 0.01 * MIB, peaks


def test_an_arm_that_fails_is_recorded_and_the_others_run(monkeypatch):
    measure = memory.measure_arm

    def refusing(arm, *args, **kwargs):
        if arm == "DRTP":
            raise RuntimeError("refused here\nsecond line")
        return measure(arm, *args, **kwargs)

    monkeypatch.setattr(memory, "measure_arm", refusing)
    result = memory.run_model("mlp", size="tiny", depths=[2], arms=["BP", "DRTP"])
    bp, drtp = result.arms
    assert bp.status == "ok" and len(bp.points) == 1
    assert drtp.status == "failed" and drtp.points == []
    assert drtp.note == "failed: at 2 blocks, RuntimeError: refused here"


def test_forward_time_is_found_through_a_signature_that_forwards_kwargs(monkeypatch):
    import feedback_alignment as fa

    class Base:
        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

    class Forwarding(Base):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)

    class WithOption(Base):
        def __init__(self, *args, forward_time: bool = False, **kwargs) -> None:
            super().__init__(*args, **kwargs)

    class OptionInBase(Forwarding):
        pass

    def base_with_option(self, seed: int = 0, forward_time: bool = False) -> None:
        self.seed = seed

    monkeypatch.setattr(fa, "DRTP", Forwarding)
    assert memory.forward_time_available() is False  # TypeError: no such keyword
    monkeypatch.setattr(fa, "DRTP", WithOption)
    assert memory.forward_time_available() is True
    monkeypatch.setattr(Base, "__init__", base_with_option)
    monkeypatch.setattr(fa, "DRTP", OptionInBase)
    assert memory.forward_time_available() is True


@pytest.mark.skipif(
    not memory.forward_time_available(), reason="fa.DRTP(forward_time=True) not in this version"
)
def test_forward_time_drtp_peak_is_flat_in_depth():
    """The goal of issue 24 item 3: what forward-time DRTP holds does not grow like BP's."""
    arms = ["BP", memory.FORWARD_TIME]
    for family in memory.MODELS:
        result = memory.run_model(family, size="tiny", arms=arms)
        bp, forward_time = ([p.__dict__ for p in arm.points] for arm in result.arms)
        assert memory.per_block(forward_time) < 0.25 * memory.per_block(bp), family
        assert forward_time[-1]["forward_end_mib"] < 0.25 * bp[-1]["forward_end_mib"], family


def test_cli_writes_the_json_table_and_plot(tmp_path, capsys):
    out = tmp_path / "m" / "memory.json"
    argv = ["bench", "--memory", "--size", "tiny", "--depths", "2", "3", "--out", str(out), "-q"]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    machine = payload["machine"]
    assert {"processor", "cpus", "threads", "torch", "date", "device", "commit"} <= set(machine)
    assert payload["settings"]["depths"] == [2, 3] and payload["settings"]["size"] == "tiny"
    available = memory.forward_time_available()
    assert payload["settings"]["forward_time_available"] is available
    assert [m["family"] for m in payload["models"]] == list(memory.MODELS)
    for model in payload["models"]:
        arms = {a["arm"]: a for a in model["arms"]}
        assert list(arms) == list(memory.ARMS)
        for name, arm in arms.items():
            if name == memory.FORWARD_TIME and not available:
                assert arm["status"] == "not available" and not arm["points"]
                continue
            assert arm["status"] == "ok", arm
            assert [p["depth"] for p in arm["points"]] == [2, 3]
            assert all(p["peak_mib"] > 0 for p in arm["points"])
    assert out.with_suffix(".md").read_text() == memory.to_markdown(payload) + "\n"
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| BP + checkpoint |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rounds", "5"], "--rounds do not apply"),
        (["--families", "nerf"], "not nerf"),
        (["--compile"], "--compile do not apply"),
    ],
)
def test_cli_refuses_what_memory_does_not_take(extra, message, tmp_path, capsys):
    assert main(["bench", "--memory", *extra, "--out", str(tmp_path / "m.json")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_depths_belong_to_memory(tmp_path, capsys):
    assert main(["bench", "--depths", "4", "--out", str(tmp_path / "b.json")]) == 2
    assert "--depths is an option of bench --memory" in capsys.readouterr().err


def test_the_committed_memory_table_is_the_rendering_of_the_committed_json():
    text = (DOCS / "BENCHMARKS.md").read_text()
    assert memory.MARKER_OPEN.format("results/bench/memory.json") in text
    assert memory.render_doc(DOCS / "BENCHMARKS.md", check=True) == []
    payload = memory.load(DOCS / "results" / "bench" / "memory.json")
    assert payload["settings"]["size"] == "full"
    assert payload["settings"]["depths"] == list(memory.DEPTHS["full"])


def test_render_doc_rewrites_a_stale_block_and_refuses_a_doc_without_one(tmp_path):
    (tmp_path / "m.json").write_text((DOCS / "results" / "bench" / "memory.json").read_text())
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n<!-- bench-memory: m.json -->\nold table\n<!-- /bench-memory -->\nend\n"
    )
    assert memory.render_doc(doc, check=True) == ["m.json"]
    assert "old table" in doc.read_text()  # check writes nothing
    assert memory.render_doc(doc) == ["m.json"]
    text = doc.read_text()
    assert "old table" not in text and "| BP + checkpoint |" in text and text.endswith("end\n")
    assert memory.render_doc(doc, check=True) == []
    doc.write_text("no block here\n")
    with pytest.raises(ValueError, match="has no <!-- bench-memory"):
        memory.render_doc(doc)
