"""A curated teaching set as a zip of de-identified DICOM (:mod:`diffuse_core.io.dicom_export`): one study per case,
three series (original, healthy counterfactual, anomaly map) read from the case's NIfTI files at the input's size."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

from diffuse_core.data import curation
from diffuse_core.io.dicom_export import SERIES, case_datasets, to_bytes


def zip_set_dicom(set_name: str, root=None, out_dir=None) -> Path:
    """``<set>_dicom.zip``: ``<set>/<case>/<nn>_<role>.dcm`` for every case of a curated set, plus
    ``<set>/manifest.json`` with the teaching notes only; written through a temporary name into ``out_dir`` (default:
    a download folder of :func:`diffuse_core.data.curation.download_folder`)."""
    import nibabel as nib
    from dicognito.anonymizer import Anonymizer

    from diffuse_core.io.orientation import read_display_slice

    folder = curation.set_path(set_name, root)
    manifest = curation.load_manifest(set_name, root)
    out = Path(out_dir) if out_dir is not None else curation.download_folder()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{folder.name.replace(' ', '_')}_dicom.zip"
    anonymizer = Anonymizer()                  # one per export: UIDs stay consistent within it
    fd, tmp = tempfile.mkstemp(prefix=".zip-", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            notes = {"name": manifest.get("name", set_name), "cases": [
                {k: e.get(k) for k in ("id", "modality", "lesion_type", "location", "difficulty", "note", "healthy")}
                for e in manifest["cases"]]}
            z.writestr(f"{folder.name}/manifest.json", json.dumps(notes, indent=2))
            for entry in manifest["cases"]:
                images, spacing = {}, None
                for role in SERIES:
                    arr, sp = read_display_slice(nib.load(str(folder / entry["id"] / f"{role}.nii.gz")))
                    images[role] = arr[0] if arr.ndim == 3 else arr
                    spacing = spacing or sp
                datasets = case_datasets(images, spacing, entry.get("modality", ""), folder.name, entry["id"],
                                         anonymizer)
                for role, ds in datasets.items():
                    z.writestr(f"{folder.name}/{entry['id']}/{SERIES[role][0]:02d}_{role}.dcm", to_bytes(ds))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
