"""SynthBrain: a built-in, deterministic data set of synthetic axial brain slices, healthy or with a lesion.

Anatomy comes from the ICBM152 2009 tissue templates shipped inside the nilearn wheel, cut to a fixed 220 mm
(``FOV_MM``) square field of view resized to ``size`` pixels: one pixel is ``FOV_MM / size`` mm (1.72 mm at 128),
available as :attr:`SynthSlice.spacing` and written into every NIfTI header. Every sample is drawn from its integer
seed; lesions are ``glioma``, ``stroke`` or ``wmh``; contrasts ``flair``, ``t1``, ``t2``, ``t1c`` and ``ct``.

Images are float32 (C, H, W) in [-1, 1] inside the brain and exactly -1 outside it (skull-stripped).
``generate_slice(seed, healthy=True, lesion_type=T)`` is the *paired healthy counterpart* of
``generate_slice(seed, healthy=False, lesion_type=T)``: same level, anatomy and noise, pixel-identical away from the
lesion. That gives a ground-truth healthy counterfactual for every diseased sample (without a lesion type the healthy
slice draws its own level).

Display convention: row 0 is anterior, the image's right is the patient's left (radiological), as
:func:`diffuse_core.io.image.load_image` shows slices.

Modules, one idea each (nothing imports a module above it in this list):

* :mod:`.fields`: smooth random fields and soft indicators;
* :mod:`.anatomy`: ICBM templates, the axial level's source maps, the random affine and elastic deformation;
* :mod:`.lesions`: glioma, stroke and WMH drawers, lesion location and size class;
* :mod:`.scanner`: what a clinical scan adds, effect by effect (``realism="scanner"``: whole-scan levels, field of
  view, slice thickness, acquisition resolution and noise, a real skull strip's edge, lesion shapes; contrast, caps,
  bias and an unstripped head on request);
* :mod:`.render`: modality contrasts, bias field, noise and blur;
* :mod:`.dataset`: seeds and splits, :func:`generate_slice`, :class:`SynthSlice`, :class:`SynthBrainDataset`;
* :mod:`.files`: NIfTI writing and reading (true spacing), previews, :func:`write_split`.
"""

from __future__ import annotations

from diffuse_core.data.synthbrain.anatomy import FOV_MM, LEVEL_RANGE, load_templates, pixel_mm
from diffuse_core.data.synthbrain.dataset import (MAX_SIZE, MIN_SIZE, SEED_SPLITS, SPLITS, SYNTHBRAIN_VERSION,
                                                  SynthBrainDataset, SynthSlice, generate_slice, sample_seed,
                                                  seed_split)
from diffuse_core.data.synthbrain.files import (INDEX_COLUMNS, pairs_grid, read_nifti_slice, render_grid, save_case,
                                                to_uint8, write_split)
from diffuse_core.data.synthbrain.lesions import (LESION_LEVELS, LESION_MEDIUM_MAX_PX, LESION_SMALL_MAX_PX,
                                                  LESION_TYPES, MIN_LESION_PX)
from diffuse_core.data.synthbrain.render import CT_WINDOW, MODALITIES, MRI4, PRESETS, preset_modalities
from diffuse_core.data.synthbrain.scanner import EFFECTS, REALISMS, SCANNER, check_realism

__all__ = ["SYNTHBRAIN_VERSION", "MODALITIES", "LESION_TYPES", "SPLITS", "SEED_SPLITS", "PRESETS", "SynthSlice",
           "sample_seed", "generate_slice", "SynthBrainDataset", "write_split", "render_grid", "pairs_grid", "to_uint8",
           "load_templates", "preset_modalities", "read_nifti_slice", "save_case", "seed_split", "FOV_MM",
           "pixel_mm", "INDEX_COLUMNS", "MRI4", "CT_WINDOW", "LEVEL_RANGE", "LESION_LEVELS", "MIN_SIZE", "MAX_SIZE",
           "MIN_LESION_PX", "LESION_SMALL_MAX_PX", "LESION_MEDIUM_MAX_PX", "EFFECTS", "REALISMS", "SCANNER",
           "check_realism"]
