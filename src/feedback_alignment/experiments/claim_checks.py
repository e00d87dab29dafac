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
    NOT_REPRODUCED,
    REPRODUCED,
    TARGET,
    ClaimDataError,
    Data,
    Evaluate,
    NotMeasured,
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


def bottleneck(metric: str) -> Evaluate:
    """The paper's mask and cosine under the paper's optimiser (the SGD-sum column) decide;
    ``metric`` ``"cosine"``: Spearman(b, cosine) ≥ 0.8; ``"accuracy"``: b=800 ≥ 1 point ahead
    of b=1. The same figure under Adam is reported beside it."""
    from feedback_alignment.experiments.principled.bottleneck import COLUMNS

    def evaluate(r: Results) -> Outcome:
        t = r["principled_bottleneck"]
        bs = sorted(row[t.index("b")] for row in t.rows)
        v = [s.mean for s in t.each(COLUMNS[metric], bs).values()]
        adam = [s.mean for s in t.each(COLUMNS[f"{metric}_adam"], bs).values()]
        if metric == "accuracy":
            ours = f"paper's mask, SGD-sum: {v[0]:.2f} % at b={bs[0]}, {v[-1]:.2f} % at "
            ours += f"b={bs[-1]} (Adam: {adam[0]:.2f} %, {adam[-1]:.2f} %)"
            gain = v[-1] - v[0]
            return verdict(t, ours, gain >= 1, f"widest ahead of narrowest by {gain:+.2f} points")
        rho = spearman([float(b) for b in bs], v)
        rho_adam = spearman([float(b) for b in bs], adam)
        ours = f"paper's mask, SGD-sum: cosine {v[0]:.3f} at b={bs[0]}, {v[-1]:.3f} at "
        ours += f"b={bs[-1]}, Spearman {rho:.2f} (Adam: {adam[0]:.3f} to {adam[-1]:.3f}, "
        ours += f"Spearman {rho_adam:.2f})"
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


SHALLOW_RATIO_PAPER = PPL["Shallow"] / PPL["BP"]
"""The paper's Shallow / BP perplexity (428 / 29.8, about 14x): G in log perplexity divides by
log of this ratio, so it depends on how bad Shallow is, not on DFA alone."""


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
        ours += f"{p[f'DFA-{which}']:.2f}, Shallow {p['Shallow']:.2f}; G depends on Shallow's "
        ours += f"perplexity: Shallow / BP {p['Shallow'] / p['BP']:.1f}x here, "
        ours += f"{SHALLOW_RATIO_PAPER:.0f}x in the paper (per BPE token))"
        authors = {k: f"{k}/authors" for k in PPL}
        if all(name in {row[0] for row in t.rows} for name in authors.values()):
            a = {k: t.get(column, name).mean for k, name in authors.items()}
            g_a = log_gap(a[f"DFA-{which}"], a["BP"], a["Shallow"])
            ours += f"; the authors' recipe (beside; ours decides): G = {g_a:.2f}, "
            ours += f"Shallow / BP {a['Shallow'] / a['BP']:.1f}x"
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

PAIRS_TABLE = "graphs_cora_splits_layers"
"""Every layer over the (split, seed) pairs (task ``graphs-splits``): what the Cora ordering and
the ChebConv / GAT gaps read."""


def cora(r: Results) -> tuple[Data, dict[str, dict[str, Stat]]]:
    """The layers with a paper figure: each rule's accuracy over the (split, seed) pairs."""
    t = r[PAIRS_TABLE]
    return t, {m: {k: t.get(k, layer) for k in THREE} for m, layer in LAYERS.items()}


def closure(a: dict[str, Stat]) -> float:
    return gap_closure(a["DFA"].mean, a["BP"].mean, a["Shallow"].mean)


def graphs_order(r: Results) -> Outcome:
    t, acc = cora(r)
    ok = [m for m, a in acc.items() if a["Shallow"].mean < a["DFA"].mean < a["BP"].mean]
    ours = "; ".join(f"{m.upper()} {slash(a, 1)}" for m, a in acc.items())
    pairs = int(t.get("pairs", LAYERS["gcn"]).mean)
    return verdict(t, f"{ours} (over {pairs} (split, seed) pairs)", len(ok) == len(acc),
                   f"holds only for {ok}")  # fmt: skip


def gcn_gap(r: Results) -> Outcome:
    """GCN's G over (split, seed) pairs (``graphs_cora_splits``): G from the mean accuracies,
    met when it reaches the target within twice the standard error of the per-pair G."""
    t = r["graphs_cora_splits"]
    acc = {k: t.get("mean ± std over pairs", f"{k} test accuracy %") for k in THREE}
    per_pair = t.get("mean ± std over pairs", "G per pair")
    pairs = int(t.get("pairs", "G per pair").mean)
    g = t.get("mean ± std over pairs", "G from the mean accuracies").mean
    se = (per_pair.std or 0.0) / math.sqrt(max(pairs, 1))
    most = TARGET["gcn"]
    ours = f"G = {g:.2f} from the means of {slash(acc, 1)} over {pairs} (split, seed) pairs; "
    ours += f"per pair G {per_pair.show(2)} (standard error {se:.3f})"
    hit = "" if g >= most else f"G {most - g:.2f} below {most}, within 2 standard errors"
    return verdict(t, ours, g + 2 * se >= most, f"short by {most - g:.2f}, over 2 standard "
                   f"errors ({2 * se:.3f})", hit)  # fmt: skip


OTHER_GAP_MARGIN = 0.05
"""How far below the paper's G a layer's G may lie and still close "most of the gap"."""


def cora_other_gaps(r: Results) -> Outcome:
    """ChebConv's and GAT's G over the (split, seed) pairs (:data:`PAIRS_TABLE`): G from the mean
    accuracies, met for a layer when it reaches the paper's G − :data:`OTHER_GAP_MARGIN` within
    twice the standard error of its per-pair G (as GCN's gap is judged)."""
    t = r[PAIRS_TABLE]
    parts, misses, close = [], [], []
    for m in ("cheb", "gat"):
        layer = LAYERS[m]
        g = t.get("G from the means", layer).mean
        per_pair = t.get("G per pair", layer)
        pairs = int(t.get("pairs", layer).mean)
        se = (per_pair.std or 0.0) / math.sqrt(max(pairs, 1))
        bar = paper_g(m) - OTHER_GAP_MARGIN
        parts.append(f"{m.upper()} G = {g:.2f} from the means (per pair {per_pair.show(2)}, "
                     f"standard error {se:.3f}; bar {bar:.2f})")  # fmt: skip
        if g + 2 * se < bar:
            misses.append(f"{m.upper()} {bar - g:.2f} below its bar, over 2 standard errors "
                          f"({2 * se:.3f})")  # fmt: skip
        elif g < bar:
            close.append(f"{m.upper()} {bar - g:.2f} below its bar, within 2 standard errors")
    ours = "; ".join(parts) + f", over {pairs} (split, seed) pairs"
    return verdict(t, ours, not misses, "; ".join(misses), "; ".join(close))


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


PAIRED = "DFA − BP AUC (per seed)"


def paper_auc_gap(model: str) -> float:
    """The paper's DFA − BP AUC on Criteo for a table model name (Deep & Cross: −0.0095)."""
    kind = {v: k for k, v in MODEL_NAMES.items()}[model]
    return P.LAUNAY_2020_CRITEO[kind]["DFA"][0] - P.LAUNAY_2020_CRITEO[kind]["BP"][0]


def _auc_gap(t: Data, where: dict[str, str]) -> tuple[float, float, str]:
    """DFA − BP AUC (mean) and its seed spread: the std over seeds of the per-seed difference
    where the table has it, else sqrt(std_DFA² + std_BP²) (unpaired)."""
    dfa, bp = (t.get(k, where, part=0) for k in ("DFA", "BP"))
    if PAIRED in t.columns:
        paired = t.get(PAIRED, where)
        return paired.mean, paired.std or 0.0, "paired"
    return dfa.mean - bp.mean, math.hypot(dfa.std or 0.0, bp.std or 0.0), "unpaired"


def recs_match(r: Results) -> Outcome:
    """DFA − BP ≥ the paper's gap for the model (Criteo; the paper gives no spread) − 2 x our
    seed spread of that difference, in every qualifying setting, at the default sizes and (where
    the table is committed) at the paper's sizes."""
    t, auc = recs(r)
    settings = [(t, {"data": d, "model": m}, "") for d, m in qualifying(auc)]
    try:
        big = r["recommenders_paper_size"]
    except NotMeasured:
        big = None
    if big is not None:
        for row in big.rows:
            where = {"data": row[big.index("data")], "model": row[big.index("model")]}
            a = {k: big.get(k, where, part=0) for k in THREE}
            if a["BP"].mean - a["Shallow"].mean >= TARGET["auc"]:
                settings.append((big, where, ", paper's sizes"))
    if not settings:
        return Outcome("—", NOT_MEASURED, "no setting with Shallow ≥ 0.02 AUC below BP")
    parts, misses = [], []
    for table, where, size in settings:
        gap, spread, kind = _auc_gap(table, where)
        bar = paper_auc_gap(where["model"]) - 2 * spread
        parts.append(f"{where['model']} on {where['data']}{size}: {gap:+.4f} (bar {bar:+.4f} = "
                     f"paper {paper_auc_gap(where['model']):+.4f} − 2 x {spread:.4f}, {kind}) "
                     f"{table.tag()}")  # fmt: skip
        if gap < bar:
            misses.append(f"{where['model']}{size} {bar - gap:.4f} below its bar")
    ours = "DFA − BP AUC: " + "; ".join(parts)
    return Outcome(ours, REPRODUCED if not misses else NOT_REPRODUCED, "; ".join(misses))


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
    P.BIOTORCH_CIFAR10_RESNET20_ADAM_ERROR["uSF"] - P.BIOTORCH_CIFAR10_RESNET20_ADAM_ERROR["BP"], 2
)
"""BioTorch's own uSF - BP gap on ResNet-20 in its Adam column (0.58 points; the SGD column's is
1.42): ours trains with AdamW, so the column of the same optimiser sets the bar."""


RESNET_SEEDS_TABLE = "resnet_seeds_fashion_mnist"
"""The table of task ``resnet-seeds`` (BP and uSF, 3 seeds, with the paired gap row)."""

RESNET_GAP_ROW = "uSF − BP (paired by seed)"


def resnet_sign_symmetry(r: Results) -> Outcome:
    """uSF's gap to BP against BioTorch's own (Adam column), and uSF ahead of both FA and DFA.

    The gap is the ``resnet-seeds`` table's paired row (uSF's error minus BP's of the same seed,
    mean ± std over seeds); BioTorch reports no spread, so the bar is its gap + 2 x our spread
    of that difference (issue 22's reading, as for the recommenders). The ordering against FA
    and DFA comes from the four-rule ``resnet`` table (one seed). Before ``resnet-seeds`` is
    committed (or where its file is a quick-mode one, which claims never read), the four-rule
    table's single-seed gap is held to BioTorch's gap itself, as is a one-seed ``resnet-seeds``
    gap (no spread). The
    detail says whether the gap is also within issue 13's 1 point (the LeNet target)."""
    four = r["resnet_fashion_mnist"]
    e = four.each("test error %", ("BP", "uSF", "FA", "DFA"))
    ahead = e["uSF"].mean < min(e["FA"].mean, e["DFA"].mean)
    try:
        seeds = r[RESNET_SEEDS_TABLE]
    except NotMeasured:  # not committed yet, or a quick-mode file: the four-rule table alone
        gap, bar = round(e["uSF"].mean - e["BP"].mean, 2), RESNET_GAP
        ours = slash(e, 2) + " %"
    else:
        stat = seeds.get("test error %", RESNET_GAP_ROW)
        pair = seeds.each("test error %", ("BP", "uSF"))
        gap = round(stat.mean, 2)
        if stat.std is None:  # one seed: no spread to widen the bar with
            bar, why = RESNET_GAP, f"BioTorch's {RESNET_GAP:.2f}, no spread with one seed"
        else:
            bar = round(RESNET_GAP + 2 * stat.std, 2)
            why = f"BioTorch's {RESNET_GAP:.2f} + 2 x {stat.std:.2f}"
        ours = (f"{slash(pair, 2)} %, uSF − BP {stat.show(2)} (bar {bar:.2f} = {why}) "
                f"{seeds.tag()}; FA {e['FA'].show(2)} / DFA {e['DFA'].show(2)} %")  # fmt: skip
    miss = (f"uSF − BP = {gap:.2f} points, over the bar {bar:.2f}" if gap > bar
            else "uSF not ahead of FA and DFA")  # fmt: skip
    within = "within" if gap <= TARGET["sf_points"] else "outside"
    hit = f"uSF − BP = {gap:.2f} points, {within} issue 13's {TARGET['sf_points']:g} point"
    return verdict(four, ours, gap <= bar and ahead, miss, hit)


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


LEARNED_TABLE = "learned_feedback_fashion_mnist"
"""The table of task ``learned-feedback`` (LeNet on Fashion-MNIST: BP, DFA, DKP, FDFA)."""

LEARNED_RESNET_TABLE = "learned_feedback_resnet_fashion_mnist"
"""The table of task ``learned-feedback-resnet`` (BatchNorm ResNet-20 on 10,000 Fashion-MNIST
images: BP, DFA, DKP, FDFA)."""

LEARNED_ANGLES = {
    LEARNED_TABLE: ("conv1 update angle (deg)", "conv1 angle"),
    LEARNED_RESNET_TABLE: ("conv update angle, mean over conv layers (deg)", "mean conv angle"),
}
"""Per table: the column of the conv layers' update angle that a claim quotes, and its label."""


def _learned(r: Results, table: str) -> tuple[Data, dict[str, Stat], dict[str, Stat]]:
    t = r[table]
    rules = ("BP", "DFA", "DKP", "FDFA")
    return t, t.each("test error %", rules), t.each(LEARNED_ANGLES[table][0], rules)


def _apart(a: Stat, b: Stat) -> bool:
    """``a`` below ``b`` by more than the sum of their spreads over seeds."""
    return b.mean - a.mean > (a.std or 0.0) + (b.std or 0.0)


def dkp_order(table: str) -> Evaluate:
    """BP < DKP < DFA in test error on ``table``, each gap larger than the sum of the two
    spreads (Webster et al.'s BP > DKP > DFA in accuracy); the conv update angles beside."""

    def evaluate(r: Results) -> Outcome:
        t, e, angle = _learned(r, table)
        label = LEARNED_ANGLES[table][1]
        ours = (f"error {slash({k: e[k] for k in ('BP', 'DKP', 'DFA')}, 2)} %; {label} DKP "
                f"{angle['DKP'].show(1)}°, DFA {angle['DFA'].show(1)}°")  # fmt: skip
        met = _apart(e["BP"], e["DKP"]) and _apart(e["DKP"], e["DFA"])
        miss = ("DKP not ahead of DFA" if e["DKP"].mean >= e["DFA"].mean
                else "DKP's lead over DFA within the spread" if not _apart(e["DKP"], e["DFA"])
                else "DKP not behind BP by more than the spread")  # fmt: skip
        return verdict(t, ours, met, miss)

    return evaluate


def fdfa_order(table: str) -> Evaluate:
    """FDFA below DFA in test error on ``table`` by more than the sum of the spreads, closing at
    least half of DFA's gap to BP (Bacho and Chu: FDFA ahead of DFA, close to BP)."""

    def evaluate(r: Results) -> Outcome:
        t, e, angle = _learned(r, table)
        label = LEARNED_ANGLES[table][1]
        behind = e["DFA"].mean - e["BP"].mean  # DFA's gap to BP, which FDFA should close
        closed = (e["DFA"].mean - e["FDFA"].mean) / behind if behind > 0 else math.nan
        ours = (f"error {slash({k: e[k] for k in ('BP', 'FDFA', 'DFA')}, 2)} % (FDFA closes "
                f"{100 * closed:.0f} % of DFA's gap to BP); {label} FDFA "
                f"{angle['FDFA'].show(1)}°, DFA {angle['DFA'].show(1)}°")  # fmt: skip
        met = _apart(e["FDFA"], e["DFA"]) and closed >= 0.5
        miss = ("FDFA's lead over DFA within the spread" if not _apart(e["FDFA"], e["DFA"])
                else "DFA not behind BP: no gap to close" if behind <= 0
                else "FDFA closes less than half of DFA's gap to BP")  # fmt: skip
        return verdict(t, ours, met, miss)

    return evaluate


dkp_conv_order = dkp_order(LEARNED_TABLE)
fdfa_conv_order = fdfa_order(LEARNED_TABLE)
dkp_resnet_order = dkp_order(LEARNED_RESNET_TABLE)
fdfa_resnet_order = fdfa_order(LEARNED_RESNET_TABLE)
