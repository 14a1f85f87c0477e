"""What a run shows a researcher: TensorBoard tags, the gin config text, a profiler window, the
resume line, FLOPs per token."""

import glob
import json
import os
import shutil
import struct

import gin
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from mixlaw import arrays, metrics, model, results, run, workdir

SEQ, VOCAB = 32, 64


def _events(tb_dir):
  """{tag: [(step, value)]} and text tags of every event file under tb_dir (TFRecord frames)."""
  scalars, texts = {}, set()
  for path in glob.glob(os.path.join(tb_dir, "events.out.tfevents.*")):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        if v.HasField("simple_value"):
          scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
        else:
          texts.add(v.tag)
  return scalars, texts


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("arrays")
  rng = np.random.default_rng(0)
  os.makedirs(d / "gen")
  for split, n in (("train", 64), ("validation", 8)):
    t = rng.integers(2, VOCAB, (n, SEQ)).astype(np.int32)
    t[:, 10] = 1
    np.save(arrays.split_path(str(d), "gen", split), t)
  (d / arrays.META_FILE).write_text(json.dumps(
      {"vocab_size": VOCAB, "seq_len": SEQ, "eos_id": 1, "pad_id": 0,
       "corpora": {"gen": {"train_rows": 64, "validation_rows": 8}}}))
  return str(d)


@pytest.mark.slow
def test_run_writes_tensorboard_tags_profile_and_resume_line(arrays_dir, tmp_path, capsys):
  gin.clear_config()
  gin.parse_config([
      f"DataConfig.arrays_dir = '{arrays_dir}'", f"DataConfig.seq_len = {SEQ}",
      "DataConfig.general = 'gen'", "DataConfig.domain = None",
      "DataConfig.max_validation_rows = 8", "pretrain/make_optimizer.peak_lr = 3e-3",
      "pretrain/PhaseConfig.steps = 6", "pretrain/PhaseConfig.batch_size = 4",
      "pretrain/PhaseConfig.eval_every = 3", "pretrain/PhaseConfig.checkpoint_every = 3",
      "MeshConfig.num_devices = 2", "MetricsConfig.peak_flops = 1e11",
      "MetricsConfig.profile_steps = (2, 4)"])
  try:
    spec = run.RunSpec("cpu_2xs", "base")
    run.execute(spec, str(tmp_path))
    tb = workdir.tensorboard_dir(str(tmp_path), spec.run_id)
    scalars, texts = _events(tb)
    for tag in ("train/lr", "train/grad_norm", "perf/step_time_s", "perf/tokens_per_s",
                "perf/mfu", "validation/general_loss", "train/general_loss"):
      assert tag in scalars, (tag, sorted(scalars))
    assert [s for s, _ in scalars["train/lr"]] == list(range(1, 7))
    assert all(v > 0 for _, v in scalars["perf/tokens_per_s"] + scalars["perf/mfu"])
    assert any(t.startswith("config/gin") for t in texts), texts
    assert glob.glob(os.path.join(tb, "plugins", "profile", "*", "*.xplane.pb"))

    # Resume: drop the last checkpoint, mark the run unfinished, run again.
    before = [r for r in results.read_rows(str(tmp_path)) if r["step"] > 3]
    ckpt = workdir.checkpoint_dir(str(tmp_path), spec.run_id)
    shutil.rmtree(os.path.join(ckpt, "6"))
    info = workdir.read_run(str(tmp_path), spec.run_id)
    workdir.write_run(str(tmp_path), spec.run_id, dict(info, state="running"))
    capsys.readouterr()
    run.execute(spec, str(tmp_path))
    err = capsys.readouterr().err
    assert (f"resuming {spec.run_id} at step 3; dropped {len(before)} rows after the checkpoint"
            in err), err
  finally:
    gin.clear_config()


def test_flops_per_token_and_config_checks():
  cfg = model.get_config("paper_460m")
  n = model.count_params(cfg)
  expected = 6 * (n["non_embedding"] + 1024 * 65632) + 6 * 24 * 1024 * 4096
  assert metrics.flops_per_token(cfg, 4096) == expected
  with pytest.raises(metrics.MetricsError):
    metrics.MetricsConfig(profile_steps=(5, 2))
  with pytest.raises(metrics.MetricsError):
    metrics.MetricsConfig(peak_flops=-1)
