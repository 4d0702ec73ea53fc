"""Files in and out, with orientation and spacing carried from the reader to the export.

* :mod:`~diffuse_core.io.image`: ``load_image`` / ``load_mask``, the ONE entry point; picks the reader by content
  (:mod:`~diffuse_core.io.sniff`).
* :mod:`~diffuse_core.io.loaded`: ``LoadedImage`` (one slice + spacing + affine) and the checks every reader shares.
* Readers, one per format: :mod:`~diffuse_core.io.nifti`, :mod:`~diffuse_core.io.dicom`,
  :mod:`~diffuse_core.io.raster` (PNG / JPEG / TIFF), :mod:`~diffuse_core.io.numpy_file`; BraTS case folders in
  :mod:`~diffuse_core.io.brats`.
* :mod:`~diffuse_core.io.orientation`: canonical RAS <-> radiological display, slice affines, spacing.
* :mod:`~diffuse_core.io.preprocess`: raw slice -> the model's [-1, 1] square grid and back.
* :mod:`~diffuse_core.io.export`: results to PNG / NIfTI / JSON.
"""
