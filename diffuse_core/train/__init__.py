"""Training: one :class:`~diffuse_core.train.trainer.Trainer` for every model; each model supplies its loss and
batches (:mod:`~diffuse_core.train.ddpm`, :mod:`~diffuse_core.train.saliency`)."""
