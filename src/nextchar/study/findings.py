"""What the study's numbers say: noise, rankings, Pareto fronts, anomalies, and the report's Key Findings."""

from __future__ import annotations

import itertools
import json
import math
import statistics

from nextchar.study.results import Row


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def secs(s: float) -> str:
    """Training time in the founding table's style (26,855s); tenths below 100 s."""
    return f"{s:,.0f}s" if s >= 100 else f"{s:.1f}s"


def dur(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def noise(a: Row, b: Row, key: str = "top3") -> float:
    """Two standard errors of the difference of two accuracies (binomial, over the test positions)."""
    pa, pb = getattr(a, key), getattr(b, key)
    return 2 * math.sqrt(pa * (1 - pa) / max(1, a.n_test) + pb * (1 - pb) / max(1, b.n_test))


def by_accuracy(rows: list[Row], key: str = "top3") -> list[Row]:
    other = "top1" if key == "top3" else "top3"
    return sorted(rows, key=lambda r: (-getattr(r, key), -getattr(r, other), r.name, r.variant))


def pareto(rows: list[Row], cost: str) -> list[Row]:
    """Rows no other row beats on top-3 at a lower or equal cost, cheapest first."""
    front: list[Row] = []
    for r in sorted(rows, key=lambda r: (getattr(r, cost), -r.top3, r.name)):
        if not front or r.top3 > front[-1].top3:
            front.append(r)
    return front


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else math.nan


def anomalies(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(bigger, smaller) pairs of one variant and width where the bigger model is worse beyond the noise."""
    out = []
    for a in by_accuracy([r for r in rows if not r.is_ngram]):
        beaten = [b for b in rows if not b.is_ngram and b.variant == a.variant and b is not a
                  and b.model["d_model"] == a.model["d_model"] and b.params < a.params
                  and b.top3 - a.top3 > noise(a, b)]
        if beaten:
            out.append((a, max(beaten, key=lambda b: (b.top3 - a.top3, b.name))))
    return sorted(out, key=lambda ab: (ab[0].variant, -ab[0].params, ab[0].name))


def label(r: Row) -> str:
    return r.name if r.is_ngram else f"{r.name} ({r.variant})"


def timing_spread(rows: list[Row]) -> tuple[list[Row], float, float | None] | None:
    """The same-compute group (shape without dropout) whose training times differ most, if by over 25%."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        m = r.model
        groups.setdefault((r.variant, m["d_model"], m["n_layers"], m["n_heads"], m["d_ff"], r.tokens), []).append(r)
    worst = None
    for g in groups.values():
        times = [r.train_seconds for r in g]
        if len(g) > 1 and min(times) > 0:
            ratio = max(times) / min(times)
            if ratio > 1.25 and (worst is None or ratio > worst[1]):
                lats = [r.latency_ms for r in g if r.latency_ms]
                lr = max(lats) / min(lats) if len(lats) > 1 and max(lats) / min(lats) > 1.25 else None
                worst = (sorted(g, key=lambda r: r.name), ratio, lr)
    return worst


def identical(rows: list[Row]) -> list[list[Row]]:
    """Groups of two or more rows whose per-language test accuracies are all equal."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if not r.langs:
            continue
        key = json.dumps({k: [v["top1"], v["top3"]] for k, v in sorted(r.langs.items())})
        groups.setdefault(key, []).append(r)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: [r.name for r in g])


def loss_path(r: Row) -> str:
    """Training loss early (a tenth into the budget) and late (mean of the last fifth), e.g. '4.93 → 3.74'."""
    c = r.train_curve
    if not c and not r.dev_curve:
        return "not in the study folder"  # no metrics.jsonl: a study kept without its curves
    if len(c) < 5:
        return "not logged"
    early = c[max(0, len(c) // 10 - 1)][1]
    late = statistics.mean(v for _, v in c[-max(1, len(c) // 5):])
    return f"{early:.2f} → {late:.2f} nats"


def depth_series(rows: list[Row], variant: str) -> list[Row]:
    """Rows of one variant that differ only in depth, on the most common (width, heads, FF, dropout)."""
    rs = [r for r in rows if r.variant == variant]
    if not rs:
        return []
    keys = [(r.model["d_model"], r.model["n_heads"], r.model["d_ff"], r.model["dropout"]) for r in rs]
    base = max(sorted(set(keys)), key=keys.count)
    series: dict[int, Row] = {}
    for r, k in zip(rs, keys):
        if k == base and r.model["n_layers"] not in series:
            series[r.model["n_layers"]] = r
    return [series[n] for n in sorted(series)] if len(series) >= 3 else []


def md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    def line(vals):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in cells)]



def recipe_table(rows: list[Row]) -> tuple[list[str], list[tuple[Row, Row]]]:
    """Seed vs modern at the same name and shape: what the recipe is worth."""
    pairs = []
    for s in rows:
        if s.variant != "seed":
            continue
        m = next((r for r in rows if r.variant == "modern" and r.name == s.name and r.shape == s.shape), None)
        if m is not None:
            pairs.append((s, m))
    pairs.sort(key=lambda sm: (sm[0].params, sm[0].name))
    cells = [[s.name, f"{s.params:,}", pct(s.top3), pct(m.top3), pts(m.top3 - s.top3), f"{s.test_bpc:.3f}",
              f"{m.test_bpc:.3f}", secs(s.train_seconds), secs(m.train_seconds)] for s, m in pairs]
    head = ["Configuration", "Parameters (seed)", "Top-3 seed", "Top-3 modern", "Δ Top-3 (points)", "bpc seed",
            "bpc modern", "Time seed", "Time modern"]
    return (md_table(head, cells) if pairs else []), pairs



def key_findings(rows: list[Row], st: dict, langs: list[str]) -> list[str]:
    """Key findings phrased from the numbers."""
    tf = [r for r in rows if not r.is_ngram]
    ng = next((r for r in rows if r.is_ngram), None)
    out: list[str] = []
    if not tf:
        return ["No Transformer configuration has finished yet."]
    best = by_accuracy(tf)[0]
    best1 = by_accuracy(tf, "top1")[0]
    second = by_accuracy(tf)[1] if len(tf) > 1 else None
    out += ["### 1. Best accuracy", "",
            (f"- **{best.name}** ({best.variant}, {best.params:,} parameters) has the best test top-3 accuracy: "
            f"**{pct(best.top3)}** (top-1 {pct(best.top1)}, {best.test_bpc:.3f} bpc), trained in "
            f"{dur(best.train_seconds)}.")]
    if best1 is not best:
        out.append(f"- By top-1 the leader is **{best1.name}** ({best1.variant}): {pct(best1.top1)}.")
    if second is not None:
        gap, nz = best.top3 - second.top3, noise(best, second)
        out.append(f"- The runner-up on top-3, {second.name} ({second.variant}), is {100 * gap:.2f} points behind; "
                   + ("that is within the test noise" if gap <= nz else "beyond the test noise")
                   + f" (±{100 * nz:.2f} points, two standard errors over {best.n_test:,} positions).")
    if ng is not None:
        beat = [r for r in tf if r.top3 > ng.top3]
        d = best.top3 - ng.top3
        out.append(f"- The {ng.name} reaches {pct(ng.top3)} top-3 ({ng.test_bpc:.3f} bpc) from the full training "
                   f"split in {dur(ng.train_seconds)}; {len(beat)} of {len(tf)} Transformer configurations beat it "
                   f"on top-3 at this budget (" + (f"the best by {100 * d:.2f} points)." if d > 0 else
                                                  f"the best trails it by {100 * -d:.2f} points)."))
    out.append("")

    eff = sorted(tf, key=lambda r: (-r.top3 / max(r.train_seconds, 1e-9), r.name))
    out += ["### 2. Best efficiency", "",
            "- Top-3 accuracy per training minute: "
            + "; ".join(f"{r.name} ({r.variant}) {100 * r.top3 / (r.train_seconds / 60):.1f} points/min"
                        for r in eff[:3]) + "."]
    spread = timing_spread(tf)
    if spread is not None:
        group, t_ratio, l_ratio = spread
        out.append(f"- Timing noise: {', '.join(label(r) for r in group)} do the same work per character, yet their "
                   f"training times differ {t_ratio:.1f}×" + (f" and their latencies {l_ratio:.1f}×" if l_ratio else "")
                   + ". The machine was shared while the study ran, so read times and latencies as rough (±that "
                   "factor); accuracies are not affected.")
    for cost, what, fmt in (("train_seconds", "training time", lambda r: dur(r.train_seconds)),
                            ("params", "parameters", lambda r: f"{r.params:,} params")):
        front = pareto(tf, cost)
        out.append(f"- Pareto front of top-3 vs {what} (nothing is more accurate for less): "
                   + " → ".join(f"{r.name} ({r.variant}, {fmt(r)}, {pct(r.top3)})" for r in front) + ".")
    out.append("")

    out += ["### 3. Diminishing returns", ""]
    # front points within 25% of each other's time are one step (the more accurate stands for both): a gain
    # divided by a near-zero number of doublings would say nothing
    front: list[Row] = []
    for r in pareto(tf, "train_seconds"):
        if front and r.train_seconds < 1.25 * front[-1].train_seconds:
            front[-1] = r
        else:
            front.append(r)
    steps = []
    for a, b in itertools.pairwise(front):
        doublings = math.log2(max(b.train_seconds, 1e-9) / max(a.train_seconds, 1e-9))
        steps.append((a, b, (b.top3 - a.top3) / doublings))
    if steps:
        out.append("- Along the time front, top-3 points gained per doubling of training time: "
                   + "; ".join(f"{label(a)} → {label(b)}: {100 * g:+.2f} "
                               f"(×{b.train_seconds / max(a.train_seconds, 1e-9):.1f} time)" for a, b, g in steps)
                   + ".")
        if len(steps) >= 2:
            first, last = steps[0][2], steps[-1][2]
            out.append("- " + ("Returns diminish: the last doubling buys " if last < first else
                               "Returns do not diminish at this budget: the last doubling buys ")
                       + f"{100 * last:.2f} points against {100 * first:.2f} for the first.")
    for variant in ("seed", "modern"):
        series = depth_series(tf, variant)
        if series:
            gains = [(a, b, (b.top3 - a.top3) / (b.model["n_layers"] - a.model["n_layers"]))
                     for a, b in itertools.pairwise(series)]
            out.append(f"- Depth ({variant}, d={series[0].model['d_model']}, FF {series[0].model['d_ff']}): "
                       + ", ".join(f"{r.model['n_layers']} layers {pct(r.top3)}" for r in series)
                       + "; per added layer: "
                       + ", ".join(f"{a.model['n_layers']}→{b.model['n_layers']} {100 * g:+.2f}" for a, b, g in gains)
                       + " points.")
    if not steps and not any(depth_series(tf, v) for v in ("seed", "modern")):
        out.append("- Too few configurations on the accuracy/time front to judge returns.")
    # still learning? the training loss over the last fifth of the budget, for the best few
    slopes = []
    for r in by_accuracy(tf)[:3]:
        c = r.train_curve
        if len(c) >= 10:
            k = max(1, len(c) // 5)
            head, tail = statistics.mean(x[1] for x in c[-2 * k:-k]), statistics.mean(x[1] for x in c[-k:])
            slopes.append(f"{r.name} ({r.variant}) {tail - head:+.3f} nats")
    if slopes:
        out.append("- Still learning at the end of the budget (change of mean training loss between the last two "
                   "fifths of training): " + "; ".join(slopes) + ". A longer budget can reorder the top rows.")
    out.append("")

    out += ["### 4. Anomalies", ""]
    an = anomalies(tf)
    if an:
        # grouped by the smaller model that beats them, so one reference is read once
        refs: list[Row] = []
        for _, b in an:
            if b not in refs:
                refs.append(b)
        for b in refs:
            worse = [a for a, bb in an if bb is b]
            out.append(f"- The smaller **{b.name}** ({b.variant}, {b.params:,} params, top-3 {pct(b.top3)}; training "
                       f"loss {loss_path(b)}) beats {len(worse)} larger configuration(s) of the same width "
                       f"{b.model['d_model']} beyond the test noise:")
            for a in worse:
                out.append(f"  - **{a.name}** ({a.params:,} params): top-3 {pct(a.top3)} "
                           f"({100 * (a.top3 - b.top3):+.2f} points, noise ±{100 * noise(a, b):.2f}); training loss "
                           f"{loss_path(a)}; [learning curves](plots/anomaly-{a.dir}.png).")
    else:
        out.append("- No configuration is worse than a smaller one of the same width beyond the test noise.")
    for group in identical(tf):
        out.append("- " + ", ".join(label(r) for r in group) + " give identical test results "
                   "in every language: they predict the same characters whatever the context, a sign that training "
                   "stalled before the models learned to use it.")
    ref = [r for r in tf if "top1" in r.founding]
    if len(ref) >= 3:
        rho = spearman([r.founding["top1"] for r in ref], [r.top1 for r in ref])
        out.append(f"- Against the founding table ({len(ref)} rows with its numbers): Spearman rank correlation of "
                   f"top-1 = {rho:.2f}.")
        for a in ref:
            smaller = [b for b in ref if a.variant == b.variant and a.model["d_model"] == b.model["d_model"]
                       and a.params > b.params and a.founding["top1"] < b.founding["top1"]]
            if smaller:
                b = max(smaller, key=lambda b: (b.founding["top1"], b.name))  # its most glaring case
                here = "reproduced" if b.top3 - a.top3 > noise(a, b) else "not reproduced"
                out.append(f"  - Its anomaly, {a.name} ({a.founding['top1']:.2f}% top-1) below the smaller {b.name} "
                           f"({b.founding['top1']:.2f}%), is {here} here: {pct(a.top1)} vs {pct(b.top1)} top-1, "
                           f"{pct(a.top3)} vs {pct(b.top3)} top-3.")
    out.append("")

    out += ["### 5. Languages", ""]
    vals = {lang: best.langs[lang]["top3"] for lang in langs if lang in best.langs}
    mean = statistics.mean(vals.values())
    weak = sorted(vals, key=lambda lang: (vals[lang], lang))[:3]
    sizes = st.get("data_stats", {})
    med = statistics.median(v["train"] for v in sizes.values()) if sizes else 0
    def size(lang):
        return f", {sizes[lang]['train']:,} train chars" if lang in sizes else ""
    out.append(f"- Weakest languages for {best.name} ({best.variant}), top-3 against its mean of {pct(mean)}: "
               + "; ".join(f"{lang} {pct(vals[lang])} ({100 * (vals[lang] - mean):+.2f} points{size(lang)})"
                           for lang in weak)
               + (f". The median language has {med:,.0f} train chars." if sizes else "."))
    bottom: dict[str, int] = {}
    for r in rows:
        rv = {lang: r.langs[lang]["top3"] for lang in r.langs}
        for lang in sorted(rv, key=lambda lang: (rv[lang], lang))[:3]:
            bottom[lang] = bottom.get(lang, 0) + 1
    often = sorted(bottom, key=lambda lang: (-bottom[lang], lang))[:3]
    out.append("- Most often among the three weakest, over all rows: "
               + ", ".join(f"{lang} ({bottom[lang]} of {len(rows)})" for lang in often) + ".")
    gaps = {r.name + r.variant: max(x["top3"] for x in r.langs.values()) - min(x["top3"] for x in r.langs.values())
            for r in tf}
    out.append(f"- Best-to-worst language gap in top-3: {100 * min(gaps.values()):.1f} to "
               f"{100 * max(gaps.values()):.1f} points across configurations; {100 * gaps[best.name + best.variant]:.1f} "
               f"for {best.name}.")
    out.append("")

    _, pairs = recipe_table(rows)
    if pairs:
        deltas = [m.top3 - s.top3 for s, m in pairs]
        big = max(pairs, key=lambda sm: (sm[1].top3 - sm[0].top3, sm[0].name))
        small = min(pairs, key=lambda sm: (sm[1].top3 - sm[0].top3, sm[0].name))
        wins = sum(d > 0 for d in deltas)
        out += ["### 6. The modern recipe", "",
                (f"- At the same shape and budget the modern recipe changes top-3 by {100 * statistics.mean(deltas):+.2f}"
                f" points on average ({wins} of {len(pairs)} shapes improve); most at {big[0].name} "
                f"({pts(big[1].top3 - big[0].top3)}), least at {small[0].name} ({pts(small[1].top3 - small[0].top3)})."),
                ""]
    return out
