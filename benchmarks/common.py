"""What the benchmarks share: the load check, the PyTorch reference runner."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_LOAD = 0.5  # 1-minute load average above which a speed ratio is not a measurement.


def load_average() -> float:
  return round(os.getloadavg()[0], 2)


def check_idle(force: bool) -> float:
  """The 1-minute load average; refuses (exit 3) above MAX_LOAD unless `force` (then warns)."""
  load = load_average()
  if load > MAX_LOAD:
    msg = (f"load average {load} > {MAX_LOAD}: another job is running, and load slows PyTorch "
           "and JAX very differently, so ratios measured now are not measurements")
    if not force:
      sys.exit(f"benchmark: refusing to run: {msg} (--force runs anyway, flagged)")
    print(f"WARNING: {msg}; every line below carries its load_avg", file=sys.stderr, flush=True)
  return load


def reexec_with_host_env(host_devices: int) -> None:
  """Restarts this script once in mixlaw's CPU training environment (`hostenv.cpu_host_env`:
  one XLA host device per core, one thread each, glibc malloc on huge pages, which glibc reads
  only at process start). The PyTorch reference runs inherit the same environment."""
  sys.path.insert(0, os.path.dirname(HERE))
  from mixlaw import hostenv
  env = hostenv.cpu_host_env(os.environ, host_devices)
  if env != dict(os.environ):
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def torch_ref(python, d_model, layers, seq, batch, vocab, steps):
  """One run of torch_reference.py: its JSON line (tokens_per_s after 3 warm steps)."""
  cmd = [python, os.path.join(HERE, 'torch_reference.py'), '--d-model', str(d_model), '--layers',
         str(layers), '--seq', str(seq), '--batch', str(batch), '--vocab', str(vocab),
         '--steps', str(steps)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])
