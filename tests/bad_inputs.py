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


def _dicom(pixels: np.ndarray | None, *, modality: str = "CT", slope: float | str = 1.0, intercept: float = -1024.0,
           frames: int = 1, rows: int | None = None, cols: int | None = None) -> bytes:
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
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
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
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


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
