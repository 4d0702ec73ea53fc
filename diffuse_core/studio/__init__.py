"""The web app's services, without gradio: what :mod:`diffuse_core.ui` calls and formats.

:mod:`~diffuse_core.studio.settings` (every default a user sees), :mod:`~diffuse_core.studio.model_store` (the
installed models, loaded lazily), :mod:`~diffuse_core.studio.library` (teaching and curated cases),
:mod:`~diffuse_core.studio.uploads` (uploaded files and DICOM series), :mod:`~diffuse_core.studio.selection` (the case
a user picked), :mod:`~diffuse_core.studio.runs` (mask, then Dif-fuse, streamed), :mod:`~diffuse_core.studio.scoring`,
:mod:`~diffuse_core.studio.review` (the Curate batch) and :mod:`~diffuse_core.studio.session` (per-session Stop flags).

Environment variables
---------------------
``DIFFUSE_ASSETS``          folder holding ``ddpm/``, ``autoencoder/`` and ``classifier/`` (default: ``assets/``)
``DIFFUSE_MODEL_DIR``       the denoiser folder itself (overrides ``$DIFFUSE_ASSETS/ddpm``)
``DIFFUSE_SALIENCY_DIR``    folder holding ``autoencoder/`` and ``classifier/`` (overrides the assets)
``DIFFUSE_DEVICE``          ``auto`` (GPU when there is one), ``cpu`` or ``cuda``
``DIFFUSE_TEACHING_ROOT``   teaching sets shown in the gallery (default: ``teaching_sets/``)
``DIFFUSE_CURATED_ROOT``    where the Curate tab saves sets (default: the teaching root)
``DIFFUSE_MAX_UPLOAD_MB``   upload size limit in MB (default 50)
``DIFFUSE_CONCURRENCY``     how many model runs may go at once (default 2)
``DIFFUSE_APP_HOST`` / ``DIFFUSE_APP_PORT`` (or ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``) where to listen
"""
