"""Figures (matplotlib, PNG + SVG) and a report (report.md, self-contained report.html).

Reads WORKDIR/results.jsonl (through mixlaw.results), WORKDIR/fits.json (from `mixlaw fit`) and,
where present, the runs' run.json; every number in the report is a number of fits.json (the
tables are mixlaw.laws.tables', rendered here as Markdown and HTML) or of the results table (the
base-training curves). Answer first (CMR per size with its interval, next to the model-free
CMR), then what the data can and cannot tell (trends against the noise, design gates), then the
evidence. Figures are numbered in reading order.
"""

from __future__ import annotations

import base64
import glob
import html
import json
import os
import re

import numpy as np

from mixlaw import results
from mixlaw.errors import MixlawError
from mixlaw.laws import tables as tables_lib

FIGURES = ("cmr_size", "base_curves", "curves", "trajectories", "ratio_law", "cmr", "surface")
_fmt, _pct = tables_lib.fmt, tables_lib.pct  # one formatter for the text, Markdown and HTML.


class ReportError(MixlawError, ValueError):
  """The workdir lacks what a report needs."""


def load_workdir(workdir: str) -> dict:
  """Everything a report needs: rows, fits, run infos, corpus meta, notes on stale settings."""
  rows = results.read_rows(workdir)
  if not rows:
    raise ReportError(f"{results.table_path(workdir)} is missing or empty: run a sweep first")
  path = os.path.join(workdir, "fits.json")
  if not os.path.exists(path):
    raise ReportError(f"{path} is missing: run `mixlaw fit --workdir {workdir}` first")
  with open(path) as f:
    fits = json.load(f)
  if fits.get("schema_version") != 2:
    raise ReportError(f"{path} has schema {fits.get('schema_version')}; rerun `mixlaw fit "
                      f"--workdir {workdir}` (this report reads schema 2)")
  runs = {}
  for p in sorted(glob.glob(os.path.join(workdir, "runs", "*", "run.json"))):
    with open(p) as f:
      info = json.load(f)
    runs[info["run_id"]] = info
  meta = {}
  arrays_dir = next((i.get("arrays_dir") for i in runs.values() if i.get("arrays_dir")), None)
  if arrays_dir and os.path.exists(os.path.join(arrays_dir, "meta.json")):
    with open(os.path.join(arrays_dir, "meta.json")) as f:
      meta = json.load(f)
  return {"rows": rows, "fits": fits, "runs": runs, "meta": meta, "workdir": workdir,
          "notes": _stale(workdir, fits)}


def _stale(workdir, fits) -> list[str]:
  """Settings in WORKDIR/sweep.json's fit_options that fits.json was not computed with."""
  from mixlaw.laws import api  # the laws own sweep.json's fit_options.
  want, have = api.read_fit_options(workdir), fits["options"]
  diff = [k for k, v in want.items() if k in have and have.get(f"{k}_option", have[k]) != v]
  return [f"fits.json was computed with {', '.join(f'{k}={have[k]!r}' for k in diff)} but the "
          f"experiment's sweep.json asks for {', '.join(f'{k}={want[k]!r}' for k in diff)}: "
          f"rerun `mixlaw fit --workdir {workdir}`"] if diff else []


def _by(items, **match):
  return [x for x in items if all(x.get(k) == v for k, v in match.items())]


def _shades(n, cmap):
  import matplotlib
  cm = matplotlib.colormaps[cmap]
  return [cm(0.35 + 0.6 * i / max(n - 1, 1)) for i in range(n)]


def _sizes(fits):
  return [s["size"] for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0)]


def _arr(v):
  return np.array([np.nan if x is None else x for x in v], float)


def _save(fig, out_dir, name) -> str:
  import matplotlib.pyplot as plt
  path = os.path.join(out_dir, f"{name}.png")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  fig.savefig(os.path.join(out_dir, f"{name}.svg"), bbox_inches="tight")
  plt.close(fig)
  return path


# ------------------------------------------------------------------------------------ figures

def fig_cmr_size(w, out_dir):
  """CMR at T_max against model size: fitted (with interval), condition A only, model-free;
  censored values drawn as arrows at the edge of the trained ratios."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = sorted(fits["sizes"], key=lambda s: s["N"] or 0)
  fig, ax = plt.subplots(figsize=(6.5, 4))
  x = np.arange(len(sizes))
  for off, key, label, style in ((-0.12, "fit", "fitted CMR (Definition 2)", "o"),
                                 (0.12, "free", "model-free CMR (condition A)", "s")):
    for i, s in enumerate(sizes):
      c = _by(fits["cmr"], size=s["size"])[0]
      v = c if key == "fit" else c["model_free"]
      lo, hi = v.get("lo"), v.get("hi")
      kw = dict(color="C0" if key == "fit" else "C2", label=label if i == 0 else None)
      if v["censored"] == "below":
        ax.plot(x[i] + off, min(s["ratios"]), "v", mfc="none", ms=9, **kw)
      elif v["censored"] == "above":
        ax.plot(x[i] + off, v["cmr"], "^", mfc="none", ms=9, **kw)
      else:
        ax.plot(x[i] + off, v["cmr"], style, ms=7, **kw)
      if lo is not None or hi is not None:
        lo = min(s["ratios"]) if lo is None else lo
        ax.plot([x[i] + off] * 2, [lo, hi], "-", lw=2, color=kw["color"], alpha=0.6)
  ax.set_xticks(x, [f"{s['size']}\n{s['N']:.3g}" for s in sizes])
  ax.set_xlabel("model size (N: non-embedding parameters)")
  ax.set_ylabel("critical mixture ratio at T_max")
  ax.set_ylim(0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best", title="bars: 95% intervals; open ▲▼: censored",
            title_fontsize=7)
  ax.set_title("CMR against model size")
  return _save(fig, out_dir, "cmr_size")


def fig_base_curves(w, out_dir):
  """Base pretraining: validation losses against tokens, per size (from the results table)."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = _sizes(fits)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for color, size in zip(_shades(len(sizes), "plasma"), sizes):
    rows = sorted((r for r in w["rows"] if r["phase"] == "base" and r["split"] == "validation"
                   and r["size_name"] == size), key=lambda r: r["step"])
    if not rows:
      continue
    tok = np.array([r["tokens_seen"] for r in rows], float) / 1e6
    for ax, key in zip(axes, ("general_loss", "domain_loss")):
      ax.plot(tok, [r[key] for r in rows], ".-", color=color, label=size, ms=4)
  for ax, which in zip(axes, ("general", "domain")):
    ax.set_xlabel("base training tokens (millions)")
    ax.set_ylabel(f"{which} validation loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Base models during pretraining (general data only)", y=1.02)
  return _save(fig, out_dir, "base_curves")


def fig_curves(w, out_dir):
  """Loss change against CPT tokens for every size and ratio: evals (one marker per seed),
  Eq. 6 fits (dashed: flagged), the 95% bootstrap band of the fit and a +-2 sigma band of the
  measured eval noise around it."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = _sizes(fits)
  unit = fits["options"]["tokens_per_unit"]
  fig, axes = plt.subplots(len(sizes), 2, figsize=(10.5, 3.3 * len(sizes)), squeeze=False)
  for row, size in zip(axes, sizes):
    for ax, which in zip(row, ("general", "domain")):
      cs = sorted(_by(fits["curves"], size=size, which=which), key=lambda c: c["ratio"])
      for color, c in zip(_shades(len(cs), "viridis"), cs):
        t = np.asarray(c["T"]) * unit / 1e6
        runs = np.asarray(c["run_index"])
        for k in np.unique(runs):
          ax.plot(t[runs == k], np.asarray(c["dL"])[runs == k], "ox^sdv"[k % 6], ms=2.5,
                  color=color, alpha=0.7)
        tg, fit = np.asarray(c["T_grid"]) * unit / 1e6, _arr(c["dL_fit"])
        sig = c["sigma"] or 0.0
        ax.fill_between(tg, fit - 2 * sig, fit + 2 * sig, color=color, alpha=0.08, lw=0)
        if c.get("band_lo"):
          ax.plot(tg, _arr(c["band_lo"]), ":", color=color, lw=0.8)
          ax.plot(tg, _arr(c["band_hi"]), ":", color=color, lw=0.8)
        flagged = ", flagged" if c["flags"] else ""
        ax.plot(tg, fit, "--" if c["flags"] else "-", lw=1.2, color=color,
                label=f"R={c['ratio']:.3g} (R²={_fmt(c['r2'], 2)}{flagged})")
      if which == "general":
        ax.axhline(fits["options"]["eps"], color="crimson", ls="--", lw=1, label="eps")
      ax.set_xlabel("CPT tokens (millions)")
      ax.set_ylabel(f"ΔL {which} (nats)")
      ax.set_title(f"{size}: {which} loss change", fontsize=9)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=6, loc="best")
  fig.suptitle("Eq. 6 fits; shaded: fit ± 2σ eval noise; dotted: 95% band of the fit; "
               "dashed fit: flagged", y=1.0, fontsize=9)
  fig.tight_layout()
  return _save(fig, out_dir, "curves")


def fig_trajectories(w, out_dir):
  """Paper Fig. 1: dGeneral against dDomain along CPT, per size, one shade per R, eps line."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = _sizes(fits)
  eps = fits["options"]["eps"]
  fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
  for ax, size in zip(axes[0], sizes):
    gen = {c["ratio"]: c for c in _by(fits["curves"], size=size, which="general")}
    dom = {c["ratio"]: c for c in _by(fits["curves"], size=size, which="domain")}
    for color, r in zip(_shades(len(gen), "viridis"), sorted(gen)):
      run = np.asarray(gen[r]["run_index"]) == 0  # the first seed's trajectory.
      ax.plot(np.r_[0, np.asarray(dom[r]["dL"])[run]], np.r_[0, np.asarray(gen[r]["dL"])[run]],
              ".-", ms=3, lw=1, color=color, label=f"R={r:.3g}")
    ax.axhline(eps, color="crimson", ls="--", lw=1, label=f"eps={eps}")
    ax.set_title(size)
    ax.set_xlabel("ΔL domain (nats)")
    ax.set_ylabel("ΔL general (nats)")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="best")
  fig.suptitle("General vs domain loss change during CPT (first seed; from (0, 0), T grows "
               "along each line)", y=1.04)
  return _save(fig, out_dir, "trajectories")


def fig_ratio_law(w, out_dir):
  """Paper Fig. 3: validation losses at T_max against R with the fitted ratio law."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = _sizes(fits)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, which in zip(axes, ("general", "domain")):
    for color, size in zip(_shades(len(sizes), "plasma"), sizes):
      law = _by(fits["ratio_law"], size=size, which=which)
      if law:
        law = law[0]
        ax.plot(law["ratios"], law["measured"], "o", color=color, label=f"{size} measured")
        ax.plot(law["R_grid"], law["L_fit"], "-", color=color, lw=1,
                label=f"{size} fit (R²={_fmt(law['r2'], 3)})")
      else:
        pts = sorted((f["ratio"], f[f"{which}_loss"]) for f in _by(fits["final"], size=size))
        ax.plot(*zip(*pts), "o", color=color, label=f"{size} measured")
    ax.set_xlabel("domain share R of CPT tokens")
    ax.set_ylabel(f"{which} validation loss at T_max (nats)")
    ax.set_title(f"{which} loss vs R:  L(R) = a R^s + b")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return _save(fig, out_dir, "ratio_law")


def fig_cmr(w, out_dir):
  """Paper Fig. 5: the CMR against CPT tokens per size, with its interval and the CMR law;
  censored budgets drawn as open triangles at the edge of the trained ratios."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  unit = fits["options"]["tokens_per_unit"]
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for color, size in zip(_shades(len(_sizes(fits)), "plasma"), _sizes(fits)):
    ser = _by(fits["cmr_series"], size=size)[0]
    s = _by(fits["sizes"], size=size)[0]
    t = np.asarray(ser["T"], float) * unit / 1e6
    y, cens = _arr(ser["cmr"]), np.array([c or "" for c in ser["censored"]])
    ok = cens == ""
    ax.plot(t[ok], y[ok], "o", ms=3, color=color, label=f"{size} CMR")
    if (cens == "above").any():
      ax.plot(t[cens == "above"], y[cens == "above"], "^", mfc="none", ms=5, color=color,
              label=f"{size}: >= largest R")
    if (cens == "below").any():
      ax.plot(t[cens == "below"], np.full((cens == "below").sum(), min(s["ratios"])), "v",
              mfc="none", ms=5, color=color, label=f"{size}: < smallest R")
    if ser.get("lo"):
      lo, hi = _arr(ser["lo"]), _arr(ser["hi"])
      ax.fill_between(t, np.where(np.isfinite(lo), lo, 0), hi, color=color, alpha=0.15, lw=0)
    law = _by(fits["cmr_law"], size=size)[0]
    if law.get("params"):
      ax.plot(np.asarray(law["T_grid"]) * unit / 1e6, law["R_fit"], "-", color=color, lw=1,
              label=f"{size} law a T^s + b")
  ax.set_xlabel("CPT tokens (millions)")
  ax.set_ylabel("critical mixture ratio R_CMR")
  ax.set_ylim(0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title("CMR against CPT budget (band: 95% bootstrap interval)")
  return _save(fig, out_dir, "cmr")


def fig_surface(w, out_dir):
  """The fitted ratio-size-steps surface: dL_gen over (R, T) per size, feasible boundary."""
  import matplotlib.pyplot as plt
  from mixlaw.laws import forms
  fits = w["fits"]
  surf = fits.get("surface") or {}
  eps = fits["options"]["eps"]
  unit = fits["options"]["tokens_per_unit"]
  sizes = sorted(fits["sizes"], key=lambda s: s["N"] or 0)
  fig, axes = plt.subplots(1, len(sizes), figsize=(5.4 * len(sizes), 3.8), squeeze=False,
                           layout="constrained")
  for ax, s in zip(axes[0], sizes):
    r = np.linspace(min(s["ratios"]), max(s["ratios"]), 60)
    t = np.linspace(s["T_min"], s["T_max"], 60)
    R, T = np.meshgrid(r, t)
    if surf.get("general"):
      z = forms.evaluate(surf["general"]["form"], surf["general"]["params"], R=R,
                         N=np.full_like(R, s["N"]), T=T)
      title = f"{s['size']}: surface ΔL general"
    else:  # No surface (one size): interpolate the per-ratio Eq. 6 fits instead.
      z = np.stack([np.interp(r, *zip(*sorted(
          (c["ratio"], float(forms.evaluate(c["form"], c["params"], T=tt)))
          for c in _by(fits["curves"], size=s["size"], which="general")))) for tt in t])
      title = f"{s['size']}: ΔL general (Eq. 6, interpolated)"
    im = ax.pcolormesh(r, t * unit / 1e6, z, shading="auto", cmap="magma")
    ax.contour(r, t * unit / 1e6, z, levels=[eps], colors="cyan", linewidths=1.2)
    ser = _by(fits["cmr_series"], size=s["size"])[0]
    ax.plot(_arr(ser["cmr"]), np.asarray(ser["T"], float) * unit / 1e6, "w.", ms=3,
            label="CMR (per-size fits)")
    fig.colorbar(im, ax=ax, label="ΔL general (nats)")
    ax.set_xlabel("domain share R")
    ax.set_ylabel("CPT tokens (millions)")
    ax.set_title(title, fontsize=9)
  axes[0][0].legend(fontsize=7, loc="upper right")
  fig.suptitle(f"General-loss rise over (R, T); cyan: ΔL general = eps = {eps}", y=1.04)
  return _save(fig, out_dir, "surface")


# ------------------------------------------------------------------------------------ text

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
  rows = []
  for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0):
    size = s["size"]
    base = runs.get(f"base_{size}", {})
    cpts = [i for k, i in runs.items() if k.startswith(f"cpt_{size}_")]
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
      "CPT runs x tokens", "train min"], rows, "from runs/RUN_ID/run.json; train min: wall time "
      "of the base run and the CPT runs, an ensemble's counted once" if runs else
      "runs/ not present: model shapes unknown")


def _blocks(w) -> list[tuple]:
  """The report as blocks: ('h', level, text) | ('p', text) | ('ul', items) | ('table', Table)
  | ('img', name, caption). Rendered to Markdown and HTML by the same content."""
  fits, runs, meta = w["fits"], w["runs"], w["meta"]
  opt = fits["options"]
  t = {x.key: x for x in tables_lib.fit_tables(fits)}
  sizes = _sizes(fits)
  domain = opt.get("domain") or "domain"
  b = [("h", 1, f"mixlaw report: critical mixture ratio for {domain} CPT")]
  b.append(("p", f"Workdir `{w['workdir']}`. Continual pre-training (CPT) mixes general data "
            f"with {domain} data; R is the {domain} share of CPT tokens. The critical mixture "
            f"ratio (CMR) is the largest R whose general validation loss stays within eps = "
            f"{opt['eps']} nats of the base model's (condition A) once the general-loss rise "
            f"has been outpaced by the domain gain (the critical point of Definition 2, lambda "
            f"= {opt['lam']:g}; Gu et al. 2024). The fits use the unit {opt['t_unit']}."))
  for note in w["notes"]:
    b.append(("p", f"**Note:** {note}"))
  b.append(("h", 2, "The answer: CMR per model size"))
  b.append(("table", t["cmr"]))
  cmr = fits["cmr"]
  a_only = [c["size"] for c in cmr if c["condition_A_decides"]]
  lam_matters = [c["size"] for c in cmr if c["lam_decides"]]
  disagree = [c["size"] for c in cmr if c["model_free"]["disagrees"]]
  b.append(("ul", [
      f"Condition A alone decides the CMR for: {', '.join(a_only) or 'no size'}; there the "
      f"critical-point condition and lambda do not matter.",
      f"Lambda changes the CMR (lambda in {opt['lam_range']}) for: "
      f"{', '.join(lam_matters) or 'no size'} (table below).",
      f"Model-free and fitted (condition A) CMRs disagree beyond their uncertainty for: "
      f"{', '.join(disagree) or 'no size'}.",
      "Interpolation between trained ratios is linear in u = R^e with e from the ratio law at "
      "T_max (column e gen / dom); e = 1 means linear in R.",
      f"Intervals: {opt['bootstrap']}. They cover CPT reruns (data order, eval noise) of the "
      "same base models; the base models' own seed variation is not sampled (one base run per "
      "size)."]))
  b.append(("img", "cmr_size", "CMR at T_max against model size, fitted (Definition 2) and "
            "model-free (condition A, smoothed evals), with 95% intervals; open triangles are "
            "censored at the edge of the trained ratios."))
  b.append(("table", t["lam"]))
  b.append(("h", 2, "What this sweep can and cannot show"))
  b.append(("p", "Each trend is judged at T_max on smoothed values (mean of the last "
            f"{opt['smooth_k']} evals) against its noise: holds / fails / undecided at z = 2 "
            "standard errors (checks.py)."))
  b.append(("table", t["trends"]))
  b.append(("h", 3, "Gates / design checks"))
  b.append(("p", "What a powered experiment needs, measured on this table (thresholds are the "
            "fit options gate_*; docs/laws.md)."))
  b.append(("table", t["gates"]))
  b.append(("table", t["gates_sizes"]))
  b.append(("h", 2, "What was trained"))
  b.append(("table", _trained(w)))
  b.append(("img", "base_curves", "Base pretraining: general and domain validation loss "
            "against tokens per size."))
  if meta.get("corpora"):
    rows = [[name, _fmt(sum(c["docs"].values())), _fmt(sum(c["tokens"].values())),
             f"{sum(c['bytes'].values()) / 1e6:.2f}", _fmt(c.get("bytes_per_token"), 3),
             ", ".join(f"{k} {100 * v:.0f}%" for k, v in (c.get("language_shares") or {}).items())]
            for name, c in meta["corpora"].items() if name in _corpora_used(runs)]
    b.append(("p", f"Data: real text built offline from package registries (`mixlaw corpora "
              f"build`), tokenizer `{meta.get('vocab_name')}` ({meta.get('vocab_size')} "
              f"pieces), sequences of {meta.get('seq_len')} tokens, documents packed, never "
              f"truncated. Validation: a fixed held-out set per corpus."))
    b.append(("table", tables_lib.Table("corpora", "Corpora", [
        "corpus", "documents", "tokens", "MB", "bytes/token", "languages"], rows)))
  b.append(("h", 2, "Evidence"))
  b.append(("table", tables_lib.Table("base", "Base models (before CPT)", [
      "size", "general loss L_gen(S)", "domain loss L_dom(S)"],
      [[s["size"], _fmt(s["base_general_loss"]), _fmt(s["base_domain_loss"])]
       for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0)])))
  b.append(("table", t["sizes"]))
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
            "Eq. 6 fits, the fit's 95% band and the eval noise."))
  b.append(("img", "trajectories", "(paper Fig. 1) ΔL general against ΔL domain along CPT; "
            "dashed: eps."))
  b.append(("table", t["quality"]))
  b.append(("table", t["flags"]))
  b.append(("table", t["ratio_law"]))
  b.append(("table", t["heldout"]))
  b.append(("img", "ratio_law", "(paper Fig. 3) validation losses at T_max against R with the "
            "fitted ratio law."))
  b.append(("table", t["feasibility"]))
  b.append(("table", t["cmr_law"]))
  b.append(("img", "cmr", "(paper Fig. 5) CMR against CPT tokens per size, with its interval "
            "and the CMR law; open triangles: censored."))
  b.append(("h", 3, "Across sizes: the ratio-size-steps surface"))
  b += [("table", t[k]) for k in ("surface", "loso") if k in t]
  b.append(("img", "surface", "ΔL general over (R, T) per size with the boundary ΔL general = "
            "eps (cyan) and the per-size CMR (white)."))
  src = opt.get("source") or {}
  b.append(("h", 2, "Reproduce"))
  b.append(("ul", [f"`mixlaw fit --workdir {w['workdir']}` recomputes fits.json with the "
                   f"experiment's settings (sweep.json fit_options: "
                   f"{', '.join(k for k, v in src.items() if v == 'sweep.json') or 'none'}; "
                   f"given as arguments: "
                   f"{', '.join(k for k, v in src.items() if v == 'argument') or 'none'}; seed "
                   f"{opt['seed']}, {opt['n_boot']} replicates);",
                   f"`mixlaw report --workdir {w['workdir']}` rewrites this report;",
                   "each run's operative gin config, seed and package versions are in "
                   "runs/RUN_ID/config.gin and run.json."]))
  return b


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
      out.append(f"![{blk[2]}](figures/{blk[1]}.png)\n\n*{blk[2]}*")
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


FIGURE_FNS = {"cmr_size": fig_cmr_size, "base_curves": fig_base_curves, "curves": fig_curves,
              "trajectories": fig_trajectories, "ratio_law": fig_ratio_law, "cmr": fig_cmr,
              "surface": fig_surface}


def write_report(workdir: str) -> dict:
  """Writes WORKDIR/figures/*.{png,svg}, report.md and report.html; returns their paths (and
  notes, e.g. fits.json computed with settings other than the experiment's)."""
  import matplotlib
  matplotlib.use("Agg")
  w = load_workdir(workdir)
  out_dir = os.path.join(workdir, "figures")
  os.makedirs(out_dir, exist_ok=True)
  figures = {name: FIGURE_FNS[name](w, out_dir) for name in FIGURES}
  blocks = _number(_blocks(w), figures)
  paths = {"md": os.path.join(workdir, "report.md"), "html": os.path.join(workdir, "report.html")}
  with open(paths["md"], "w") as f:
    f.write(_md(blocks))
  with open(paths["html"], "w") as f:
    f.write(_html(blocks, figures))
  paths["figures"] = figures
  paths["notes"] = w["notes"]
  return paths
