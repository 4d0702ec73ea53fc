"""The web app's services, without gradio: what :mod:`diffuse_core.ui` calls and formats.

:mod:`~diffuse_core.studio.settings` (every default a user sees), :mod:`~diffuse_core.studio.model_store` (the
installed models, loaded lazily), :mod:`~diffuse_core.studio.library` (teaching and curated cases),
:mod:`~diffuse_core.studio.uploads` (uploaded files and DICOM series), :mod:`~diffuse_core.studio.selection` (the case
a user picked), :mod:`~diffuse_core.studio.runs` (mask, then Dif-fuse, streamed), :mod:`~diffuse_core.studio.scoring`,
:mod:`~diffuse_core.studio.review` (the Curate batch), :mod:`~diffuse_core.studio.guard` (one request's wall-time
limit and cancel flag) and :mod:`~diffuse_core.studio.session` (the runs in progress, what Stop cancels).

Environment variables
---------------------
``DIFFUSE_ASSETS``          folder holding ``ddpm/``, ``autoencoder/`` and ``classifier/`` (default: ``assets/``)
``DIFFUSE_MODEL_DIR``       the denoiser folder itself (overrides ``$DIFFUSE_ASSETS/ddpm``)
``DIFFUSE_SALIENCY_DIR``    folder holding ``autoencoder/`` and ``classifier/`` (overrides the assets)
``DIFFUSE_DEVICE``          ``auto`` (GPU when there is one), ``cpu`` or ``cuda``
``DIFFUSE_TEACHING_ROOT``   shipped teaching sets shown in the gallery, read-only (default: ``teaching_sets/``)
``DIFFUSE_DATA_DIR``        the app's writable data folder (default: ``/data/diffuse-studio`` on a Space with
                            persistent storage, else ``$XDG_DATA_HOME/diffuse-studio``, i.e.
                            ``~/.local/share/diffuse-studio``)
``DIFFUSE_CURATED_ROOT``    where the Curate tab saves sets (default: ``$DIFFUSE_DATA_DIR/curated``); never inside
                            the teaching root
``DIFFUSE_MAX_UPLOAD_MB``   upload size limit in MB, per file and per request (default 50)
``DIFFUSE_MAX_UPLOAD_FILES`` files per request, e.g. the slices of a DICOM series (default 400)
``DIFFUSE_MAX_BODY_KB``     any other request body, e.g. an API call's JSON, in KB (default 1024)
``DIFFUSE_REQUEST_SECONDS`` wall time one request may compute before it is stopped (default 300)
``DIFFUSE_CONCURRENCY``     how many model runs may go at once (default 2)
``DIFFUSE_MAX_SESSIONS``    sessions whose state (the last run, the Curate list) is kept, least recent dropped (64)
``DIFFUSE_TORCH_THREADS``   torch threads of the app process (default 0: CPU cores / concurrency)
``DIFFUSE_APP_HOST`` / ``DIFFUSE_APP_PORT`` (or ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``) where to listen
"""
