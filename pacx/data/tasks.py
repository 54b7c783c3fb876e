"""The paper's Stage-3 benchmarks by name: `evaluate.py --task NAME --data_root DIR`.

The original PaCX-MAE code names its downstream tasks in `Stage3_CL.py` (classification) and `Stage3_Seg.py`
(segmentation) and prepares each data set in a notebook (METHOD.md "Found by running the original"). Here each
benchmark is one `Benchmark`: its task type, its labels (binary / multilabel: the label columns; multiclass: the
classes in id order; segmentation: none) in the original's order, the public release it reads and the function that
reads that release's folder (`pacx/data/task_layouts.py`, `pacx/data/seg_layouts.py`: where each rule comes from).

`resolve` writes the benchmark's train / val / test table into the evaluation folder (`task_<NAME>.csv`, a record
of the exact split) and returns the evaluate.py options that read it, so the rest of evaluate.py runs unchanged.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from pacx.data import seg_layouts, task_layouts as layouts
from pacx.data.tables import DatasetFormatError
from pacx.errors import PacxError


@dataclass(frozen=True)
class Benchmark:
    name: str
    task_type: str  # binary | multilabel | multiclass | segmentation
    labels: tuple[str, ...]  # label columns, or (multiclass) class names in id order; () for segmentation
    read: Callable[[Path], pd.DataFrame]  # release folder -> the split table
    release: str  # where to download it


BENCHMARKS = {b.name: b for b in (
    Benchmark("COVID", "binary", ("COVID",), layouts.covidx,
              "https://www.kaggle.com/datasets/andyczhao/covidx-cxr2 (COVIDx CXR-4, version 9)"),
    Benchmark("PNE", "binary", ("PNEUMONIA",), layouts.pneumonia,
              "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia"),
    Benchmark("TB", "binary", ("TB",), layouts.shenzhen,
              "https://www.kaggle.com/datasets/raddar/tuberculosis-chest-xrays-shenzhen"),
    Benchmark("CHEXCHONET", "binary", ("SLVH_DLV_Positive",), layouts.chexchonet,
              "https://physionet.org/content/chexchonet/1.0.0/"),
    Benchmark("COVIDQU", "multiclass", layouts.COVIDQU_CLASSES, layouts.covidqu,
              "https://www.kaggle.com/datasets/anasmohammedtahir/covidqu"),
    Benchmark("CHESTX6", "multiclass", layouts.CHESTX6_CLASSES, layouts.chestx6,
              "https://www.kaggle.com/datasets/mohamedasak/chest-x-ray-6-classes-dataset"),
    Benchmark("NIH", "multilabel", layouts.NIH_ORDER, layouts.nih,
              "https://www.kaggle.com/datasets/nih-chest-xrays/data"),
    Benchmark("VINDR", "multilabel", layouts.VINDR_LABELS, layouts.vindr,
              "https://physionet.org/content/vindr-cxr/1.0.0/ (labels) and "
              "https://www.kaggle.com/datasets/awsaf49/vinbigdata-512-image-dataset (512 px PNGs)"),
    Benchmark("ECHO", "multilabel", layouts.ECHO_LABELS, layouts.echo,
              "https://physionet.org/content/chexchonet/1.0.0/"),
    Benchmark("MEDMOD-PHYS", "multilabel", layouts.MEDMOD_PHENOTYPES, layouts.medmod_phenotypes,
              "https://physionet.org/content/mimiciv/ + https://physionet.org/content/mimic-cxr-jpg/2.1.0/ "
              "through the MedMod extraction (https://github.com/mspancho/MedMod)"),
    Benchmark("MEDMOD-MORT", "multilabel", layouts.MEDMOD_MORTALITY, layouts.medmod_mortality,
              "as MEDMOD-PHYS"),
    Benchmark("CXLSEG", "segmentation", (), seg_layouts.cxlseg,
              "https://physionet.org/content/chest-x-ray-segmentation/1.0.0/"),
    Benchmark("COVIDQU-SEG", "segmentation", (), seg_layouts.covidqu_lungs,
              "https://www.kaggle.com/datasets/anasmohammedtahir/covidqu"),
    Benchmark("QATA", "segmentation", (), seg_layouts.qata,
              "https://www.kaggle.com/datasets/aysendegerli/qatacov19-dataset"),
)}


def benchmark(name: str) -> Benchmark:
    """The benchmark called `name` (any letter case)."""
    found = BENCHMARKS.get(name.strip().upper())
    if found is None:
        raise PacxError(f"--task: expected one of {', '.join(BENCHMARKS)}, got {name!r}")
    return found


def read_benchmark(name: str, data_root) -> pd.DataFrame:
    """The split table of benchmark `name` from its release unpacked at `data_root` (errors name the release)."""
    b, root = benchmark(name), Path(data_root)
    if not root.is_dir():
        raise DatasetFormatError(f"--data_root {root}: no such folder (the {b.name} release: {b.release})")
    try:
        table = b.read(root)
    except DatasetFormatError as err:
        raise DatasetFormatError(f"{err} (--task {b.name} reads the layout of {b.release}; see its docstring in "
                                 f"{b.read.__module__})") from None
    for split in ("train", "val", "test"):
        if not (table["split"] == split).any():
            raise DatasetFormatError(f"--task {b.name}: {root} gives no {split} images")
    return table


def resolve(name: str, data_root, out_dir) -> dict:
    """Write benchmark `name`'s split table to out_dir/task_<NAME>.csv; the evaluate.py options that read it (paths
    relative to `data_root`)."""
    b = benchmark(name)
    csv = Path(out_dir) / f"task_{b.name}.csv"
    read_benchmark(b.name, data_root).to_csv(csv, index=False)
    common = {"image_root": str(data_root), "split_column": "split"}
    if b.task_type == "segmentation":
        return {**common, "seg_csv": (str(csv),), "seg_name": b.name}
    multiclass = b.task_type == "multiclass"
    return {**common, "task_csv": (str(csv),), "task_name": b.name, "image_column": "path",
            "task_type": b.task_type, "label_columns": ("class",) if multiclass else b.labels,
            "classes": b.labels if multiclass else ()}
