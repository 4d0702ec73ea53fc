"""The anomaly mask of a DICOM input as a DICOM Segmentation (highdicom) that references the input series, so that
a viewer (3D Slicer, OHIF) opens it in place over the original: same Study, same Frame of Reference, one frame per
source slice that holds a flagged pixel, each frame pointing at its source image.

One binary segment, "Dif-fuse anomaly", of category "Morphologically Abnormal Structure" (SCT 49755003) and type
"Lesion" (SCT 52988006), by an automatic algorithm of the family "Artificial Intelligence": a machine's flag for a
reader to look at, not a diagnosis; the series description says so. The file is written atomically (:mod:`.write`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuse_core.volumes.grid import DicomGrid
from diffuse_core.volumes.write import atomic_write_bytes

__all__ = ["SEG_SERIES_DESCRIPTION", "segmentation_of", "write_segmentation"]

SEG_SERIES_DESCRIPTION = "Dif-fuse anomaly (research use, not for diagnosis)"
SEG_SERIES_NUMBER = 9034


def segmentation_of(grid: DicomGrid, flagged: np.ndarray, version: str = "0"):
    """A highdicom ``Segmentation`` of ``flagged`` (Z, H, W) {0, 1} (display slices = the series' slices as
    stored, in :attr:`DicomGrid.headers` order)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    flagged = (np.asarray(flagged) > 0).astype(np.uint8)
    if flagged.shape[0] != len(grid.headers):
        raise ValueError(f"the mask has {flagged.shape[0]} slices, the series {len(grid.headers)}")
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Dif-fuse anomaly",
        segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="Dif-fuse", version=version, family=codes.cid7162.ArtificialIntelligence))
    seg = hd.seg.Segmentation(
        source_images=list(grid.headers), pixel_array=flagged, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Dif-fuse Studio",
        manufacturer_model_name="diffuse-studio", software_versions=version, device_serial_number="0",
        series_description=SEG_SERIES_DESCRIPTION, omit_empty_frames=False)
    return seg


def write_segmentation(path: Path, grid: DicomGrid, flagged: np.ndarray, version: str = "0") -> Path:
    """:func:`segmentation_of` saved as ``path`` (written under a temporary name, then renamed)."""
    from io import BytesIO

    buf = BytesIO()
    segmentation_of(grid, flagged, version).save_as(buf)
    return atomic_write_bytes(Path(path), buf.getvalue())
