"""Reading 12-lead ECGs into ECGFounder's input: WFDB records, Symile-MIMIC arrays, and ECGFounder's preprocessing.

Implements the ECG parts of METHOD.md "Stage 1c" and "Data formats users have". The preprocessing follows
PKUDigitalHealth/ECGFounder `util.py::filter_bandpass` + `dataset.py::z_score_normalization`, which PACX-MAE's
`Data/ecg_features_extraction.ipynb` applies unchanged; the Symile-MIMIC array layout follows rajesh-lab/symile
`process_and_save_tensors.py::get_ecg`.

A record becomes (12, 5000) float32 in millivolts, leads in ECGFounder order, at 500 Hz:
1. the 12 standard leads are picked by name, case-insensitively, whatever the file's order or extra leads. I, II and
   V1-V6 are required; III, aVR, aVL and aVF, when absent (8-lead device exports), are computed from I and II, since
   the six limb leads are two independent signals: III = II - I (Einthoven), aVR = -(I + II) / 2, aVL = I - II / 2,
   aVF = II - I / 2 (Goldberger);
2. the whole record is resampled to 500 Hz with a polyphase filter (scipy.signal.resample_poly); records sampled
   at or below 80 Hz, too slow to hold the 0.67-40 Hz band ECGFounder filters to, are refused;
3. the FIRST 10 s are kept; a shorter record is ZERO-PADDED AT THE END (records under `min_seconds` are refused).

Notation: N = records, L = time samples.
"""
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import butter, filtfilt, iirnotch, resample_poly

from pacx.errors import DataError

ECGFOUNDER_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# MIMIC-IV-ECG records (and so the Symile-MIMIC arrays built from them) store aVF before aVL
MIMIC_ECG_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
ECG_FS = 500
ECG_SECONDS = 10.0
# What every record must hold; the other four limb leads follow from I and II (the module docstring).
REQUIRED_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
DERIVED_LEADS = {"III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}  # (w_I, w_II)
# ECGFounder's band-pass ends at 40 Hz: a record sampled at or below twice that cannot carry the band it is filtered to
MIN_FS = 80.0

_TO_MILLIVOLT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}


class ECGReadError(DataError):
    """A record that cannot become a 12-lead ECGFounder input; the message names the record and the problem."""


def _record_base(record_path: str | Path) -> Path:
    # wfdb wants the record name without extension; accept `x`, `x.hea`, `x.dat` or `x.mat`
    path = Path(record_path)
    return path.with_suffix("") if path.suffix.lower() in (".hea", ".dat", ".mat") else path


def wfdb_files(record_path: str | Path) -> list[Path]:
    """The files of a record that exist: its header and its signal file (.dat or .mat of the same name)."""
    base = _record_base(record_path)
    return [f for f in (Path(f"{base}{s}") for s in (".hea", ".dat", ".mat")) if f.is_file()]


def resample_ecg(sig: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """(C, L) at fs_in -> (C, ceil(L * fs_out / fs_in)) at fs_out, polyphase anti-aliased (scipy resample_poly)."""
    if fs_in == fs_out:
        return sig
    ratio = Fraction(fs_out).limit_denominator(1000) / Fraction(fs_in).limit_denominator(1000)
    return resample_poly(sig, ratio.numerator, ratio.denominator, axis=-1)


def read_wfdb_ecg(
    record_path: str | Path,
    fs: int = ECG_FS,
    seconds: float = ECG_SECONDS,
    min_seconds: float = 5.0,
    nan_to_zero: bool = False,
) -> tuple[np.ndarray, dict]:
    """Read any WFDB record (.hea + .dat or .mat) -> (signal (12, fs*seconds) float32 in mV, meta).

    `min_seconds`: refuse shorter records, whose window would be mostly zero padding.
    `nan_to_zero`: replace scattered NaN samples by 0 as ECGFounder's `dataset.py` does (np.nan_to_num); by default
    any NaN is an error, matching Symile-MIMIC, which dropped such records. A lead that is entirely NaN is always
    an error.
    """
    import wfdb  # imported here so `import pacx.data.ecg_io` stays cheap

    base = _record_base(record_path)
    if not base.with_suffix(".hea").is_file():
        raise ECGReadError(f"ECG record not found: {base.with_suffix('.hea')} does not exist")
    try:
        record = wfdb.rdrecord(str(base), physical=True)
    except Exception as e:  # wfdb's own errors vary by format; give one line naming the record
        raise ECGReadError(f"{base}: wfdb could not read the record ({type(e).__name__}: {e})") from e

    names = [str(n).strip().lower() for n in record.sig_name]
    missing = [lead for lead in REQUIRED_LEADS if lead.lower() not in names]
    if missing:
        raise ECGReadError(f"{base}: record lacks standard leads {missing} (has {record.sig_name}; I, II and V1-V6 "
                           f"are required, III, aVR, aVL and aVF are derived from I and II when absent)")
    derived = [lead for lead in DERIVED_LEADS if lead.lower() not in names]
    stored = [lead for lead in ECGFOUNDER_LEADS if lead not in derived]
    # a lead name that occurs twice (e.g. a rhythm strip of II) resolves to its first occurrence
    columns = [names.index(lead.lower()) for lead in stored]

    units = [str(record.units[c]).strip().lower() for c in columns]
    unknown = sorted({u for u in units if u not in _TO_MILLIVOLT})
    if unknown:
        raise ECGReadError(f"{base}: expected lead units mV, uV or V, found {unknown}")
    scale = np.array([_TO_MILLIVOLT[u] for u in units])[:, None]
    lead = dict(zip(stored, record.p_signal[:, columns].T * scale))  # name -> (L,) in mV
    for name in derived:
        w_i, w_ii = DERIVED_LEADS[name]
        lead[name] = w_i * lead["I"] + w_ii * lead["II"]
    sig = np.stack([lead[name] for name in ECGFOUNDER_LEADS])  # (12, L) in mV, ECGFounder order

    nan = np.isnan(sig)
    if nan.any():
        all_nan = [ECGFOUNDER_LEADS[i] for i in range(12) if nan[i].all()]
        if all_nan:
            raise ECGReadError(f"{base}: leads {all_nan} are entirely NaN (no signal)")
        if not nan_to_zero:
            some_nan = {ECGFOUNDER_LEADS[i]: int(nan[i].sum()) for i in range(12) if nan[i].any()}
            raise ECGReadError(
                f"{base}: NaN samples in leads {some_nan}; expected finite samples (repair the record or leave it out)"
            )
        sig = np.nan_to_num(sig, nan=0.0)

    fs_in = float(record.fs)
    if not fs_in > MIN_FS:  # `not >` refuses NaN too (a header without a rate reads as WFDB's default, 250 Hz)
        raise ECGReadError(f"{base}: expected a sampling rate above {MIN_FS:g} Hz (ECGFounder filters to 0.67-40 Hz), "
                           f"found {record.fs} Hz")
    duration = sig.shape[1] / fs_in
    if duration < min_seconds:
        raise ECGReadError(f"{base}: record is {duration:.2f} s long, expected at least {min_seconds} s")

    sig = resample_ecg(sig, fs_in, fs)  # the whole record, so the kept window has no resampling edge at its end
    n_out = int(round(fs * seconds))
    n_pad = max(0, n_out - sig.shape[1])
    sig = np.pad(sig[:, :n_out], ((0, 0), (0, n_pad)))  # first `seconds` seconds; zeros at the end if shorter

    meta = {
        "record": str(base),
        "fs": fs_in,
        "seconds": duration,
        "sig_name": [record.sig_name[c] for c in columns],  # the stored leads read, as the file spells them
        "units": [record.units[c] for c in columns],
        "derived": derived,  # the limb leads computed from I and II
        "padded_samples": n_pad,
        "comments": list(record.comments),
    }
    return sig.astype(np.float32), meta


def ecgfounder_preprocess(sig: np.ndarray, fs: int = ECG_FS, notch_hz: float | None = 50.0) -> np.ndarray:
    """ECGFounder's filtering and normalisation of one (12, L) record -> (12, L) float32.

    Zero-phase notch (Q 30), 4th-order Butterworth band-pass 0.67-40 Hz (both by filtfilt, b/a form as in the
    reference), minus a median-filter baseline of width int(0.4 fs) + 1 (scipy medfilt: zero-padded edges), then ONE
    z-score over the whole array (all leads together, so relative lead amplitudes survive).
    """
    sig = np.asarray(sig, dtype=np.float64)
    if sig.ndim != 2:
        raise DataError(f"ecgfounder_preprocess: expected one record (leads, L), found shape {sig.shape}")
    if not np.isfinite(sig).all():
        raise DataError("ecgfounder_preprocess: the signal has NaN or inf samples")
    if notch_hz is not None:
        # Quirk kept from the reference: the notch is at 50 Hz although MIMIC-IV-ECG was recorded on 60 Hz mains
        # (the 40 Hz low-pass already damps both); pass notch_hz=60.0 for the mains of North American data.
        if not 0 < notch_hz < fs / 2:
            raise DataError(f"ecgfounder_preprocess: notch_hz must lie in (0, {fs / 2}) for fs={fs}, found {notch_hz}")
        b, a = iirnotch(notch_hz, 30.0, fs=fs)
        sig = filtfilt(b, a, sig, axis=-1)
    if not fs > MIN_FS:
        raise DataError(f"ecgfounder_preprocess: the 40 Hz band edge needs fs > {MIN_FS:g} Hz, found fs={fs}")
    b, a = butter(4, [0.67, 40.0], btype="bandpass", fs=fs)
    sig = filtfilt(b, a, sig, axis=-1)
    width = int(0.4 * fs) + 1
    width += 1 - width % 2  # medfilt needs an odd width
    # per-lead baseline wander: scipy.signal.medfilt(sig, [1, width]) (zero-padded edges), computed lead by lead
    # with the 1-D median_filter, which gives the same numbers ~100x faster (medfilt on 2-D input has no 1-D path)
    sig = sig - np.stack([median_filter(lead, size=width, mode="constant", cval=0.0) for lead in sig])
    return ((sig - sig.mean()) / (sig.std() + 1e-8)).astype(np.float32)


def symile_ecg_to_ecgfounder(ecg: np.ndarray) -> np.ndarray:
    """Symile-MIMIC `ecg_{split}.npy` (N, 1, 5000, 12), MIMIC lead order -> (N, 12, 5000) in ECGFounder lead order.

    The values stay as Symile stored them (each record min-max scaled to [-1, 1] over all leads together);
    `ecgfounder_preprocess` is invariant to that scaling up to filter edge effects, as the reference relies on.
    Works on a memory-mapped array slice; the result is a float32 copy.
    """
    if ecg.ndim != 4 or ecg.shape[1] != 1 or ecg.shape[3] != 12:
        raise DataError(f"Symile ECG array: expected shape (N, 1, L, 12), found {ecg.shape}")
    order = [MIMIC_ECG_LEADS.index(lead) for lead in ECGFOUNDER_LEADS]  # swaps aVF and aVL
    return np.ascontiguousarray(ecg[:, 0][:, :, order].transpose(0, 2, 1), dtype=np.float32)  # (N, 12, L)
