"""The paper's settings: what a run falls back to where the model card recommends none (Sec. IV-D).

Every caller reads them from here; a run's actual settings come from the card first
(:func:`diffuse_core.run.settings.settings_for`).
"""

PAPER_K = 500                 # noise level K of the inversion (paper Sec. IV-D)
PAPER_PERCENTILE = 90.0       # saliency percentile that becomes the mask (paper Fig. 5: 90 is best)
PAPER_STEPS = 50              # respaced steps spanning [0, K] (ours: the paper walks every timestep)
PAPER_SOLVER = "ddim"         # deterministic updates of the inversion and outside the mask (eqs. 7-8)
