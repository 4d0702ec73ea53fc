"""The teaching notes of the page ("What am I looking at?" and the About tab), in plain words for trainees."""

NOTE_SALIENCY = """**The saliency map (ACAT).** A classifier tells healthy from diseased slices; an autoencoder lets us
nudge the slice, in small steps, until the classifier calls it healthy. The saliency map shows *where* the slice had to
change: bright = the region the classifier found suspicious. By default the **mask** (cyan outline) follows it: where
the saliency, multiplied by how sure the classifier is that the slice is diseased, reaches a set fraction of its peak
(never more than half the brain), so a lesion of any size can be redrawn whole and a normal slice gets a small mask or
none. The paper's mask, the brightest 10 % (the *percentile* control), is a setting."""
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
NOTE_VERDICT = """**Looks normal / abnormal.** The slice's call comes from its peak anomaly, against a threshold that 95 %
of healthy validation slices stay under; a slice called normal shows no red. It is a teaching tool's call, not a
diagnosis. **No call** is made on a slice from a level the healthy model never learned (towards the skull base or the
vertex: a small network estimates each slice's level): there the counterfactual redraws anatomy the model has not seen,
and red may be normal anatomy. Real normal slices low in the head are still sometimes called abnormal."""
NOTES = (NOTE_SALIENCY, NOTE_REDRAW, NOTE_K, NOTE_CHART, NOTE_VERDICT)
METHOD = ("Method: Fontanella et al., *Diffusion models for counterfactual generation and anomaly detection in brain "
          "images* (Dif-fuse). For teaching and research, not for diagnosis.")
