"""Teaching cases as DICOM, for a PACS viewer or a teaching-file system (issue: teaching v2, item 5); the zip of a
curated set is :func:`diffuse_core.data.curated_dicom.zip_set_dicom`.

Each case becomes one study of three single-image series: the original slice, the healthy counterfactual and the
anomaly map, at the input's own size and pixel spacing (read from the case's NIfTI files). The datasets are built
from the pixels alone (Secondary Capture Image Storage, 12-bit MONOCHROME2, a rescale back to the project's
intensity units), so no attribute of an uploaded DICOM can reach them; each then passes through ``dicognito``, a
maintained de-identification library implementing the DICOM basic application-level confidentiality profile
(PS3.15 Annex E), before the teaching labels (set and case id, never a patient's) are set.
"""

from __future__ import annotations

import io

import numpy as np

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# role -> (series number, series description, the value range stored in 12 bits)
SERIES = {"original": (1, "original slice (normalised)", (-1.0, 1.0)),
          "counterfactual": (2, "healthy counterfactual (Dif-fuse)", (-1.0, 1.0)),
          "anomaly": (3, "anomaly map |x0 - x0_hat| (Dif-fuse)", (0.0, 2.0))}
MAX_STORED = 4095
# Type 2 and 2C attributes of the Secondary Capture Image IOD (PS3.3 A.8.1) that the export knows no value for: a
# validator (dciodvfy) and a strict PACS want them present, and zero-length is their "unknown" (PS3.5 7.4.3). They
# are set empty AFTER de-identification, so no patient's value can fill them (and dicognito is never handed an
# empty one). PatientOrientation (2C, needed where an image has no Image Plane module): a slice's plane and
# direction are not known for every input (a PNG upload), so none is claimed. Laterality (2C, needed for a paired
# body part) is left out because BodyPartExamined says the body part is the brain, an unpaired one.
EMPTY_TYPE2 = {"Patient": ("PatientBirthDate", "PatientSex"),
               "General Study": ("StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber"),
               "General Image": ("PatientOrientation",)}
BODY_PART = "BRAIN"                 # PS3.16 Annex L, SNOMED 12738006: what every input of the project shows


def _dataset(pixels: np.ndarray, spacing, role: str, modality: str, study_uid: str, label: dict):
    """One Secondary Capture dataset of ``pixels`` (H, W) in the value range of ``role``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    number, description, (low, high) = SERIES[role]
    stored = np.clip(np.rint((np.asarray(pixels, np.float64) - low) / (high - low) * MAX_STORED), 0, MAX_STORED)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.Modality = "CT" if str(modality).lower() == "ct" else "MR"
    ds.ConversionType = "WSD"
    ds.PatientName, ds.PatientID = "Teaching", "teaching"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", number, 1
    ds.SeriesDescription = description
    ds.BodyPartExamined = BODY_PART
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BurnedInAnnotation = "NO"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.PixelSpacing = [f"{float(spacing[0]):.6g}", f"{float(spacing[1]):.6g}"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{low:g}", f"{(high - low) / MAX_STORED:.8g}", "US"
    ds.WindowCenter, ds.WindowWidth = f"{(low + high) / 2:g}", f"{high - low:g}"
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.ImageComments = label["comment"]
    return ds


def _label(ds, label: dict) -> None:
    """After de-identification: the teaching labels, and the attributes that say what was done."""
    import dicognito

    ds.PatientName = f"Teaching^{label['case']}"
    ds.PatientID = label["case"][:64]
    ds.StudyDescription = f"Dif-fuse Studio teaching set {label['set']}"[:64]
    for keywords in EMPTY_TYPE2.values():
        for keyword in keywords:
            setattr(ds, keyword, None)            # pydicom: present, zero-length
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"built from pixels only; dicognito {dicognito.__version__} (PS3.15 Annex E basic)"


def case_datasets(images: dict[str, np.ndarray], spacing, modality: str, set_name: str, case_id: str,
                  anonymizer=None) -> dict:
    """{role: pydicom Dataset} for one case (``images`` maps "original", "counterfactual", "anomaly" to (H, W))."""
    from dicognito.anonymizer import Anonymizer
    from pydicom.uid import generate_uid

    anonymizer = anonymizer or Anonymizer()
    study = generate_uid()
    label = {"set": set_name, "case": case_id,
             "comment": f"Dif-fuse Studio teaching case {case_id} (set {set_name}); for teaching, not for diagnosis"}
    out = {}
    for role in SERIES:
        ds = _dataset(images[role], spacing, role, modality, study, label)
        anonymizer.anonymize(ds)
        _label(ds, label)
        out[role] = ds
    return out


def to_bytes(ds) -> bytes:
    """A dataset as the bytes of a DICOM file (Part 10, with its file meta)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
