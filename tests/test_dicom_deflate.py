"""Deflated DICOM read through the capped stream (:mod:`diffuse_core.io.dicom_deflate`, issue 35): the same dataset
pydicom reads, sequences and nested images included, and element headers over the limits refused before their
values are inflated, wherever they hide."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import _ct, _dicom_dataset, _meta_end, _raw_deflate, raw_deflated_zeros  # noqa: E402

from diffuse_core.io import dicom_deflate, loaded  # noqa: E402
from diffuse_core.io.dicom_deflate import is_deflated, read_deflated  # noqa: E402
from diffuse_core.io.image import load_image  # noqa: E402


def _rich_dataset() -> Dataset:
    """A CT slice with what real files carry: nested sequences of defined and undefined length, an icon image (its
    own Rows, Columns and Pixel Data inside an item) and private elements."""
    ds = _dicom_dataset(_ct())
    items = []
    for i in range(2):
        inner = Dataset()
        inner.ReferencedSOPClassUID, inner.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{i}"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-A0100", "SRT", "Brain"
        inner.PurposeOfReferenceCodeSequence = Sequence([code])      # a defined-length sequence in an item
        inner.is_undefined_length_sequence_item = i == 0                # one item of each kind
        items.append(inner)
    ds.ReferencedImageSequence = Sequence(items)
    ds.ReferencedImageSequence.is_undefined_length = True
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel, icon.BitsAllocated = 4, 4, 1, 8
    icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 7, 0
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.PixelData = bytes(range(16))
    ds.IconImageSequence = Sequence([icon])
    ds.private_block(0x0019, "DIFFUSE TEST", create=True).add_new(0x10, "LO", "a private note")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)            # pydicom deflates it itself
    return path


def test_a_deflated_file_reads_as_pydicom_reads_it(tmp_path):
    path = _write(_rich_dataset(), tmp_path / "rich.dcm")
    assert is_deflated(path)
    ours, theirs = read_deflated(path), pydicom.dcmread(path)
    assert [e.tag for e in ours] == [e.tag for e in theirs]
    for a, b in zip(ours, theirs):
        assert a.VR == b.VR and a.value == b.value, a.tag
    np.testing.assert_array_equal(ours.pixel_array, theirs.pixel_array)
    assert ours.IconImageSequence[0].PixelData == bytes(range(16))
    header = read_deflated(path, header_only=True)      # stops at the image's Pixel Data, not the icon's
    assert "PixelData" not in header and header.IconImageSequence[0].Rows == 4 and header.Rows == 48
    np.testing.assert_array_equal(load_image(path).data[0], _ct().astype(np.float32) - 1024)


def _with_element_in_an_item(length: int) -> bytes:
    """A deflated file whose sequence item (of undefined length) declares a ``length``-byte private OB value of zeros
    (inflated for real)."""
    ds = _rich_dataset()
    marker = b"NESTED-BOMB-MARKER-0123!"
    ds.ReferencedImageSequence[0].private_block(0x0029, "DIFFUSE NEST", create=True).add_new(0x00, "OB", marker)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.ReferencedImageSequence.is_undefined_length = True
    ds.save_as(buf, enforce_file_format=True)
    plain = buf.getvalue()
    body = plain[_meta_end(plain):]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    head = buf.getvalue()[:_meta_end(buf.getvalue())]
    at = body.index(marker)
    return head + _raw_deflate(body[:at - 4] + struct.pack("<I", length), False) + raw_deflated_zeros(length) + \
        _raw_deflate(body[at + len(marker):], True)


def test_an_element_over_the_limit_inside_a_sequence_item_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "nested.dcm"
    path.write_bytes(_with_element_in_an_item(2**30))
    assert path.stat().st_size < 2 * 2**20
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(loaded.TooLargeError, match=r"nested.dcm declares 1024 MiB in data element \(0029,1000\) "
                                                       r".*the limit is 64 MiB of non-image data per DICOM file"):
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated: the element was inflated before it was refused"


def test_the_limits_are_read_when_the_file_is_read(tmp_path, monkeypatch):
    path = _write(_rich_dataset(), tmp_path / "rich.dcm")
    monkeypatch.setattr(loaded, "MAX_HEADER_BYTES", 200)
    with pytest.raises(loaded.TooLargeError, match="limit is 0 MiB of non-image data"):
        read_deflated(path)
    monkeypatch.setattr(loaded, "MAX_HEADER_BYTES", 64 * 2**20)
    monkeypatch.setattr(dicom_deflate, "MAX_ELEMENTS", 20)
    with pytest.raises(loaded.TooLargeError, match="over 20 data elements"):
        read_deflated(path)


def test_a_truncated_or_damaged_deflated_file_is_one_clear_line(tmp_path):
    data = _write(_rich_dataset(), tmp_path / "rich.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:len(data) - 200])
    with pytest.raises(ValueError, match="cut.dcm is a truncated DICOM file"):
        load_image(cut)
    bad = tmp_path / "bad.dcm"
    start = _meta_end(data)
    bad.write_bytes(data[:start] + b"\xff" * 64 + data[start + 64:])
    with pytest.raises(ValueError, match="bad.dcm is a corrupted DICOM file"):
        load_image(bad)
    assert zlib  # the stream is raw deflate: no zlib header to check
