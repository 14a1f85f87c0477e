"""The CPT learning-rate pilot's gates, per LR and size: prints a Markdown table and JSON.

  python experiments/pilot_summary.py runs/cmr_cpu_pilot/lr3e-4 runs/cmr_cpu_pilot/lr1e-4

Each workdir is one `mixlaw sweep --gin_file=experiments/cmr_cpu_pilot.gin` at one CPT peak LR
(R = 0 and R = 1 on the smallest and largest base models). Gates at T_max (the mean of the last
3 evals, minus the base model's loss): |dL_gen(R = 0)| <= 0.02 nats and dL_gen(R = 1) >= 3 eps.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mixlaw import results  # noqa: E402
from mixlaw import workdir as workdir_lib  # noqa: E402
from mixlaw.laws import noise  # noqa: E402

CONTROL_MAX, RISE_MIN, K = 0.02, 0.15, 3


def summarise(workdir: str) -> list[dict]:
  config = workdir_lib.read_sweep(workdir)["config"]
  lr = next(float(l.split("=")[1]) for l in config.splitlines()
            if l.startswith("cpt/make_optimizer.peak_lr"))
  runs = {}
  for r in results.read_rows(workdir):
    if r["split"] == "validation":
      runs.setdefault((r["size_name"], r["ratio"]), []).append(r)
  out = []
  for (size, ratio), rows in sorted(runs.items()):
    rows.sort(key=lambda r: r["step"])
    t = [r["tokens_seen"] for r in rows[1:]]
    out.append({"lr": lr, "size": size, "ratio": ratio, "tokens": t[-1],
                "base_general_loss": rows[0]["general_loss"],
                "d_general": noise.smoothed([t], [[r["general_loss"] - rows[0]["general_loss"]
                                                   for r in rows[1:]]], t[-1], K, 0.0)[0],
                "d_domain": noise.smoothed([t], [[r["domain_loss"] - rows[0]["domain_loss"]
                                                  for r in rows[1:]]], t[-1], K, 0.0)[0],
                "sigma_general": noise.sigma_2nd([[r["general_loss"] for r in rows[1:]]])})
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+")
  rows = [r for w in p.parse_args().workdirs for r in summarise(w)]
  print("| CPT peak LR | size | R | dL_gen at T_max | dL_dom at T_max | sigma_gen per eval | gate |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    ok = (abs(r["d_general"]) <= CONTROL_MAX if r["ratio"] == 0 else r["d_general"] >= RISE_MIN)
    gate = (f"abs(dL_gen) <= {CONTROL_MAX}" if r["ratio"] == 0 else f"dL_gen >= {RISE_MIN}")
    print(f"| {r['lr']:g} | {r['size']} | {r['ratio']:g} | {r['d_general']:+.4f} | "
          f"{r['d_domain']:+.4f} | {r['sigma_general']:.4f} | {gate}: {'pass' if ok else 'FAIL'} |")
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
