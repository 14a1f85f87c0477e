"""The one base class of mixlaw's user-facing errors (stdlib only: every layer may import it).

The CLI catches `MixlawError` and prints its message as one line (exit status 2); anything else
is a bug and keeps its traceback.
"""


class MixlawError(Exception):
  """Bad input or a stopped computation, reported to the user as one line."""
