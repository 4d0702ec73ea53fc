"""Saliency maps that choose where Dif-fuse redraws: ACAT (the paper's), Grad-CAM and the input gradient, behind
one :func:`~diffuse_core.saliency.dispatch.compute_saliency`."""
