"""The report: report.md and a self-contained report.html, with the figures of `mixlaw.figures`.

Reads the workdir's results table (through mixlaw.results), its fits.json (from `mixlaw fit`) and,
where present, the runs' run.json; every number in the report is a number of fits.json (the
tables are mixlaw.laws.fittables', rendered here as Markdown and HTML) or of the results table (the
base-training curves). Answer first (CMR per size with its interval, next to the model-free
CMR), then what the data can and cannot tell (trends against the noise, design gates), then the
evidence. The report is the list SECTIONS: one function per section, each returning its blocks;
append a function to add a section. Figures are numbered in reading order.
"""

from __future__ import annotations

import base64
import html
import os
import re

from mixlaw import arrays
from mixlaw import figures as figures_lib
from mixlaw import results
from mixlaw import workdir as workdir_lib
from mixlaw.errors import MixlawError
from mixlaw.figures import FIGURES, ci_label  # noqa: F401  (report.FIGURES: the figure names)
from mixlaw.laws import SCHEMA_VERSION
from mixlaw.laws import fittables as tables_lib

_fmt, _pct = tables_lib.fmt, tables_lib.pct  # one formatter for the text, Markdown and HTML.
# Where fits.json says each setting came from (options.source) -> how the report names it.
_SOURCES = {"flag": "command-line flags", "gin": "gin bindings",
            workdir_lib.SWEEP: f"{workdir_lib.SWEEP} {workdir_lib.FIT_OPTIONS}",
            "argument": "given as arguments"}


class ReportError(MixlawError, ValueError):
  """The workdir lacks what a report needs."""


# The fits.json keys every report reads (of schema SCHEMA_VERSION).
REPORT_NEEDS = ("options", "sizes", "curves", "final", "cmr", "cmr_law", "cmr_series", "surface",
                "trends", "gates")


def load_workdir(workdir: str, fit_options: dict | None = None) -> dict:
  """Everything a report needs: rows, fits, run infos, corpus meta, notes on stale settings.

  fit_options: settings the fits should have been computed with, over sweep.json's fit_options
  (e.g. the gin bindings of FitOptions given to `mixlaw report`).
  """
  rows = results.read_rows(workdir)
  if not rows:
    raise ReportError(f"{results.table_path(workdir)} is missing or empty: run a sweep first")
  fits = workdir_lib.read_fits(workdir, SCHEMA_VERSION, need=REPORT_NEEDS)
  if fits is None:
    raise ReportError(f"{workdir_lib.fits_path(workdir)} is missing: run `mixlaw fit --workdir "
                      f"{workdir}` first")
  unchecked = workdir_lib.check_fits_current(workdir, fits)  # Stale: refused.
  runs = workdir_lib.read_runs(workdir)
  source = next((i["data_source"] for i in runs.values() if i.get("data_source")), None)
  meta = arrays.read_meta(source) if source and os.path.isdir(source) else {}
  want = {**workdir_lib.read_fit_options(workdir), **(fit_options or {})}
  return {"rows": rows, "fits": fits, "runs": runs, "meta": meta, "workdir": workdir,
          "notes": [n for n in [unchecked] if n] + _stale(workdir, fits, want)}


def _stale(workdir, fits, want) -> list[str]:
  """Settings the experiment asks for (`want`) that fits.json was not computed with."""
  have = fits["options"]
  diff = [k for k, v in want.items() if k in have and have.get(f"{k}_option", have[k]) != v]
  return [f"fits.json was computed with {', '.join(f'{k}={have[k]!r}' for k in diff)} but the "
          f"experiment asks for {', '.join(f'{k}={want[k]!r}' for k in diff)}: "
          f"rerun `mixlaw fit --workdir {workdir}`"] if diff else []


# ------------------------------------------------------------------------------------ text

def _by(items, **match):
  return [x for x in items if all(x.get(k) == v for k, v in match.items())]


def _sizes(fits):
  return [s["size"] for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0)]


def _corpora_used(runs) -> set:
  used = set()
  for info in runs.values():
    cfg = info.get("data") or {}
    used.update(c for c in (cfg.get("general"), cfg.get("domain")) if c)
    used.update(cfg.get("corpora") or [])
  return used or {"general", "finance", "science"}


def _wall_s(infos) -> float:
  """Wall seconds of runs, counting an ensemble's shared wall time once (its members' run.json
  all carry the whole ensemble's)."""
  walls = {}
  for i in infos:
    walls[i.get("group") or i.get("run_id") or id(i)] = i.get("wallclock_s") or 0
  return sum(walls.values())


def _trained(w) -> tables_lib.Table:
  fits, runs = w["fits"], w["runs"]
  ids = {k: workdir_lib.parse_run_id(k) for k in runs}
  rows = []
  for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0):
    size = s["size"]
    base = next((runs[k] for k, p in ids.items() if p == {"kind": "base", "size": size}), {})
    cpts = [runs[k] for k, p in ids.items() if p.get("kind") == "cpt" and p["size"] == size]
    m = base.get("model", {})
    tok = base.get("steps", 0) * base.get("batch_size", 0) * base.get("seq_len", 0)
    n = s["n_params_nonemb"] or 0
    cpt_tok = (cpts[0].get("steps", 0) * cpts[0].get("batch_size", 0)
               * cpts[0].get("seq_len", 0) / 1e6 if cpts else 0)
    rows.append([size, str(m.get("d_model", "–")), str(m.get("n_layers", "–")),
                 str(m.get("n_heads", "–")), str(m.get("d_ff", "–")), _fmt(int(n)),
                 _fmt(int(s["n_params"] or 0)),
                 f"{tok / 1e6:.2f}M ({tok / n:.3g}/param)" if n and tok else "–",
                 f"{len(cpts)} x {cpt_tok:.2f}M" if cpts else "–",
                 f"{_wall_s([base] + cpts) / 60:.1f}" if base or cpts else "–"])
  return tables_lib.Table("trained", "Models and runs", [
      "size", "d", "layers", "heads", "ffn", "non-emb. params", "params", "base tokens",
      "CPT runs x tokens", "train min"], rows, "from each run's run.json; train min: wall time "
      "of the base run and the CPT runs, an ensemble's counted once" if runs else
      "no run.json present: model shapes unknown")


# ---------------------------------------------------------------------------------- sections
# Each section: (w, t) -> blocks, where w is load_workdir's dict and t the fit tables by key.
# Blocks: ('h', level, text) | ('p', text) | ('ul', items) | ('table', Table) | ('img', name,
# caption), rendered to Markdown and HTML from the same content.

def section_intro(w, t) -> list[tuple]:
  opt = w["fits"]["options"]
  domain = opt.get("domain") or "domain"
  b = [("h", 1, f"mixlaw report: critical mixture ratio for {domain} CPT")]
  b.append(("p", f"Workdir `{w['workdir']}`. Continual pre-training (CPT) mixes general data "
            f"with {domain} data; R is the {domain} share of CPT tokens. The critical mixture "
            f"ratio (CMR) is the largest R whose general validation loss stays within eps = "
            f"{opt['eps']} nats of the base model's (condition A) once the general-loss rise "
            f"has been outpaced by the domain gain (the critical point of Definition 2, lambda "
            f"= {opt['lam']:g}; Gu et al. 2024). The fits use the unit {opt['t_unit']}."))
  return b + [("p", f"**Note:** {note}") for note in w["notes"]]


def section_answer(w, t) -> list[tuple]:
  fits = w["fits"]
  opt, cmr = fits["options"], fits["cmr"]
  a_only = [c["size"] for c in cmr if c["condition_A_decides"]]
  lam_matters = [c["size"] for c in cmr if c["lam_decides"]]
  disagree = [c["size"] for c in cmr if c["model_free"]["disagrees"]]
  return [
      ("h", 2, "The answer: CMR per model size"), ("table", t["cmr"]),
      ("ul", [
          f"Condition A alone decides the CMR for: {', '.join(a_only) or 'no size'}; there the "
          f"critical-point condition and lambda do not matter.",
          f"Lambda changes the CMR (lambda in {opt['lam_range']}) for: "
          f"{', '.join(lam_matters) or 'no size'} (table below).",
          f"Model-free and fitted (condition A) CMRs disagree beyond their uncertainty for: "
          f"{', '.join(disagree) or 'no size'}.",
          "Interpolation between trained ratios is linear in u = R^e with e from the ratio law "
          "at T_max (column e gen / dom); e = 1 means linear in R.",
          f"Intervals: {opt['bootstrap']}. They cover CPT reruns (data order, eval noise) of the "
          "same base models; the base models' own seed variation is not sampled (one base run "
          "per size)."]),
      ("img", "cmr_size", "CMR at T_max against model size, fitted (Definition 2) and "
       f"model-free (condition A, smoothed evals), with {ci_label(fits)} intervals; open "
       "triangles are censored at the edge of the trained ratios."),
      ("table", t["lam"])]


def section_decisions(w, t) -> list[tuple]:
  """Pre-registered decisions, the fitted-vs-model-free check, budgets, leave-future-out."""
  fits = w["fits"]
  opt = fits["options"]
  return [
      ("h", 2, "Decisions, budgets without future data, and predictions of later evals"),
      ("table", t["decisions"]),
      ("p", "The fitted Definition-2 CMR rests on Eq. 6's form; the model-free one on the "
       f"measured window slopes (last {100 * opt['slope_window']:g}% of T) and smoothed levels. "
       "Sizes where they differ beyond their uncertainty, and why:"),
      ("table", t["def2_flags"]),
      ("table", t["series"]),
      ("img", "cmr", f"(paper Fig. 5) CMR against CPT tokens per size, each budget refitted "
       f"from the evals up to it, with its {ci_label(fits)} interval, the model-free "
       "Definition-2 CMR (x) and the CMR law fitted to these points; open triangles: "
       "censored."),
      ("table", t["lfo"]),
      ("img", "lfo", "Leave-future-out: predictions of T_max from the evals up to f T_max "
       "against the full data; gray bands: the pre-registered tolerances.")]


def section_limits(w, t) -> list[tuple]:
  opt = w["fits"]["options"]
  return [
      ("h", 2, "What this sweep can and cannot show"),
      ("p", "Each trend is judged at T_max on smoothed values (mean of the last "
       f"{opt['smooth_k']} evals) against its noise: holds / fails / undecided at z = 2 "
       "standard errors (checks.py)."),
      ("table", t["trends"]),
      ("h", 3, "Gates / design checks"),
      ("p", "What a powered experiment needs, measured on this table (thresholds are the fit "
       "options gate_*; docs/laws.md)."),
      ("table", t["gates"]), ("table", t["gates_sizes"])]


def section_trained(w, t) -> list[tuple]:
  meta = w["meta"]
  b = [("h", 2, "What was trained"), ("table", _trained(w)),
       ("img", "base_curves", "Base pretraining: general and domain validation loss against "
        "tokens per size.")]
  if meta.get("corpora"):
    rows = [[name, _fmt(sum(c["docs"].values())), _fmt(sum(c["tokens"].values())),
             f"{sum(c['bytes'].values()) / 1e6:.2f}", _fmt(c.get("bytes_per_token"), 3),
             ", ".join(f"{k} {100 * v:.0f}%" for k, v in (c.get("language_shares") or {}).items())]
            for name, c in meta["corpora"].items() if name in _corpora_used(w["runs"])]
    b.append(("p", f"Data: real text built offline from package registries (`mixlaw corpora "
              f"build`), tokenizer `{meta.get('vocab_name')}` ({meta.get('vocab_size')} "
              f"pieces), sequences of {meta.get('seq_len')} tokens, documents packed, never "
              f"truncated. Validation: a fixed held-out set per corpus."))
    b.append(("table", tables_lib.Table("corpora", "Corpora", [
        "corpus", "documents", "tokens", "MB", "bytes/token", "languages"], rows)))
  return b


def section_evidence(w, t) -> list[tuple]:
  fits = w["fits"]
  opt, sizes = fits["options"], _sizes(fits)
  b = [("h", 2, "Evidence"), ("table", tables_lib.Table("base", "Base models (before CPT)", [
      "size", "general loss L_gen(S)", "domain loss L_dom(S)"],
      [[s["size"], _fmt(s["base_general_loss"]), _fmt(s["base_domain_loss"])]
       for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0)])), ("table", t["sizes"])]
  ratios = sorted({f["ratio"] for f in fits["final"]})
  rows = []
  for s in sizes:
    row = [s]
    for r in ratios:
      f = _by(fits["final"], size=s, ratio=r)
      row.append(f"{_fmt(f[0]['dL_general_smooth'], 3)} ± {_fmt(f[0]['dL_general_smooth_se'], 3)}"
                 f" / {_fmt(f[0]['dL_domain_smooth'], 3)}" if f else "–")
    rows.append(row)
  b.append(("table", tables_lib.Table(
      "final", "Loss change at T_max (smoothed)", ["size"] + [f"R={r:.3g}: ΔL gen ± se / ΔL dom"
                                                          for r in ratios], rows,
      f"mean of the last {opt['smooth_k']} evals per run, averaged over seeds")))
  b.append(("img", "curves", "Loss change against CPT tokens for every size and ratio, with "
            f"Eq. 6 fits, the fit's {ci_label(fits)} band and the eval noise."))
  b.append(("img", "trajectories", "(paper Fig. 1) ΔL general against ΔL domain along CPT; "
            "dashed: eps."))
  b += [("table", t[k]) for k in ("quality", "flags", "ratio_law", "heldout")]
  b.append(("img", "ratio_law", "(paper Fig. 3) validation losses at T_max against R with the "
            "fitted ratio law."))
  b += [("table", t["feasibility"]), ("table", t["cmr_law"])]
  return b


def section_surface(w, t) -> list[tuple]:
  return ([("h", 3, "Across sizes: the ratio-size-steps surface")]
          + [("table", t[k]) for k in ("surface", "loso") if k in t]
          + [("img", "surface", "ΔL general over (R, T) per size with the boundary ΔL general = "
              "eps (cyan) and the per-size CMR (white).")])


def section_reproduce(w, t) -> list[tuple]:
  opt = w["fits"]["options"]
  src = opt.get("source") or {}
  given = [f"{name}: {', '.join(k for k, v in src.items() if v == key) or 'none'}"
           for key, name in _SOURCES.items() if key != "argument" or key in src.values()]
  return [("h", 2, "Reproduce"),
          ("ul", [f"`mixlaw fit --workdir {w['workdir']}` recomputes fits.json with the "
                  f"experiment's settings (settings from {'; '.join(given)}; seed "
                  f"{opt['seed']}, {opt['n_boot']} replicates);",
                  f"`mixlaw report --workdir {w['workdir']}` rewrites this report;",
                  "each run's operative gin config, seed and package versions are in "
                  f"{workdir_lib.RUNS}/RUN_ID/{workdir_lib.RUN_CONFIG} and "
                  f"{workdir_lib.RUN_INFO}."])]


SECTIONS = [section_intro, section_answer, section_decisions, section_limits, section_trained,
            section_evidence, section_surface, section_reproduce]


def _blocks(w) -> list[tuple]:
  """The report as blocks, section by section."""
  t = {x.key: x for x in tables_lib.fit_tables(w["fits"])}
  return [blk for section in SECTIONS for blk in section(w, t)]


# ---------------------------------------------------------------------------------- rendering
def _number(blocks, figures):
  """Figures that exist, numbered in reading order."""
  out, n = [], 0
  for blk in blocks:
    if blk[0] == "img":
      if blk[1] not in figures:
        continue
      n += 1
      blk = ("img", blk[1], f"Figure {n}. {blk[2]}")
    out.append(blk)
  return out


def _md_table(t) -> str:
  cell = lambda c: str(c).replace("|", "\\|")  # a bar inside a cell would split it.
  out = [f"**{t.title}**", "", "| " + " | ".join(map(cell, t.header)) + " |",
         "|" + "---|" * len(t.header)]
  out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in t.rows]
  if not t.rows:
    out.append("| " + " | ".join(["(none)"] + [""] * (len(t.header) - 1)) + " |")
  if t.note:
    out += ["", f"*{t.note}*"]
  return "\n".join(out)


def _md(blocks) -> str:
  out = []
  for blk in blocks:
    if blk[0] == "h":
      out.append("#" * blk[1] + " " + blk[2])
    elif blk[0] == "p":
      out.append(blk[1])
    elif blk[0] == "ul":
      out.append("\n".join("- " + x for x in blk[1]))
    elif blk[0] == "table":
      out.append(_md_table(blk[1]))
    elif blk[0] == "img":
      out.append(f"![{blk[2]}]({workdir_lib.FIGURES}/{blk[1]}.png)\n\n*{blk[2]}*")
  return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
  t = html.escape(text)
  t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
  return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _html(blocks, figures) -> str:
  body = []
  for blk in blocks:
    if blk[0] == "h":
      body.append(f"<h{blk[1]}>{_inline(blk[2])}</h{blk[1]}>")
    elif blk[0] == "p":
      body.append(f"<p>{_inline(blk[1])}</p>")
    elif blk[0] == "ul":
      body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in blk[1]) + "</ul>")
    elif blk[0] == "table":
      t = blk[1]
      head = "".join(f"<th>{_inline(str(h))}</th>" for h in t.header)
      rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>"
                     for r in t.rows)
      note = f"<p class='note'>{_inline(t.note)}</p>" if t.note else ""
      body.append(f"<p><b>{_inline(t.title)}</b></p><table><thead><tr>{head}</tr></thead>"
                  f"<tbody>{rows}</tbody></table>{note}")
    elif blk[0] == "img":
      with open(figures[blk[1]], "rb") as f:
        data = base64.b64encode(f.read()).decode()
      body.append(f'<figure><img alt="{html.escape(blk[1])}" src="data:image/png;base64,{data}">'
                  f"<figcaption>{_inline(blk[2])}</figcaption></figure>")
  style = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;"
           "line-height:1.45}table{border-collapse:collapse;margin:.3em 0 1em;font-size:.85em}"
           "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}"
           "img{max-width:100%}figcaption{font-style:italic;color:#444}code{background:#f3f3f3}"
           ".note{font-size:.82em;color:#555;margin-top:-.6em}")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>mixlaw report</title>"
          f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(workdir: str, fit_options: dict | None = None) -> dict:
  """Writes the figures, report.md and report.html into WORKDIR; returns their paths (and
  notes, e.g. fits.json computed with settings other than the experiment's)."""
  w = load_workdir(workdir, fit_options)
  workdir_lib.ensure_writable(workdir)
  figures = figures_lib.write_figures(w, workdir_lib.figures_dir(workdir))
  blocks = _number(_blocks(w), figures)
  paths = workdir_lib.report_paths(workdir)
  workdir_lib.atomic_write(paths["md"], _md(blocks))
  workdir_lib.atomic_write(paths["html"], _html(blocks, figures))
  return dict(paths, figures=figures, notes=w["notes"])
