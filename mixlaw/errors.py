"""The one base class of mixlaw's user-facing errors (stdlib only: every layer may import it).

The CLI catches `MixlawError` and prints its message as one line (exit status 2); anything else
is a bug and keeps its traceback.
"""


class MixlawError(Exception):
  """Bad input or a stopped computation, reported to the user as one line."""


def one_line(e: BaseException) -> str:
  """An exception's message on one line (gin, for one, adds where it happened on lines of its
  own)."""
  return " ".join(line.strip() for line in str(e).splitlines() if line.strip())
