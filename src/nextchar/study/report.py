"""The study report: report.md and results.csv (and the plots) from the study folder alone; never trains."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from nextchar import files
from nextchar.errors import UserError
from nextchar.study.findings import by_accuracy, dur, key_findings, md_table, noise, pct, recipe_table, secs
from nextchar.study.plots import write_plots
from nextchar.study.results import LATENCY_PREFIXES, STUDY_FILE, Row, budget_text, load_rows

COLUMNS = ["Model Configuration", "Variant", "Embedding Dim", "Layers", "Heads", "FF Dim", "Dropout", "Parameters",
           "Top-1 Accuracy", "Top-3 Accuracy", "Test bpc", "Training Time", "Dev Loss", "Latency (ms/key)"]


def summary_table(rows: list[Row]) -> list[str]:
    """The founding table's columns in its style (+ variant, test bpc, latency); best values bold."""
    cells = []
    for r in by_accuracy(rows, "top1"):
        m = r.model
        shape = ["—"] * 5 if r.is_ngram else [str(m["d_model"]), str(m["n_layers"]), str(m["n_heads"]),
                                              str(m["d_ff"]), str(float(m["dropout"]))]
        cells.append([r.name, r.variant, *shape, f"{r.params:,}" + (" n-grams" if r.is_ngram else ""),
                      pct(r.top1), pct(r.top3), f"{r.test_bpc:.3f}", secs(r.train_seconds),
                      f"{r.dev_loss:.3f}", "—" if r.latency_ms is None else f"{r.latency_ms:.2f}"])
    # best per column (on the printed value, so a tie is bolded everywhere it shows)
    for col, better in ((8, max), (9, max), (10, min), (11, min), (12, min), (13, min)):
        vals = [float(c[col].rstrip("%s").replace(",", "")) for c in cells if c[col] != "—"]
        if vals:
            best = better(vals)
            for c in cells:
                if c[col] != "—" and float(c[col].rstrip("%s").replace(",", "")) == best:
                    c[col] = f"**{c[col]}**"
    return md_table(COLUMNS, cells)



def language_tables(rows: list[Row], langs: list[str]) -> list[str]:
    out = []
    for key, title in (("top3", "Top-3"), ("top1", "Top-1")):
        cells = []
        for r in by_accuracy(rows, key):
            vals = [r.langs[lang][key] for lang in langs if lang in r.langs]
            worst = min(langs, key=lambda lang: (r.langs.get(lang, {}).get(key, math.inf), lang))
            best = max(langs, key=lambda lang: (r.langs.get(lang, {}).get(key, -math.inf), lang))
            cells.append([r.name, r.variant, *(f"{100 * r.langs[lang][key]:.1f}" if lang in r.langs else "—"
                                               for lang in langs),
                          f"{100 * statistics.mean(vals):.1f}", f"{worst} {100 * r.langs[worst][key]:.1f}",
                          f"{100 * (r.langs[best][key] - r.langs[worst][key]):.1f}"])
        out += [f"**{title} accuracy (%) per language** (test; Gap = best language − worst language, in points)", "",
                *md_table(["Configuration", "Variant", *langs, "Mean", "Worst", "Gap"], cells), ""]
    return out



def recommendation(rows: list[Row], st: dict, max_train_minutes: float | None, max_params: int | None,
                   max_latency_ms: float | None) -> list[str]:
    tf = [r for r in rows if not r.is_ngram]
    limits = []
    if max_train_minutes is not None:
        limits.append(f"training time ≤ {max_train_minutes:g} min")
    if max_params is not None:
        limits.append(f"≤ {max_params:,} parameters")
    if max_latency_ms is not None:
        limits.append(f"≤ {max_latency_ms:g} ms per keystroke (1 CPU thread, this machine)")

    def why_not(r: Row) -> list[str]:
        w = []
        if max_train_minutes is not None and r.train_seconds > max_train_minutes * 60:
            w.append(f"trains {dur(r.train_seconds)}")
        if max_params is not None and r.params > max_params:
            w.append(f"{r.params:,} params")
        if max_latency_ms is not None and (r.latency_ms is None or r.latency_ms > max_latency_ms):
            w.append("latency not measured" if r.latency_ms is None else f"{r.latency_ms:.2f} ms/key")
        return w

    fit = by_accuracy([r for r in tf if not why_not(r)])
    given = ", ".join(limits) if limits else "none (see --max-train-minutes, --max-params, --max-latency-ms)"
    out = ["## Recommendation", "",
           (f"Constraints: {given}; {len(fit)} of {len(tf)} configurations fit. Ranked by test top-3 accuracy (the keyboard shows three "
           f"suggestions), then top-1."), ""]
    if not fit:
        return out + ["No configuration fits these constraints; relax one of them.", ""]
    best = fit[0]
    out.append(f"**For deployment under these constraints I recommend {best.name} ({best.variant})** — "
               f"{best.model['d_model']} embedding dim, {best.model['n_layers']} layers, {best.model['n_heads']} "
               f"heads, {best.model['d_ff']} FF dim, {float(best.model['dropout'])} dropout; {best.params:,} parameters.")
    out.append("")
    reasons = [(f"**Accuracy**: {pct(best.top3)} top-3 and {pct(best.top1)} top-1 on test "
               f"({best.test_bpc:.3f} bpc), the best of the {len(fit)} configurations that fit.")]
    ng = next((r for r in rows if r.is_ngram), None)
    if ng is not None:
        reasons.append(f"**Against the baseline**: {100 * (best.top3 - ng.top3):+.2f} top-3 points relative to the "
                       f"{ng.name} ({pct(ng.top3)}).")
    lat = f"{best.latency_ms:.2f} ms per keystroke" if best.latency_ms is not None else "latency not measured"
    reasons.append(f"**Cost**: {dur(best.train_seconds)} of training at this budget, {lat} (median, 1 thread).")
    excluded = [r for r in by_accuracy(tf) if why_not(r) and r.top3 > best.top3]
    if excluded:
        reasons.append("**What the constraints cost**: "
                       + "; ".join(f"{r.name} ({r.variant}) would add {100 * (r.top3 - best.top3):.2f} points but "
                                   f"{', '.join(why_not(r))}" for r in excluded[:3]) + ".")
    out += [f"{i}. {t}" for i, t in enumerate(reasons, 1)] + [""]
    if ng is not None and ng.top3 - best.top3 > noise(best, ng):
        beaten = "every configuration" if all(ng.top3 > r.top3 for r in tf) else "the recommended configuration"
        out += [(f"**The baseline is ahead at this budget**: the {ng.name} beats {beaten} by "
                f"{100 * (ng.top3 - best.top3):.2f}+ top-3 points. Until a Transformer is trained for longer, the "
                f"n-gram is the better predictor to ship; the ranking here says which architecture to train further."),
                ""]
    if len(fit) > 1:
        ru = fit[1]
        gap, nz = best.top3 - ru.top3, noise(best, ru)
        rel_t = ru.train_seconds / max(best.train_seconds, 1e-9)
        rel_p = ru.params / max(best.params, 1)
        text = (f"**Runner-up: {ru.name} ({ru.variant})** — {pct(ru.top3)} top-3, {pct(ru.top1)} top-1, "
                f"{ru.params:,} parameters ({rel_p:.2f}× the recommended), {dur(ru.train_seconds)} of training "
                f"({rel_t:.2f}×)" + (f", {ru.latency_ms:.2f} ms per keystroke" if ru.latency_ms is not None else "")
                + f". It is {100 * gap:.2f} top-3 points behind, ")
        if gap <= nz:
            cheaper = [w for w, yes in (("fewer parameters", rel_p < 1), ("faster training", rel_t < 1),
                                        ("faster keystrokes", ru.latency_ms is not None and best.latency_ms is not None
                                         and ru.latency_ms < best.latency_ms)) if yes]
            text += (f"which is within the test noise (±{100 * nz:.2f}): the two are tied on this evidence"
                     + (f"; prefer the runner-up where its {' and '.join(cheaper)} matter." if cheaper else "."))
        else:
            text += f"beyond the test noise (±{100 * nz:.2f})."
        out += [text, ""]
    budget = st["budget"]
    frac = ""
    if "tokens" in budget and st.get("data_stats"):
        total = sum(v["train"] for v in st["data_stats"].values())
        frac = f" ({100 * budget['tokens'] / total:.1f}% of one pass over the training split)"
    out += [(f"Caveat: every configuration saw the same {budget_text(budget)}{frac}. Rankings at a short budget "
            f"favour models that learn fast; the founding study trained for hours, so rerun the top rows with a "
            f"larger budget before a final decision."), ""]
    return out


def recipes(rows: list[Row]) -> list[str]:
    """One header line naming what each variant in the study is (from the runs' own configs)."""
    parts = []
    if any(r.variant == "seed" for r in rows):
        parts.append("**seed** = the founding study's recipe (post-LN, sinusoidal positions, separate output layer)")
    pos = sorted({str(r.model.get("pos")) for r in rows if r.variant == "modern"})
    if pos:
        parts.append(f"**modern** = pre-norm, {'/'.join(pos)} positions, output tied to the input embedding")
    return [f"- **Recipes**: {'; '.join(parts)}."] if parts else []


def header(study: Path, st: dict, rows: list[Row]) -> list[str]:
    stats = st.get("data_stats", {})
    langs = sorted(stats)
    train_chars = sum(v["train"] for v in stats.values())
    test_chars = sum(v["test"] for v in stats.values())
    devices = sorted({f"{r.device}, {r.threads} thread(s)" for r in rows if not r.is_ngram})
    titles = [g["title"] for g in st["grids"]]
    pts0 = st["points"]
    dev_pos = sorted({p["config"]["train"]["eval_positions"] for p in pts0})
    dev_every = sorted({p["config"]["train"]["eval_every"] for p in pts0})
    ctx = sorted({p["config"]["model"]["context"] for p in pts0})
    batch = sorted({p["config"]["train"]["batch_size"] for p in pts0})
    lr = sorted({p["config"]["train"]["lr"] for p in pts0})
    warm = sorted({p["config"]["train"]["warmup_steps"] for p in pts0})
    def j(v):
        return ", ".join(map(str, v))
    date = st["created"] + (f" to {st['finished']}" if st.get("finished") and st["finished"] != st["created"] else "")
    return [
        f"# Architecture study: {' + '.join(titles)}", "",
        "- **Command**: " + "; then ".join(f"`{c}`" for c in st["commands"]),
        f"- **Date**: {date}" + ("" if st.get("finished") else " (not finished)"),
        (f"- **Data**: `{st['data']}`: {len(langs)} languages ({', '.join(langs)}); {train_chars:,} train characters, "
        f"{test_chars:,} test characters."),
        (f"- **Budget**: {budget_text(st['budget'])} per configuration, the same for every point; training time counts "
        f"optimizer steps only (evaluation excluded). Batch {j(batch)} × context {j(ctx)}, peak lr {j(lr)}, warmup "
        f"{j(warm)} steps." + (" The n-gram baseline counts the whole training split (it has no token budget)."
                                if st.get("ngram") else "")),
        f"- **Device**: {'; '.join(devices) if devices else '—'}.",
        *recipes(rows),
        (f"- **Evaluation**: Top-1/Top-3/Test bpc are macro averages over languages of {st['eval_positions']} evenly "
        f"spaced test positions per language (fewer where a test split is shorter). Dev Loss is the best periodic "
        f"dev loss (nats/char; {j(dev_pos)} positions per language every {j(dev_every)} steps and at the end). "
        f"Latency is the median time of one top-3 prediction over {LATENCY_PREFIXES} realistic prefixes, 1 CPU "
        f"thread, measured after each point's training."), ""]


def write_report(study: str | Path, max_train_minutes: float | None = None, max_params: int | None = None,
                 max_latency_ms: float | None = None) -> Path:
    """`nextchar study report`: report.md, results.csv and plots/*.png from the study's files (never trains)."""
    study = Path(study)
    for opt, v in (("--max-train-minutes", max_train_minutes), ("--max-params", max_params),
                   ("--max-latency-ms", max_latency_ms)):
        if v is not None and v <= 0:
            raise UserError(f"{opt} {v}: must be positive")
    if not (study / STUDY_FILE).exists():
        raise UserError(f"{study}: not a study directory (no {STUDY_FILE}; run `nextchar study run` first)")
    st = files.read_json(study / STUDY_FILE, "study description")
    rows, missing = load_rows(study, st)
    langs = sorted({lang for r in rows for lang in r.langs})
    lines = header(study, st, rows)
    if not rows:
        lines += ["No configuration has finished yet.", ""]
    else:
        lines += ["## Performance Summary Table", "",
                  f"Based on the test results of {len([r for r in rows if not r.is_ngram])} configurations"
                  + (" and the n-gram baseline" if any(r.is_ngram for r in rows) else "")
                  + ", sorted by Top-1 accuracy; best value of each column in bold:", "",
                  *summary_table(rows), ""]
        rt, _ = recipe_table(rows)
        if rt:
            lines += ["## Seed vs modern recipe at the same shape", "", *rt, ""]
        lines += ["## Per-language accuracy", "", *language_tables(rows, langs)]
        lines += ["## Plots", "",
                  "![Top-3 accuracy vs parameters](plots/top3_vs_params.png)", "",
                  "![Top-3 accuracy vs training time](plots/top3_vs_time.png)", "",
                  "![Dev loss vs characters seen](plots/learning_curves.png)", "",
                  "![Top-3 accuracy per language](plots/language_heatmap.png)", ""]
        lines += ["## Key Findings", "", *key_findings(rows, st, langs)]
        lines += recommendation(rows, st, max_train_minutes, max_params, max_latency_ms)
    if missing:
        lines += ["## Not finished", "",
                  (f"{len(missing)} point(s) have no test results yet: {', '.join(missing)}. Resume with the command "
                  f"above (`nextchar study run` skips finished points and resumes interrupted ones)."), ""]
    files.atomic_write_bytes(study / "report.md", ("\n".join(lines).rstrip() + "\n").encode("utf-8"))
    files.atomic_write_bytes(study / "results.csv", results_csv(rows, langs).encode("utf-8"))
    if rows:
        write_plots(study / "plots", rows, langs)
    return study / "report.md"


def results_csv(rows: list[Row], langs: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "variant", "dir", "preset", "d_model", "n_layers", "n_heads", "d_ff", "dropout", "context",
                "params", "top1", "top3", "test_bpc", "dev_loss", "train_seconds", "tokens", "steps", "latency_ms",
                "test_positions", *(f"top1_{lang}" for lang in langs), *(f"top3_{lang}" for lang in langs)])
    for r in by_accuracy(rows, "top1"):
        m = r.model
        w.writerow([r.name, r.variant, r.dir, r.preset, m.get("d_model", ""), m.get("n_layers", ""),
                    m.get("n_heads", ""), m.get("d_ff", ""), m.get("dropout", ""), m.get("context", ""), r.params,
                    f"{r.top1:.6f}", f"{r.top3:.6f}", f"{r.test_bpc:.6f}", f"{r.dev_loss:.6f}",
                    f"{r.train_seconds:.3f}", r.tokens, r.steps, "" if r.latency_ms is None else f"{r.latency_ms:.4f}",
                    r.n_test, *(f"{r.langs[lang]['top1']:.6f}" if lang in r.langs else "" for lang in langs),
                    *(f"{r.langs[lang]['top3']:.6f}" if lang in r.langs else "" for lang in langs)])
    return buf.getvalue()
