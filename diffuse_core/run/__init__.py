"""One run of Dif-fuse, assembled once: the settings (:mod:`.settings`, from the model card), the models for the case's
modality (:mod:`.models`), the redrawn region (:mod:`.region`), the walk and its result (:mod:`.assembly`), and a file
on disk to a written result (:mod:`.files`). ``diffuse-studio run``, the app, the evaluation and volume runs all call
:func:`diffuse_core.run.assembly.iter_run` / :func:`~diffuse_core.run.assembly.run_stack`."""
