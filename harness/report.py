"""Drill reports, all rendered from the journal: JUnit XML, a self-contained HTML page, Markdown.

``write(journal, folder)`` writes ``journal.json``, ``requests.jsonl`` (the users' raw request
log, one JSON line per request, from which every figure can be recomputed), ``junit.xml``
(each objective a test case, a missed one a failure, a harness error an error) and
``report.html``: a timeline chart drawn as inline SVG (user success rate, latency, the
replication RPO where the lab replicates, the address users were served from, faults and steps
on one time axis) and the objectives table. No script and no external resource, so the page
opens anywhere, offline.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.runner import Journal


def write(j: Journal, folder: Path) -> dict[str, Path]:
    """Write every report of a journal into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "journal": folder / "journal.json",
        "junit": folder / "junit.xml",
        "html": folder / "report.html",
        "requests": folder / "requests.jsonl",
    }
    paths["journal"].write_text(json.dumps(j.to_json(), indent=2, default=str) + "\n")
    paths["requests"].write_text("".join(json.dumps(r) + "\n" for r in j.requests))
    paths["junit"].write_text(junit(j))
    paths["html"].write_text(html_report(j))
    return paths


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "s":
        return f"{value:.1f}s"
    return f"{value:g} {unit}"


def junit(j: Journal) -> str:
    """JUnit XML: one test case per objective."""
    suite = ET.Element(
        "testsuite",
        name=f"drill.{j.drill}",
        tests=str(max(1, len(j.objectives))),
        failures=str(sum(not o.met for o in j.objectives)),
        errors="1" if j.status in ("harness-error", "interrupted") else "0",
        time=f"{(j.ended_at or j.started_at) - j.started_at:.3f}",
    )
    for o in j.objectives:
        case = ET.SubElement(suite, "testcase", classname=f"drill.{j.drill}", name=o.name)
        if not o.met:
            fail = ET.SubElement(
                case,
                "failure",
                message=f"{o.name}: {_fmt(o.measured, o.unit)} > {_fmt(o.target, o.unit)}",
            )
            fail.text = o.explanation
        else:
            ET.SubElement(case, "system-out").text = o.explanation
    if j.status in ("harness-error", "interrupted"):
        case = ET.SubElement(suite, "testcase", classname=f"drill.{j.drill}", name="harness")
        ET.SubElement(case, "error", message=j.status).text = j.error or ""
    elif not j.objectives:
        ET.SubElement(suite, "testcase", classname=f"drill.{j.drill}", name="completed")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def markdown(j: Journal, paths: dict[str, Path] | None = None) -> str:
    """A short Markdown summary for the terminal."""
    m = j.measurements
    verdict = {
        "met": "all objectives met",
        "missed": "OBJECTIVE MISSED",
        "harness-error": "HARNESS ERROR",
        "interrupted": "interrupted",
    }.get(j.status, j.status)
    dur = (j.ended_at or j.started_at) - j.started_at
    lines = [
        f"## Drill `{j.drill}` on `{j.topology}`: {verdict}",
        "",
        f"{j.description}".strip(),
        "",
        f"- duration {dur:.1f}s, seed {j.seed}, lab `{j.lab}`",
    ]
    if "rto_s" in m:
        lines.append(
            f"- RTO {_fmt(m.get('rto_s'), 's')}, RPO {_fmt(m.get('rpo_s'), 's')}, "
            f"acknowledged writes lost {m.get('acknowledged_writes_lost')} of "
            f"{m.get('acknowledged_before_fault')}, error rate {_fmt(m.get('error_rate'), 'ratio')}"
        )
    if j.error:
        lines += ["", f"**Error:** {j.error.splitlines()[0]}"]
    if j.objectives:
        lines += ["", "| objective | target | measured | met | why |", "|---|---|---|---|---|"]
        for o in j.objectives:
            lines.append(
                f"| {o.name} | {_fmt(o.target, o.unit)} | {_fmt(o.measured, o.unit)} | "
                f"{'yes' if o.met else '**no**'} | {o.explanation} |"
            )
    if paths:
        lines += ["", "Reports: " + ", ".join(f"`{p}`" for p in paths.values())]
    return "\n".join(lines) + "\n"


# --- HTML ------------------------------------------------------------------------------------

W, LEFT, RIGHT = 960, 150, 20
PLOT_W = W - LEFT - RIGHT


def _x(t: float, span: float) -> float:
    return LEFT + PLOT_W * (t / span if span > 0 else 0)


def _svg(j: Journal) -> str:
    """The timeline chart."""
    t0 = j.started_at
    span = max(1.0, (j.ended_at or t0) - t0)
    rows: list[str] = []
    y = 10
    # Steps and faults as bands.
    lanes: list[tuple[str, list[tuple[float, float, str]]]] = [
        ("steps", [(s.start - t0, (s.end or s.start) - t0, s.name) for s in j.steps]),
        (
            "faults",
            [
                (f["started_at"] - t0, (f.get("ended_at") or j.ended_at or t0) - t0, f["id"])
                for f in j.faults
            ],
        ),
    ]
    colours = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d"]
    for label, bands in lanes:
        rows.append(f'<text x="4" y="{y + 14}" class="lbl">{label}</text>')
        for i, (b_start, b_end, text) in enumerate(bands):
            x1, x2 = _x(max(0, b_start), span), _x(max(b_start, b_end), span)
            rows.append(
                f'<rect x="{x1:.1f}" y="{y}" width="{max(2, x2 - x1):.1f}" height="20" '
                f'fill="{colours[i % len(colours)]}" opacity="0.75"><title>{html.escape(text)} '
                f"({b_start:.1f}s to {b_end:.1f}s)</title></rect>"
            )
            rows.append(
                f'<text x="{x1 + 3:.1f}" y="{y + 14}" class="band">{html.escape(text[:18])}</text>'
            )
        y += 28
    # Series from the users' log: success rate, latency, serving address.
    first_req = j.measurements.get("fault_at")
    base = _users_offset(j)
    series = j.timeline
    addresses = sorted({a for b in series for a in b["addresses"]})
    recovery = set(j.measurements.get("recovery_addresses", []))
    for label, key, top in (("success rate", "success", 1.0), ("latency (ms)", "latency_ms", None)):
        vals = [b[key] for b in series if b[key] is not None]
        vmax = top or (max(vals) if vals else 1.0) or 1.0
        rows.append(f'<text x="4" y="{y + 30}" class="lbl">{label}</text>')
        rows.append(
            f'<text x="{LEFT - 4}" y="{y + 8}" class="ax">{vmax:.3g}</text>'
            f'<text x="{LEFT - 4}" y="{y + 58}" class="ax">0</text>'
            f'<line x1="{LEFT}" y1="{y + 60}" x2="{W - RIGHT}" y2="{y + 60}" class="axis"/>'
        )
        pts = [
            f"{_x(base + b['t'] + 0.5, span):.1f},{y + 60 - 60 * (b[key] / vmax):.1f}"
            for b in series
            if b[key] is not None
        ]
        rows.append(f'<polyline points="{" ".join(pts)}" class="line"/>')
        y += 72
    if j.replication:
        pts_r = [
            (smp["t"] - t0, max((r for r, _ in smp["disks"].values() if r is not None), default=0))
            for smp in j.replication
        ]
        rmax = max((v for _, v in pts_r), default=1.0) or 1.0
        rows.append(f'<text x="4" y="{y + 30}" class="lbl">replication RPO (s)</text>')
        rows.append(
            f'<text x="{LEFT - 4}" y="{y + 8}" class="ax">{rmax:.3g}</text>'
            f'<text x="{LEFT - 4}" y="{y + 58}" class="ax">0</text>'
            f'<line x1="{LEFT}" y1="{y + 60}" x2="{W - RIGHT}" y2="{y + 60}" class="axis"/>'
        )
        line = " ".join(f"{_x(t, span):.1f},{y + 60 - 60 * v / rmax:.1f}" for t, v in pts_r)
        rows.append(f'<polyline id="replication-rpo" points="{line}" class="line rpo"/>')
        y += 72
    rows.append(f'<text x="4" y="{y + 14}" class="lbl">served from</text>')
    for b in series:
        for a in b["addresses"]:
            lane = addresses.index(a)
            fill = "#54a24b" if a in recovery else "#4c78a8"
            rows.append(
                f'<rect x="{_x(base + b["t"], span):.1f}" y="{y + lane * 10}" '
                f'width="{max(1.5, PLOT_W / span):.1f}" height="8" fill="{fill}">'
                f"<title>{html.escape(a)}</title></rect>"
            )
    y += 10 * max(1, len(addresses)) + 10
    if first_req:
        xf = _x(first_req - t0, span)
        rows.append(f'<line x1="{xf:.1f}" y1="0" x2="{xf:.1f}" y2="{y}" class="fault"/>')
    # Time axis.
    for k in range(0, int(span) + 1, max(1, int(span / 10))):
        xt = _x(k, span)
        rows.append(f'<text x="{xt:.1f}" y="{y + 14}" class="tick">{k}s</text>')
    y += 20
    body = "\n".join(rows)
    return (
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" '
        f'viewBox="0 0 {W} {y}" role="img" aria-label="drill timeline">{body}</svg>'
    )


def _users_offset(j: Journal) -> float:
    """Seconds from the drill's start to the first bucket of the users' series."""
    steady = next((s for s in j.steps if s.name == "steady-state"), None)
    setup = next((s for s in j.steps if s.name == "setup"), None)
    start = (setup.end if setup and setup.end else None) or (steady.start if steady else None)
    return (start - j.started_at) if start else 0.0


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px}
.met{color:#2a7d2a;font-weight:bold}.missed{color:#b00;font-weight:bold}
.lbl{font-size:12px}.band{font-size:10px;fill:#fff}.ax,.tick{font-size:10px;fill:#555}
.ax{text-anchor:end}.axis{stroke:#999}.line{fill:none;stroke:#e45756;stroke-width:1.5}
.fault{stroke:#b00;stroke-dasharray:4 3}.rpo{stroke:#4c78a8}
"""


def html_report(j: Journal) -> str:
    """A self-contained page: verdict, measurements, objectives, timeline, steps."""
    verdict_cls = "met" if j.status == "met" else "missed"
    objectives = "".join(
        f"<tr><td>{o.name}</td><td>{_fmt(o.target, o.unit)}</td><td>{_fmt(o.measured, o.unit)}"
        f'</td><td class="{"met" if o.met else "missed"}">{"met" if o.met else "missed"}</td>'
        f"<td>{html.escape(o.explanation)}</td></tr>"
        for o in j.objectives
    )
    steps = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{s.start - j.started_at:.1f}s</td>"
        f"<td>{((s.end or s.start) - s.start):.1f}s</td><td>{s.status}</td>"
        f"<td><code>{html.escape(json.dumps(s.evidence, default=str)[:300])}</code>"
        f"{html.escape(s.error or '')}</td></tr>"
        for s in j.steps
    )
    m = {k: v for k, v in j.measurements.items() if not isinstance(v, list)}
    meas = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in m.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drill {html.escape(j.drill)}</title>
<style>{CSS}</style></head>
<body>
<h1>Drill <code>{html.escape(j.drill)}</code> on <code>{html.escape(j.topology)}</code>:
<span id="verdict" class="{verdict_cls}">{html.escape(j.status)}</span></h1>
<p>{html.escape(j.description)}</p>
{f"<p class='missed'>{html.escape(j.error)}</p>" if j.error else ""}
<h2>Objectives</h2>
<table id="objectives"><tr><th>objective</th><th>target</th><th>measured</th><th>result</th>
<th>why</th></tr>{objectives}</table>
<h2>Timeline</h2>
{_svg(j)}
<h2>Measurements</h2><table>{meas}</table>
<h2>Steps</h2>
<table><tr><th>step</th><th>at</th><th>took</th><th>status</th><th>evidence</th></tr>{steps}</table>
</body></html>
"""
