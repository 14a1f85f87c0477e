"""The report's figures (matplotlib, PNG + SVG), numbered by the report in reading order.

Each figure is a function (w, out_dir) -> PNG path, where w is `report.load_workdir`'s dict; every
number drawn is one of fits.json's or of the results table's. Interval levels come from the fit
option ci_level.
"""

from __future__ import annotations

import os

import numpy as np

from mixlaw.laws import fittables as tables_lib

FIGURES = ("cmr_size", "base_curves", "curves", "trajectories", "ratio_law", "cmr", "lfo",
           "surface")
_fmt = tables_lib.fmt


def ci_label(fits) -> str:
  """The interval level of the fits, e.g. '95%' (fit option ci_level)."""
  return f"{round(100 * fits['options'].get('ci_level', 0.95), 4):g}%"


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
  ax.legend(fontsize=7, loc="best", title_fontsize=7,
            title=f"bars: {ci_label(fits)} intervals; open ▲▼: censored")
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
  Eq. 6 fits (dashed: flagged), the fit's bootstrap band (at ci_level) and a +-2 sigma band of
  the measured eval noise around it."""
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
      for f in sorted({fits["options"]["growth_fraction"], fits["options"]["predict_fraction"]}):
        t_max = _by(fits["sizes"], size=size)[0]["T_max"]
        ax.axvline(f * t_max * unit / 1e6, color="gray", ls=":", lw=0.9)
      ax.set_xlabel("CPT tokens (millions)")
      ax.set_ylabel(f"ΔL {which} (nats)")
      ax.set_title(f"{size}: {which} loss change", fontsize=9)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=6, loc="best")
  fig.suptitle(f"Eq. 6 fits; shaded: fit ± 2σ eval noise; dotted: {ci_label(fits)} band of the "
               "fit; dashed fit: flagged; gray: the budgets of the pre-registered decisions",
               y=1.0, fontsize=9)
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
    mf = [p.get("model_free_def2") or {} for p in ser.get("points", [])]
    if mf:
      ax.plot(t, _arr([m.get("cmr") for m in mf]), "x", ms=4, color=color,
              label=f"{size} model-free")
    law = _by(fits["cmr_law"], size=size)[0]
    if law.get("params"):
      ax.plot(np.asarray(law["T_grid"]) * unit / 1e6, law["R_fit"], "-", color=color, lw=1,
              label=f"{size} law a T^s + b")
  ax.set_xlabel("CPT tokens (millions)")
  ax.set_ylabel("critical mixture ratio R_CMR")
  ax.set_ylim(0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title(f"CMR against CPT budget (band: {ci_label(fits)} bootstrap interval)")
  return _save(fig, out_dir, "cmr")


def fig_lfo(w, out_dir):
  """Leave-future-out: the CMR (left) and every dL_gen at T_max (right) predicted from the evals
  up to f T_max against what the full data say."""
  import matplotlib.pyplot as plt
  fits = w["fits"]
  rows = fits.get("leave_future_out") or []
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
  fracs = sorted({r["fraction"] for r in rows})
  marks = dict(zip(fracs, "o^sv"))
  for color, size in zip(_shades(len(_sizes(fits)), "plasma"), _sizes(fits)):
    for r in _by(rows, size=size):
      m = marks[r["fraction"]]
      if r["cmr_predicted"] is not None and r["cmr_measured"] is not None:
        a.plot(r["cmr_measured"], r["cmr_predicted"], m, color=color,
               label=f"{size}, f={r['fraction']:g}")
      xs = [c["dL_general_measured"] for c in r["curves"]]
      ys = [c["dL_general_predicted"] for c in r["curves"]]
      b.plot(_arr(xs), _arr(ys), m, ms=4, color=color, mfc="none")
  tol = fits["options"]["tol_cmr"]
  a.plot([0, 1], [0, 1], "k-", lw=0.8)
  a.fill_between([0, 1], [-tol, 1 - tol], [tol, 1 + tol], color="gray", alpha=0.15, lw=0)
  a.set(xlim=(0, 1), ylim=(0, 1), xlabel="CMR at T_max, full data",
        ylabel="CMR predicted from T <= f T_max", title=f"CMR (band: ±{tol:g})")
  lim = [np.nanmin([a_ for r in rows for a_ in _arr([c["dL_general_measured"]
                                                      for c in r["curves"]])] + [0]),
         np.nanmax([a_ for r in rows for a_ in _arr([c["dL_general_measured"]
                                                      for c in r["curves"]])] + [0.05])]
  tg = fits["options"]["tol_dgen"]
  b.plot(lim, lim, "k-", lw=0.8)
  b.fill_between(lim, [lim[0] - tg, lim[1] - tg], [lim[0] + tg, lim[1] + tg], color="gray",
                 alpha=0.15, lw=0)
  b.set(xlabel="ΔL general at T_max, measured (smoothed)", ylabel="predicted",
        title=f"ΔL general per (size, R) (band: ±{tg:g} nats)")
  for ax in (a, b):
    ax.grid(alpha=0.3)
  if rows:
    a.legend(fontsize=6)
  fig.suptitle("Leave-future-out: fitted on the evals up to f T_max, predicting T_max", fontsize=9)
  fig.tight_layout()
  return _save(fig, out_dir, "lfo")


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


FIGURE_FNS = {"cmr_size": fig_cmr_size, "base_curves": fig_base_curves, "curves": fig_curves,
              "trajectories": fig_trajectories, "ratio_law": fig_ratio_law, "cmr": fig_cmr,
              "lfo": fig_lfo, "surface": fig_surface}


def write_figures(w, out_dir: str) -> dict:
  """Every figure as OUT_DIR/NAME.{png,svg}; returns {name: png path}."""
  import matplotlib
  matplotlib.use("Agg")
  os.makedirs(out_dir, exist_ok=True)
  return {name: FIGURE_FNS[name](w, out_dir) for name in FIGURES}
