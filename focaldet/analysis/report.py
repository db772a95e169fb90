"""The comparison report, as markdown and as a self-contained-looking HTML page.

The report is first built as a list of blocks (heading, paragraph, table, image, code) and then
rendered twice, so the two files always say the same thing. AP values are shown in points
(× 100, as papers do); a dash marks a value that does not exist (a single seed has no spread, an
empty rare/common/frequent group has no AP)."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import yaml

from focaldet.utils.io import atomic_write_text


@dataclass
class Block:
    kind: str  # h1 | h2 | p | table | img | code | list
    text: str = ""
    header: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    items: Sequence[str] = ()


def pts(v: Optional[float], digits: int = 1, sign: bool = False) -> str:
    """A [0, 1] metric as AP points; '—' for a missing / NaN value."""
    if v is None or not math.isfinite(v):
        return "—"
    return f"{100 * v:+.{digits}f}" if sign else f"{100 * v:.{digits}f}"


def _mean_std(s: dict) -> str:
    if s["n"] == 0:
        return "—"
    return pts(s["mean"]) if s["n"] < 2 else f"{pts(s['mean'])} ± {pts(s['std'])}"


def _ci(s: dict, sign: bool = False) -> str:
    if s["n"] < 2:
        return "—"
    return f"[{pts(s['ci_low'], sign=sign)}, {pts(s['ci_high'], sign=sign)}]"


def _runs_cell(a: dict) -> str:
    total = a["finished"] + a["diverged"] + a["missing"]
    cell = f"{a['finished']}/{total}"
    if a["diverged"]:
        cell += f" ({a['diverged']} diverged)"
    if a["missing"]:
        cell += f" ({a['missing']} not run)"
    return cell


def verdicts(summary: dict, metric: str = "AP") -> list[str]:
    """One sentence per non-baseline arm: "<loss> is X ± Y AP above/below <baseline> (95 % CI, n
    seeds)" when the paired interval excludes 0, else "cannot be told apart at n seeds"."""
    base = summary["baseline"]
    level = int(round(100 * summary["level"]))
    base_label = next((a["label"] for a in summary["arms"] if a["name"] == base), base)
    out = []
    for a in summary["arms"]:
        d = (a.get("diff") or {}).get(metric)
        if not d or d["n"] == 0:
            continue
        n = d["n"]
        if n < 2:
            out.append(f"{a['label']} vs {base_label}: {pts(d['mean'], sign=True)} {metric} on 1 seed — "
                       f"one seed has no interval, so they cannot be told apart yet (use --seeds 3 or more).")
            continue
        half = (d["ci_high"] - d["ci_low"]) / 2
        if d["ci_low"] > 0 or d["ci_high"] < 0:
            where = "above" if d["mean"] > 0 else "below"
            out.append(f"{a['label']} is {pts(abs(d['mean']))} ± {pts(half)} {metric} points {where} {base_label} "
                       f"({level} % CI of the paired difference, {n} seeds).")
        else:
            out.append(f"{a['label']} and {base_label} cannot be told apart at {n} seeds: paired {metric} difference "
                       f"{pts(d['mean'], sign=True)} ± {pts(half)} points ({level} % CI includes 0).")
    return out


def _difference_blocks(summary: dict) -> list[Block]:
    """The table of paired differences against the baseline (empty without one)."""
    b: list[Block] = []
    metrics, arms, base = summary["metrics"], summary["arms"], summary["baseline"]
    level = int(round(100 * summary["level"]))
    diff_arms = [a for a in arms if "diff" in a]
    if diff_arms:
        base_label = next((a["label"] for a in arms if a["name"] == base), base)
        b.append(Block("h2", f"Paired differences against {base_label} (same seed, loss − baseline)"))
        b.append(Block("p", f"Mean difference and its {level} % CI over seeds run by both; "
                            "**bold** when the interval excludes 0."))
        rows = []
        for a in diff_arms:
            cells = []
            for m in metrics:
                d = a["diff"][m]
                if d["n"] == 0:
                    cells.append("—")
                    continue
                cell = pts(d["mean"], sign=True)
                if d["n"] >= 2:
                    cell += f" {_ci(d, sign=True)}"
                    if d["ci_low"] > 0 or d["ci_high"] < 0:
                        cell = f"**{cell}**"
                cells.append(cell)
            rows.append([a["label"], str(a["diff"]["AP"]["n"]), *cells])
        b.append(Block("table", header=["loss", "pairs", *metrics], rows=rows))
    return b


def _mechanism_blocks(mechanism: Sequence[Sequence[str]]) -> list[Block]:
    """The G⁺/G⁻ and γ_j per LVIS group table (empty without rows)."""
    b: list[Block] = []
    if mechanism:
        b.append(Block("h2", "Gradient balance at the end of training (first seed)"))
        b.append(Block("p", "Median over each group's classes of the accumulated positive/negative gradient "
                            "ratio G⁺/G⁻ and, for EFL, of its focusing factor γ_j = γ_b + s(1 − min(1, G⁺/G⁻)). "
                            "EFL only departs from focal loss where G⁺/G⁻ < 1."))
        b.append(Block("table", header=["loss", "G⁺/G⁻ rare", "common", "frequent", "γ_j rare", "common", "frequent"],
                       rows=mechanism))
    return b


def build_blocks(summary: dict, *, title: str, command: str, versions: dict, config: dict,
                 plots: Sequence[Path] = (), claims: Sequence[dict] = (), notes: Sequence[str] = (),
                 root: Optional[Path] = None, mechanism: Sequence[Sequence[str]] = (),
                 machines: Sequence[str] = ()) -> list[Block]:
    metrics = summary["metrics"]
    level = int(round(100 * summary["level"]))
    base = summary["baseline"]
    arms = summary["arms"]
    seeds = sorted({r["seed"] for r in summary["runs"]})
    b: list[Block] = [Block("h1", title)]
    b.append(Block("p", f"{len(arms)} arms × {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); identical data "
                        f"and schedule, only the loss and the seed differ. AP in points (× 100), COCO-style; "
                        f"APr / APc / APf over classes grouped by training-image count."))
    for n in notes:
        b.append(Block("p", n))
    said = verdicts(summary)
    if said:
        b.append(Block("h2", "Verdict"))
        b.append(Block("list", items=said))

    b.append(Block("h2", "Results: mean ± std over seeds"))
    b.append(Block("table", header=["loss", "runs", *metrics],
                   rows=[[a["label"], _runs_cell(a), *(_mean_std(a["stats"][m]) for m in metrics)] for a in arms]))

    if len(seeds) >= 2:
        b.append(Block("h2", f"{level} % confidence intervals (Student t, n − 1 degrees of freedom)"))
        b.append(Block("table", header=["loss", *metrics],
                       rows=[[a["label"], *(_ci(a["stats"][m]) for m in metrics)] for a in arms]))

    b.extend(_difference_blocks(summary))
    b.extend(_mechanism_blocks(mechanism))

    if claims:
        b.append(Block("h2", "Claims of the focal-loss paper, checked here"))
        b.append(Block("table", header=["claim (paper)", "verdict here", "evidence"],
                       rows=[[c["claim"], c["verdict"], c["evidence"]] for c in claims]))

    diverged = [r for r in summary["runs"] if r["status"] == "diverged"]
    b.append(Block("h2", "Diverged runs"))
    if diverged:
        b.append(Block("table", header=["loss", "seed", "iteration", "message"],
                       rows=[[r["arm"], str(r["seed"]), str(r["diverged_at"]), r["message"].splitlines()[0][:200]
                              if r["message"] else ""] for r in diverged]))
    else:
        b.append(Block("p", "None: every run finished with finite losses."))

    b.append(Block("h2", "Individual runs"))
    b.append(Block("table", header=["loss", "seed", "status", "iterations", *metrics],
                   rows=[[r["arm"], str(r["seed"]), r["status"], str(r["iterations"] if r["iterations"] is not None else "—"),
                          *(pts(r["metrics"].get(m), 2) for m in metrics)] for r in summary["runs"]]))

    if plots:
        b.append(Block("h2", "Plots"))
        for p in plots:
            rel = Path(p).relative_to(root) if root else Path(p)
            b.append(Block("img", text=str(rel)))

    b.append(Block("h2", "Reproduce"))
    b.append(Block("code", command))
    b.append(Block("list", items=[f"{k} {v}" for k, v in versions.items()]))
    if machines:
        b.append(Block("p", "Trained in (forward-pass precision on the machine each run recorded; the numbers "
                            "reproduce to the digit only on the same kind of machine in the same precision):"))
        b.append(Block("list", items=list(machines)))
    b.append(Block("p", "Resolved config of the first run (the others differ only in `loss`, `runtime.seed` "
                        "and `runtime.work_dir`; every run's config is in `plan.json`):"))
    b.append(Block("code", yaml.safe_dump(config, sort_keys=False).rstrip()))
    return b


# ---------------------------------------------------------------------------------------------
def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for bl in blocks:
        if bl.kind == "h1":
            out.append(f"# {bl.text}")
        elif bl.kind == "h2":
            out.append(f"## {bl.text}")
        elif bl.kind == "p":
            out.append(bl.text)
        elif bl.kind == "table":
            out.append("| " + " | ".join(map(_md_cell, bl.header)) + " |")
            out.append("|" + "|".join("---" for _ in bl.header) + "|")
            out.extend("| " + " | ".join(map(_md_cell, row)) + " |" for row in bl.rows)
        elif bl.kind == "img":
            out.append(f"![{Path(bl.text).stem}]({bl.text})")
        elif bl.kind == "code":
            out.append(f"```\n{bl.text}\n```")
        elif bl.kind == "list":
            out.extend(f"- {it}" for it in bl.items)
        out.append("")
    return "\n".join(out)


def _html_inline(s: str) -> str:
    s = html.escape(s)
    parts = s.split("**")  # the only inline markup the report uses
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: Sequence[Block], title: str) -> str:
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
           "text-align:right}td:first-child,th:first-child{text-align:left}pre{background:#f4f4f4;"
           "padding:1em;overflow-x:auto}img{max-width:100%}</style></head><body>"]
    for bl in blocks:
        if bl.kind in ("h1", "h2"):
            out.append(f"<{bl.kind}>{_html_inline(bl.text)}</{bl.kind}>")
        elif bl.kind == "p":
            out.append(f"<p>{_html_inline(bl.text).replace('`', '')}</p>")
        elif bl.kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_html_inline(h)}</th>" for h in bl.header) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in bl.rows)
            out.append("</table>")
        elif bl.kind == "img":
            out.append(f"<p><img src='{html.escape(bl.text)}' alt='{html.escape(Path(bl.text).stem)}'></p>")
        elif bl.kind == "code":
            out.append(f"<pre>{html.escape(bl.text)}</pre>")
        elif bl.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_html_inline(it)}</li>" for it in bl.items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(out: Path, blocks: Sequence[Block], title: str) -> tuple[Path, Path]:
    md = atomic_write_text(out / "report.md", to_markdown(blocks))
    ht = atomic_write_text(out / "report.html", to_html(blocks, title))
    return md, ht


def console_table(summary: dict, metrics: Sequence[str] = ("AP", "AP50", "APr", "APc", "APf")) -> str:
    """A plain-text table for the terminal: one row per arm, mean (± std with several seeds)."""
    header = ["loss", "runs", *metrics]
    rows = [[a["label"], _runs_cell(a), *(_mean_std(a["stats"][m]) for m in metrics)] for a in summary["arms"]]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
