"""Read one chest X-ray file (PNG, JPEG, BMP, TIFF or DICOM) into an 8-bit grayscale array.

Implements METHOD.md "Data formats users have" (image side): every data set in pacx ends up as uint8 pixels,
grayscale copied to 3 channels (METHOD.md "Stage 1a", Data). The DICOM path follows the usual display pipeline
(DICOM PS3.3 C.11: modality LUT -> VOI LUT / window -> MONOCHROME1 inversion) with pydicom's own
`pydicom.pixels.apply_modality_lut` / `apply_voi_lut`, as in the VinDr-CXR PNG-export recipe.

Scaling to 8 bits, the one decision a reader has to make:
- 8-bit files are already display-ready and pass through unchanged, so a PNG export reads back as it was written.
- 16-bit (and 32-bit / float) files carry no reliable display range: CXR PNGs often store 12 or 14 bits in a
  16-bit container, so a fixed `/ 65535` would leave them nearly black. They are min-max scaled per image:
  `round((x - min) / (max - min) * 255)`, a constant image gives zeros.
- DICOM: after the modality and VOI transforms the result is min-max scaled per image the same way, then
  MONOCHROME1 (bright = low value) is inverted so bone is bright in every output.

Notation: H, W = image height, width.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from pacx.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom")
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(DataError):
    """A file that cannot be read as an image; the message names the file and what was wrong.

    A `DataError` (so a `ValueError`): scripts print it as one line, `pacx.loader` passes it out of workers."""


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file into a (H, W) uint8 grayscale array (see the module docstring for the scaling)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if is_dicom(path):
        return _read_dicom(path)
    return _read_pillow(path)


def read_rgb_tensor(path: str | Path) -> torch.Tensor:
    """Read an image file into a (3, H, W) uint8 tensor: the grayscale image copied to 3 channels."""
    gray = torch.from_numpy(read_gray(path))  # (H, W)
    return gray.unsqueeze(0).repeat(3, 1, 1)  # (3, H, W)


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric (H, W) array to uint8 0..255; a constant array gives zeros."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _one_line(err: Exception) -> str:
    """A library's error as `Type: message` on one line (pydicom's codec messages span several)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def is_dicom(path: Path) -> bool:
    """DICOM by suffix, or for other suffixes (often none, or a UID's last digits: PACS exports name files
    '1.2.840.113619...') by the 'DICM' magic after the 128-byte preamble."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or suffix in PILLOW_SUFFIXES:
        return suffix in DICOM_SUFFIXES
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            # Camera JPEGs may store their rotation as an EXIF tag instead of in the pixels.
            img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow reports unknown formats as UnidentifiedImageError (an OSError), truncation as OSError.
        raise ImageReadError(f"{path}: not a readable image ({_one_line(err)})") from err
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit, 32-bit or float gray: no display range in the file, so stretch the stored range.
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise ImageReadError(f"{path}: expected a 2-D {img.mode} image, found shape {arr.shape}")
        if not np.isfinite(arr).all():  # a NaN would make the min-max stretch, and so the whole image, NaN
            y, x = (int(v) for v in np.argwhere(~np.isfinite(arr))[0])
            raise ImageReadError(f"{path}: pixel (row {y}, column {x}) is {arr[y, x]}; expected finite values")
        return scale_to_uint8(arr)
    if img.mode != "L":
        # RGB, RGBA, LA, P, 1, CMYK ...: ITU-R 601-2 luma; alpha is dropped, not composited.
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # a DataError, not an ImportError, so scripts and loader workers print one line
        raise ImageReadError(f"{path}: reading DICOM needs pydicom, not installed (pip install pydicom)") from err
    try:
        # force=True also reads files written without the 128-byte preamble (common in older archives).
        ds = pydicom.dcmread(path, force=True)
    except Exception as err:  # pydicom raises many types for bad bytes; turn each into one line
        raise ImageReadError(f"{path}: not a readable DICOM file ({_one_line(err)})") from err
    if "PixelData" not in ds:
        if ds.preamble is None:  # force=True parses any bytes; with no 'DICM' marker nothing says this is DICOM
            raise ImageReadError(f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble, no "
                                 f"PixelData element)")
        raise ImageReadError(f"{path}: DICOM file has no PixelData element (no image in it)")
    try:
        arr = ds.pixel_array
    except Exception as err:  # missing codec, truncated pixel data, inconsistent header
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", "unknown transfer syntax")
        raise ImageReadError(f"{path}: cannot decode DICOM pixels ({syntax_name}; {_one_line(err)})") from err
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(f"{path}: expected a single-frame radiograph, found {frames} frames")
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        # Colour DICOM (pydicom already converted YBR to RGB): same luma weights as Pillow's convert("L").
        luma = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114  # (H, W)
        return scale_to_uint8(luma) if arr.dtype != np.uint8 else np.rint(luma).astype(np.uint8)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D grayscale image, found pixel array of shape {arr.shape}")
    arr = apply_modality_lut(arr, ds)
    if ds.get("VOILUTSequence"):
        # A VOI LUT is indexed by integers; the rescale above returns float64 even for slope 1, intercept 0.
        arr = np.rint(arr).astype(np.int64)
    arr = apply_voi_lut(arr, ds)  # VOI LUT table if present, else WindowCenter/Width, else unchanged
    out = scale_to_uint8(arr)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1 stores dense (bone) as low values; flip so bone is bright
    return out
