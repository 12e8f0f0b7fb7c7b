"""HTML reports of a run: one page per step (code hidden) and the run's ``index.html``.

Reports are read by managers and clients, possibly offline: pages are self-contained
(CSS inline, images embedded as data URIs) and load no script at all – no require.js,
MathJax, Mermaid or widget manager from a CDN. Interactive widgets only live in
JupyterLab; their outputs, stderr streams and JavaScript outputs are dropped.

Notebook authors can tag a cell ``remove-cell`` (dropped from the report) or
``remove-output`` (its outputs dropped); ``remove-input`` is implicit for every cell.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor

from crmlab.charts import fr_money, fr_number, fr_percent

TEMPLATES = Path(__file__).resolve().parent / "templates"

#: Output mimetypes never written into a report (they need a live kernel or a script).
DROPPED_MIMETYPES = (
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
    "application/javascript",
    "text/javascript",
)

#: Shown in a report where a notebook displayed an interactive widget.
WIDGET_NOTE = (
    '<p class="crmlab-widget-note" style="color:#555;font-style:italic">Explorateur interactif : '
    "disponible dans JupyterLab (make lab), il n'est pas reproduit dans ce rapport.</p>"
)

NAV_START = "<!--crmlab-nav-->"
NAV_END = "<!--/crmlab-nav-->"


class CleanOutputs(Preprocessor):
    """Drop what a static report cannot show: widget views, JavaScript, stderr streams.

    An output whose only remaining representation is the ``text/plain`` fallback of a
    widget (``interactive(children=…)``) is replaced by a short French note
    (:data:`WIDGET_NOTE`) saying the explorer lives in JupyterLab.
    """

    def preprocess(self, nb, resources):  # noqa: D102
        nb.metadata.pop("widgets", None)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):  # noqa: D102
        if cell.cell_type != "code":
            return cell, resources
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                continue
            data = out.get("data")
            if data is not None:
                had_widget = any(m in data for m in DROPPED_MIMETYPES[:2])
                for mime in DROPPED_MIMETYPES:
                    data.pop(mime, None)
                if had_widget and set(data) <= {"text/plain"}:
                    kept.append(nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE}))
                    continue
                if not data:
                    continue
            kept.append(out)
        cell.outputs = kept
        return cell, resources


def exporter() -> HTMLExporter:
    """Return the HTML exporter of step reports: code and prompts hidden, images embedded."""
    exp = HTMLExporter(
        template_name="crmlab_report",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        exclude_anchor_links=True,
        language_code="fr",
    )
    tags = TagRemovePreprocessor(
        remove_cell_tags={"remove-cell", "remove_cell", "papermill-error-cell-tag"},
        remove_all_outputs_tags={"remove-output", "remove_output"},
        enabled=True,
    )
    exp.register_preprocessor(tags, enabled=True)
    exp.register_preprocessor(CleanOutputs(), enabled=True)
    return exp


@dataclass
class Link:
    """A link of a report's navigation bar (``href`` relative to the page)."""

    label: str
    href: str


def header_html(title: str, run_name: str, as_of: str | None, nav: Sequence[Link], *, failed: str | None = None) -> str:
    """French header of a step report: step title, run, reference date, navigation.

    Parameters
    ----------
    title : str
        Step title, e.g. ``"Étape 02 – Segmenter et cibler"``.
    run_name, as_of : str
        Name and reference date of the run (``as_of`` may be ``None``: automatic).
    nav : sequence of Link
        Links (index, previous and next step reports).
    failed : str, optional
        French message shown when the step failed.
    """
    when = f"date de référence {html.escape(fr_date(as_of))}" if as_of else "date de référence automatique"
    parts = [
        '<header class="crmlab-header">',
        f'<p class="crmlab-kicker">crmlab · exécution « {html.escape(run_name)} » · {when}</p>',
        f'<p class="crmlab-title">{html.escape(title)}</p>',
        nav_html(nav),
    ]
    if failed:
        parts.append(f'<div class="crmlab-status-failed"><strong>Cette étape a échoué :</strong> {html.escape(failed)}</div>')
    parts.append("</header>")
    return "\n".join(parts)


def nav_html(nav: Sequence[Link]) -> str:
    """Navigation bar between markers, so it can be rewritten once the run is over."""
    links = "".join(f'<a href="{html.escape(link.href)}">{html.escape(link.label)}</a>' for link in nav)
    return f'{NAV_START}<nav class="crmlab-nav">{links}</nav>{NAV_END}'


def replace_nav(page: str, nav: Sequence[Link]) -> str:
    """Return ``page`` with its navigation bar replaced by ``nav``."""
    pattern = re.compile(re.escape(NAV_START) + ".*?" + re.escape(NAV_END), re.S)
    return pattern.sub(lambda _: nav_html(nav), page, count=1)


def notebook_html(nb: nbformat.NotebookNode, header: str, title: str) -> str:
    """Render an executed notebook as a self-contained French report page.

    Parameters
    ----------
    nb : NotebookNode
        Executed notebook (not modified).
    header : str
        HTML inserted at the top of the page (see :func:`header_html`).
    title : str
        Title of the browser tab.
    """
    nb = nbformat.from_dict(nb)  # deep copy: preprocessors edit in place
    nb.metadata["title"] = title
    body, _ = exporter().from_notebook_node(nb, resources={"crmlab_header": header})
    return body


def write_step_report(nb_path: str | Path, html_path: str | Path, header: str, title: str) -> Path:
    """Read an executed notebook and write its report page; return the page path."""
    nb = nbformat.read(str(nb_path), as_version=4)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(notebook_html(nb, header, title), encoding="utf-8")
    return html_path


# --------------------------------------------------------------------------- KPIs


def format_kpi(value: float | None, unit: str | None, currency: str = "EUR") -> str:
    """Format a KPI value in French according to its unit.

    Units understood: ``share`` / ``part`` / ``ratio`` (0–1, shown as %), ``%`` (already
    a percentage), ``pp`` / ``pt`` (difference of shares, percentage points), a currency
    code or symbol (``EUR``, ``€`` …, or ``money`` / ``devise`` for the run's currency), ``NPS`` (points −100..+100, shown as a
    signed whole score), ``s`` (seconds), ``days`` / ``jours``;
    anything else is appended after the number. Integers are shown without decimals.
    """
    if value is None or value != value:
        return "–"
    unit = (unit or "").strip()
    low = unit.lower()
    if low in ("share", "part", "ratio", "rate", "taux"):
        return fr_percent(value, 1)
    if low in ("%", "pct", "percent"):
        return f"{fr_number(value, 1)}\u00a0%"
    if low in ("pp", "pt", "pts", "points"):
        return f"{'+' if value > 0 else ''}{fr_number(100 * value, 1)}\u00a0pt"
    if low == "nps":  # Net Promoter Score in points, a signed whole score from -100 to +100
        r = int(round(value))
        return f"+{r}" if r > 0 else str(r)
    if low in ("money", "devise", "eur", "€", "usd", "$", "gbp", "£", "chf"):
        code = {"money": currency, "devise": currency, "€": "EUR", "$": "USD", "£": "GBP"}.get(low, unit.upper())
        return fr_money(value, code, 0 if abs(value) >= 100 else 2)
    decimals = 0 if float(value).is_integer() else (1 if abs(value) >= 10 else 2)
    text = fr_number(value, decimals)
    label = {"days": "jours", "day": "jours", "s": "s", "count": "", "n": ""}.get(low, unit)
    return f"{text}\u00a0{label}" if label else text


def kpi_label(name: str, labels: dict[str, str] | None = None) -> str:
    """French label of a KPI: from the step's ``KPI_LABELS`` if any, else its name made readable."""
    if labels and name in labels:
        return labels[name]
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def fr_date(value: str | dt.date | None) -> str:
    """``2011-06-30`` → ``30/06/2011`` (other strings unchanged)."""
    if value is None:
        return "–"
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    try:
        return dt.date.fromisoformat(str(value)[:10]).strftime("%d/%m/%Y")
    except ValueError:
        return str(value)


# --------------------------------------------------------------------------- index


STATUS_FR = {
    "ok": ("✓", "réussie"),
    "failed": ("✗", "échec"),
    "not_run": ("–", "non exécutée"),
    "skipped": ("·", "non demandée"),
    "not_applicable": ("○", "sans objet"),
}

KIND_FR = {
    "input": "Données ou paramètres à corriger",
    "check": "Contrôle de cohérence échoué",
    "other": "Erreur inattendue",
}

_INDEX_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1100px; margin: 0 auto; padding: 16px 20px 40px; line-height: 1.45; }
h1 { color: #1f4e79; margin: 8px 0 4px; font-size: 26px; }
.kicker { color: #555; font-size: 13px; margin: 0; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 12px 0 18px; font-size: 14px; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; }
.banner { padding: 10px 14px; margin: 12px 0 18px; border-left: 5px solid; }
.banner.ok { background: #eef8f1; border-color: #3a9e6f; }
.banner.failed { background: #fdecec; border-color: #c44e52; }
table.steps { border-collapse: collapse; width: 100%; font-size: 14px; }
table.steps th { text-align: left; background: #1f4e79; color: #fff; padding: 6px 8px; }
table.steps td { border-bottom: 1px solid #ddd; padding: 6px 8px; vertical-align: top; }
td.status-ok { color: #3a9e6f; font-weight: bold; }
td.status-failed { color: #c44e52; font-weight: bold; }
td.status-not_run, td.status-skipped, td.status-not_applicable { color: #888; }
td.num { text-align: right; white-space: nowrap; }
ul.kpis { margin: 0; padding-left: 16px; }
a { color: #1f4e79; }
footer { margin-top: 28px; color: #777; font-size: 12px; }
"""


def index_html(info: dict) -> str:
    """Return the run's ``index.html`` (French, self-contained, no script).

    Parameters
    ----------
    info : dict
        ``name, run_id, as_of, started_at (datetime), seconds, params_file, status
        ('ok' | 'failed'), exit_code, error`` (``None`` or a dict with ``code, title,
        kind, message``), ``missing`` (titles of steps not built yet) and ``steps``: a
        list of dicts with ``code, title, status, seconds, kpis`` (list of
        ``(label, text)``), ``html`` and ``notebook`` (paths relative to the run folder
        or ``None``).
    """
    e = html.escape
    started = info["started_at"]
    rows = []
    for s in info["steps"]:
        symbol, word = STATUS_FR[s["status"]]
        kpis = "".join(f"<li>{e(label)} : <strong>{e(text)}</strong></li>" for label, text in s.get("kpis") or [])
        if s["status"] == "not_applicable" and s.get("error"):
            kpis = f"<li>{e(s['error'])}</li>"
        links = []
        if s.get("html"):
            links.append(f'<a href="{e(s["html"])}">rapport</a>')
        if s.get("notebook"):
            links.append(f'<a href="{e(s["notebook"])}">notebook exécuté</a>')
        seconds = f"{fr_number(s['seconds'], 1)}\u00a0s" if s.get("seconds") is not None else "–"
        rows.append(
            "<tr>"
            f"<td>{e(s['code'])}</td><td>{e(s['title'])}</td>"
            f'<td class="status-{s["status"]}">{symbol} {e(word)}</td>'
            f'<td class="num">{seconds}</td>'
            f'<td>{"<ul class=kpis>" + kpis + "</ul>" if kpis else "–"}</td>'
            f'<td>{" · ".join(links) if links else "–"}</td>'
            "</tr>"
        )
    err = info.get("error")
    if info["status"] == "ok":
        n_ok = sum(s["status"] == "ok" for s in info["steps"])
        banner = f'<div class="banner ok"><strong>Exécution réussie</strong> : {n_ok} étape(s) exécutée(s) sans erreur.</div>'
    else:
        not_run = [s["code"] for s in info["steps"] if s["status"] == "not_run"]
        after = f" Étapes suivantes non exécutées : {', '.join(not_run)}." if not_run else ""
        if any(s.get("restored") for s in info["steps"]):
            after += f" La base clients a été remise dans son état d'avant l'étape {err['code']} : rien de cette étape n'y est resté."
        banner = (
            '<div class="banner failed">'
            f"<strong>Échec à l'étape {e(err['code'])} – {e(err['title'])}</strong> "
            f"({e(KIND_FR.get(err['kind'], err['kind']))}).<br>"
            f"Motif : {e(err['message'])}.{e(after)}"
            "</div>"
        )
    missing = info.get("missing") or []
    missing_html = (
        f"<p>Étapes pas encore disponibles dans cette version : {e(', '.join(missing))}.</p>" if missing else ""
    )
    as_of = fr_date(info["as_of"]) if info.get("as_of") else "automatique (lendemain du dernier achat)"
    return f"""<!DOCTYPE html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>crmlab – exécution « {e(info['name'])} »</title>
<style>{_INDEX_CSS}</style>
</head>
<body>
<p class="kicker">crmlab · méthode CRM en six étapes</p>
<h1>Exécution « {e(info['name'])} »</h1>
<dl class="meta">
<dt>Statut</dt><dd>{'réussie' if info['status'] == 'ok' else 'échec'} (code de sortie {info['exit_code']})</dd>
<dt>Date de référence</dt><dd>{e(as_of)}</dd>
<dt>Lancée le</dt><dd>{started:%d/%m/%Y à %H:%M:%S}</dd>
<dt>Durée totale</dt><dd>{fr_number(info['seconds'], 1)}\u00a0s</dd>
<dt>Fichier de paramètres</dt><dd>{e(str(info.get('params_file') or '–'))}</dd>
<dt>Identifiant</dt><dd>{e(info['run_id'])}</dd>
</dl>
{banner}
<table class="steps">
<thead><tr><th>Étape</th><th>Intitulé</th><th>Statut</th><th>Durée</th><th>Indicateurs clés</th><th>Documents</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
{missing_html}
<footer>Généré par crmlab {e(info.get('version', ''))} · détails techniques (paramètres validés, versions, temps) : <a href="run.json">run.json</a></footer>
</body>
</html>
"""
