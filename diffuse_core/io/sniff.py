"""A file's format from its content (magic bytes), not only its extension.

:func:`sniff` answers "nifti", "dicom", "png", "jpeg", "tiff" or "numpy", or raises a ``ValueError`` that names the
supported formats and what to do (a truncated download, a wrong extension, a format to convert first).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from diffuse_core.io.loaded import SUPPORTED_FORMATS

__all__ = ["is_gzip", "is_nifti_header", "sniff"]

NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
DICOM_PREAMBLE_BYTES = 128    # a DICOM Part 10 file: 128-byte preamble, then b"DICM"


def is_nifti_header(head: bytes) -> bool:
    """True when ``head`` starts with a NIfTI-1 or NIfTI-2 header (either byte order)."""
    if len(head) >= NIFTI1_HEADER_BYTES:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == NIFTI1_HEADER_BYTES and head[344:347] in (b"n+1", b"ni1"):
                return True
    if len(head) >= 12:
        for endian in "<>":
            if struct.unpack(endian + "i", head[:4])[0] == NIFTI2_HEADER_BYTES and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def sniff(path: Path) -> str:
    """Format from the content: "nifti" | "dicom" | "png" | "jpeg" | "tiff" | "numpy"; ValueError otherwise."""
    with open(path, "rb") as f:
        head = f.read(1024)
    ext = "".join(path.suffixes[-2:]).lower()
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] == b"\x93NUMPY":
        return "numpy"
    if len(head) >= DICOM_PREAMBLE_BYTES + 4 and head[DICOM_PREAMBLE_BYTES:DICOM_PREAMBLE_BYTES + 4] == b"DICM":
        return "dicom"
    if is_nifti_header(head):
        return "nifti"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(NIFTI2_HEADER_BYTES + 4)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path} is a truncated or corrupted gzip file ({exc}): download or export it "
                             f"again") from None
        if is_nifti_header(inner):
            return "nifti"
        if len(inner) < NIFTI1_HEADER_BYTES and ext.endswith(".nii.gz"):
            raise ValueError(f"{path} is a truncated or corrupted NIfTI file (the header is incomplete): "
                             f"download or export it again")
        raise ValueError(f"{path} is gzip-compressed but does not hold a NIfTI image: supported formats are "
                         f"{', '.join(SUPPORTED_FORMATS)}")
    # DICOM without the 128-byte preamble: starts with a group 0002 or 0008 tag (little endian)
    if head[:2] in (b"\x02\x00", b"\x08\x00") and ext in ("", ".dcm", ".ima", ".dicom"):
        return "dicom"
    if ext in (".nii", ".nii.gz"):
        raise ValueError(f"{path} is named like NIfTI but its header is not a NIfTI header (truncated or "
                         f"corrupted file?): export it again")
    described = {".png": "a PNG image", ".jpg": "a JPEG image", ".jpeg": "a JPEG image", ".tif": "a TIFF image",
                 ".tiff": "a TIFF image", ".dcm": "a DICOM file", ".npy": "a NumPy .npy file"}
    last = path.suffix.lower()
    if last in described:
        raise ValueError(f"{path} is not {described[last]}: its content is not a recognised image format "
                         f"(wrong extension or damaged file); supported formats are {', '.join(SUPPORTED_FORMATS)}")
    raise ValueError(f"{path} is not an image this tool reads (unknown format{' ' + last if last else ''}): "
                     f"supported formats are {', '.join(SUPPORTED_FORMATS)}; convert other formats "
                     f"(e.g. .mha, .nrrd, .mgz) to NIfTI first")
