"""The user-facing error type: one line naming the file/row/key, what was expected and what was found.

Scripts catch `PacxError` at the top (`exit_on_error`) and print it as a single line with a non-zero exit, instead
of a traceback from deep inside a data loader (STYLE.md point 15).
"""
import functools
import sys


CLEANUPS = []  # callables `exit_on_error` runs when the script's main ends, however it ends


class PacxError(Exception):
    """Bad input or a refused action that the user can fix."""


class DataError(PacxError, ValueError):
    """A data file or record that cannot be used as it is."""


def exit_on_error(main):
    """Decorate a script's `main`: a PacxError becomes `error: <message>` on stderr and exit status 2. Under
    torchrun, a rank that loses its peers because another rank stopped (on a bad file, say) prints one line
    pointing at that rank's error instead of a collective's traceback, and exits with status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PacxError as e:
            _print_error(str(e))
            sys.exit(2)
        except OSError as e:  # the environment refused: a read-only folder, a full disk, a path that is a file
            if e.strerror is None:
                raise
            _print_error(f"{e.filename}: {e.strerror}" if e.filename else e.strerror)
            sys.exit(2)
        except RuntimeError as e:
            rank = _peer_failure_rank(e)
            if rank is None:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: rank {rank} stopped because another process stopped (its error is above): {first}",
                  file=sys.stderr, flush=True)
            sys.exit(1)
        finally:
            while CLEANUPS:  # e.g. the output folder's lock (pacx.rundir): it ends with the script, however it ends
                CLEANUPS.pop()()

    return wrapper


def _print_error(message: str) -> None:
    """One line on stderr, whatever the message holds (a file name with a newline in it stays on one line)."""
    rank = _distributed_rank()
    line = message.replace("\r", "\\r").replace("\n", "\\n")
    print(f"error: {'' if rank is None else f'rank {rank}: '}{line}", file=sys.stderr, flush=True)


def _distributed_rank() -> int | None:
    """This process's rank in a process group of several, else None (torch is not imported for this)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return dist.get_rank()


def _peer_failure_rank(e: RuntimeError) -> int | None:
    """This process's rank when `e` is a collective failing because a peer process went away, else None."""
    rank = _distributed_rank()
    if rank is None:
        return None
    dist, text = sys.modules["torch.distributed"], str(e)
    lost = isinstance(e, dist.DistError) or any(s in text for s in ("by peer", "Broken pipe", "remote worker"))
    return rank if lost else None
