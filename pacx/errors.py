"""The user-facing error type: one line naming the file/row/key, what was expected and what was found.

Scripts catch `PacxError` at the top (`exit_on_error`) and print it as a single line with a non-zero exit, instead
of a traceback from deep inside a data loader (STYLE.md point 15).
"""
import functools
import sys


class PacxError(Exception):
    """Bad input or a refused action that the user can fix."""


class DataError(PacxError, ValueError):
    """A data file or record that cannot be used as it is."""


def exit_on_error(main):
    """Decorate a script's `main`: a PacxError becomes `error: <message>` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PacxError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
