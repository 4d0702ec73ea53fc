"""A corpus of odd, broken and hostile input files, generated on demand (never committed as binaries).

:func:`make_corpus` writes every file into a folder and returns one :class:`Case` per file: the file (relative to the
folder), the slice to ask for (volumes) and the expected outcome, either a result or an error whose message contains
given words. ``tests/test_bad_inputs.py`` runs each through the CLI and the app's upload path. Bombs are real files
(a 10,000 x 10,000 zlib PNG, a 20,000 x 20,000 zlib TIFF) or headers that claim huge sizes over little data.

    python tests/bad_inputs.py FOLDER      # writes the corpus there and lists it
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULT = "result"
ERROR = "error"
MASK_SLICES = 8               # volume cases ask for a slice below this (the 3-D mask file has this many)


@dataclass(frozen=True)
class Case:
    """One corpus file and what the CLI and the app must answer."""

    file: str                          # relative to the corpus folder
    expect: str                        # RESULT | ERROR
    words: tuple[str, ...] = ()        # for ERROR: lower-case words the one-line message must contain
    slice: int | None = None           # slice to ask for (volumes, stacks); None for 2-D pictures
    what: str = ""


def brain(h: int = 48, w: int = 40, value: int = 110, lesion: int = 250) -> np.ndarray:
    """A bright ellipse ("brain") with a brighter square ("lesion") on a zero background, uint8."""
    yy, xx = np.mgrid[:h, :w]
    img = np.where(np.hypot((yy - h / 2) / (0.42 * h), (xx - w / 2) / (0.42 * w)) < 1, value, 0).astype(np.uint8)
    img[int(0.3 * h):int(0.3 * h) + max(2, h // 6), int(0.3 * w):int(0.3 * w) + max(2, w // 6)] = lesion
    return img


# --------------------------------------------------------------------------------------------------------------
# writers that build files byte by byte (bombs, odd headers)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _zeros_deflated(n: int, block: int = 2**22) -> bytes:
    """zlib stream of ``n`` zero bytes, compressed block by block (never holding ``n`` bytes)."""
    z = zlib.compressobj(9)
    zero = bytes(block)
    out = []
    for start in range(0, n, block):
        out.append(z.compress(zero if n - start >= block else bytes(n - start)))
    out.append(z.flush())
    return b"".join(out)


def png_bomb(side: int) -> bytes:
    """A valid 8-bit grey PNG of side x side black pixels (a few hundred KB for 10,000)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = _zeros_deflated((side + 1) * side)  # one filter byte per row
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def tiff_bytes(width: int, height: int, pages: int = 1) -> bytes:
    """A valid little-endian 8-bit grey TIFF whose pages all point at one deflated strip of zeros."""
    strip = _zeros_deflated(width * height)
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8
    first_ifd = data_at + len(strip)
    out = bytearray(b"II*\x00" + struct.pack("<I", first_ifd) + strip)
    for p in range(pages):
        here = first_ifd + p * ifd_size
        nxt = here + ifd_size if p + 1 < pages else 0
        out += struct.pack("<H", len(entries))
        for tag, typ, value in entries:
            value = data_at if tag == 273 else value
            packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, typ, 1) + packed
        out += struct.pack("<I", nxt)
    return bytes(out)


def jpeg_header_bomb(side: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims side x side pixels, with no image data."""
    sof = struct.pack(">BHHB", 8, side, side, 1) + bytes([1, 0x11, 0])
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def npy_header_only(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A .npy header declaring ``shape`` followed by a few bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(64)


def nifti_header_only(shape: tuple[int, ...], compress: bool = True) -> bytes:
    """A NIfTI-1 header claiming ``shape`` (float32) over a few bytes of voxels."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + bytes(64)
    return gzip.compress(raw) if compress else raw


# --------------------------------------------------------------------------------------------------------------
# writers through the usual libraries


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")


def _save_nifti(path: Path, vol: np.ndarray, gz: bool = True) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(vol, np.eye(4))
    data = img.to_bytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _dicom_dataset(pixels: np.ndarray | None, *, modality: str = "CT", slope: float | str = 1.0,
                   intercept: float = -1024.0, frames: int = 1, rows: int | None = None, cols: int | None = None,
                   position: float = 0.0):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    sop = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.Modality = modality
    ds.ImagePositionPatient = [0.0, 0.0, float(position)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    shape = pixels.shape[-2:] if pixels is not None else (64, 64)
    ds.Rows = rows if rows is not None else int(shape[0])
    ds.Columns = cols if cols is not None else int(shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about a NaN slope: writing one is the point
        ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    return ds


def _save_dicom(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dicom(pixels: np.ndarray | None, *, modality: str = "CT", slope: float | str = 1.0, intercept: float = -1024.0,
           frames: int = 1, rows: int | None = None, cols: int | None = None) -> bytes:
    return _save_dicom(_dicom_dataset(pixels, modality=modality, slope=slope, intercept=intercept, frames=frames,
                                      rows=rows, cols=cols))


# --------------------------------------------------------------------------------------------------------------
# compressed bombs (issue 35): small files that inflate or decode to gigabytes, written in milliseconds


_ZERO_PIECE = 4 * 2**20


def _raw_deflate(data: bytes, final: bool) -> bytes:
    """``data`` as raw deflate blocks; a non-final piece ends byte-aligned with a full flush (no back-reference
    crosses it), so pieces can be joined into one stream."""
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def raw_deflated_zeros(n: int) -> bytes:
    """Non-final raw deflate blocks inflating to ``n`` zero bytes (about n / 1000 bytes), without ever holding them:
    one compressed 4 MiB piece repeated."""
    whole, rest = divmod(n, _ZERO_PIECE)
    return _raw_deflate(bytes(_ZERO_PIECE), False) * whole + (_raw_deflate(bytes(rest), False) if rest else b"")


def _meta_end(part10: bytes) -> int:
    """Where the dataset starts in a Part 10 file pydicom wrote: after (0002,0000) File Meta Information Group
    Length (tag, VR UL, 2-byte length, 4-byte value at byte 132)."""
    return 144 + struct.unpack_from("<I", part10, 140)[0]


def deflated_dicom(ds, *, private_bytes: int = 0, trailing_zeros: int = 0, zero_pixels: int = 0) -> bytes:
    """``ds`` as a Deflated Explicit VR Little Endian file. ``private_bytes``: a private OB element of that many
    zero bytes (declared in its header); ``trailing_zeros``: that many zero bytes after the dataset (declared
    nowhere); ``zero_pixels``: Pixel Data of that many zero bytes."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    marker = b"DIFFUSE-BOMB-MARKER-0123"
    if private_bytes:
        ds.private_block(0x0009, "DIFFUSE BOMB", create=True).add_new(0x00, "OB", marker)
    if zero_pixels:
        ds.PixelData = marker
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    plain = _save_dicom(ds)
    body = plain[_meta_end(plain):]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = _save_dicom(ds)
    head = deflated[:_meta_end(deflated)]
    if private_bytes or zero_pixels:
        at = body.index(marker)
        stream = (_raw_deflate(body[:at - 4] + struct.pack("<I", private_bytes or zero_pixels), False)
                  + raw_deflated_zeros(private_bytes or zero_pixels) + _raw_deflate(body[at + len(marker):], True))
    else:
        stream = _raw_deflate(body, False) + raw_deflated_zeros(trailing_zeros) + _raw_deflate(b"", True)
    return head + stream


def rle_frame(side: int) -> np.ndarray:
    """A side x side uint8 slice made of 128-pixel runs: a bright square with a brighter one inside."""
    frame = np.zeros((side, side), np.uint8)
    frame[side // 4:3 * side // 4, side // 4:3 * side // 4] = 120
    frame[3 * side // 8:side // 2, 3 * side // 8:side // 2] = 250
    return frame


def rle_dicom(frame: np.ndarray, frames: int) -> bytes:
    """An 8-bit RLE Lossless DICOM of ``frames`` copies of ``frame`` (uint8, each row made of runs of 128 equal
    pixels): 2 bytes per 128 pixels, so 16 frames of 4096 x 4096 (or 64 of 2048 x 2048) take 4 MB and decode to
    256 MiB."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    assert frame.dtype == np.uint8 and frame.shape[1] % 128 == 0
    runs = frame[:, ::128].ravel()
    segment = np.empty(2 * runs.size, np.uint8)
    segment[0::2] = 0x81                        # -127: the next byte, 128 times
    segment[1::2] = runs
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    ds = _dicom_dataset(None, modality="MR", intercept=0.0, frames=frames, rows=frame.shape[0], cols=frame.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([header + segment.tobytes()] * frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return _save_dicom(ds)


def gzip_nifti_bomb(shape: tuple[int, ...], dtype=np.float64) -> bytes:
    """A valid NIfTI-1 .nii.gz of zeros whose voxels really inflate to prod(shape) x itemsize bytes."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    head = hdr.binaryblock + b"\x00" * 4
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    crc, zero = zlib.crc32(head), bytes(_ZERO_PIECE)
    for _ in range(n // _ZERO_PIECE):
        crc = zlib.crc32(zero, crc)
    crc = zlib.crc32(bytes(n % _ZERO_PIECE), crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + _raw_deflate(head, False) + raw_deflated_zeros(n)
            + _raw_deflate(b"", True) + struct.pack("<II", crc & 0xFFFFFFFF, (len(head) + n) & 0xFFFFFFFF))


def deflated_series(folder: Path, files: int, side: int) -> None:
    """A folder of ``files`` deflated DICOM slices of side x side 16-bit zeros (about side^2 / 500 bytes each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        ds = _dicom_dataset(None, modality="MR", intercept=0.0, rows=side, cols=side, position=float(i))
        (folder / f"slice{i:03d}.dcm").write_bytes(deflated_dicom(ds, zero_pixels=side * side * 2))


def _ct(h: int = 48, w: int = 40) -> np.ndarray:
    """Stored CT values (HU + 1024): air, a skull ring, brain tissue and a bleed."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / (0.45 * h), (xx - w / 2) / (0.45 * w))
    hu = np.where(r < 1, 1000.0, -1000.0)
    hu = np.where(r < 0.85, 30.0, hu)
    hu[int(0.35 * h):int(0.35 * h) + 6, int(0.35 * w):int(0.35 * w) + 6] = 70.0
    return (hu + 1024).astype(np.uint16)


# --------------------------------------------------------------------------------------------------------------
# the corpus


def make_corpus(folder) -> list[Case]:
    """Write every corpus file into ``folder`` and return the cases (about 80)."""
    import cv2
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    rng = np.random.default_rng(0)
    img = brain()

    def add(name, content, expect, words=(), slice=None, what=""):
        path = folder / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        cases.append(Case(name, expect, tuple(w.lower() for w in words), slice, what))

    def png(arr):
        return lambda p: _save_png(p, arr)

    def via_pil(arr, fmt, **kw):
        return lambda p: Image.fromarray(arr).save(p, format=fmt, **kw)

    def npy(arr, **kw):
        return lambda p: p.write_bytes(_npy_bytes(arr, **kw))

    ok_png = _png_bytes(img)

    # ---- valid inputs in every format and many flavours: a result
    add("ok.png", ok_png, RESULT, what="8-bit grey PNG")
    add("ok16.png", png(img.astype(np.uint16) * 257), RESULT, what="16-bit grey PNG")
    add("ok16_rgb.png", lambda p: cv2.imwrite(str(p), np.repeat(img[..., None].astype(np.uint16) * 257, 3, -1)),
        RESULT, what="16-bit RGB PNG (OpenCV path)")
    rgba = np.dstack([img, img, img, np.where(img > 0, 255, 0).astype(np.uint8)])
    add("rgba.png", png(rgba), RESULT, what="RGBA, transparent background")
    add("grey_alpha.png", lambda p: Image.fromarray(rgba[..., [0, 3]], mode="LA").save(p), RESULT)
    colour = np.dstack([img, img // 2, np.flipud(img)])
    add("true_colour.png", png(colour), RESULT, what="true colour -> luminance")
    add("palette.png", lambda p: Image.fromarray(img).convert("P").save(p), RESULT)
    add("one_bit.png", lambda p: Image.fromarray(img > 150).save(p), RESULT, what="1-bit PNG")
    add("ok.jpg", via_pil(img, "JPEG", quality=95), RESULT)
    add("cmyk.jpg", lambda p: Image.fromarray(np.dstack([img] * 3)).convert("CMYK").save(p, format="JPEG"), RESULT)
    add("ok.tif", via_pil(img, "TIFF"), RESULT)
    add("float.tif", lambda p: _tifffile_write(p, img.astype(np.float32) / 7), RESULT, what="float32 TIFF")
    add("pages.tif", lambda p: _tifffile_write(p, np.stack([img, img[::-1], img])), RESULT, slice=1,
        what="3-page TIFF stack")
    vol = np.stack([img.T.astype(np.float32)] * 4, axis=-1)
    add("ok.nii.gz", lambda p: _save_nifti(p, vol), RESULT, slice=2)
    add("ok2d.nii", lambda p: _save_nifti(p, img.T.astype(np.int16), gz=False), RESULT, what="2-D NIfTI")
    add("nifti_named.png", lambda p: _save_nifti(p, vol), RESULT, slice=1, what="a .nii.gz named .png")
    add("nifti_no_extension", lambda p: _save_nifti(p, vol, gz=False), RESULT, slice=1, what="a .nii, no name")
    add("ok_ct.dcm", _dicom(_ct()), RESULT, what="CT DICOM in HU")
    add("ok_mr.dcm", _dicom(img, modality="MR", intercept=0.0), RESULT)
    add("frames.dcm", _dicom(np.stack([_ct()] * 3), frames=3), RESULT, slice=1, what="multi-frame DICOM")
    add("ok.npy", npy(img.astype(np.float32)), RESULT)
    add("int16.npy", npy(img.astype(np.int16) - 100), RESULT)
    add("bool.npy", npy(img > 0), RESULT)
    add("fortran.npy", npy(np.asfortranarray(img.astype(np.float64))), RESULT)
    add("volume.npy", npy(np.stack([img] * 5, axis=-1).astype(np.float32)), RESULT, slice=3)
    add("big_values.npy", npy(img.astype(np.float64) * 1e6), RESULT, what="large but finite")
    add("wide.png", png(brain(40, 300)), RESULT, what="aspect 1:7.5")
    add("2048.png", png(np.kron(img, np.ones((43, 51), np.uint8))[:2048, :2040]), RESULT,
        what="2048 x 2040: brain mask on a shrunk copy")
    # wrong extensions: the content decides
    add("png_named.jpg", ok_png, RESULT)
    add("jpeg_named.png", via_pil(img, "JPEG"), RESULT)
    add("dicom_named.png", _dicom(_ct()), RESULT)
    add("npy_named.png", npy(img.astype(np.float32)), RESULT)
    add("png_named.nii.gz", ok_png, RESULT)
    # path-like and odd file names
    add("..png", ok_png, RESULT)
    add("-rf.png", ok_png, RESULT, what="starts with a dash")
    add("a b;rm -rf x &&.png", ok_png, RESULT)
    add("$(touch pwned)%s%n.png", ok_png, RESULT)
    add("ünïcødé 脑.png", ok_png, RESULT)
    add("x" * 200 + ".png", ok_png, RESULT)

    # ---- empty, truncated, random and wrong content
    add("empty.png", b"", ERROR, ("empty",))
    add("empty.dcm", b"", ERROR, ("empty",))
    add("truncated.png", ok_png[: len(ok_png) // 2], ERROR, ("damaged",))
    jpg = _pil_bytes(img, "JPEG")
    add("truncated.jpg", jpg[: len(jpg) // 3], ERROR, ("damaged",))
    tif = _pil_bytes(np.asarray(rng.integers(0, 255, (64, 64)), np.uint8), "TIFF")
    add("truncated.tif", tif[:300], ERROR, ("tiff",))
    nii = gzip.compress(_nifti_bytes(vol))
    add("truncated.nii.gz", nii[: len(nii) // 2], ERROR, ("truncated",), slice=1)
    raw_nii = _nifti_bytes(vol)
    add("truncated.nii", raw_nii[: len(raw_nii) - 500], ERROR, ("truncated",), slice=1)
    npb = _npy_bytes(img.astype(np.float32))
    add("truncated.npy", npb[: len(npb) // 2], ERROR, ("truncated",))
    add("header_cut.npy", npb[:20], ERROR, ("corrupted",))
    dcm = _dicom(_ct())
    add("truncated.dcm", dcm[: len(dcm) - 1000], ERROR, ("truncated",))
    add("random.bin", rng.bytes(4096), ERROR, ("not an image",))
    add("random.png", rng.bytes(4096), ERROR, ("not a png",))
    add("random.dcm", b"\x00\x01" + rng.bytes(4096), ERROR, ("dicom",))
    add("random.nii.gz", rng.bytes(4096), ERROR, ("nifti",))
    add("random.npy", b"\x93NUMPY" + rng.bytes(200), ERROR, ("npy",))
    add("notes.png", b"this is not an image\n" * 20, ERROR, ("not a png",))
    add("page.jpg", b"<html><body>404</body></html>", ERROR, ("not a jpeg",))
    add("text.gz", gzip.compress(b"hello " * 100), ERROR, ("does not hold a nifti",))
    add("zip.png", b"PK\x03\x04" + rng.bytes(300), ERROR, ("not a png",))

    # ---- values: NaN, inf, constant, tiny
    nan = img.astype(np.float32)
    nan[3, :4] = np.nan
    add("nan.npy", npy(nan), ERROR, ("nan",))
    inf = img.astype(np.float32)
    inf[5, 5] = np.inf
    add("inf.npy", npy(inf), ERROR, ("infinite",))
    add("overflow.npy", npy(img.astype(np.float64) * 1e300), ERROR, ("infinite",), what="float64 -> inf")
    nan_vol = vol.copy()
    nan_vol[:, :, 1] = np.nan
    add("nan.nii.gz", lambda p: _save_nifti(p, nan_vol), ERROR, ("nan",), slice=1)
    add("constant.png", png(np.zeros((64, 64), np.uint8)), ERROR, ("constant",))
    add("white.png", png(np.full((64, 64), 255, np.uint8)), ERROR, ("constant",))
    add("constant16.png", png(np.full((64, 64), 40000, np.uint16)), ERROR, ("constant",))
    add("transparent.png", png(np.dstack([img, img, img, np.zeros_like(img)])), ERROR, ("constant",))
    add("constant.dcm", _dicom(np.full((32, 32), 1024, np.uint16)), ERROR, ("constant",))
    add("one_pixel.png", png(np.array([[200]], np.uint8)), ERROR, ("too small",))
    add("sliver.png", png(brain(15, 200)), ERROR, ("too small",))
    add("one_pixel.dcm", _dicom(np.array([[1100]], np.uint16)), ERROR, ("too small",))

    # ---- arrays that are not images
    add("pickled.npy", lambda p: p.write_bytes(_pickled_npy()), ERROR, ("python objects",))
    add("object.npy", npy(np.array([1, "a", None], dtype=object), allow_pickle=True), ERROR, ("python objects",))
    add("complex.npy", npy(img.astype(np.complex64)), ERROR, ("numbers",))
    add("strings.npy", npy(np.array([["a", "b"], ["c", "d"]])), ERROR, ("numbers",))
    add("structured.npy", npy(np.zeros((20, 20), dtype=[("a", "<f4"), ("b", "<i4")])), ERROR, ("numbers",))
    add("5d.npy", npy(np.zeros((2, 3, 20, 20, 2), np.float32)), ERROR, ("5-d",))
    add("1d.npy", npy(np.arange(100, dtype=np.float32)), ERROR, ("1-d",))
    add("0d.npy", npy(np.float32(3.0)), ERROR, ("0-d",))
    add("empty_array.npy", npy(np.zeros((0, 40), np.float32)), ERROR, ("empty",))
    add("5d.nii.gz", lambda p: _save_nifti(p, np.zeros((20, 20, 4, 2, 2), np.float32)), ERROR, ("dimensions",),
        slice=1)
    add("timeseries.nii.gz", lambda p: _save_nifti(p, np.zeros((20, 20, 4, 20), np.float32)), ERROR,
        ("time series",), slice=1)

    # ---- odd DICOMs
    add("no_pixels.dcm", _dicom(None), ERROR, ("without pixel data",))
    add("zero_rows.dcm", _dicom(np.zeros((0, 64), np.uint16), rows=0), ERROR, ("0 rows",))
    add("huge_slope.dcm", _dicom(_ct(), slope=1e30), ERROR, ("scanner", "rescale slope"))
    add("huge_values_mr.dcm", _dicom(img.astype(np.uint16) * 200, modality="MR", slope=1e4, intercept=0.0), ERROR,
        ("scanner",))
    add("nan_slope.dcm", _dicom(_ct(), slope="NaN"), ERROR, ("not finite",))
    add("frames_missing.dcm", _dicom(np.stack([_ct()] * 3), frames=5), ERROR, ("truncated",), slice=1,
        what="declares 5 frames, holds 3")

    # ---- bombs: refused from the header before decoding
    add("bomb_10k.png", png_bomb(10_000), ERROR, ("10000 x 10000", "limit"), what="valid 10,000^2 zlib PNG")
    add("bomb_20k.tif", tiff_bytes(20_000, 20_000), ERROR, ("20000 x 20000", "limit"), what="valid 20,000^2 TIFF")
    add("bomb_pages.tif", tiff_bytes(4_000, 4_000, pages=40), ERROR, ("voxels", "limit"), slice=1,
        what="40 pages of 4,000^2 sharing one strip")
    add("bomb.jpg", jpeg_header_bomb(30_000), ERROR, ("30000 x 30000", "limit"))
    add("bomb.npy", npy_header_only((100_000, 100_000)), ERROR, ("100000 x 100000", "limit"))
    add("bomb_volume.npy", npy_header_only((2_000, 2_000, 2_000)), ERROR, ("voxels", "limit"), slice=1)
    add("bomb.nii.gz", nifti_header_only((30_000, 30_000, 1)), ERROR, ("30000 x 30000", "limit"))
    add("bomb_volume.nii", nifti_header_only((2_000, 2_000, 2_000), compress=False), ERROR, ("voxels", "limit"),
        slice=1)
    add("bomb.dcm", _dicom(np.zeros((8, 8), np.uint16), rows=60_000, cols=60_000), ERROR,
        ("60000 x 60000", "limit"))
    add("bomb_frames.dcm", _dicom(np.zeros((8, 8), np.uint16), rows=4_000, cols=4_000, frames=5_000), ERROR,
        ("voxels", "limit"), slice=1)
    # ---- compressed bombs (issue 35): refused by what they declare, before inflating it
    add("ok_deflated.dcm", deflated_dicom(_dicom_dataset(_ct())), RESULT, what="Deflated Explicit VR Little Endian")
    add("bomb_deflate_1g.dcm", deflated_dicom(_dicom_dataset(_ct()), private_bytes=2**30), ERROR,
        ("1024 mib", "limit"), what="1 MB deflated DICOM, a 1 GiB private element")
    add("bomb_deflate_2g.dcm", deflated_dicom(_dicom_dataset(_ct()), private_bytes=2**31), ERROR,
        ("2048 mib", "limit"), what="2 MB deflated DICOM, a 2 GiB private element")
    add("bomb_deflate_pixels.dcm", deflated_dicom(_dicom_dataset(_ct()), zero_pixels=2**30), ERROR,
        ("pixel data", "limit"), what="48 x 40 deflated DICOM whose Pixel Data inflates to 1 GiB")
    add("bomb_deflate_trailing.dcm", deflated_dicom(_dicom_dataset(_ct()), trailing_zeros=2**30), ERROR,
        ("corrupted",), what="1 GiB of zeros after the dataset, declared nowhere")
    add("bomb_rle_frames.dcm", rle_dicom(rle_frame(2048), 64), RESULT, slice=1,
        what="64 frames of 2048 x 2048 RLE (4 MB, 256 MiB decoded, as issue 35's 16 of 4096^2): one is decoded")
    add("bomb_gz.nii.gz", gzip_nifti_bomb((512, 512, 512)), ERROR, ("1024 mib", "limit"), slice=1,
        what="1 MB .nii.gz whose float64 voxels inflate to 1 GiB")
    add("bomb_series", lambda p: deflated_series(p, 80, 2048), ERROR, ("limit",), slice=1,
        what="a series folder of 80 deflated 2048 x 2048 slices (640 MiB declared)")
    return cases


# --------------------------------------------------------------------------------------------------------------
# small byte helpers


def _png_bytes(arr: np.ndarray) -> bytes:
    return _pil_bytes(arr, "PNG")


def _pil_bytes(arr: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _npy_bytes(arr, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _pickled_npy() -> bytes:
    """A .npy whose payload is a pickle (dtype object) of a dict: never unpickled by the loaders."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    return buf.getvalue() + pickle.dumps({"evil": "os.system"})


def _nifti_bytes(vol: np.ndarray) -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(vol, np.eye(4)).to_bytes()


def _tifffile_write(path: Path, arr: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(str(path), arr, photometric="minisblack")  # a leading 3 is pages, not RGB planes


if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs")
    for c in make_corpus(out):
        print(f"{c.expect:6} {c.file!r} {' '.join(c.words)}")
