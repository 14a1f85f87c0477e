"""The results table: append-safe, torn lines ignored, dedup on (run, step, split), truncation."""

import json
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


def test_repeated_rows_collapse_and_torn_line_ignored(tmp_path):
  results.append(tmp_path, [_row("a", 1, gen=0.5)])
  results.append(tmp_path, [_row("a", 1, gen=0.5)])
  with open(results.table_path(tmp_path), "a") as f:
    f.write('{"run_id": "a", "step": 2, "spl')  # A kill -9 in the middle of a write.
  rows = results.read_rows(tmp_path)
  assert len(rows) == 1 and rows[0]["general_loss"] == 0.5


def test_one_sweep_per_table(tmp_path):
  # The first row minted the workdir's sweep id (sweep.json); every row carries it.
  results.append(tmp_path, [_row("a", 0), _row("a", 1)])
  sid = json.load(open(tmp_path / "sweep.json"))["sweep_id"]
  assert sid and {r["sweep_id"] for r in results.read_rows(tmp_path)} == {sid}
  # Another sweep's rows appended: refused, naming the line, run and step.
  other = tmp_path / "other"
  results.append(other, [_row("b", 7)])
  with open(results.table_path(tmp_path), "a") as f:
    f.write(open(results.table_path(other)).read())
  with pytest.raises(results.ResultsError, match=r"results.jsonl:3: run b step 7 is from sweep"):
    results.read_rows(tmp_path)


def test_conflicting_rows_and_bad_lines_are_named(tmp_path):
  results.append(tmp_path, [_row("a", 1, gen=1.0), _row("a", 2)])
  results.append(tmp_path, [_row("a", 1, gen=2.0)])
  with pytest.raises(results.ResultsError, match=r":3: run a step 1 \(validation\) is also at "
                                                 r"line 1 with other losses"):
    results.read_rows(tmp_path)
  for bad, message in (("[1]", "a row must be a JSON object"), ("{}", "row lacks column"),
                       ("nope", "not a JSON row")):
    (tmp_path / "results.jsonl").write_text(json.dumps(_row("a", 0)) + "\n" + bad + "\n")
    with pytest.raises(results.ResultsError, match=f":2: {message}"):
      results.read_rows(tmp_path)
    with pytest.raises(results.ResultsError, match=f":2: {message}"):  # Nothing dropped.
      results.truncate_run(tmp_path, "a", -1)


def test_tables_without_sweep_ids_still_read(tmp_path):
  # Tables written before sweep ids: one sweep, and a resumed run keeps writing rows without.
  legacy = {k: v for k, v in _row("a", 0).items()}
  (tmp_path / "results.jsonl").write_text(json.dumps(legacy) + "\n")
  results.append(tmp_path, [_row("a", 1)])
  rows = results.read_rows(tmp_path)
  assert [r["sweep_id"] for r in rows] == [None, None]


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
