"""The per-volume result store behind the app's scroller (issue 34, item 2): slices computed in the order of the
user's position, each kept once computed, and the per-slice anomaly score the curve plots.

How the UI calls it (plain Python, no gradio here; one store per uploaded volume)::

    from diffuse_core.volumes.compute import load_engine
    from diffuse_core.volumes.read import read_volume
    from diffuse_core.volumes.store import VolumeResults

    store = VolumeResults(read_volume(path), load_engine(device="auto"), batch_size=4, seed=0)
    store.focus(z)                 # the slider moved: the batch holding z comes next, then the nearest ones
    # in ONE background worker (a thread, or a generator the UI polls):
    for zs in store.compute(cancel=event):   # one batch per iteration; zs: the slices just finished
        ...                                  # refresh the panels if store.focused in zs, and the curve
    store.get(z)                   # SliceResult at the input's size, or None while pending / without brain
    store.scores()                 # per slice: flagged area in mm^2 (None: not computed yet or no brain)
    store.worst(3)                 # the computed slices with the largest scores, for "jump to the worst slice"
    store.outside()                # per slice: computed and outside the levels the model learned
    store.progress                 # (done, total) over the brain slices

The batches are :mod:`.run`'s (``batch_size`` consecutive brain slices, noise seeded with ``seed`` plus the batch's
first slice), so a slice shows the same result in the app as in ``diffuse-studio run FILE --slices all`` with the same
seed and batch size; only the order they are computed in follows the user. ``focus`` and ``get`` may be called from
the UI thread while ``compute`` runs in another: a lock guards the store. Memory: the results are kept at the
input's size, about 15 bytes per pixel per slice (a 512 x 512 x 200 volume: ~790 MB once every slice is done).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from diffuse_core.volumes.compute import SliceResult
from diffuse_core.volumes.prepare import brain_slices, slice_case
from diffuse_core.volumes.read import Volume
from diffuse_core.volumes.run import batches_of

__all__ = ["VolumeResults"]


class VolumeResults:
    """Results of one volume, computed on demand (see the module docstring)."""

    def __init__(self, volume: Volume, engine, *, batch_size: int = 4, seed: int = 0,
                 slices: list[int] | None = None):
        self.volume, self.engine, self.seed = volume, engine, int(seed)
        self.brain = brain_slices(volume, slices)
        self._batches = batches_of(self.brain, max(1, int(batch_size)))
        self._results: dict[int, SliceResult] = {}
        self._lock = threading.Lock()
        self.focused = self.brain[len(self.brain) // 2] if self.brain else 0

    # ------------------------------------------------------------------------------------------------ the UI side
    def focus(self, z: int) -> None:
        """The slice in view: its batch is computed next, then the batches nearest to it."""
        with self._lock:
            self.focused = int(z)

    def get(self, z: int) -> SliceResult | None:
        with self._lock:
            return self._results.get(int(z))

    def scores(self) -> list[float | None]:
        """Per slice of the volume, the flagged area in mm^2 (None where not computed or without brain)."""
        px_mm2 = float(self.volume.spacing[0]) * float(self.volume.spacing[1])
        with self._lock:
            done = dict(self._results)
        return [None if z not in done else round(float(done[z].flagged.sum()) * px_mm2, 2)
                for z in range(self.volume.num_slices)]

    def outside(self) -> list[bool]:
        """Per slice of the volume, whether it was computed and lies outside the levels the model learned (its map
        there may mark normal anatomy: :mod:`diffuse_core.run.level_check`)."""
        with self._lock:
            done = dict(self._results)
        return [z in done and done[z].outside is not None for z in range(self.volume.num_slices)]

    def worst(self, n: int = 3) -> list[int]:
        """The ``n`` computed slices with the largest scores (ties: the larger peak first), slices inside the levels
        the model learned before those outside them."""
        with self._lock:
            done = list(self._results.values())
        done.sort(key=lambda r: (r.outside is not None, -int(r.flagged.sum()), -r.peak))
        return [r.z for r in done[:n]]

    @property
    def progress(self) -> tuple[int, int]:
        with self._lock:
            return len(self._results), len(self.brain)

    @property
    def complete(self) -> bool:
        done, total = self.progress
        return done == total

    # --------------------------------------------------------------------------------------------- the worker side
    def next_batch(self) -> list[int] | None:
        """The pending batch nearest to the focused slice (its own first), or None when all are done."""
        with self._lock:
            pending = [b for b in self._batches if b[0] not in self._results]
            z = self.focused
        if not pending:
            return None
        return min(pending, key=lambda b: (0 if b[0] <= z <= b[-1] else min(abs(b[0] - z), abs(b[-1] - z)), b[0]))

    def compute(self, cancel: threading.Event | None = None) -> Iterator[list[int]]:
        """Compute batch after batch, nearest to the focus first, yielding the slices of each as it is kept; stops
        when all are done or ``cancel`` is set (checked between batches)."""
        while cancel is None or not cancel.is_set():
            zs = self.next_batch()
            if zs is None:
                return
            cases = [slice_case(self.volume, z, size=self.engine.size, channels=self.engine.channels,
                                mri_reference=self.engine.mri_reference) for z in zs]
            results = self.engine.run_slices(cases, seed=self.seed + zs[0])
            with self._lock:
                for r in results:
                    self._results[r.z] = r
            yield zs
