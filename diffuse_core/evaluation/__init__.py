"""Measuring Dif-fuse against its ablations and peers (``diffuse-studio evaluate``): the methods registry, the
protocol, the report and the numbers written into the model cards. Every method runs through
:func:`diffuse_core.pipeline.run_batch`, the assembly the app runs."""
