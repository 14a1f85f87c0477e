"""The process environment for fast CPU training, set before JAX starts (stdlib only)."""


def cpu_host_env(environ, devices: int, hugetlb: bool = True) -> dict:
  """Environment for fast CPU training, to set before JAX is imported.

  - `devices` XLA host devices (one per core), each running its ops on one thread when there
    are several (data parallel over them with `make_mesh()`);
  - with `hugetlb`, glibc malloc on transparent huge pages: XLA allocates its temporaries afresh
    every step, and with 4 KiB pages that is many page faults per step. glibc reads this at
    process start, so it only acts in a process started with the returned environment.
  Returns a copy of environ with these added (existing settings are kept).
  """
  env = dict(environ)
  flags = env.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags:
    flags += f' --xla_force_host_platform_device_count={devices}'
  if devices > 1 and 'xla_cpu_multi_thread_eigen' not in flags:
    flags += ' --xla_cpu_multi_thread_eigen=false'
  env['XLA_FLAGS'] = flags.strip()
  tunables = env.get('GLIBC_TUNABLES', '')
  if hugetlb and 'glibc.malloc.hugetlb' not in tunables:
    env['GLIBC_TUNABLES'] = ':'.join(t for t in (tunables, 'glibc.malloc.hugetlb=1') if t)
  return env


def pin_to_cpu() -> None:
  """Makes the CPU JAX's default device in this process (the laws' float64 fits run there
  whatever accelerator the host has). Call at the application's call site, not in the laws."""
  import jax
  jax.config.update('jax_default_device', jax.devices('cpu')[0])
