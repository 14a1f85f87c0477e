"""The base-budget pilot's pre-registered readings (experiments/cmr_converged_ptpp.gin).

  python experiments/ptpp_summary.py experiments/results/cmr_converged/ptpp/x{1,4,16}

Each workdir is one base budget. Per size and budget, at T_max (mean of the last 5 evals):
- drift: dL_gen of the R = 0 control (replay only) against the base model, per seed;
- rise: dL_gen at the largest R (gate >= 3 eps);
- condition-A CMR per seed, in two references: against the base model (the paper's) and against
  the R = 0 run of the same seed at the same step (control). The CMR is the largest R at which
  dL_gen <= eps, linear between trained ratios (model-free; 'none' when even the smallest
  R > 0 exceeds eps, capped at the largest trained R);
- decision (f): the CMR at the largest budget minus the one at the smallest, paired by data-order
  seed; holds when |mean difference| > 2 SE (SE from the per-seed differences, n - 1 df),
  otherwise undecided;
- the drift rule: the smallest tokens-per-parameter (PTPP) of the ladder at which |drift| <= 0.01
  at every size while the rise stays >= 0.15, else a power law |drift| = a PTPP^-b fitted to all
  (size, budget) points, solved for 0.01 (an extrapolation).
Prints Markdown tables, then one JSON object.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mixlaw import results  # noqa: E402

EPS, DRIFT_MAX, RISE_MIN, LAST = 0.05, 0.01, 0.15, 5


def _curves(workdir):
  """{(size, ratio, seed): (steps, general)} of CPT validation rows; {size: (L_base, nonemb, tokens)}."""
  runs, base = {}, {}
  for r in results.read_rows(workdir):
    if r["split"] != "validation":
      continue
    if r["phase"] == "base":
      prev = base.get(r["size_name"])
      if prev is None or r["tokens_seen"] >= prev[2]:
        base[r["size_name"]] = (r["general_loss"], r["n_params_nonemb"], r["tokens_seen"])
    elif r["step"] > 0:
      runs.setdefault((r["size_name"], r["ratio"], r["cpt_seed"]), []).append(
          (r["step"], r["general_loss"]))
  return {k: np.array(sorted(v)).T for k, v in runs.items()}, base


def cmr_a(ratios, dl):
  """Largest R with dL <= EPS, linear between trained ratios (None: none with R > 0)."""
  best = None
  for i, (r, d) in enumerate(zip(ratios, dl)):
    if d > EPS:
      if i > 0 and dl[i - 1] <= EPS:
        r0, d0 = ratios[i - 1], dl[i - 1]
        return r0 + (EPS - d0) * (r - r0) / (d - d0)
      return best
    best = r
  return best


def summarise(workdir):
  curves, base = _curves(workdir)
  sizes = sorted(base, key=lambda s: base[s][1])
  out = []
  for size in sizes:
    l_base, nonemb, tokens = base[size]
    ratios = sorted({k[1] for k in curves if k[0] == size})
    seeds = sorted({k[2] for k in curves if k[0] == size})
    end = {(r, s): float(np.mean(curves[size, r, s][1][-LAST:])) for r in ratios for s in seeds}
    row = {"workdir": workdir, "size": size, "nonemb": nonemb, "base_tokens": tokens,
           "ptpp": tokens / nonemb, "base_general_loss": l_base,
           "cpt_steps": int(curves[size, ratios[0], seeds[0]][0][-1]), "ratios": ratios,
           "seeds": seeds}
    row["drift"] = [end[0.0, s] - l_base for s in seeds]
    row["rise"] = [end[ratios[-1], s] - l_base for s in seeds]
    row["dl_base"] = {r: [end[r, s] - l_base for s in seeds] for r in ratios}
    row["dl_control"] = {r: [end[r, s] - end[0.0, s] for s in seeds] for r in ratios}
    row["cmr_base"] = [cmr_a(ratios, [end[r, s] - l_base for r in ratios]) for s in seeds]
    row["cmr_control"] = [cmr_a(ratios, [end[r, s] - end[0.0, s] for r in ratios])
                          for s in seeds]
    out.append(row)
  return out


def decision_f(rows, size, ref):
  """CMR at the largest budget minus the smallest, paired by seed."""
  mine = sorted((r for r in rows if r["size"] == size), key=lambda r: r["base_tokens"])
  lo, hi = mine[0][f"cmr_{ref}"], mine[-1][f"cmr_{ref}"]
  if None in lo or None in hi:
    return {"size": size, "reference": ref, "verdict": "undecided", "reason": "CMR below R_min"}
  d = np.array(hi) - np.array(lo)
  se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
  verdict = "holds" if abs(d.mean()) > 2 * se else "undecided"
  return {"size": size, "reference": ref, "diff": float(d.mean()), "per_seed": d.tolist(),
          "se": se, "df": len(d) - 1, "verdict": verdict,
          "budgets": [mine[0]["base_tokens"], mine[-1]["base_tokens"]]}


def drift_rule(rows):
  """The smallest PTPP whose rung passes the drift and rise gates at every size."""
  sizes = sorted({r["size"] for r in rows})
  by_rung = {}
  for r in rows:
    by_rung.setdefault(os.path.basename(r["workdir"].rstrip("/")), []).append(r)
  for rung, rs in sorted(by_rung.items(), key=lambda kv: min(r["ptpp"] for r in kv[1])):
    ok = all(abs(np.mean(r["drift"])) <= DRIFT_MAX and np.mean(r["rise"]) >= RISE_MIN
             for r in rs) and len(rs) == len(sizes)
    if ok:
      return {"rule": "measured", "rung": rung, "min_ptpp": min(r["ptpp"] for r in rs)}
  x = np.log([r["ptpp"] for r in rows])
  y = np.log(np.maximum([abs(np.mean(r["drift"])) for r in rows], 1e-6))
  b, a = np.polyfit(x, y, 1)
  return {"rule": "extrapolated", "power_law": {"log_a": float(a), "exponent": float(b)},
          "ptpp_for_0.01": float(np.exp((np.log(DRIFT_MAX) - a) / b)) if b < 0 else None}


def _pct(v):
  return "none" if v is None else f"{100 * v:.1f}%"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+")
  rows = [r for w in p.parse_args().workdirs for r in summarise(w)]
  print("| size | base tokens | PTPP | base L_gen | R=0 drift (per seed) | rise at R_max | "
        "CMR_A base ref (per seed) | CMR_A control ref (per seed) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['size']} | {r['base_tokens'] / 1e6:.2f}M | {r['ptpp']:.0f} | "
          f"{r['base_general_loss']:.4f} | "
          + " / ".join(f"{d:+.4f}" for d in r["drift"]) + " | "
          + " / ".join(f"{d:+.3f}" for d in r["rise"]) + " | "
          + " / ".join(_pct(c) for c in r["cmr_base"]) + " | "
          + " / ".join(_pct(c) for c in r["cmr_control"]) + " |")
  decisions = [decision_f(rows, s, ref) for s in sorted({r["size"] for r in rows})
               for ref in ("base", "control")]
  print("\n| (f) size | reference | CMR(largest budget) - CMR(smallest) | SE (df) | verdict |")
  print("|---|---|---|---|---|")
  for d in decisions:
    if "diff" in d:
      print(f"| {d['size']} | {d['reference']} | {100 * d['diff']:+.1f} points "
            f"(per seed " + ", ".join(f"{100 * x:+.1f}" for x in d["per_seed"]) + ") | "
            f"{100 * d['se']:.1f} ({d['df']}) | {d['verdict']} |")
    else:
      print(f"| {d['size']} | {d['reference']} | - | - | {d['verdict']}: {d['reason']} |")
  rule = drift_rule(rows)
  print(f"\ndrift rule: {rule}")
  print(json.dumps({"rows": rows, "decision_f": decisions, "drift_rule": rule}, default=str))


if __name__ == "__main__":
  main()
