"""Tests for pacx/data/images.py: real sample radiographs (skipped when ../shared/samples is absent) and small files
written here, checked against hand-computed pixel values, a lossless twin, and anatomy (bone bright)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pacx.data.images import ImageReadError, read_gray, read_rgb_tensor

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
CXR, DICOM = SAMPLES / "cxr", SAMPLES / "dicom"
SIIM_JPEG = DICOM / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
SIIM_RAW = DICOM / "derived" / "siim_nih_cr_chest_pa_uncompressed.dcm"
RG1 = DICOM / "RG1_J2KI.dcm"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"sample file {path} not present")
    return path


def write_dicom(path: Path, pixels: np.ndarray, bits_stored: int, **attrs) -> Path:
    """A minimal uncompressed single-frame grayscale DICOM; `attrs` become data elements (None = no pixels)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    ds.PixelData = pixels.tobytes()
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def mediastinum_minus_lungs(a: np.ndarray) -> float:
    """Centre column (mediastinum/spine) minus the two lung fields, rows 30-60% of the height."""
    h, w = a.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    centre = a[rows, int(0.45 * w) : int(0.55 * w)].astype(float).mean()
    left, right = a[rows, int(0.2 * w) : int(0.35 * w)], a[rows, int(0.65 * w) : int(0.8 * w)]
    lungs = np.concatenate([left.ravel(), right.ravel()])
    return centre - lungs.astype(float).mean()


# ---- real samples ----

@pytest.mark.parametrize(
    "rel, shape",
    [
        ("cxr/nih_cxr14/00000001_000.png", (512, 512)),
        ("cxr/nih_cxr14/00027426_000.png", (512, 512)),
        ("cxr/mhh_covid19/90070cbc.png", (524, 640)),
        ("cxr/mhh_covid19/93fd0adb.png", (524, 640)),
        ("cxr/mhh_covid19/0a7faa2a.png", (647, 640)),
        ("cxr/mhh_covid19/5782ae15.png", (640, 640)),
        ("cxr/derived/00000001_000_q95.jpg", (512, 512)),
        ("dicom/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", (1024, 1024)),
        ("dicom/derived/siim_nih_cr_chest_pa_uncompressed.dcm", (1024, 1024)),
    ],
)
def test_sample_sizes_and_8bit_passthrough(rel, shape):
    path = need(SAMPLES / rel)
    gray = read_gray(path)
    assert gray.dtype == np.uint8 and gray.shape == shape
    if path.suffix == ".png":  # 8-bit gray PNGs must come back exactly as Pillow decodes them
        np.testing.assert_array_equal(gray, np.asarray(Image.open(path)))


def test_rgb_tensor_is_gray_in_three_channels():
    path = need(CXR / "nih_cxr14" / "00000001_000.png")
    t = read_rgb_tensor(path)
    assert t.dtype == torch.uint8 and t.shape == (3, 512, 512)
    gray = torch.from_numpy(read_gray(path))
    for c in range(3):
        assert torch.equal(t[c], gray)


def test_jpeg_q95_close_to_png_original():
    png = read_gray(need(CXR / "nih_cxr14" / "00000001_000.png")).astype(float)
    jpg = read_gray(need(CXR / "derived" / "00000001_000_q95.jpg")).astype(float)
    assert np.abs(png - jpg).mean() < 2.0
    # and far from an unrelated radiograph of the same size
    other = read_gray(need(CXR / "nih_cxr14" / "00027426_000.png")).astype(float)
    assert np.abs(png - other).mean() > 10.0


def test_siim_uncompressed_equals_jpeg_baseline():
    a = read_gray(need(SIIM_JPEG)).astype(int)
    b = read_gray(need(SIIM_RAW)).astype(int)
    assert np.abs(a - b).mean() < 0.5 and np.abs(a - b).max() <= 2


def test_monochrome1_cr_has_bright_bones_like_monochrome2():
    pytest.importorskip("pydicom")
    rg1 = read_gray(need(RG1))
    assert rg1.shape == (1955, 1841)
    siim = read_gray(need(SIIM_RAW))
    # Mediastinum/spine brighter than the lungs in both; without the MONOCHROME1 flip RG1 would be reversed.
    assert mediastinum_minus_lungs(siim) > 30
    assert mediastinum_minus_lungs(rg1) > 30


# ---- files written here ----

def test_8bit_png_roundtrip_and_color_modes(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "g.png"), gray)
    Image.fromarray(gray).save(tmp_path / "g.bmp")
    np.testing.assert_array_equal(read_gray(tmp_path / "g.bmp"), gray)
    Image.fromarray(gray).save(tmp_path / "g.tif")
    np.testing.assert_array_equal(read_gray(tmp_path / "g.tif"), gray)

    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # ITU-R 601-2
    assert np.abs(read_gray(tmp_path / "c.png").astype(float) - luma).max() <= 1.0

    rgba = np.concatenate([rgb, np.full((12, 9, 1), 7, np.uint8)], axis=2)  # alpha is dropped, not composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c4.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "c4.png"), read_gray(tmp_path / "c.png"))

    la = np.stack([gray, np.full_like(gray, 3)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "la.png"), gray)

    index = rng.integers(0, 4, (12, 9), dtype=np.uint8)
    pal = Image.fromarray(index, "P")
    pal.putpalette([0, 0, 0, 50, 50, 50, 100, 100, 100, 250, 250, 250])
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "p.png"), np.array([0, 50, 100, 250])[index])


def test_16bit_png_12bit_data_scaled_by_stored_range(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.integers(300, 4000, (10, 11)).astype(np.uint16)
    v[0, 0], v[0, 1] = 300, 4000  # pin the range: 300 -> 0, 4000 -> 255
    Image.fromarray(v).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")  # really stored as 16-bit
    expected = np.floor((v.astype(float) - 300) / 3700 * 255 + 0.5)
    out = read_gray(tmp_path / "x16.png")
    assert out[0, 0] == 0 and out[0, 1] == 255
    assert np.abs(out.astype(float) - expected).max() <= 1  # rint vs floor(x+.5) differ only at exact halves
    Image.fromarray(np.full((4, 4), 1234, np.uint16)).save(tmp_path / "flat16.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "flat16.png"), np.zeros((4, 4), np.uint8))


def test_dicom_rescale_and_window_match_hand_formula(tmp_path):
    pytest.importorskip("pydicom")
    stored = (np.arange(64 * 50, dtype=np.uint16) % 3000).reshape(64, 50)
    path = write_dicom(
        tmp_path / "w.dcm", stored, 12,
        RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2500, WindowWidth=2001,
    )
    value = stored.astype(float) * 2 - 1000  # modality LUT
    # DICOM PS3.3 C.11.2.1.2.1 LINEAR window, then the per-image stretch (the window clips both ends here)
    c, w = 2500 - 0.5, 2001 - 1
    expected = np.clip((value - c) / w + 0.5, 0, 1) * 255
    out = read_gray(path)
    assert np.abs(out - expected).max() <= 1.0
    assert (out == 0).any() and (out == 255).any()


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    stored = (np.arange(40 * 30, dtype=np.uint16) % 256).reshape(40, 30)
    lut = (np.sqrt(np.arange(256)) * 100).astype(np.uint16)  # a non-linear VOI LUT, 16-bit entries
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [256, 0, 16])  # LUTDescriptor: entries, first mapped value, bits
    item.add_new(0x00283006, "OW", lut.astype("<u2").tobytes())  # LUTData, as real files store it
    path = write_dicom(
        tmp_path / "lut.dcm", stored, 8 + 4, VOILUTSequence=pydicom.Sequence([item]),
        RescaleSlope=1, RescaleIntercept=0, WindowCenter=10, WindowWidth=5,  # the LUT wins over the window
    )
    mapped = lut[stored].astype(float)
    expected = (mapped - mapped.min()) / (mapped.max() - mapped.min()) * 255
    assert np.abs(read_gray(path) - expected).max() <= 0.5 + 1e-9


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    pytest.importorskip("pydicom")
    rng = np.random.default_rng(2)
    stored = rng.integers(0, 4096, (20, 24)).astype(np.uint16)
    m2 = read_gray(write_dicom(tmp_path / "m2.dcm", stored, 12))
    m1 = read_gray(write_dicom(tmp_path / "m1.dcm", 4095 - stored, 12, PhotometricInterpretation="MONOCHROME1"))
    assert np.abs(m1.astype(int) - m2.astype(int)).max() <= 1
    assert np.corrcoef(m2.ravel(), stored.ravel())[0, 1] > 0.99  # bright stays bright


def test_dicom_detected_by_preamble_without_suffix(tmp_path):
    pytest.importorskip("pydicom")
    stored = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7)
    write_dicom(tmp_path / "a.dcm", stored, 8)
    (tmp_path / "noext").write_bytes((tmp_path / "a.dcm").read_bytes())
    np.testing.assert_array_equal(read_gray(tmp_path / "noext"), read_gray(tmp_path / "a.dcm"))


def bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=90)
    files = {
        "missing": tmp_path / "missing.png",
        "empty_png": tmp_path / "empty.png",
        "empty_dcm": tmp_path / "empty.dcm",
        "garbage": tmp_path / "garbage.jpg",
        "truncated_png": tmp_path / "trunc.png",
        "truncated_jpg": tmp_path / "trunc.jpg",
    }
    files["empty_png"].write_bytes(b"")
    files["empty_dcm"].write_bytes(b"")
    files["garbage"].write_bytes(b"this is not an image at all" * 10)
    for name, src in (("truncated_png", "full.png"), ("truncated_jpg", "full.jpg")):
        data = (tmp_path / src).read_bytes()
        files[name].write_bytes(data[: len(data) // 2])
    return files


@pytest.mark.parametrize(
    "kind", ["missing", "empty_png", "empty_dcm", "garbage", "truncated_png", "truncated_jpg"]
)
def test_bad_files_raise_one_line_naming_the_file(tmp_path, kind):
    if kind == "empty_dcm":
        pytest.importorskip("pydicom")
    path = bad_files(tmp_path)[kind]
    with pytest.raises(ImageReadError) as err:
        read_gray(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_dicom_without_pixels_and_with_truncated_pixels(tmp_path):
    pytest.importorskip("pydicom")
    stored = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    no_pixels = write_dicom(tmp_path / "nopix.dcm", stored, 16, PixelData=None)
    with pytest.raises(ImageReadError, match="no PixelData") as err:
        read_gray(no_pixels)
    assert str(no_pixels) in str(err.value)
    short = write_dicom(tmp_path / "short.dcm", stored, 16, PixelData=stored.tobytes()[:100])
    with pytest.raises(ImageReadError) as err:
        read_gray(short)
    assert str(short) in str(err.value) and "\n" not in str(err.value)


def test_compressed_dicom_without_codec_is_one_line(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    path = write_dicom(tmp_path / "jls.dcm", np.zeros((8, 8), np.uint16), 12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG-LS stream \xff\xd9"])  # no plugin decodes these bytes
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="JPEG-LS") as err:
        read_gray(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_pydicom_gives_install_hint(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    path = write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint8), 8)
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(ImageReadError, match="pip install pydicom") as err:
        read_gray(path)
    assert str(path) in str(err.value)
