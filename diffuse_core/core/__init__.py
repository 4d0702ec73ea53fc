"""The paper's math, torch/numpy only: the noise schedule, the samplers, the walks of Algorithm 1 and its variants,
the mask, the anomaly map, the overlap metrics and the brain mask. Imports nothing else of the package."""
