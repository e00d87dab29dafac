"""A schedule model of pipeline training: step time and idle fraction from per-stage costs.

Each stage ``s`` of ``S`` runs, per micro-batch, a forward ``F`` (``f_s`` seconds) and an update
``U`` (``b_s``: the backward of BP, or DFA's local update from ``B_s e``), then once per step its
optimizer (``o_s``); a message takes ``c`` seconds. The dependencies:

* both: ``F(s, i)`` needs ``F(s-1, i)`` + ``c``;
* BP: ``U(s, i)`` needs ``U(s+1, i)`` + ``c`` (the gradient travels back stage by stage); the last
  stage's ``U(S-1, i)`` follows its own ``F``. Orders per stage are fixed: GPipe runs all ``F``
  then all ``U``; 1F1B runs ``min(S-s-1, M)`` warm-up forwards, then alternates, then drains.
* DFA: ``U(s, i)`` needs ``e_i``, sent by the last stage right after its ``F(S-1, i)`` + loss
  (``c`` later): one hop whatever ``s``. A stage applies every error that has arrived before its
  next forward (as the implementation does). ``sync`` steps its optimizer once all ``M`` updates are
  done; ``async`` steps after its ``M`` forwards and carries the missing updates over, with at most
  ``max_pending`` micro-batches waiting.

The simulation is event driven: the stage whose next operation can start earliest runs it, so a
greedy choice never misses a message that would have arrived earlier. Step time is the steady-state
period (the mean over the last half of ``steps``); ``makespan`` is the time of all ``steps`` from an
empty pipeline, which is what a benchmark round between two barriers measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("gpipe", "1f1b", "dfa-sync", "dfa-async")


@dataclass(frozen=True)
class StageCost:
    """Seconds per micro-batch for ``forward`` and ``update``, per step for ``optimizer``."""

    forward: float
    update: float
    optimizer: float = 0.0


@dataclass
class Simulation:
    """Result: steady-state step time, per-stage idle fraction and the operations (for plots)."""

    step_time: float
    idle: list[float]
    makespan: float = 0.0
    """Time until every stage finished all ``steps`` steps, from an empty pipeline."""
    ops: list[list[tuple[str, int, int, float, float]]] = field(default_factory=list)


def _fixed_order(method: str, stage: int, stages: int, micro: int) -> list[tuple[str, int]]:
    if method == "gpipe":
        return [("F", i) for i in range(micro)] + [("U", i) for i in range(micro)]
    warmup = min(stages - stage - 1, micro)
    order = [("F", i) for i in range(warmup)]
    for i in range(micro - warmup):
        order += [("F", warmup + i), ("U", i)]
    order += [("U", i) for i in range(micro - warmup, micro)]
    return order


def simulate(
    method: str,
    costs: list[StageCost],
    micro: int,
    *,
    comm: float = 0.0,
    loss: float = 0.0,
    steps: int = 16,
    max_pending: int | None = None,
) -> Simulation:
    """Simulates ``steps`` steps of ``method`` on ``len(costs)`` stages with ``micro`` micro-batches.

    ``loss`` is the last stage's time to compute the loss and ``e`` (DFA sends ``e`` after it).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    stages = len(costs)
    pending_limit = 2 * micro if max_pending is None else max_pending
    clock = [0.0] * stages
    busy = [0.0] * stages
    # arrival times of messages: activation (s, step, i) at stage s; error/grad (s, step, i)
    act: dict[tuple[int, int, int], float] = {}
    back: dict[tuple[int, int, int], float] = {}
    step_end: dict[tuple[int, int], float] = {}
    ops: list[list[tuple[str, int, int, float, float]]] = [[] for _ in range(stages)]
    # per-stage progress
    step_of = [0] * stages
    position = [0] * stages  # index into the fixed order (BP) / forwards done (DFA)
    applied: list[list[tuple[int, int]]] = [[] for _ in range(stages)]
    queue_dfa: list[list[tuple[int, int]]] = [[] for _ in range(stages)]  # (step, i) forwarded
    last = stages - 1
    orders = (
        [_fixed_order(method, s, stages, micro) for s in range(stages)]
        if "dfa" not in method
        else None
    )

    def run(s: int, kind: str, step: int, i: int, start: float, duration: float) -> float:
        end = start + duration
        clock[s] = end
        busy[s] += duration
        ops[s].append((kind, step, i, start, end))
        return end

    def candidate(s: int) -> tuple[float, str, int, int] | None:
        """(start, kind, step, micro) of stage s's next operation, or None if not yet known."""
        step = step_of[s]
        if step >= steps:
            return None
        if orders is not None:  # BP, fixed order
            order = orders[s]
            if position[s] == len(order):
                return (clock[s], "O", step, -1)
            kind, i = order[position[s]]
            if kind == "F":
                ready = 0.0 if s == 0 else act.get((s, step, i))
            else:
                ready = (
                    max(clock[s], _op_end(s, "F", step, i)) if s == last else back.get((s, step, i))
                )
            return None if ready is None else (max(clock[s], ready), kind, step, i)
        # DFA
        if s == last:
            if position[s] == micro:
                return (clock[s], "O", step, -1)
            ready = 0.0 if s == 0 else act.get((s, step, position[s]))
            return None if ready is None else (max(clock[s], ready), "F", step, position[s])
        waiting = queue_dfa[s]
        arrivals = [(back.get((s, st, i)), st, i) for st, i in waiting[:1]]  # in order
        error_at = arrivals[0][0] if arrivals and arrivals[0][0] is not None else None
        forwards_done = position[s] == micro
        if error_at is not None and error_at <= clock[s]:
            return (clock[s], "U", arrivals[0][1], arrivals[0][2])
        must_wait = len(waiting) > pending_limit or (
            forwards_done and method == "dfa-sync" and waiting
        )
        if forwards_done and not must_wait:
            return (clock[s], "O", step, -1)
        if must_wait:
            return None if error_at is None else (max(clock[s], error_at), "U", *arrivals[0][1:])
        ready = 0.0 if s == 0 else act.get((s, step, position[s]))
        options = []
        if ready is not None:
            options.append((max(clock[s], ready), "F", step, position[s]))
        if error_at is not None:
            options.append((max(clock[s], error_at), "U", *arrivals[0][1:]))
        if not options:
            return None
        return min(options)

    op_end: dict[tuple[int, str, int, int], float] = {}

    def _op_end(s: int, kind: str, step: int, i: int) -> float:
        return op_end[(s, kind, step, i)]

    while True:
        found = [(c, s) for s in range(stages) if (c := candidate(s)) is not None]
        if not found:
            break
        (start, kind, step, i), s = min(found)
        cost = costs[s]
        if kind == "F":
            end = run(s, "F", step, i, start, cost.forward)
            op_end[(s, "F", step, i)] = end
            if s < last:
                act[(s + 1, step, i)] = end + comm
            if orders is None:
                position[s] += 1
                if s == last:  # loss, send e, own update
                    end = run(s, "L", step, i, end, loss)
                    for t in range(last):
                        back[(t, step, i)] = end + comm
                    run(s, "U", step, i, end, cost.update)
                else:
                    queue_dfa[s].append((step, i))
            else:
                position[s] += 1
        elif kind == "U":
            duration = cost.update + (loss if orders is not None and s == last else 0.0)
            end = run(s, "U", step, i, start, duration)
            if orders is not None:
                position[s] += 1
                if s > 0:
                    back[(s - 1, step, i)] = end + comm
            else:
                queue_dfa[s].pop(0)
                applied[s].append((step, i))
        else:  # optimizer step
            end = run(s, "O", step, -1, start, cost.optimizer)
            step_end[(s, step)] = end
            step_of[s] += 1
            position[s] = 0
    if any(step_of[s] < steps for s in range(stages)):
        raise RuntimeError(f"schedule model deadlocked for {method} (a bug in the model)")
    # steady state, per stage over its own last steps (stages run offset in time, async most)
    window = max(1, steps // 2)
    periods, idle = [], []
    for s in range(stages):
        start_t, stop_t = step_end[(s, steps - 1 - window)], step_end[(s, steps - 1)]
        inside = sum(
            max(0.0, min(e, stop_t) - max(b, start_t)) for _, _, _, b, e in ops[s] if e > start_t
        )
        periods.append((stop_t - start_t) / window)
        idle.append(1.0 - inside / (stop_t - start_t))
    makespan = max(step_end[(s, steps - 1)] for s in range(stages))
    return Simulation(sum(periods) / stages, idle, makespan=makespan, ops=ops)
