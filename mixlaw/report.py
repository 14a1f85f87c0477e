"""Figures (matplotlib, PNG + SVG) and a report (report.md, self-contained report.html).

Reads WORKDIR/results.jsonl, WORKDIR/fits.json (from `mixlaw fit`) and the runs' run.json; the
numbers in the report are the numbers in fits.json. Answer first (CMR per size with interval),
then the evidence: tables in the spirit of the paper's Tables 2, 3, 5 and Figures 1, 3, 4, 5.
"""

from __future__ import annotations

import base64
import glob
import html
import json
import math
import os
import re

import numpy as np

from mixlaw import results

FIGURES = ("trajectories", "ratio_law", "curves", "cmr", "surface")


class ReportError(ValueError):
  """The workdir lacks what a report needs."""


def _fmt(x, digits=4):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  if isinstance(x, (int, np.integer)):
    return f"{int(x):,}"
  ax = abs(x)
  if ax != 0 and (ax < 1e-3 or ax >= 1e5):
    return f"{x:.{max(digits - 1, 1)}e}"
  return f"{x:.{digits}f}"


def _table(header, rows) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(out)


def _pct(x):
  return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def load_workdir(workdir: str) -> dict:
  """Everything a report needs: rows, fits, run infos, corpus meta."""
  rows = results.read_rows(workdir)
  if not rows:
    raise ReportError(f"{results.table_path(workdir)} is missing or empty: run a sweep first")
  path = os.path.join(workdir, "fits.json")
  if not os.path.exists(path):
    raise ReportError(f"{path} is missing: run `mixlaw fit --workdir {workdir}` first")
  with open(path) as f:
    fits = json.load(f)
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
  return {"rows": rows, "fits": fits, "runs": runs, "meta": meta, "workdir": workdir}


def _by(items, **match):
  return [x for x in items if all(x.get(k) == v for k, v in match.items())]


def _shades(n, cmap):
  import matplotlib
  cm = matplotlib.colormaps[cmap]
  return [cm(0.35 + 0.6 * i / max(n - 1, 1)) for i in range(n)]


def _size_order(fits):
  return [s["size"] for s in sorted(fits["sizes"], key=lambda s: s["N"] or 0)]


def _save(fig, out_dir, name) -> str:
  path = os.path.join(out_dir, f"{name}.png")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  fig.savefig(os.path.join(out_dir, f"{name}.svg"), bbox_inches="tight")
  import matplotlib.pyplot as plt
  plt.close(fig)
  return path


def fig_trajectories(w, out_dir):
  """Paper Fig. 1: dGeneral against dDomain along CPT, per size, one shade per R, eps line."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = _size_order(fits)
  eps = fits["options"]["eps"]
  fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
  for ax, size in zip(axes[0], sizes):
    gen = {c["ratio"]: c for c in _by(fits["curves"], size=size, which="general")}
    dom = {c["ratio"]: c for c in _by(fits["curves"], size=size, which="domain")}
    ratios = sorted(gen)
    for color, r in zip(_shades(len(ratios), "viridis"), ratios):
      ax.plot([0] + dom[r]["dL"], [0] + gen[r]["dL"], ".-", ms=3, lw=1, color=color,
              label=f"R={r:.3g}")
    ax.axhline(eps, color="crimson", ls="--", lw=1, label=f"eps={eps}")
    ax.set_title(size)
    ax.set_xlabel("ΔL domain (nats, validation)")
    ax.set_ylabel("ΔL general (nats, validation)")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="best")
  fig.suptitle("General vs domain loss change during CPT (start at 0,0; T grows along each line)",
               y=1.04)
  return _save(fig, out_dir, "trajectories")


def fig_ratio_law(w, out_dir):
  """Paper Fig. 3: validation losses at T_max against R with the fitted ratio law."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  sizes = _size_order(fits)
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


def fig_curves(w, out_dir, size=None):
  """Paper Fig. 4: general and domain loss change against CPT tokens for one size, with fits."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  size = size or _size_order(fits)[-1]
  unit = fits["options"]["tokens_per_unit"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, which in zip(axes, ("general", "domain")):
    cs = sorted(_by(fits["curves"], size=size, which=which), key=lambda c: c["ratio"])
    for color, c in zip(_shades(len(cs), "viridis"), cs):
      ax.plot(np.asarray(c["T"]) * unit / 1e6, c["dL"], ".", ms=3, color=color)
      ax.plot(np.asarray(c["T_grid"]) * unit / 1e6, c["dL_fit"], "-", lw=1, color=color,
              label=f"R={c['ratio']:.3g} (R²={_fmt(c['r2'], 3)})")
    if which == "general":
      ax.axhline(fits["options"]["eps"], color="crimson", ls="--", lw=1, label="eps")
    ax.set_xlabel("CPT tokens (millions)")
    ax.set_ylabel(f"ΔL {which} (nats, validation)")
    ax.set_title(f"{size}: {which} loss change, Eq. 6 fits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return _save(fig, out_dir, "curves")


def fig_cmr(w, out_dir):
  """Paper Fig. 5: the CMR against CPT tokens per size, with the CMR law and its interval."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  unit = fits["options"]["tokens_per_unit"]
  sizes = _size_order(fits)
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for color, size in zip(_shades(len(sizes), "plasma"), sizes):
    ser = _by(fits["cmr_series"], size=size)[0]
    t = np.asarray(ser["T"], float) * unit / 1e6
    y = np.array([np.nan if v is None else v for v in ser["cmr"]], float)
    ax.plot(t, y, "o", ms=3, color=color, label=f"{size} CMR")
    if ser.get("lo"):
      lo = np.array([np.nan if v is None else v for v in ser["lo"]], float)
      hi = np.array([np.nan if v is None else v for v in ser["hi"]], float)
      ax.fill_between(t, lo, hi, color=color, alpha=0.15, lw=0)
    law = _by(fits["cmr_law"], size=size)[0]
    if law.get("params"):
      ax.plot(np.asarray(law["T_grid"]) * unit / 1e6, law["R_fit"], "-", color=color, lw=1,
              label=f"{size} law a T^s + b")
  ax.set_xlabel("CPT tokens (millions)")
  ax.set_ylabel("critical mixture ratio R_CMR")
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title("CMR against CPT budget (band: bootstrap interval)")
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
    cm = np.array([np.nan if v is None else v for v in ser["cmr"]], float)
    ax.plot(cm, np.asarray(ser["T"], float) * unit / 1e6, "w.", ms=3, label="CMR (per-size fits)")
    fig.colorbar(im, ax=ax, label="ΔL general (nats)")
    ax.set_xlabel("domain share R")
    ax.set_ylabel("CPT tokens (millions)")
    ax.set_title(title, fontsize=9)
  axes[0][0].legend(fontsize=7, loc="upper right")
  fig.suptitle(f"General-loss rise over (R, T); cyan: ΔL general = eps = {eps}", y=1.04)
  return _save(fig, out_dir, "surface")


def trends(fits) -> list[tuple[str, bool | None, str]]:
  """The paper's qualitative trends, checked on this sweep: (statement, holds?, evidence)."""
  out = []
  sizes = _size_order(fits)
  dom_t = []
  for c in _by(fits["curves"], which="domain"):
    d = np.asarray(c["dL"], float)
    dom_t.append(len(d) > 1 and d[-1] < d[len(d) // 2] < 0 if len(d) > 2 else d[-1] < 0)
  out.append(("Domain loss falls with T for every R", all(dom_t),
              f"{sum(dom_t)}/{len(dom_t)} curves lower at T_max than at half of it, and below base"))
  mono_dom, mono_gen, ev_d, ev_g = [], [], [], []
  for size in sizes:
    f = sorted(_by(fits["final"], size=size), key=lambda x: x["ratio"])
    dd = [x["dL_domain"] for x in f]
    dg = [max(_by(fits["curves"], size=size, which="general", ratio=x["ratio"])[0]["dL"])
          for x in f]
    mono_dom.append(all(b <= a + 1e-9 for a, b in zip(dd, dd[1:])))
    mono_gen.append(all(b >= a - 1e-9 for a, b in zip(dg, dg[1:])))
    ev_d.append(f"{size}: " + ", ".join(_fmt(x, 3) for x in dd))
    ev_g.append(f"{size}: " + ", ".join(_fmt(x, 3) for x in dg))
  out.append(("Domain loss at T_max falls with R", all(mono_dom),
              "ΔL domain by increasing R — " + "; ".join(ev_d)))
  out.append(("The general-loss rise grows with R", all(mono_gen),
              "max ΔL general by increasing R — " + "; ".join(ev_g)))
  cmr = [(_by(fits["sizes"], size=s)[0]["N"], _by(fits["cmr"], size=s)[0]["cmr"]) for s in sizes]
  censored = any(_by(fits["cmr"], size=s)[0]["censored"] for s in sizes)
  vals = [c for _, c in cmr if c is not None]
  holds = (None if len(vals) < 2 or censored else
           all(b >= a - 1e-9 for a, b in zip(vals, vals[1:])))
  out.append(("The CMR grows with model size", holds,
              ", ".join(f"{s}: {_pct(c)}" for s, (_, c) in zip(sizes, cmr))))
  grow = []
  for size in sizes:
    ser = _by(fits["cmr_series"], size=size)[0]
    y = [v for v in ser["cmr"] if v is not None]
    grow.append((size, y[0] if y else None, y[-1] if y else None))
  ok = [b >= a - 1e-9 for _, a, b in grow if a is not None]
  flat = all(a == b for _, a, b in grow)  # Censored at the edge throughout: nothing to see.
  out.append(("The CMR grows with the CPT budget T", all(ok) if ok and not flat else None,
              ", ".join(f"{s}: {_pct(a)} -> {_pct(b)}" for s, a, b in grow)))
  return out


def _corpora_used(runs) -> set:
  used = set()
  for info in runs.values():
    cfg = info.get("data") or {}
    used.update(c for c in (cfg.get("general"), cfg.get("domain")) if c)
  return used or {"general", "finance", "science"}


def _blocks(w, figures) -> list[tuple]:
  """The report as blocks: ('h', level, text) | ('p', text) | ('ul', items) | ('table', header,
  rows) | ('img', name, caption). Rendered to Markdown and HTML by the same content."""
  fits, runs, meta = w["fits"], w["runs"], w["meta"]
  opt = fits["options"]
  unit = opt["tokens_per_unit"]
  sizes = _size_order(fits)
  size_info = {s["size"]: s for s in fits["sizes"]}
  domain = opt.get("domain") or "domain"
  b = [("h", 1, f"mixlaw report: critical mixture ratio for {domain} CPT")]
  b.append(("p", f"Workdir `{w['workdir']}`. Continual pre-training (CPT) mixes general data "
            f"with {domain} data; R is the {domain} share of CPT tokens. The critical mixture "
            f"ratio (CMR) is the largest R whose general validation loss stays within eps = "
            f"{opt['eps']} nats of the base model's while the domain loss keeps falling "
            f"(Gu et al. 2024; lambda = {opt['lam']:g}). T is measured in CPT tokens; the fits "
            f"use the unit {opt['t_unit']}."))
  b.append(("h", 2, "The answer: CMR per model size"))
  rows = []
  for size in sizes:
    c = _by(fits["cmr"], size=size)[0]
    n_nonemb = int(size_info[size]["n_params_nonemb"] or 0)
    law = _by(fits["cmr_law"], size=size)[0]
    feas = [f"{x['ratio']:.3g}" for x in _by(fits["feasibility"], size=size) if x["feasible"]]
    cens = {"above": " (all trained R feasible: CMR >= largest R)",
            "below": " (no R feasible: CMR < smallest R)"}.get(c["censored"], "")
    rows.append([size, _fmt(n_nonemb),
                 f"{c['T_max'] * unit / 1e6:.2f}M", _pct(c["cmr"]) + cens,
                 f"[{_pct(c['lo'])}, {_pct(c['hi'])}]" if c.get("lo") is not None else "–",
                 _pct(law.get("cmr_at_T_max")) if law.get("params") else "–",
                 ", ".join(feas) or "none"])
  b.append(("table", ["size", "non-emb. params", "CPT tokens", "CMR at T_max",
                      f"{int(100 * opt.get('ci_level', 0.9))}% bootstrap interval",
                      "CMR law at T_max", "feasible trained R"], rows))
  b.append(("p", f"Method: {opt['cmr_method']}. Intervals: {opt['bootstrap']} "
            f"({opt['n_boot']} replicates)."))
  b.append(("h", 2, "Which of the paper's trends hold at this scale"))
  b.append(("table", ["trend", "holds here", "evidence"],
            [[t, {True: "yes", False: "**no**", None: "undetermined"}[h], ev]
             for t, h, ev in trends(fits)]))
  b.append(("h", 2, "What was trained"))
  rows = []
  for size in sizes:
    base = runs.get(f"base_{size}", {})
    cpts = [i for k, i in runs.items() if k.startswith(f"cpt_{size}_")]
    m = base.get("model", {})
    tok = base.get("steps", 0) * base.get("batch_size", 0) * base.get("seq_len", 0)
    n = size_info[size]["n_params_nonemb"] or 0
    rows.append([size, m.get("d_model", "–"), m.get("n_layers", "–"), m.get("n_heads", "–"),
                 m.get("d_ff", "–"), _fmt(int(n)), _fmt(int(size_info[size]["n_params"] or 0)),
                 f"{tok / 1e6:.2f}M ({tok / n:.3g}/param)" if n else "–",
                 f"{len(cpts)} x {cpts[0]['steps'] * cpts[0]['batch_size'] * cpts[0]['seq_len'] / 1e6:.2f}M"
                 if cpts else "–",
                 f"{sum(i.get('wallclock_s') or 0 for i in [base] + cpts) / 60:.1f}"])
  b.append(("table", ["size", "d", "layers", "heads", "ffn", "non-emb. params", "params",
                      "base tokens", "CPT runs x tokens", "train min"], rows))
  if meta.get("corpora"):
    rows = [[name, _fmt(sum(c["docs"].values())), _fmt(sum(c["tokens"].values())),
             f"{sum(c['bytes'].values()) / 1e6:.2f}", _fmt(c.get("bytes_per_token"), 3),
             ", ".join(f"{k} {100 * v:.0f}%" for k, v in (c.get("language_shares") or {}).items())]
            for name, c in meta["corpora"].items() if name in _corpora_used(runs)]
    b.append(("p", f"Data: real text built offline from package registries (`mixlaw corpora "
              f"build`), tokenizer `{meta.get('vocab_name')}` ({meta.get('vocab_size')} "
              f"pieces), sequences of {meta.get('seq_len')} tokens, documents packed, never "
              f"truncated. Validation: a fixed held-out set per corpus."))
    b.append(("table", ["corpus", "documents", "tokens", "MB", "bytes/token", "languages"], rows))
  b.append(("h", 2, "Evidence"))
  b.append(("h", 3, "Base models (before CPT)"))
  b.append(("table", ["size", "general loss L_gen(S)", "domain loss L_dom(S)"],
            [[s, _fmt(size_info[s]["base_general_loss"]), _fmt(size_info[s]["base_domain_loss"])]
             for s in sizes]))
  b.append(("h", 3, "Loss change at the end of CPT"))
  ratios = sorted({f["ratio"] for f in fits["final"]})
  rows = []
  for s in sizes:
    row = [s]
    for r in ratios:
      f = _by(fits["final"], size=s, ratio=r)
      row.append(f"{_fmt(f[0]['dL_general'], 4)} / {_fmt(f[0]['dL_domain'], 3)}" if f else "–")
    rows.append(row)
  b.append(("table", ["size"] + [f"R={r:.3g}: ΔL gen / ΔL dom" for r in ratios], rows))
  b.append(("img", "trajectories", "Figure 1 (paper Fig. 1): ΔL general against ΔL domain "
            "along CPT; dashed: eps."))
  b.append(("h", 3, "Eq. 6 fit quality (paper Table 3)"))
  rows = []
  for s in sizes:
    for r in ratios:
      g = _by(fits["curves"], size=s, ratio=r, which="general")
      d = _by(fits["curves"], size=s, ratio=r, which="domain")
      if g and d:
        rows.append([s, f"{r:.3g}", _fmt(g[0]["mse"]), _fmt(g[0]["r2"]), _fmt(d[0]["mse"]),
                     _fmt(d[0]["r2"])])
  b.append(("table", ["size", "R", "general MSE", "general R²", "domain MSE", "domain R²"], rows))
  b.append(("img", "curves", "Figure 3 (paper Fig. 4): loss change against CPT tokens for the "
            "largest size, all ratios, with Eq. 6 fits."))
  b.append(("h", 3, "Losses against R and held-out-ratio prediction (paper Table 2)"))
  rows = [[x["size"], x["which"], _fmt(x["params"]["a"]), _fmt(x["params"]["s"]),
           _fmt(x["params"]["b"]), _fmt(x["r2"])] for x in fits["ratio_law"]]
  b.append(("table", ["size", "loss", "a", "s", "b", "R²"], rows))
  rows = [[x["size"], x["which"], f"{x['heldout_ratio']:.3g}", _fmt(x["measured"]),
           _fmt(x["predicted"]), _pct(x["rel_error"]) if x["rel_error"] is not None else "–",
           "extrapolation" if x["extrapolated"] else "interpolation"]
          for x in fits["ratio_heldout"]]
  if rows:
    b.append(("p", "Each ratio held out in turn: the ratio law L(R) = a R^s + b fitted on the "
              "others predicts its loss at T_max."))
    b.append(("table", ["size", "loss", "held-out R", "measured", "predicted", "rel. error",
                        "kind"], rows))
  b.append(("img", "ratio_law", "Figure 2 (paper Fig. 3): validation losses at T_max against R "
            "with the fitted ratio law."))
  b.append(("h", 3, "Feasibility per trained ratio (Definition 2)"))
  rows = [[x["size"], f"{x['ratio']:.3g}", _fmt(x["T0"], 3) if x["T0"] is not None else "–",
           x["T0_kind"], _fmt(x["dL_general_T_max"]), "yes" if x["condition_A"] else "no",
           "**yes**" if x["feasible"] else "no"] for x in fits["feasibility"]]
  b.append(("table", ["size", "R", "T0 (Eq. 7)", "T0 kind", "ΔL gen(T_max)", "ΔL gen <= eps",
                      "feasible"], rows))
  b.append(("h", 3, "CMR law R_CMR(T) = a T^s + b per size (paper Table 5)"))
  rows = []
  for s in sizes:
    law = _by(fits["cmr_law"], size=s)[0]
    if law.get("params"):
      p = law["params"]
      rows.append([s, _fmt(p["a"]), _fmt(p["s"]), _fmt(p["b"]), _fmt(law["r2"], 3),
                   _pct(law["cmr_at_T_max"])])
    else:
      rows.append([s, "–", "–", "–", "–", law.get("reason") or "–"])
  b.append(("table", ["size", "a", "s", "b", "R²", "R_CMR(T_max)"], rows))
  b.append(("img", "cmr", "Figure 4 (paper Fig. 5): CMR against CPT tokens per size, with the "
            "CMR law."))
  surf = fits.get("surface") or {}
  b.append(("h", 3, "Across sizes: the ratio-size-steps surface"))
  if surf.get("reason"):
    b.append(("p", f"No surface: {surf['reason']}."))
  else:
    forms_used = f"{surf['general']['form']} (R² {_fmt(surf['general']['r2'], 3)}) and " \
                 f"{surf['domain']['form']} (R² {_fmt(surf['domain']['r2'], 3)})"
    b.append(("p", f"One law over (R, N, T) for each loss, fitted to every validation point "
              f"of every size: {forms_used}. It predicts a size it never saw; leave-one-size-out "
              f"(fit without a size, predict it):"))
    rows = [[x["heldout_size"], _fmt(x["general"]["rmse"]), _fmt(x["domain"]["rmse"]),
             _pct(x["cmr_predicted"]), _pct(x["cmr_observed"]),
             f"{100 * x['cmr_abs_error']:.1f} pts" if x["cmr_abs_error"] is not None else "–"]
            for x in surf.get("loso", [])]
    if rows:
      b.append(("table", ["held-out size", "RMSE ΔL gen", "RMSE ΔL dom", "predicted CMR",
                          "per-size CMR", "abs. error"], rows))
    else:
      b.append(("p", surf.get("loso_reason", "")))
  b.append(("img", "surface", "Figure 5: ΔL general over (R, T) per size with the feasible "
            "boundary ΔL general = eps (cyan) and the per-size CMR (white)."))
  b.append(("h", 2, "Reproduce"))
  b.append(("ul", [f"`mixlaw fit --workdir {w['workdir']} --eps {opt['eps']} --lam {opt['lam']:g}`"
                   f" recomputes fits.json (seed {opt['seed']}, Huber delta "
                   f"{opt['huber_delta']:g}, {opt['n_starts']} starts);",
                   f"`mixlaw report --workdir {w['workdir']}` rewrites this report;",
                   "each run's operative gin config, seed and package versions are in "
                   "runs/RUN_ID/config.gin and run.json."]))
  return [x for x in b if x[0] != "img" or x[1] in figures]


def _md(blocks, figures) -> str:
  out = []
  for blk in blocks:
    if blk[0] == "h":
      out.append("#" * blk[1] + " " + blk[2])
    elif blk[0] == "p":
      out.append(blk[1])
    elif blk[0] == "ul":
      out.append("\n".join("- " + x for x in blk[1]))
    elif blk[0] == "table":
      out.append(_table(blk[1], blk[2]))
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
      head = "".join(f"<th>{_inline(str(h))}</th>" for h in blk[1])
      rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>"
                     for r in blk[2])
      body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    elif blk[0] == "img":
      with open(figures[blk[1]], "rb") as f:
        data = base64.b64encode(f.read()).decode()
      body.append(f'<figure><img alt="{html.escape(blk[1])}" src="data:image/png;base64,{data}">'
                  f"<figcaption>{_inline(blk[2])}</figcaption></figure>")
  style = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;"
           "line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:.88em}"
           "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}"
           "img{max-width:100%}figcaption{font-style:italic;color:#444}code{background:#f3f3f3}")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>mixlaw report</title>"
          f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(workdir: str) -> dict:
  """Writes WORKDIR/figures/*.{png,svg}, report.md and report.html; returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  w = load_workdir(workdir)
  out_dir = os.path.join(workdir, "figures")
  os.makedirs(out_dir, exist_ok=True)
  figures = {}
  for name, fn in (("trajectories", fig_trajectories), ("ratio_law", fig_ratio_law),
                   ("curves", fig_curves), ("cmr", fig_cmr), ("surface", fig_surface)):
    figures[name] = fn(w, out_dir)
  blocks = _blocks(w, figures)
  paths = {"md": os.path.join(workdir, "report.md"), "html": os.path.join(workdir, "report.html")}
  with open(paths["md"], "w") as f:
    f.write(_md(blocks, figures))
  with open(paths["html"], "w") as f:
    f.write(_html(blocks, figures))
  paths["figures"] = figures
  return paths
