"""Tests for pacx/data/ecg_io.py on real WFDB records (../shared/samples/ecg) and on tiny records written with wfdb."""
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import wfdb

from pacx.data.ecg_io import (
    ECGFOUNDER_LEADS,
    MIMIC_ECG_LEADS,
    ECGReadError,
    ecgfounder_preprocess,
    read_wfdb_ecg,
    symile_ecg_to_ecgfounder,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "ecg"
CINC = ["E07500", "E07501", "HR06000", "HR06001", "HR06002", "JS00001", "JS20000", "JS20001"]
RECORDS = [f"cinc2021_{kind}/{r}" for kind in ("mat", "dat") for r in CINC]
RECORDS += ["ptbxl_100hz/00001_lr", "ptbdb_1000hz/s0010_re"]


def sample(name: str) -> Path:
    if not (SAMPLES / name).with_suffix(".hea").is_file():
        pytest.skip(f"sample ECG {name} absent (../shared/samples/ecg)")
    return SAMPLES / name


def write_record(directory: Path, name: str, signal_mv: np.ndarray, sig_name: list[str], fs: int = 500) -> Path:
    """signal_mv: (L, C) in mV -> a format-16 WFDB record at 1 uV resolution."""
    n = signal_mv.shape[1]
    wfdb.wrsamp(name, fs=fs, units=["mV"] * n, sig_name=sig_name, p_signal=signal_mv, fmt=["16"] * n,
                adc_gain=[1000.0] * n, baseline=[0] * n, write_dir=str(directory))
    return directory / name


@pytest.mark.parametrize("name", RECORDS)
def test_every_sample_reads_in_ecgfounder_order_and_preprocesses(name):
    sig, meta = read_wfdb_ecg(sample(name))
    assert sig.shape == (12, 5000) and sig.dtype == np.float32 and np.isfinite(sig).all()
    assert [n.lower() for n in meta["sig_name"]] == [n.lower() for n in ECGFOUNDER_LEADS]
    # Einthoven / Goldberger: the limb leads are linear in I and II; holds on real signals to the 1 uV quantum
    # (a few uV after resampling), and pins down every limb lead's position, aVL vs aVF included
    lead = dict(zip(ECGFOUNDER_LEADS, sig.astype(np.float64)))
    i, ii = lead["I"], lead["II"]
    for derived, expected in [("III", ii - i), ("aVR", -(i + ii) / 2), ("aVL", i - ii / 2), ("aVF", ii - i / 2)]:
        assert np.abs(lead[derived] - expected).max() < 5e-3, derived
    assert np.abs(sig).max() > 0.5  # millivolts, not ADC units or volts

    x = ecgfounder_preprocess(sig)
    assert x.shape == (12, 5000) and x.dtype == np.float32 and np.isfinite(x).all()
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4


@pytest.mark.parametrize("record", CINC)
def test_mat_and_dat_copies_give_the_same_signal(record):
    mat, _ = read_wfdb_ecg(sample(f"cinc2021_mat/{record}"))
    dat, _ = read_wfdb_ecg(sample(f"cinc2021_dat/{record}.hea"))  # a path with extension is accepted too
    np.testing.assert_array_equal(mat, dat)


def test_100hz_record_is_upsampled():
    path = sample("ptbxl_100hz/00001_lr")
    sig, meta = read_wfdb_ecg(path)
    raw = wfdb.rdrecord(str(path)).p_signal.T  # (12, 1000), same lead order as ECGFounder
    assert meta["fs"] == 100 and meta["padded_samples"] == 0
    # every 5th output sample is an original sample instant
    np.testing.assert_allclose(sig[:, ::5], raw, atol=2e-3)
    # and in between it agrees with FFT resampling, away from the edges
    fft = scipy.signal.resample(raw, 5000, axis=1)
    np.testing.assert_allclose(sig[:, 50:-50], fft[:, 50:-50], atol=1e-2)


def test_1000hz_15_lead_record_is_downsampled_and_cropped_to_first_10s():
    path = sample("ptbdb_1000hz/s0010_re")
    sig, meta = read_wfdb_ecg(path)
    record = wfdb.rdrecord(str(path))
    assert meta["fs"] == 1000 and record.n_sig == 15 and meta["seconds"] > 38
    raw = record.p_signal[:10000, :12].T  # the standard leads are the first 12, in ECGFounder order
    fft = scipy.signal.resample(raw, 5000, axis=1)
    np.testing.assert_allclose(sig[:, 50:-50], fft[:, 50:-50], atol=1e-2)


def test_mimic_lead_order_is_reordered_by_name(tmp_path):
    sig, _ = read_wfdb_ecg(sample("cinc2021_dat/HR06000"))
    order = [ECGFOUNDER_LEADS.index(lead) for lead in MIMIC_ECG_LEADS]
    # MIMIC-IV-ECG storage order with odd capitalisation, plus an extra lead in front
    names = ["pleth"] + [n.upper() if k % 2 else n.lower() for k, n in enumerate(MIMIC_ECG_LEADS)]
    stored = np.concatenate([np.zeros((5000, 1)), sig[order].T], axis=1)
    out, meta = read_wfdb_ecg(write_record(tmp_path, "mimic", stored, names))
    np.testing.assert_allclose(out, sig, atol=1e-6)
    assert meta["sig_name"][4:6] == ["AVL", "avf"]  # as the file spells them


def test_preprocess_matches_reference_recipe_and_its_properties():
    sig, _ = read_wfdb_ecg(sample("cinc2021_mat/JS00001"))
    # ECGFounder util.py::filter_bandpass + z-score, lead by lead
    b_n, a_n = scipy.signal.iirnotch(50, 30, 500)
    b_p, a_p = scipy.signal.butter(4, [0.67, 40], btype="bandpass", fs=500)
    ref = []
    for lead in sig.astype(np.float64):
        y = scipy.signal.filtfilt(b_p, a_p, scipy.signal.filtfilt(b_n, a_n, lead))
        ref.append(y - scipy.signal.medfilt(y, 201))
    ref = np.array(ref)
    ref = (ref - ref.mean()) / (ref.std() + 1e-8)
    out = ecgfounder_preprocess(sig)
    np.testing.assert_allclose(out, ref, atol=1e-5)

    # a positive affine rescaling (Symile's min-max) changes nothing but filter-edge rounding
    np.testing.assert_allclose(ecgfounder_preprocess(0.37 * sig - 0.2), out, atol=1e-4)

    # the notch removes mains hum at its own frequency far better than at the other
    t = np.arange(5000) / 500
    for hum_hz, other_hz in [(50.0, 60.0), (60.0, 50.0)]:
        noisy = sig + 0.3 * np.sin(2 * np.pi * hum_hz * t)
        residual = {}
        for hz in (hum_hz, other_hz):
            diff = ecgfounder_preprocess(noisy, notch_hz=hz) - ecgfounder_preprocess(sig, notch_hz=hz)
            residual[hz] = np.abs(diff[:, 250:-250]).max()  # away from the filtfilt edges
        assert residual[hum_hz] < 0.25 * residual[other_hz]


def test_symile_array_converts_to_ecgfounder_layout():
    sig, _ = read_wfdb_ecg(sample("cinc2021_mat/HR06001"))
    sig2, _ = read_wfdb_ecg(sample("cinc2021_mat/E07500"))
    order = [ECGFOUNDER_LEADS.index(lead) for lead in MIMIC_ECG_LEADS]

    def symile_record(s):  # rajesh-lab/symile get_ecg: p_signal (L, 12) in MIMIC order, min-max over the record
        p = s[order].T.astype(np.float64)
        return (2 * (p - p.min()) / (p.max() - p.min()) - 1)[None]  # (1, L, 12)

    symile = np.stack([symile_record(sig), symile_record(sig2)]).astype(np.float32)  # (2, 1, 5000, 12)
    out = symile_ecg_to_ecgfounder(symile)
    assert out.shape == (2, 12, 5000) and out.dtype == np.float32
    expected = 2 * (sig - sig.min()) / (sig.max() - sig.min()) - 1
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(ecgfounder_preprocess(out[0]), ecgfounder_preprocess(sig), atol=1e-4)
    with pytest.raises(ValueError, match=r"expected shape \(N, 1, L, 12\), found \(2, 5000, 12\)"):
        symile_ecg_to_ecgfounder(symile[:, 0])


def test_bad_records_give_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ECGReadError, match="nothing.hea"):
        read_wfdb_ecg(tmp_path / "nothing")

    wrong = write_record(tmp_path, "wrong", rng.normal(size=(5000, 12)), list(ECGFOUNDER_LEADS[:10]) + ["X1", "X2"])
    with pytest.raises(ECGReadError, match=r"wrong: record lacks standard leads \['V5', 'V6'\]"):
        read_wfdb_ecg(wrong)

    data = rng.normal(size=(5000, 12))
    data[:, 7] = np.nan
    with pytest.raises(ECGReadError, match=r"leads \['V2'\] are entirely NaN"):
        read_wfdb_ecg(write_record(tmp_path, "dead_lead", data, list(ECGFOUNDER_LEADS)))

    data = rng.normal(size=(5000, 12))
    data[100:110, 0] = np.nan
    gaps = write_record(tmp_path, "gaps", data, list(ECGFOUNDER_LEADS))
    with pytest.raises(ECGReadError, match=r"NaN samples in leads \{'I': 10\}"):
        read_wfdb_ecg(gaps)
    zeroed, _ = read_wfdb_ecg(gaps, nan_to_zero=True)  # ECGFounder dataset.py behaviour
    assert np.isfinite(zeroed).all() and (zeroed[0, 100:110] == 0).all()

    with pytest.raises(ECGReadError, match=r"short: record is 2.00 s long, expected at least 5.0 s"):
        read_wfdb_ecg(write_record(tmp_path, "short", rng.normal(size=(1000, 12)), list(ECGFOUNDER_LEADS)))


def test_short_record_is_zero_padded_at_the_end(tmp_path):
    data = np.round(np.random.default_rng(1).normal(size=(3000, 12)), 3)  # 6 s, exact at 1 uV resolution
    sig, meta = read_wfdb_ecg(write_record(tmp_path, "six_seconds", data, list(ECGFOUNDER_LEADS)))
    assert meta["padded_samples"] == 2000
    np.testing.assert_allclose(sig[:, :3000], data.T, atol=1e-6)
    assert (sig[:, 3000:] == 0).all()


@pytest.mark.parametrize("record", ["HR06000", "JS00001", "E07500"])
def test_eight_lead_export_gets_its_limb_leads_from_i_and_ii(tmp_path, record):
    """An 8-lead export (I, II, V1-V6, here in another order) of a real 12-lead record: the four leads it lacks are
    computed from I and II and match the ones the device recorded (Einthoven / Goldberger hold on real signals to
    the 1 uV quantum)."""
    full, _ = read_wfdb_ecg(sample(f"cinc2021_dat/{record}"))
    keep = ["V6", "I", "V1", "V2", "II", "V3", "V4", "V5"]
    stored = np.stack([full[ECGFOUNDER_LEADS.index(n)] for n in keep], axis=1).astype(np.float64)  # (L, 8) mV
    sig, meta = read_wfdb_ecg(write_record(tmp_path, "eight", stored, keep))
    assert meta["derived"] == ["III", "aVR", "aVL", "aVF"]
    for k, lead in enumerate(ECGFOUNDER_LEADS):
        tolerance = 1e-6 if lead in keep else 5e-3  # stored leads come back exactly; derived ones within a few uV
        np.testing.assert_allclose(sig[k], full[k], atol=tolerance, err_msg=lead)


def test_only_the_absent_limb_leads_are_derived_and_fewer_than_eight_are_refused(tmp_path):
    data = np.round(np.random.default_rng(2).normal(size=(5000, 12)), 3)  # independent leads: no law holds
    names = [n for n in ECGFOUNDER_LEADS if n != "aVR"]
    sig, meta = read_wfdb_ecg(write_record(tmp_path, "no_avr", data[:, [ECGFOUNDER_LEADS.index(n) for n in names]],
                                           names))
    assert meta["derived"] == ["aVR"]
    np.testing.assert_allclose(sig[ECGFOUNDER_LEADS.index("III")], data[:, 2], atol=1e-6)  # the stored III, kept
    np.testing.assert_allclose(sig[ECGFOUNDER_LEADS.index("aVR")], -(data[:, 0] + data[:, 1]) / 2, atol=1e-6)
    seven = [n for n in ECGFOUNDER_LEADS if n not in ("II", "III", "aVR", "aVL", "aVF")]
    with pytest.raises(ECGReadError, match=r"seven: record lacks standard leads \['II'\] .*I, II and V1-V6 are "
                                           r"required"):
        read_wfdb_ecg(write_record(tmp_path, "seven", data[:, :7], seven))
