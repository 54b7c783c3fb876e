"""Command line for the built-in synthetic physiology world (`pacx.world.physiology` says what it holds,
`pacx.world.files` what it writes).

    python -m pacx.world.make --out_dir runs/demo/world --n_train 800 --n_val 200 --n_test 400 --image_size 64
"""
import time
from dataclasses import dataclass
from pathlib import Path

from pacx.config import opt, parse_config
from pacx.errors import PacxError, exit_on_error
from pacx.world.files import DEFAULT_FORMATS, FORMATS, write_world


@dataclass
class Config:
    out_dir: str = opt("runs/world", "folder to write the world into")
    n_train: int = opt(800, "training patients")
    n_val: int = opt(200, "validation patients")
    n_test: int = opt(400, "test patients (the retrieval splits hold 10 rows per patient)")
    image_size: int = opt(64, "image side in pixels")
    seed: int = opt(0, "the world's seed: same seed, same bytes")
    formats: tuple[str, ...] = opt(DEFAULT_FORMATS, f"comma-separated subset of {','.join(FORMATS)}")
    overwrite: bool = opt(False, "write into a folder that already holds files (those of the same name are replaced)")


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    unknown = sorted(set(cfg.formats) - set(FORMATS))
    if unknown:
        raise PacxError(f"--formats: unknown {unknown}; expected a subset of {list(FORMATS)}")
    out = Path(cfg.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        found = out if not out.is_dir() else sorted(out.iterdir())[0]
        raise PacxError(f"{out}: not an empty folder (holds {found.name}); choose another --out_dir or pass "
                        f"--overwrite to write the world over it")
    t0 = time.perf_counter()
    out = write_world(cfg.out_dir, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed, cfg.image_size, cfg.formats)
    print(f"world of {cfg.n_train}/{cfg.n_val}/{cfg.n_test} patients written to {out} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
