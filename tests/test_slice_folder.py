"""`train --data`: real-data folders become training arrays (synth index.csv, plain images, BraTS cases)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuse_core.data.slice_folder import load_slice_folder
from diffuse_core.data.synthbrain import write_split

BRATS = Path(__file__).resolve().parents[2] / "shared" / "real_cases" / "brats2015"


def test_index_csv_folder_keeps_labels(tmp_path):
    write_split(tmp_path, preset="flair", n=4, seed=0, split="val", size=64, healthy_fraction=0.5)
    all_ = load_slice_folder(tmp_path, size=64, healthy_only=False)
    assert all_["images"].shape == (4, 1, 64, 64) and sorted(all_["labels"].tolist()) == [0, 0, 1, 1]
    assert all_["masks"][all_["labels"] == 1].sum() > 0 and all_["masks"][all_["labels"] == 0].sum() == 0
    healthy = load_slice_folder(tmp_path, size=64, healthy_only=True)
    assert len(healthy["images"]) == 2 and (healthy["labels"] == 0).all()
    assert healthy["images"].min() >= -1 and healthy["images"].max() <= 1


def test_plain_image_folder_is_healthy(tmp_path):
    yy, xx = np.mgrid[:80, :70]
    for i in range(3):
        img = np.where(np.hypot(yy - 40, xx - 35) < 28 - i, 100 + 20 * i, 0).astype(np.uint8)
        img[30:40, 30:40] += 40
        Image.fromarray(img).save(tmp_path / f"s{i}.png")
    (tmp_path / "readme.txt").write_text("not an image")
    d = load_slice_folder(tmp_path, size=32)
    assert d["images"].shape == (3, 1, 32, 32) and (d["labels"] == 0).all()


def test_empty_or_missing_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no index.csv"):
        load_slice_folder(tmp_path)
    with pytest.raises(NotADirectoryError):
        load_slice_folder(tmp_path / "missing")


@pytest.mark.skipif(not BRATS.is_dir(), reason="../shared/real_cases/brats2015 is not present")
def test_brats_folder_gives_healthy_and_tumour_slices(tmp_path):
    case = sorted(BRATS.iterdir())[0]
    (tmp_path / case.name).symlink_to(case)
    d = load_slice_folder(tmp_path, size=64, healthy_only=False)
    assert d["labels"].sum() > 20 and (d["labels"] == 0).sum() > 20
    h = load_slice_folder(tmp_path, size=64, healthy_only=True)
    assert (h["masks"].reshape(len(h["masks"]), -1).sum(1) == 0).all()
