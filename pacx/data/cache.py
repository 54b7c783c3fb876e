"""A preprocessing cache: every image decoded once, stored at a fixed size in one memory-mapped uint8 file.

Decoding a full-size chest X-ray PNG (2-3 k pixels a side) costs far more than the augmentation that follows, and
MAE pretraining (METHOD.md "Stage 1a", 400 epochs of CheXpert) would decode each file 400 times. `build_cache`
decodes each image once with `pacx.data.images.read_gray`, resizes its SHORTER side to `size` (bilinear, antialiased,
torchvision's `resize` as `pacx.data.transforms` uses), centre-crops it to size x size and stores it in
`<out>/images.npy`, an (N, size, size) uint8 .npy file (one gray channel: the 3 channels pacx feeds the ViT are
copies of it). `<out>/index.json` lists the source paths in order with their size in bytes and mtime, the stored
side and the format version. `CachedImages(<out>)` then serves the same items as `pacx.data.datasets.ImageFolderList`
({'image': uint8 (3, S, S), 'path': str}), so `mae_train` and the loader run on it unchanged.

Choices to know about:
- Store a side larger than the training size (256 for 224 training) so RandomResizedCrop still has pixels to crop
  from; the crop is then resampled twice (to 256 here, to 224 in the augmentation), a slight extra blur.
- The centre crop drops the edges of non-square images (a 2320 x 2828 CheXpert view loses 9% at top and bottom),
  which RandomResizedCrop on the original could have reached.
- Staleness: a source file that still exists but whose size or mtime changed makes `CachedImages` refuse with one
  line naming it (rebuild, or pass `check_sources=False`). A missing source is not an error: a cache is meant to be
  usable without its originals (e.g. copied to another machine). `build_cache` on an up-to-date cache does nothing;
  on a stale or different one it rebuilds.
- Atomic: the build writes into `<out>.tmp-<pid>/` and renames it to `<out>` at the end, so a killed build never
  leaves a half-written cache under the final name. A bad image stops the build with the reader's one-line error.

    python -m pacx.data.make_cache --data train.csv --image_column Path --out cache/chexpert_256 --size 256

Disk: N * size^2 bytes (CheXpert's 224,316 images at 256: 14.7 GB).

Notation: N = images, S = stored side, H, W = original height, width.
"""
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Subset

from pacx.errors import DataError
from pacx.data.images import read_gray

FORMAT = "pacx-image-cache"
VERSION = 2  # 2: bilinear resizing, as the original's transforms (version 1 was bicubic)
ARRAY, INDEX = "images.npy", "index.json"
DECODE_BATCH = 16  # images per message from a decode worker


class CacheError(DataError):
    """A cache folder that cannot be used (missing, wrong format, stale); the message names the file."""


def resize_short_center_crop(gray: torch.Tensor, size: int) -> torch.Tensor:
    """(1, H, W) uint8 -> (1, S, S) uint8: shorter side to S (bilinear, antialiased), then the central S x S."""
    img = TF.resize(gray, [size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(img, [size, size])


def _source_stat(path: str) -> dict:
    st = os.stat(path)
    return {"path": path, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Decode(Dataset):
    """Item i: (i, (S, S) uint8 array) or (i, one-line error) - errors travel as text, never as a worker traceback."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            gray = torch.from_numpy(read_gray(self.paths[i]))[None]  # (1, H, W)
        except (DataError, OSError, ValueError) as e:
            return i, str(e).splitlines()[0] if str(e) else f"{self.paths[i]}: {type(e).__name__}"
        return i, resize_short_center_crop(gray, self.size)[0].numpy()  # (S, S)


def _as_list(batch):
    return batch


def _format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _paths_of(dataset_or_paths) -> list[str]:
    if isinstance(dataset_or_paths, Subset):  # some rows of a data set (one split of a CSV): their paths, in order
        every = _paths_of(dataset_or_paths.dataset)
        paths = [every[i] for i in dataset_or_paths.indices]
    else:
        paths = getattr(dataset_or_paths, "paths", dataset_or_paths)
    if isinstance(paths, (str, os.PathLike)) or not hasattr(paths, "__iter__"):
        raise CacheError(f"build_cache: expected a data set with a `paths` list (ImageFolderList, ImageCSV) or a "
                         f"list of image paths, found {type(dataset_or_paths).__name__}")
    paths = [os.path.abspath(p) for p in paths]
    if not paths:
        raise CacheError("build_cache: no images to cache")
    return paths


def read_index(out: str | Path) -> dict:
    """The index of a cache folder, checked for format and version."""
    index_file = Path(out) / INDEX
    if not index_file.is_file():
        raise CacheError(f"{index_file}: no such file (not a pacx image cache; build one with "
                         f"python -m pacx.data.make_cache)")
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{index_file}: not a readable JSON index ({e})") from e
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise CacheError(f"{index_file}: expected format {FORMAT!r} version {VERSION}, found "
                         f"{index.get('format')!r} version {index.get('version')!r}")
    return index


def stale_source(index: dict) -> str | None:
    """A one-line description of the first source that changed since the build, or None. Missing sources are
    accepted (see the module docstring)."""
    for src in index["sources"]:
        try:
            st = os.stat(src["path"])
        except FileNotFoundError:
            continue
        if st.st_size != src["bytes"] or st.st_mtime_ns != src["mtime_ns"]:
            return (f"{src['path']}: changed since the cache was built (size {src['bytes']} -> {st.st_size} bytes, "
                    f"mtime {src['mtime_ns']} -> {st.st_mtime_ns} ns)")
    return None


def _up_to_date(out: Path, paths: list[str], size: int) -> bool:
    try:
        index = read_index(out)
    except CacheError:
        return False
    same = index["size"] == size and [s["path"] for s in index["sources"]] == paths
    return same and (out / ARRAY).is_file() and all(os.path.exists(p) for p in paths) and stale_source(index) is None


def build_cache(dataset_or_paths, out_path: str | Path, size: int = 256, workers: int = 0,
                progress_every: int = 1000, log: Callable[[str], None] | None = print) -> Path:
    """Decode every image once into `<out_path>/images.npy` (N, size, size) uint8 + `<out_path>/index.json`.

    `dataset_or_paths`: a data set with a `paths` list (`ImageFolderList`, `ImageCSV`, ...), a `Subset` of one (some
    rows of it) or a list of paths; item i of the cache is path i. `workers` decode processes (0: in this process).
    Returns the cache folder.
    """
    out = Path(out_path)
    paths = _paths_of(dataset_or_paths)
    if size < 1:
        raise CacheError(f"build_cache: size must be a positive number of pixels, found {size}")
    if out.exists():
        if _up_to_date(out, paths, size):
            if log:
                log(f"{out}: up to date ({len(paths)} images at {size} x {size}), nothing to do")
            return out
        if not (out / INDEX).is_file():
            raise CacheError(f"{out}: exists and is not a pacx image cache (no {INDEX}); choose another --out")
    n = len(paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    need, free = n * size * size, shutil.disk_usage(out.parent).free
    if need > free:
        raise CacheError(f"{out}: the cache needs {need / 1e9:.2f} GB, only {free / 1e9:.2f} GB free there")
    sources = [_source_stat(p) if os.path.exists(p) else None for p in paths]  # stat before reading: a file
    # rewritten during the build then shows up as stale rather than silently cached from its old content
    missing = [p for p, s in zip(paths, sources) if s is None]
    if missing:
        raise CacheError(f"{missing[0]}: no such file ({len(missing)} of {n} sources missing)")

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        array = np.lib.format.open_memmap(tmp / ARRAY, mode="w+", dtype=np.uint8, shape=(n, size, size))
        loader = DataLoader(_Decode(paths, size), batch_size=DECODE_BATCH, num_workers=workers,
                            collate_fn=_as_list, prefetch_factor=4 if workers > 0 else None)
        t0, done, next_report = time.perf_counter(), 0, progress_every
        for batch in loader:
            for i, result in batch:
                if isinstance(result, str):
                    raise CacheError(result)
                array[i] = result
            done += len(batch)
            if log and progress_every and (done >= next_report or done == n):
                elapsed = time.perf_counter() - t0
                eta = elapsed / done * (n - done)
                log(f"cache {done}/{n} images | {done / elapsed:.1f} img/s | ETA {_format_seconds(eta)}")
                next_report = done + progress_every
        array.flush()
        del array
        index = {"format": FORMAT, "version": VERSION, "size": size, "count": n, "array": ARRAY,
                 "resize": "shorter side to size (bilinear, antialias), centre crop", "sources": sources}
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
        if out.exists():
            # A directory cannot be replaced in one rename: move the old cache aside first, then drop it.
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        log(f"cache written: {out} ({n} images, {n * size * size / 1e9:.2f} GB)")
    return out


class CachedImages(Dataset):
    """The images of a cache folder, items {'image': uint8 (3, S, S), 'path': str} like `ImageFolderList`.

    The memory map is opened lazily, in whichever process first reads an item, and is not pickled: each
    DataLoader worker opens its own. `check_sources=True` refuses a cache whose sources changed (one `stat` per
    image at construction; pass False for a cache copied away from its originals and known to be current).
    """

    def __init__(self, path: str | Path, transform: Callable | None = None, check_sources: bool = True):
        self.root = Path(path)
        index = read_index(self.root)
        if check_sources:
            stale = stale_source(index)
            if stale:
                raise CacheError(f"{stale}; rebuild {self.root} with python -m pacx.data.cache (the same --data and "
                                 f"--size) before training on it")
        self.size = int(index["size"])
        self.paths = [s["path"] for s in index["sources"]]
        self.array_file = self.root / index["array"]
        self.transform = transform
        self._array = None
        shape = self._open().shape  # check the array once here, so a worker never meets a bad file
        if shape != (len(self.paths), self.size, self.size):
            raise CacheError(f"{self.array_file}: expected shape {(len(self.paths), self.size, self.size)} from "
                             f"{INDEX}, found {shape}")
        self._array = None  # not kept open: it would be inherited by forked workers

    def _open(self) -> np.ndarray:
        if self._array is None:
            try:
                self._array = np.load(self.array_file, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(f"{self.array_file}: not a readable .npy array ({e})") from e
            if self._array.dtype != np.uint8 or self._array.ndim != 3:
                raise CacheError(f"{self.array_file}: expected a 3-D uint8 array, found "
                                 f"{self._array.ndim}-D {self._array.dtype}")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        gray = torch.from_numpy(np.array(self._open()[i]))  # (S, S); a copy: the map is read-only
        image = gray.unsqueeze(0).repeat(3, 1, 1)  # (3, S, S), as pacx.data.images.read_rgb_tensor
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "path": self.paths[i]}
