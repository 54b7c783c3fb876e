"""Stage-2 targets: every sample encoded once by the frozen ECG and lab encoders, cached on disk.

METHOD.md "Stage 2": targets are precomputed with the frozen encoders (ECG 1024-d from ECGFounder after its
preprocessing, labs 256-d from the Stage-1b DAE), so Stage 2 runs only the CXR encoder. The cache file name is a hash
of everything the numbers depend on: the encoder weight files (their bytes), the data files (path, size, mtime) and
the preprocessing options; a changed input gives a new file, an unchanged one is reused.

Notation: N = samples, E = 1024 (ECG embedding), Z = 256 (lab embedding).
"""
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pacx.checkpoint import save_atomic, load
from pacx.models.ecg import ECGEncoder, ecg_embed_dim as ECG_DIM
from pacx.data.ecg_io import ecgfounder_preprocess, read_wfdb_ecg, symile_ecg_to_ecgfounder, wfdb_files
from pacx.errors import DataError, PacxError
from pacx.data.lab_table import read_lab_table
from pacx.data.labs import LAB_COLUMNS, LAB_TRANSFORM, LabPercentiles, describe_lab
from pacx.models.labs_dae import LabDAE
from pacx.weights import load_ecg_encoder, load_lab_dae


def file_digest(path: str | os.PathLike | None) -> str:
    """sha256 of a weight file's bytes ("random" when there is none); a path that is not a file is refused."""
    if not path:
        return "random"
    if not Path(path).is_file():
        raise PacxError(f"{path}: checkpoint not found" + (" (a folder)" if Path(path).is_dir() else ""))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_fingerprint(path: str | os.PathLike) -> list:
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def frozen_ecg_encoder(path: str | None, seed: int = 0) -> ECGEncoder:
    """ECGFounder from `12_lead_ECGFounder.pth`, or a seeded random network (with a loud warning)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights must be the same in every process and every run
        if path:
            return load_ecg_encoder(path)
        warnings.warn("ECGEncoder: NO CHECKPOINT GIVEN -> RANDOM WEIGHTS. The ECG embeddings/targets it produces are "
                      "MEANINGLESS; pass the ECGFounder file 12_lead_ECGFounder.pth for real targets.", stacklevel=2)
        return ECGEncoder()


def frozen_lab_encoder(path: str | None, seed: int = 0) -> LabDAE:
    if path:
        return load_lab_dae(path).eval()
    warnings.warn("no --labs_dae checkpoint: the lab targets come from a RANDOM lab DAE and are meaningless; train "
                  "one with `train_labs.py`", stacklevel=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LabDAE().eval()


@torch.no_grad()
def encode_ecg(ecg: np.ndarray, encoder: ECGEncoder, device, notch_hz: float | None = 50.0,
               batch: int = 32, progress=None) -> np.ndarray:
    """(N, 12, L) raw ECGs in ECGFounder lead order (any scale) -> (N, E) float32 embeddings."""
    encoder.to(device)
    out = np.zeros((len(ecg), encoder.cfg.filter_list[-1]), np.float32)
    for lo in range(0, len(ecg), batch):
        x = np.stack([ecgfounder_preprocess(np.asarray(r, np.float64), notch_hz=notch_hz) for r in ecg[lo:lo + batch]])
        out[lo:lo + len(x)] = encoder(torch.from_numpy(x).float().to(device)).cpu().numpy()  # (b, 12, L) -> (b, E)
        if progress:
            progress(lo + len(x))
    return out


@torch.no_grad()
def encode_labs(x: np.ndarray, m: np.ndarray, dae: LabDAE, zero_missing: bool = False) -> np.ndarray:
    """(N, 50) percentiles + (N, 50) observed mask -> (N, Z). `zero_missing=False` is the reference quirk (the DAE
    sees the mean-imputed percentiles as stored; see `LabDAE.encode`)."""
    z = dae.encode(torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(m),
                   dtype=torch.float32), zero_missing=zero_missing)
    return z.numpy().astype(np.float32)


def cached(path: Path, compute, log) -> dict:
    """Load `path` if it exists, else compute the targets dict and write it atomically."""
    if path.exists():
        log(f"targets: reusing {path}")
        return load(path)
    targets = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(targets, path)
    return targets


def no_ecg(n: int) -> np.ndarray:
    """Placeholder ECG targets when the ECG teacher is switched off (`--use_ecg false`): never read by the loss."""
    return np.zeros((n, ECG_DIM), np.float32)


def symile_targets(split_dir: Path, split: str, ecg_weights: str | None, labs_dae: str | None, cache_dir: Path,
                   device, notch_hz: float | None = 50.0, zero_missing: bool = False, log=print,
                   with_ecg: bool = True) -> dict:
    """{'ecg': (N, E), 'labs': (N, Z)} for a Symile-MIMIC split, computed once and cached."""
    files = {k: split_dir / f"{k}_{split}.npy" for k in ("ecg", "labs_percentiles", "labs_missingness")}
    key = cache_key(ecg=file_digest(ecg_weights) if with_ecg else "off", dae=file_digest(labs_dae), notch=notch_hz,
                    zero=zero_missing, data={k: data_fingerprint(p) for k, p in files.items()})

    def compute():
        ecg = np.load(files["ecg"], mmap_mode="r")
        n = len(ecg)
        log(f"targets: encoding {n} {split} samples with the frozen encoders -> cache {cache_dir}")

        def report(done):
            if done == n or done % (32 * 20) == 0:
                log(f"targets: {done}/{n} ECGs")

        ecg_t = encode_ecg(_SymileECG(ecg, files["ecg"]), frozen_ecg_encoder(ecg_weights), device, notch_hz,
                           progress=report) if with_ecg else no_ecg(n)
        labs_t = encode_labs(np.load(files["labs_percentiles"]), np.load(files["labs_missingness"]),
                             frozen_lab_encoder(labs_dae), zero_missing)
        return {"ecg": torch.from_numpy(ecg_t), "labs": torch.from_numpy(labs_t)}

    return cached(Path(cache_dir) / f"targets_{split}_{key}.pt", compute, log)


@dataclass
class LabInputs:
    """A raw lab table for Stage 2, read once: its rows (`table`: the id column + the 50 lab columns), and the
    percentile transform Stage 1b saved beside the lab DAE (None: fit one on the training rows)."""
    path: Path
    id_column: str
    mapping: dict
    table: pd.DataFrame
    transform: LabPercentiles | None
    transform_file: Path | None


def read_lab_inputs(path, id_column: str, mapping: dict, labs_dae: str | None, log=print) -> LabInputs:
    """Read --labs_table by the rule of `pacx.data.lab_table` and find the transform its DAE was trained with: the
    LAB_TRANSFORM file train_labs.py writes beside its checkpoint. With it, Stage 2 feeds the DAE the percentiles it
    was trained on; without it (a DAE trained on Symile arrays, an original checkpoint) a transform is fitted on the
    training rows (METHOD.md "Stage 1b"). Each case is said in one `log` line."""
    table = read_lab_table(path, id_column, mapping, log)
    file = Path(labs_dae).parent / LAB_TRANSFORM if labs_dae else None
    if file is None or not file.is_file():
        log(f"labs: no {LAB_TRANSFORM} beside the lab DAE ({labs_dae or 'random weights'}): percentiles are fitted on "
            f"the training rows of {path}")
        return LabInputs(Path(path), id_column, mapping, table, None, None)
    transform = LabPercentiles.load(file)
    log(f"labs: percentiles by the transform the lab DAE was trained with, {file} (not refitted)")
    unseen = [j for j in transform.unfitted() if table[LAB_COLUMNS[j]].notna().any()]
    if unseen:  # the transform has no percentile for them: the DAE never saw them measured
        log(f"{path}: lab(s) {', '.join(describe_lab(j) for j in unseen)} have values here but none in the table the "
            f"lab DAE was trained on ({file}): they count as not measured")
        table = table.assign(**{LAB_COLUMNS[j]: np.nan for j in unseen})
    return LabInputs(Path(path), id_column, mapping, table, transform, file)


def table_lab_targets(labs: LabInputs, ids: list[str], train_ids: list[str], labs_dae: str | None,
                      zero_missing: bool = False, source=None) -> np.ndarray:
    """(len(ids), Z) lab targets of the rows `ids` of a raw lab table: percentiles by Stage 1b's saved transform, or
    by an empirical CDF fitted on the rows of `train_ids` only (`read_lab_inputs`), then the frozen DAE."""
    by_id = {str(v): i for i, v in enumerate(labs.table[labs.id_column])}
    for lab_id in set(ids) | set(train_ids):
        if lab_id not in by_id:
            raise DataError(f"{labs.path}: no row with {labs.id_column} = {lab_id}" + (f" (named in {source})"
                                                                                        if source else ""))
    values = labs.table.drop(columns=[labs.id_column])
    rows = values.iloc[[by_id[i] for i in ids]]
    transform = labs.transform
    if transform is None:
        transform = LabPercentiles().fit(values.iloc[[by_id[i] for i in train_ids]])
        unseen = [j for j in transform.unfitted() if rows[LAB_COLUMNS[j]].notna().any()]
        if unseen:
            raise DataError(f"{labs.path}: lab(s) {', '.join(describe_lab(j) for j in unseen)} have values in rows "
                            f"of this split but none in the training rows, which the percentiles are fitted on")
    x, m = transform.transform(rows)
    return encode_labs(x, m, frozen_lab_encoder(labs_dae), zero_missing)


def read_ecg_records(paths: list[Path], csv: Path, rows: np.ndarray, column: str) -> tuple[np.ndarray, int]:
    """(N, 12, 5000) mV ECGs in ECGFounder lead order (`pacx.data.ecg_io.read_wfdb_ecg`) and how many records had
    their limb leads derived from I and II; a record that cannot be read is named by its line of `csv`."""
    signals, derived = [], 0
    for k, path in enumerate(paths):
        try:
            sig, meta = read_wfdb_ecg(path)
        except DataError as e:
            raise DataError(f"{csv}: line {rows[k] + 2}, column '{column}': {e}") from None
        signals.append(sig)
        derived += bool(meta["derived"])
    return np.stack(signals), derived


class _SymileECG:
    """Index a memory-mapped (N, 1, L, 12) Symile ECG array (read from `path`) as (n, 12, L) ECGFounder-order
    records, a slice at a time (never the whole array in memory); a record with NaN or inf is an error naming its
    row."""

    def __init__(self, arr, path):
        self.arr, self.path = arr, path

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, sl: slice):
        x = symile_ecg_to_ecgfounder(np.asarray(self.arr[sl]))  # (n, 12, L)
        bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
        if len(bad):
            raise DataError(f"{self.path}: row {(sl.start or 0) + int(bad[0])}: expected finite ECG samples, found "
                            f"NaN or inf")
        return x


def triplet_targets(csv: Path, rows: np.ndarray, split: str, ecg_paths: list[Path], lab_ids: list[str],
                    train_lab_ids: list[str], labs: LabInputs, ecg_weights: str | None,
                    labs_dae: str | None, cache_dir: Path, device, notch_hz: float | None = 50.0,
                    zero_missing: bool = False, log=print, with_ecg: bool = True, ecg_column: str = "ecg_path") -> dict:
    """Targets for raw triplets (a CSV of image path, WFDB record, lab row id): each record read by
    `pacx.data.ecg_io.read_wfdb_ecg` (12 standard leads by name, 500 Hz, 10 s), the lab rows turned into percentiles
    (`table_lab_targets`), then both encoded as `symile_targets` does. A lab id may occur once per split: one row per
    admission, as in Symile-MIMIC (two rows of one admission would be each other's InfoNCE negatives). 'ecg_derived'
    counts the records whose limb leads were derived from I and II."""
    first = {}  # lab id -> position of its first row in this split
    for k, lab_id in enumerate(lab_ids):
        if lab_id in first:
            raise DataError(f"{csv}: line {rows[k] + 2}, column '{labs.id_column}': expected one row per admission in "
                            f"split {split!r}, found {lab_id!r} again (first on line {rows[first[lab_id]] + 2})")
        first[lab_id] = k
    # Every record's files (size, mtime) are in the key: a rewritten record must not be answered from the cache.
    records = [data_fingerprint(f) for p in ecg_paths for f in wfdb_files(p)] if with_ecg else []
    key = cache_key(ecg=file_digest(ecg_weights) if with_ecg else "off", dae=file_digest(labs_dae), notch=notch_hz,
                    zero=zero_missing, csv=data_fingerprint(csv), labs=data_fingerprint(labs.path),
                    lab_map=labs.mapping, transform=data_fingerprint(labs.transform_file) if labs.transform_file else
                    "fitted", rows=rows.tolist(), records=records)

    def compute():
        log(f"targets: reading {len(ecg_paths)} {split} ECG records and lab rows -> cache {cache_dir}")
        lab_t = table_lab_targets(labs, lab_ids, train_lab_ids, labs_dae, zero_missing, csv)
        derived = 0
        if with_ecg:
            ecg, derived = read_ecg_records(ecg_paths, csv, rows, ecg_column)  # (N, 12, 5000) mV
            ecg = encode_ecg(ecg, frozen_ecg_encoder(ecg_weights), device, notch_hz)
        else:
            ecg = no_ecg(len(lab_ids))
        return {"ecg": torch.from_numpy(ecg), "labs": torch.from_numpy(lab_t), "ecg_derived": derived}

    return cached(Path(cache_dir) / f"targets_{split}_{key}.pt", compute, log)
