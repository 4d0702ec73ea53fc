"""Whole scans (issue 34): a volume or series read once into display-oriented slices with its geometry
(:mod:`.read`, :mod:`.dicom_series`, :mod:`.grid`), the brain slices put on the model's grid (:mod:`.prepare`) and run
in batches (:mod:`.compute`, :mod:`.throughput`), results written in the input's space as NIfTI (:mod:`.write`) and as
a DICOM Segmentation over a DICOM input (:mod:`.seg`), a resumable volume run (:mod:`.run`), the per-volume result
store the app's scroller drives (:mod:`.store`), and archives: the manifest (:mod:`.manifest`), the runner, local or
on a Dask cluster (:mod:`.batch`), and the summary table and gallery (:mod:`.summary`).

Nothing here prints: long work yields progress events and the CLI shows them (``diffuse-studio run --slices``,
``diffuse-studio batch``).
"""
