"""Loaded at start-up by a process whose PYTHONPATH begins with this folder (conftest.SLOW_SAVES): every checkpoint
write (`pacx.checkpoint.save_atomic`) is followed by a pause, so a test that SIGKILLs a run after its checkpoint
reaches step k sees that checkpoint before the next step, however busy the machine. The run's numbers are
untouched; only its pace changes."""
import time

import pacx.checkpoint

_save = pacx.checkpoint.save_atomic


def _save_then_pause(obj, path):
    _save(obj, path)
    time.sleep(0.3)


pacx.checkpoint.save_atomic = _save_then_pause
