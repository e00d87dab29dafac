"""How each claim of :mod:`~feedback_alignment.experiments.claims` is decided: one function per
claim (or family of claims) that reads our cells from the committed tables and returns an
:class:`~feedback_alignment.experiments.claim_data.Outcome`.

Each function states its criterion in its code: the numbers it reads (by row key and column
name), the comparison, and what the "not reproduced" detail says, so that a reader of a row of
docs/REPRODUCTION.md can find exactly what decided it.
"""

from __future__ import annotations

import math
import statistics

from feedback_alignment.experiments import papers as P
from feedback_alignment.experiments.claim_data import (
    NOT_MEASURED,
    TARGET,
    ClaimDataError,
    Data,
    Evaluate,
    Outcome,
    Results,
    Stat,
    slash,
    verdict,
)
from feedback_alignment.experiments.graphs_report import LAYER_NAMES
from feedback_alignment.experiments.recommenders_report import MODEL_NAMES
from feedback_alignment.experiments.results import gap_closure


def log_gap(rule: float, bp: float, shallow: float) -> float:
    """Gap closure in log perplexity, (log p_S - log p_rule) / (log p_S - log p_BP) (2020, §3.3)."""
    return gap_closure(math.log(rule), math.log(bp), math.log(shallow))


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation: Pearson's of the ranks (average ranks for ties)."""

    def ranks(v: list[float]) -> list[float]:
        ordered = sorted(v)
        return [statistics.fmean(k for k, s in enumerate(ordered) if s == a) for a in v]

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / den if den else math.nan


# --- the evaluators, reading the committed cells --------------------------------------------------

NOK, BOTTLE, BIO = P.NOKLAND_MNIST_ERROR, P.LAUNAY_2019_BOTTLENECK, P.BIOTORCH_FMNIST_LENET_ERROR
PPL, PSNR, CORA = P.LAUNAY_2020_PERPLEXITY, P.LAUNAY_2020_PSNR, P.LAUNAY_2020_CORA
THREE, ERR = ("BP", "DFA", "Shallow"), "test error % (ours)"


def mlp(net: str) -> Evaluate:
    """DFA within 1 point of BP's test error and below Shallow's, on both data sets."""

    def evaluate(r: Results) -> Outcome:
        t, met, parts = r["principled_mlp"], True, []
        for data in ("mnist-5k", "fashion-mnist"):
            e = t.each(ERR, THREE, "rule", data_set=data, **{"MLP (tanh)": net})
            gap = round(e["DFA"].mean - e["BP"].mean, 2)
            met = met and gap <= 1 and e["DFA"].mean < e["Shallow"].mean
            parts.append(f"{data}: {slash(e, 2)}")
        return verdict(t, "; ".join(parts), met, "DFA − BP > 1 point or DFA ≥ Shallow")

    return evaluate


def fa_vs_dfa(r: Results) -> Outcome:
    t, data = r["principled_mlp"], ("mnist-5k", "fashion-mnist")
    e = {d: t.each(ERR, ("FA", "DFA"), "rule", data_set=d, **{"MLP (tanh)": "7x240"}) for d in data}
    by = ", ".join(f"FA {e[d]['FA'].mean - e[d]['DFA'].mean:+.2f} points vs DFA on {d}" for d in e)
    met = all(e[d]["FA"].mean <= e[d]["DFA"].mean for d in e)
    return verdict(t, "; ".join(f"{d}: {slash(e[d], 2)}" for d in e), met, by)


def bottleneck(column: str) -> Evaluate:
    def evaluate(r: Results) -> Outcome:
        t = r["principled_bottleneck"]
        bs = sorted(row[t.index("b")] for row in t.rows)
        v = [s.mean for s in t.each(column, bs).values()]
        if column.startswith("acc"):
            ours = f"masked accuracy {v[0]:.2f} % at b={bs[0]}, {v[-1]:.2f} % at b={bs[-1]}"
            gain = v[-1] - v[0]
            return verdict(t, ours, gain >= 1, f"widest ahead of narrowest by {gain:+.2f} points")
        rho = spearman([float(b) for b in bs], v)
        below = [s.mean for s in t.each("cosine below, masked", bs).values()]
        ours = f"masked cosine {v[0]:.3f} at b={bs[0]}, {v[-1]:.3f} at b={bs[-1]}, Spearman "
        ours += (
            f"{rho:.2f} (the layer below: Spearman {spearman([float(b) for b in bs], below):.2f})"
        )
        return verdict(t, ours, rho >= 0.8, f"Spearman {rho:.2f}, criterion ≥ 0.80")

    return evaluate


def alignment(r: Results) -> Outcome:
    t = r["principled_alignment"]
    angles = [i for i, c in enumerate(t.columns) if c.startswith("angle ")]
    if not angles:
        raise ClaimDataError(f"{t.path}: no 'angle N' columns (columns: {t.columns})")
    first, last = ([t.rows[k][i] for i in angles] for k in (0, -1))
    ours = f"update angles {min(first):.0f}-{max(first):.0f} deg at step {t.rows[0][0]}, "
    ours += f"{min(last):.0f}-{max(last):.0f} at step {t.rows[-1][0]}"
    return verdict(t, ours, max(last) < 70 <= min(first), "an angle stays ≥ 70 deg or starts below")


def practice(better: str, worse: str, why: str) -> Evaluate:
    def evaluate(r: Results) -> Outcome:
        t = r["principled_practices"]
        a, b = t.each("test accuracy %", (better, worse)).values()
        ours = f"{better} {a.show(2)} % vs {worse} {b.show(2)} %"
        return verdict(t, ours, a.mean > b.mean, f"{why}: {a.mean - b.mean:+.2f} points")

    return evaluate


def conv(r: Results) -> Outcome:
    t = r["principled_conv"]
    angle = [t.get(f"angle conv{i} (deg)", "DFA").mean for i in (1, 2)]
    trained, frozen = t.each(ERR, ("DFA", "DFA, convolutions frozen")).values()
    ours = f"conv angles {angle[0]:.1f} / {angle[1]:.1f} deg; error {trained.show(2)} % trained, "
    met = min(angle) >= 80 and abs(frozen.mean - trained.mean) <= 1
    miss = "a conv layer aligns (< 80 deg) or freezing them moves the error by > 1 point"
    return verdict(t, ours + f"{frozen.show(2)} % frozen", met, miss)


def transformer(which: str) -> Evaluate:
    def evaluate(r: Results) -> Outcome:
        t = r["transformer"]
        # test perplexity since the learning rates are tuned on validation (older runs: val)
        test = "test perplexity (ours, per char)"
        column = test if test in t.columns else "val perplexity (ours, per char)"
        p = {k: s.mean for k, s in t.each(column, PPL).items()}
        if which == "order":
            order = sorted(p, key=p.__getitem__)
            ours = " < ".join(f"{k} {p[k]:.2f}" for k in order)
            return verdict(t, ours, order == sorted(PPL, key=PPL.__getitem__), "another order")
        g = log_gap(p[f"DFA-{which}"], p["BP"], p["Shallow"])
        ours = f"G = {g:.2f} (ppl per char BP {p['BP']:.2f}, DFA-{which} "
        ours += f"{p[f'DFA-{which}']:.2f}, Shallow {p['Shallow']:.2f})"
        return verdict(t, ours, g >= TARGET[which], f"short by {TARGET[which] - g:.2f}")

    return evaluate


def nerf(which: str) -> Evaluate:
    def evaluate(r: Results) -> Outcome:
        t = r["nerf"]
        db = t.each("test PSNR dB (ours)", THREE)
        bp, dfa, shallow = (s.mean for s in db.values())
        if which == "order":
            worst = "worst seed PSNR dB (ours)"
            low = t.get(worst, "DFA").mean if worst in t.columns else dfa
            ours = slash(db, 2) + " dB" + (f"; DFA's worst seed {low:.2f}" if low != dfa else "")
            miss = "another order" if not bp > dfa > shallow else "a DFA seed below Shallow"
            return verdict(t, ours, bp > dfa > shallow and low > shallow, miss)
        gap, most = bp - dfa, TARGET["nerf_db"]
        ours = f"gap {gap:.2f} dB; {slash(db, 2)} dB"
        return verdict(t, ours, gap <= most, f"{gap - most:.2f} dB wider than {most}")

    return evaluate


LAYERS = {
    m: LAYER_NAMES[m] for m in CORA
}  # the layers with a paper figure, as the table names them


def cora(r: Results) -> tuple[Data, dict[str, dict[str, Stat]]]:
    t = r["graphs_cora"]
    return t, {m: {k: t.get(k, layer) for k in THREE} for m, layer in LAYERS.items()}


def closure(a: dict[str, Stat]) -> float:
    return gap_closure(a["DFA"].mean, a["BP"].mean, a["Shallow"].mean)


def graphs_order(r: Results) -> Outcome:
    t, acc = cora(r)
    ok = [m for m, a in acc.items() if a["Shallow"].mean < a["DFA"].mean < a["BP"].mean]
    ours = "; ".join(f"{m.upper()} {slash(a, 1)}" for m, a in acc.items())
    return verdict(t, ours, len(ok) == len(acc), f"holds only for {ok}")


def gcn_gap(r: Results) -> Outcome:
    t, acc = cora(r)
    g, most = closure(acc["gcn"]), TARGET["gcn"]
    ours = f"G = {g:.2f} from the means of {slash(acc['gcn'], 1)}"
    return verdict(t, ours, g >= most, f"short by {most - g:.2f}")


def cora_other_gaps(r: Results) -> Outcome:
    t, acc = cora(r)
    paper = {m: gap_closure(CORA[m][1], CORA[m][0], CORA[m][2]) for m in ("cheb", "gat")}
    miss = {m: paper[m] - closure(acc[m]) for m in paper}
    ours = ", ".join(f"{m.upper()} G = {closure(acc[m]):.2f}" for m in paper)
    return verdict(t, ours, max(miss.values()) <= 0.05, f"up to {max(miss.values()):.2f} below")


def gin(r: Results) -> Outcome:
    t, loss = r["gin_cora"], "training loss, first / last"
    first, last = (t.get(loss, "DFA, sum aggregation", part=i).mean for i in (0, 1))
    mean_first, mean_last = (t.get(loss, "DFA, mean aggregation", part=i).mean for i in (0, 1))
    acc = "test accuracy % (best validation epoch)"
    dfa, bp = t.each(acc, ("DFA, mean aggregation", "BP, mean aggregation")).values()
    ours = f"sum aggregation: loss {first:.2f} -> {last:.2f}; mean aggregation: loss "
    ours += f"{mean_first:.2f} -> {mean_last:.2f}, DFA {dfa.show(1)} vs BP {bp.show(1)} %"
    why = "documented limitation: DFA diverges with sum aggregation; use aggr='mean'"
    return verdict(t, ours, last < first, why)


MODELS = tuple(MODEL_NAMES[m] for m in P.LAUNAY_2020_CRITEO)  # the paper's models, table names


def recs(r: Results) -> tuple[Data, dict[tuple[str, str], dict[str, Stat]]]:
    t = r["recommenders_auc"]
    data = ("movielens-100k", "adult")
    return t, {
        (d, m): {k: t.get(k, {"data": d, "model": m}, part=0) for k in THREE}
        for d in data
        for m in MODELS
    }


def qualifying(auc: dict[tuple[str, str], dict[str, Stat]]) -> list[tuple[str, str]]:
    """The settings where Shallow is at least 0.02 AUC below BP: there the hidden layers matter."""
    return [s for s, a in auc.items() if a["BP"].mean - a["Shallow"].mean >= TARGET["auc"]]


def recs_setting(r: Results) -> Outcome:
    t, auc = recs(r)
    ok = qualifying(auc)
    gaps = ", ".join(
        f"{m} on {d} {a['BP'].mean - a['Shallow'].mean:.3f}" for (d, m), a in auc.items()
    )
    hit = f"{len(ok)} of {len(auc)} settings qualify"
    return verdict(t, f"BP − Shallow AUC: {gaps}", bool(ok), "no setting qualifies", hit)


def recs_match(r: Results) -> Outcome:
    t, auc = recs(r)
    gaps = {s: auc[s]["DFA"].mean - auc[s]["BP"].mean for s in qualifying(auc)}
    if not gaps:
        return Outcome("—", NOT_MEASURED, "no setting with Shallow ≥ 0.02 AUC below BP")
    ours = "DFA − BP AUC: " + ", ".join(f"{m} on {d} {g:+.4f}" for (d, m), g in gaps.items())
    worst = min(gaps.values())
    return verdict(t, ours, worst >= -0.01, f"DFA up to {-worst:.4f} below BP")


def lenet(r: Results) -> tuple[Data, dict[str, Stat]]:
    t = r["convnets_fashion_mnist"]
    rules = ("BP", "uSF", "frSF", "FA", "DFA")
    return t, t.each("test error %", rules, "rule", Batch_Manhattan=False)


def sign_symmetry(rule: str) -> Evaluate:
    def evaluate(r: Results) -> Outcome:
        t, e = lenet(r)
        gap, ahead = round(e[rule].mean - e["BP"].mean, 2), e[rule].mean < e["FA"].mean
        ours = slash({k: e[k] for k in (rule, "BP", "FA")}, 2) + " %"
        miss = f"{rule} − BP = {gap:.2f} points" if ahead else f"{rule} not ahead of FA"
        return verdict(t, ours, gap <= TARGET["sf_points"] and ahead, miss)

    return evaluate


RESNET_GAP = round(
    P.BIOTORCH_CIFAR10_RESNET20_ERROR["uSF"] - P.BIOTORCH_CIFAR10_RESNET20_ERROR["BP"], 2
)
"""BioTorch's own uSF - BP gap on ResNet-20 (1.42 points): the claim is theirs, so is the bar."""


def resnet_sign_symmetry(r: Results) -> Outcome:
    """uSF within BioTorch's own gap of BP and ahead of both FA and DFA, on ResNet-20; the detail
    says whether it is also within issue 13's 1 point (the LeNet target)."""
    t = r["resnet_fashion_mnist"]
    e = t.each("test error %", ("BP", "uSF", "FA", "DFA"))
    gap = round(e["uSF"].mean - e["BP"].mean, 2)
    ahead = e["uSF"].mean < min(e["FA"].mean, e["DFA"].mean)
    miss = f"uSF − BP = {gap:.2f} points" if ahead else "uSF not ahead of FA and DFA"
    within = "within" if gap <= TARGET["sf_points"] else "outside"
    hit = f"uSF − BP = {gap:.2f} points, {within} issue 13's {TARGET['sf_points']:g} point"
    return verdict(t, slash(e, 2) + " %", gap <= RESNET_GAP and ahead, miss, hit)


def conv_order(r: Results) -> Outcome:
    t, e = lenet(r)
    order = sorted(e, key=lambda k: e[k].mean)
    ours = " < ".join(f"{k} {e[k].show(2)}" for k in order)
    met = order.index("uSF") < min(order.index("FA"), order.index("DFA"))
    return verdict(t, ours, met, "uSF behind FA or DFA")


def lenet_level(r: Results) -> Outcome:
    t, e = lenet(r)
    gap = e["BP"].mean - BIO["BP"]
    miss = f"BP {gap:+.2f} points above BioTorch's (our schedule vs their longer one)"
    return verdict(t, f"BP {e['BP'].show(2)} %", gap <= 1, miss)


def paper_g(m: str) -> float:
    return gap_closure(CORA[m][1], CORA[m][0], CORA[m][2])
