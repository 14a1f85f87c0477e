"""`mixlaw memory`: the compiled step's per-device memory, planned without allocating."""
import json

import gin
import pytest

from mixlaw import arrays, ginsetup, memory, model  # noqa: F401  (ginsetup: plan.sizes)


@pytest.fixture
def configured(tmp_path):
  (tmp_path / arrays.META_FILE).write_text(json.dumps({"vocab_size": 256, "seq_len": 64}))

  def setup(*extra):
    gin.clear_config()
    gin.parse_config([f"DataConfig.arrays_dir = '{tmp_path}'", "DataConfig.seq_len = 64",
                      "plan.sizes = ['cpu_xs']", "pretrain/PhaseConfig.batch_size = 8", *extra])
  yield setup
  gin.clear_config()


@pytest.mark.slow
def test_state_is_params_and_adam_moments_sharded_over_fsdp(configured):
  configured("MeshConfig.num_devices = 1")
  one = memory.rows()[0]
  n = model.count_params(model.get_config("cpu_xs", vocab_size=256))["total"]
  batch_bytes = 8 * 64 * 4 * 5 + 8 * 4
  assert one["params"] == n and one["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1}
  assert 12 * n <= one["state"] <= 12 * n + batch_bytes + 1024  # params + 2 Adam moments
  assert one["peak"] >= one["state"] and one["temp"] > 0
  configured("MeshConfig.num_devices = 2", "MeshConfig.data = 1", "MeshConfig.fsdp = 2")
  two = memory.rows()[0]
  assert two["state"] < 0.6 * one["state"]  # per device: sharded over fsdp
  table = memory.format_rows([one, two])
  assert table.count("| cpu_xs |") == 2 and "1x2x1" in table


def test_no_sizes_is_a_clear_error(configured):
  gin.clear_config()
  with pytest.raises(memory.MemoryPlanError, match="plan.sizes"):
    memory.sizes()
