"""The teaching notes of the page ("What am I looking at?" and the About tab), in plain words for trainees."""

NOTE_SALIENCY = """**The saliency map (ACAT).** A classifier tells healthy from diseased slices; an autoencoder lets us
nudge the slice, in small steps, until the classifier calls it healthy. The saliency map shows *where* the slice had to
change: bright = the region the classifier found suspicious. The brightest 10 % (the *percentile* control), smoothed,
becomes the **mask** (cyan outline)."""
NOTE_REDRAW = """**Why redraw inside and reconstruct outside.** The slice is first turned into noise step by step
(*inversion*). On the way back, a diffusion model that has only ever seen **healthy** brains redraws the inside of the
mask freely (a random DDPM step), while outside the mask it retraces the slice exactly (a deterministic DDIM step). The
two are fused at every step, so the counterfactual keeps this patient's anatomy and only the suspicious region becomes
healthy-looking. The **anomaly map** is the difference between the slice and its healthy counterfactual."""
NOTE_K = """**What K does.** K (1–1000) is how far towards pure noise the slice is taken before it is redrawn. Small K:
the counterfactual stays close to the input, and a large lesion may survive. Large K: more is forgotten and redrawn,
so lesions disappear but the anatomy may drift. The paper uses K = 500. **Steps** trade speed for quality: the path
from K back to 0 is walked in that many steps (one network call each way per step)."""
NOTE_CHART = """**The step chart.** How much each step changes the image, inside the mask (cyan) and outside it
(orange).
Inside, the sampler is free to redraw; outside it only retraces the slice, so its changes mirror the inversion."""
NOTES = (NOTE_SALIENCY, NOTE_REDRAW, NOTE_K, NOTE_CHART)
METHOD = ("Method: Fontanella et al., *Diffusion models for counterfactual generation and anomaly detection in brain "
          "images* (Dif-fuse). For teaching and research, not for diagnosis.")
