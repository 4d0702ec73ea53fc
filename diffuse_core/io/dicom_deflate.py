"""Deflated DICOM (Deflated Explicit VR Little Endian) read through a capped stream (issue 35).

pydicom inflates a deflated file's whole dataset in one ``zlib.decompress`` call before it reads a single element,
so a 1 MB file holding a 1 GiB private element costs 1 GiB of memory and half a minute before any check can run.
Here the dataset is inflated in chunks (``zlib.decompressobj`` with ``max_length``) and every element header is
looked at as soon as it is inflated, BEFORE its value is: an element declaring more than
:data:`~diffuse_core.io.loaded.MAX_HEADER_BYTES` of non-image data (all such elements together), pixel data larger
than Rows x Columns x frames x bits declare, or an image over the pixel limits
(:func:`~diffuse_core.io.loaded.check_pixels`) is refused after a few kilobytes are inflated. What passes is
bounded by those declared sizes and handed to pydicom (``read_dataset``) from memory, inflated once.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from diffuse_core.io import loaded
from diffuse_core.io.loaded import TooLargeError, check_decoded_bytes, check_pixels, describe_source

__all__ = ["DEFLATED_TS", "MAX_ELEMENTS", "file_meta_end", "is_deflated", "read_deflated"]

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
MAX_ELEMENTS = 200_000        # data elements and items in one file (an enhanced multi-frame CT: ~30 per frame)
META_READ = 64 * 1024         # the File Meta group is read from this many leading bytes
CHUNK_IN = 256 * 1024         # compressed bytes read at a time
CHUNK_OUT = 1 << 20           # at most this many bytes inflated at a time
PIXEL_SLACK = 64 * 1024       # pixel data may be this much (or 1/8) longer than Rows x Columns x frames declare

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}       # Pixel Data, Float / Double Float Pixel Data
_CAPTURE = {0x00280002: "samples", 0x00280008: "frames", 0x00280010: "rows", 0x00280011: "cols",
            0x00280100: "bits"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def file_meta_end(head: bytes) -> tuple[int, str] | None:
    """(offset where the dataset starts, Transfer Syntax UID) of a Part 10 file from its leading bytes; None when
    they do not hold a complete File Meta group (group 0002, explicit VR little endian, after the preamble)."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    pos, ts = 132, ""
    while pos + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return pos, ts
        vr = head[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length, start = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if element == 0x0010:
            ts = head[start:start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    return None


def is_deflated(path: Path) -> bool:
    """Whether ``path`` is a Part 10 DICOM file in the Deflated Explicit VR Little Endian transfer syntax."""
    try:
        with open(path, "rb") as f:
            meta = file_meta_end(f.read(META_READ))
    except OSError:
        return False
    return meta is not None and meta[1] == DEFLATED_TS


class _Walker:
    """Follows the element headers of an explicit VR little endian stream fed in chunks, never holding more than
    a header: counts declared bytes and refuses (TooLargeError / ValueError) at the first header over a limit."""

    def __init__(self, source: str, stop_at_pixels: bool):
        self.source = source
        self.stop_at_pixels = stop_at_pixels
        self.stop: int | None = None           # offset of the pixel element where a header-only read stops
        self.offset = 0                        # stream offset of self.carry[0]
        self.carry = b""
        self.skip = 0                          # value bytes still to pass
        self.fragments: bool | None = None     # inside an undefined-length OB/UN value: True when it is pixel data
        self.header_bytes = 0                  # non-image bytes declared so far (headers included)
        self.pixel_bytes = 0
        self.elements = 0
        self.values: dict[str, int] = {}
        self.open: list[int | None] = []       # sequences and items being walked: their end offset, or None

    def _where(self, tag: int) -> str:
        return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"

    def _other(self, nbytes: int, tag: int) -> None:
        self.elements += 1
        self.header_bytes += nbytes
        if self.header_bytes > loaded.MAX_HEADER_BYTES:
            raise TooLargeError(
                f"{describe_source(self.source)} declares {nbytes / 2**20:.0f} MiB in data element "
                f"{self._where(tag)} ({self.header_bytes / 2**20:.0f} MiB of non-image data in all) in its deflated "
                f"data: the limit is {loaded.MAX_HEADER_BYTES / 2**20:.0f} MiB of non-image data per DICOM file; "
                f"export the image again without private or overlay elements")
        if self.elements > MAX_ELEMENTS:
            raise TooLargeError(f"{describe_source(self.source)} holds over {MAX_ELEMENTS} data elements in its "
                                f"deflated data: the limit is {MAX_ELEMENTS} per DICOM file; export the image "
                                f"again without the extra elements")

    def _expected_pixel_bytes(self) -> int | None:
        rows, cols = self.values.get("rows"), self.values.get("cols")
        if not rows or not cols:
            return None
        frames = max(1, self.values.get("frames", 1))
        samples = max(1, self.values.get("samples", 1))
        check_pixels(self.source, rows, cols, frames, samples)
        bits = max(1, self.values.get("bits", 16))
        return (rows * cols * frames * samples * bits + 7) // 8

    def _pixels(self, length: int) -> None:
        expected = self._expected_pixel_bytes()
        if length != _UNDEFINED:
            check_decoded_bytes(self.source, length, "pixel data",
                                fix="export the image uncompressed or as fewer frames, and retry")
            if expected is not None and length > expected + max(PIXEL_SLACK, expected // 8):
                raise TooLargeError(
                    f"{describe_source(self.source)} declares {length / 2**20:.1f} MiB of pixel data where its "
                    f"Rows x Columns x frames x bits hold {expected / 2**20:.1f} MiB: over the limit of what the "
                    f"image can need; export it again")
        elif expected is not None:
            check_decoded_bytes(self.source, expected, "pixel data",
                                fix="export the image uncompressed or as fewer frames, and retry")

    def _fragment(self, length: int, tag: int) -> None:
        if self.fragments:
            self.pixel_bytes += length
            check_decoded_bytes(self.source, self.pixel_bytes, "pixel data",
                                fix="export the image uncompressed or as fewer frames, and retry")
        else:
            self._other(length + 8, tag)

    def feed(self, chunk: bytes) -> None:
        """Walk the headers in ``chunk`` (the next bytes of the inflated stream)."""
        if self.stop is not None:
            return
        data = self.carry + chunk if self.carry else chunk
        i, n = 0, len(data)
        while True:
            if self.skip:
                step = min(self.skip, n - i)
                i += step
                self.skip -= step
                if self.skip:
                    break
            while self.open and self.open[-1] is not None and self.open[-1] <= self.offset + i:
                self.open.pop()                                   # a defined-length sequence or item ended
            if n - i < 8:
                break
            group, element = struct.unpack_from("<HH", data, i)
            tag = (group << 16) | element
            if group == 0xFFFE:                                   # items and delimiters: no VR
                length = struct.unpack_from("<I", data, i + 4)[0]
                i += 8
                if tag == _ITEM and self.fragments is not None:  # a fragment of an encapsulated value
                    if length == _UNDEFINED:
                        raise ValueError(f"{describe_source(self.source)} is a corrupted DICOM file (an "
                                         f"undefined-length fragment in its deflated data): export it again")
                    self._fragment(length, tag)
                    self.skip = length
                elif tag == _SEQ_END:
                    self._other(8, tag)
                    if self.fragments is not None:
                        self.fragments = None
                    elif self.open and self.open[-1] is None:
                        self.open.pop()
                elif tag == _ITEM:                                 # walk into the item's elements
                    self._other(8, tag)
                    self.open.append(None if length == _UNDEFINED else self.offset + i + length)
                elif tag == _ITEM_END:
                    self._other(8, tag)
                    if self.open and self.open[-1] is None:
                        self.open.pop()
                else:
                    raise ValueError(f"{describe_source(self.source)} is a corrupted DICOM file (unknown "
                                     f"delimiter {self._where(tag)} in its deflated data): export it again")
                continue
            vr = data[i + 4:i + 6]
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise ValueError(f"{describe_source(self.source)} is a corrupted DICOM file (element "
                                 f"{self._where(tag)} at byte {self.offset + i} of its deflated data has no valid "
                                 f"VR): export it again")
            if vr in _LONG_VRS:
                if n - i < 12:
                    break
                length, header = struct.unpack_from("<I", data, i + 8)[0], 12
            else:
                length, header = struct.unpack_from("<H", data, i + 6)[0], 8
            top = not self.open
            if tag in _PIXEL_TAGS and top:
                if self.stop_at_pixels:
                    self.stop = self.offset + i
                    return
                self._pixels(length)
                i += header
                if length == _UNDEFINED:
                    self.fragments = True
                else:
                    self.pixel_bytes += length
                    self.skip = length
                continue
            if length == _UNDEFINED:
                self._other(header, tag)
                i += header
                if vr == b"SQ":
                    self.open.append(None)
                else:                                             # OB/UN of undefined length: fragments
                    self.fragments = False
                continue
            if vr == b"SQ":                                       # walk into the items
                self._other(header, tag)
                i += header
                self.open.append(self.offset + i + length)
                continue
            self._other(header + length, tag)
            name = _CAPTURE.get(tag) if top else None
            if name is not None and length <= 16:
                if n - i < header + length:
                    break
                raw = data[i + header:i + header + length]
                try:
                    self.values[name] = (struct.unpack("<H", raw[:2])[0] if vr == b"US" and length >= 2
                                         else int(raw.decode("ascii").strip("\x00 ")))
                except (ValueError, UnicodeDecodeError):
                    pass                                           # pydicom reports a broken value later
                i += header + length
                continue
            i += header
            self.skip = length
        self.offset += i
        self.carry = data[i:]


def read_deflated(path: Path, source: str | None = None, *, header_only: bool = False, check=None):
    """The pydicom dataset of a deflated DICOM file, inflated once through a capped stream (module docstring);
    ``header_only`` stops before the pixel data, ``check`` (no arguments) is called between chunks (a cancel)."""
    import pydicom
    from pydicom.filereader import read_dataset

    source = source or str(path)
    with open(path, "rb") as f:
        head = f.read(META_READ)
        meta = file_meta_end(head)
        if meta is None:
            raise ValueError(f"{describe_source(source)} is a corrupted DICOM file (its File Meta group is "
                             f"incomplete): export it again")
        start, _ = meta
        f.seek(start)
        walker = _Walker(source, stop_at_pixels=header_only)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        body = io.BytesIO()
        pending = f.read(CHUNK_IN)
        try:
            while True:
                chunk = inflater.decompress(pending, CHUNK_OUT)
                pending = inflater.unconsumed_tail
                if chunk:
                    walker.feed(chunk)
                    body.write(chunk)
                if walker.stop is not None or inflater.eof:
                    break
                if check is not None:
                    check()
                if not pending:
                    pending = f.read(CHUNK_IN)
                    if not pending:
                        raise ValueError(f"{describe_source(source)} is a truncated DICOM file (its deflated data "
                                         f"ends early): export it again")
        except zlib.error as exc:
            raise ValueError(f"{describe_source(source)} is a corrupted DICOM file (its deflated data does not "
                             f"inflate: {exc}): export it again") from None
    if walker.stop is not None:
        body.truncate(walker.stop)
    body.seek(0)
    try:
        file_meta = pydicom.filereader.read_file_meta_info(path)
        ds = read_dataset(body, is_implicit_VR=False, is_little_endian=True)
        full = pydicom.dataset.FileDataset(str(path), ds, preamble=head[:128], file_meta=file_meta,
                                           is_implicit_VR=False, is_little_endian=True)
    except Exception as exc:  # pydicom raises many types for a broken dataset
        raise ValueError(f"{describe_source(source)} is a corrupted DICOM file ({type(exc).__name__}: {exc}): "
                         f"export it again") from None
    return full
