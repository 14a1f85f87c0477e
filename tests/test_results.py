"""The results table: append-safe, torn lines ignored, dedup on (run, step, split), truncation."""

import math

import pytest

from mixlaw import results


def _row(run_id, step, split="validation", gen=1.0, dom=2.0):
  return {"run_id": run_id, "phase": "cpt", "size_name": "cpu_s", "n_params": 10,
          "n_params_nonemb": 5, "domain": "finance", "ratio": 0.5, "step": step,
          "tokens_seen": 100 * step, "split": split, "general_loss": gen, "domain_loss": dom,
          "lr": 1e-3, "wallclock": 0.1 * step}


def test_roundtrip_and_nan(tmp_path):
  results.append(tmp_path, [_row("a", 0), _row("a", 1, "train", dom=float("nan"))])
  rows = results.read_rows(tmp_path)
  assert [(r["run_id"], r["step"], r["split"]) for r in rows] == [("a", 1, "train"), ("a", 0, "validation")]
  assert math.isnan(rows[0]["domain_loss"])
  df = results.load(tmp_path)
  assert list(df.columns) == list(results.COLUMNS) and len(df) == 2


def test_last_row_wins_and_torn_line_ignored(tmp_path):
  results.append(tmp_path, [_row("a", 1, gen=1.0)])
  results.append(tmp_path, [_row("a", 1, gen=0.5)])
  with open(results.table_path(tmp_path), "a") as f:
    f.write('{"run_id": "a", "step": 2, "spl')  # A kill -9 in the middle of a write.
  rows = results.read_rows(tmp_path)
  assert len(rows) == 1 and rows[0]["general_loss"] == 0.5


def test_truncate_run_only_touches_that_run(tmp_path):
  results.append(tmp_path, [_row("a", s) for s in range(5)] + [_row("b", s) for s in range(5)])
  assert results.truncate_run(tmp_path, "a", 2) == 2
  rows = results.read_rows(tmp_path)
  assert sorted(r["step"] for r in rows if r["run_id"] == "a") == [0, 1, 2]
  assert sorted(r["step"] for r in rows if r["run_id"] == "b") == [0, 1, 2, 3, 4]


def test_missing_column_is_an_error(tmp_path):
  bad = _row("a", 0)
  del bad["ratio"]
  with pytest.raises(ValueError, match="ratio"):
    results.append(tmp_path, [bad])
