"""Shared pytest setup."""
import os

# Eight host CPU devices for the sharding tests; must happen before jax creates its backend.
_FLAG = '--xla_force_host_platform_device_count=8'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _FLAG).strip()
