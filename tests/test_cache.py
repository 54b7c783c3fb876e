"""Tests for pacx/data/cache.py: cached pixels against an independent PIL resize + centre crop of the originals, the
index, staleness, a corrupt source stopping the build, atomic output, and reading through a 2-worker DataLoader."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pacx.data.cache import ARRAY, INDEX, CacheError, CachedImages, build_cache
from pacx.data.make_cache import main
from pacx.data.datasets import ImageFolderList
from pacx.errors import DataError
from pacx.data.images import read_gray

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
S = 30
# (H, W): portrait, landscape, square, smaller than S (upsampled); each chosen so the centre crop offset
# (resized long side - S) / 2 is a whole number and needs no rounding convention.
SHAPES = [(100, 60), (55, 77), (64, 64), (20, 24)]


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth pattern plus noise, so a wrong crop offset or interpolation shows up in the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    img = 128 + 60 * np.sin(x / 5.0 + seed) + 40 * np.cos(y / 3.0) + rng.normal(0, 15, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (h, w) in enumerate(SHAPES):
        p = folder / f"img{k}.png"
        Image.fromarray(textured(h, w, k)).save(p)
        paths.append(p)
    return paths


def pil_reference(gray: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` (long side truncated, as torchvision), PIL bilinear, then the central crop."""
    h, w = gray.shape
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    resized = Image.fromarray(gray).resize((nw, nh), Image.BILINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def assert_close_to_pil(cached: np.ndarray, reference: np.ndarray):
    # torchvision's antialiased bilinear and PIL's agree up to rounding: at most 1 gray level, on few pixels.
    diff = np.abs(cached.astype(int) - reference.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (diff.max(), (diff > 0).mean())


def test_round_trip_matches_pil_resize_and_index(tmp_path):
    paths = write_images(tmp_path / "src")
    out = build_cache(ImageFolderList(tmp_path / "src"), tmp_path / "cache", size=S, log=None)
    ds = CachedImages(out)
    assert len(ds) == len(paths) and ds.paths == [str(p.resolve()) for p in sorted(paths)]
    for i, p in enumerate(sorted(paths)):
        item = ds[i]
        assert item["path"] == str(p.resolve())
        img = item["image"]
        assert img.dtype == torch.uint8 and img.shape == (3, S, S)
        assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])  # gray copied to 3 channels
        assert_close_to_pil(img[0].numpy(), pil_reference(np.asarray(Image.open(p)), S))
    index = json.loads((out / INDEX).read_text())
    assert index["size"] == S and index["count"] == len(paths) and index["version"] == 2
    for src in index["sources"]:
        assert src["bytes"] == os.stat(src["path"]).st_size and src["mtime_ns"] == os.stat(src["path"]).st_mtime_ns
    # the .npy opens with plain numpy, no pacx needed
    assert np.load(out / ARRAY, mmap_mode="r").shape == (len(paths), S, S)
    assert not list(tmp_path.glob("cache.tmp-*"))


def test_real_samples_match_pil_resize(tmp_path):
    files = sorted((SAMPLES / "cxr").glob("*/*.png"))[:3] if SAMPLES.is_dir() else []
    if not files:
        pytest.skip("shared/samples not present")
    out = build_cache(files, tmp_path / "cache", size=64, log=None)
    ds = CachedImages(out)
    for i, f in enumerate(files):
        assert_close_to_pil(ds[i]["image"][0].numpy(), pil_reference(read_gray(f), 64))


def test_stale_source_is_refused_and_rebuilt(tmp_path):
    paths = write_images(tmp_path / "src")
    logs = []
    out = build_cache(paths, tmp_path / "cache", size=S, log=logs.append)
    build_cache(paths, out, size=S, log=logs.append)
    assert "up to date" in logs[-1]

    changed = paths[1]
    new = textured(*SHAPES[1], seed=99)
    Image.fromarray(new).save(changed)
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    with pytest.raises(CacheError) as err:
        CachedImages(out)
    msg = str(err.value)
    assert "\n" not in msg and str(changed) in msg and "changed" in msg
    assert len(CachedImages(out, check_sources=False)) == len(paths)  # the old pixels, on request

    build_cache(paths, out, size=S, log=logs.append)  # not up to date any more: rebuilt
    assert "cache written" in logs[-1]
    assert_close_to_pil(CachedImages(out)[1]["image"][0].numpy(), pil_reference(new, S))
    assert not list(tmp_path.glob("cache.old-*")) and not list(tmp_path.glob("cache.tmp-*"))


def test_missing_source_is_accepted(tmp_path):
    paths = write_images(tmp_path / "src")
    out = build_cache(paths, tmp_path / "cache", size=S, log=None)
    expected = CachedImages(out)[0]["image"]
    paths[0].unlink()  # a cache is usable without its originals
    assert torch.equal(CachedImages(out)[0]["image"], expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_stops_the_build_with_one_line(tmp_path, workers):
    paths = write_images(tmp_path / "src")
    bad = tmp_path / "src" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with pytest.raises(DataError) as err:
        build_cache(paths[:2] + [bad] + paths[2:], tmp_path / "cache", size=S, workers=workers, log=None)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "not a readable image" in msg
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("cache.tmp-*"))  # nothing half-written


def test_refuses_to_replace_a_folder_that_is_not_a_cache(tmp_path):
    paths = write_images(tmp_path / "src")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("precious")
    with pytest.raises(CacheError, match="not a pacx image cache"):
        build_cache(paths, tmp_path / "results", size=S, log=None)
    assert (tmp_path / "results" / "keep.txt").read_text() == "precious"


def test_dataloader_with_two_workers_and_pickle(tmp_path):
    paths = write_images(tmp_path / "src")
    out = build_cache(paths, tmp_path / "cache", size=S, workers=2, log=None)
    ds = CachedImages(out)
    direct = torch.stack([ds[i]["image"] for i in range(len(ds))])  # (N, 3, S, S); opens the map here
    clone = pickle.loads(pickle.dumps(ds))  # the open map is dropped and reopened on first use
    assert torch.equal(clone[2]["image"], direct[2])
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert torch.equal(torch.cat([b["image"] for b in batches]), direct)
    assert [p for b in batches for p in b["path"]] == ds.paths
    # built with 2 decode workers = built in-process
    serial = build_cache(paths, tmp_path / "serial", size=S, workers=0, log=None)
    assert np.array_equal(np.load(serial / ARRAY), np.load(out / ARRAY))


def test_cli_builds_and_reports_errors_in_one_line(tmp_path, capsys):
    write_images(tmp_path / "src")
    main(["--data", str(tmp_path / "src"), "--out", str(tmp_path / "c"), "--size", str(S), "--workers", "0"])
    assert len(CachedImages(tmp_path / "c")) == len(SHAPES)
    assert "cache written" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nothing" in err


def test_cli_caches_one_split_of_a_csv(tmp_path, capsys):
    """--split_column / --split: only that split's rows, in the CSV's order, each against its own PIL reference."""
    paths = write_images(tmp_path / "imgs")
    splits = ["val", "train", "test", "train"]
    (tmp_path / "all.csv").write_text("path,split\n" + "".join(f"imgs/{p.name},{s}\n" for p, s in zip(paths, splits)))
    main(["--data", str(tmp_path / "all.csv"), "--image_column", "path", "--split_column", "split", "--out",
          str(tmp_path / "train_cache"), "--size", str(S), "--workers", "0"])
    cache = CachedImages(tmp_path / "train_cache")
    train = [paths[1], paths[3]]
    assert [s["path"] for s in json.loads((tmp_path / "train_cache" / INDEX).read_text())["sources"]] == \
        [str(p.resolve()) for p in train]
    for k, p in enumerate(train):
        assert_close_to_pil(cache[k]["image"][0].numpy(), pil_reference(read_gray(p), S))
