"""A tiny synthetic world written in every format and read back through the data-layer adapters users would use."""
import numpy as np
import pytest

from pacx.data.datasets import ImageCSV, SegmentationCSV
from pacx.data.symile import SymileMIMIC
from pacx.data.tables import read_table
from pacx.data.ecg_io import ECGFOUNDER_LEADS, MIMIC_ECG_LEADS, read_wfdb_ecg
from pacx.data.lab_table import read_lab_table
from pacx.data.labs import LabPercentiles
from pacx.world.files import write_world
from pacx.world.physiology import LABEL_NAMES


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_world(root, 10, 4, 4, seed=1, image_size=32,
                formats=("images", "segmentation", "labs", "npy", "retrieval", "wfdb"))
    return root


def test_images_and_segmentation_csvs(world):
    cls = ImageCSV(world / "images.csv", "path", list(LABEL_NAMES), task="multilabel")
    assert len(cls) == 18 and cls[0]["image"].shape == (3, 32, 32) and cls[0]["label"].shape == (6,)
    seg = SegmentationCSV(world / "segmentation.csv")
    item = seg[3]
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert 0 < item["mask"].mean() < 1


def test_symile_splits_and_triplets_agree(world):
    splits = {s: SymileMIMIC(world / "data_npy", s) for s in ("train", "val", "val_retrieval", "test")}
    assert [len(splits[s]) for s in ("train", "val")] == [10, 4]
    assert len(splits["test"]) == 4 * (1 + 3)  # query + min(9, n - 1) candidates from its own split
    table = read_lab_table(world / "labs.csv", id_column="hadm_id")
    train_ids = [str(h) for h in np.load(world / "data_npy" / "train" / "hadm_id_train.npy")]
    rows = table.set_index("hadm_id").loc[train_ids]
    x, m = LabPercentiles().fit(rows).transform(rows)
    item = splits["train"][2]
    np.testing.assert_allclose(item["labs"].numpy(), x[2], atol=1e-6)
    np.testing.assert_array_equal(item["mask"].numpy(), m[2])

    # The raw triplets name the same patients in the same order: row 2 holds train patient 2's WFDB record.
    trip = read_table(world / "triplets.csv", ["hadm_id", "ecg_path"])
    assert trip["hadm_id"].iloc[2] == train_ids[2]
    raw = read_wfdb_ecg(world / trip["ecg_path"].iloc[2])[0]  # (12, 5000) mV, ECGFounder lead order
    # The Symile ECG (MIMIC lead order, min-max to [-1, 1]) is an affine image of the WFDB record's leads.
    order = [MIMIC_ECG_LEADS.index(lead) for lead in ECGFOUNDER_LEADS]
    sym = item["ecg"].numpy()[order]  # (12, 5000) in ECGFounder order
    slope, intercept = np.polyfit(raw.ravel(), sym.ravel(), 1)
    np.testing.assert_allclose(slope * raw + intercept, sym, atol=5e-3)
    assert sym.min() == pytest.approx(-1, abs=1e-6) and sym.max() == pytest.approx(1, abs=1e-6)
