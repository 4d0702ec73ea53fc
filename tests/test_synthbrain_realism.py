"""SynthBrain's realism option: scanner effects and lesion shapes as shared/DOMAIN.md describes them."""

import cv2
import numpy as np
import pytest

from diffuse_core.data import synthbrain as sb
from diffuse_core.data.synthbrain.scanner import psf


def _same(a, b):
    return (a.image.tobytes() == b.image.tobytes() and a.lesion_mask.tobytes() == b.lesion_mask.tobytes()
            and a.brain_mask.tobytes() == b.brain_mask.tobytes())


def test_default_realism_is_the_generator_as_before_and_unknown_effects_raise():
    for seed in (3, 11):
        plain = sb.generate_slice(seed, ("flair", "t1"))
        assert _same(plain, sb.generate_slice(seed, ("flair", "t1"), realism="default"))
        assert _same(plain, sb.generate_slice(seed, ("flair", "t1"), realism=()))
    assert sb.check_realism("scanner") == frozenset(sb.SCANNER) and "head" not in sb.SCANNER
    assert sb.check_realism("bias, noise") == {"bias", "noise"}
    with pytest.raises(ValueError, match="unknown realism"):
        sb.generate_slice(1, realism="mirror")


@pytest.mark.parametrize("effect", [e for e in sb.EFFECTS if e not in ("lesions", "lesion_levels", "residue")])
def test_each_effect_changes_a_healthy_slice_deterministically_within_range(effect):
    seed = sb.sample_seed("test", 0, 5)
    base = sb.generate_slice(seed, healthy=True)
    a = sb.generate_slice(seed, healthy=True, realism=effect)
    b = sb.generate_slice(seed, healthy=True, realism=[effect])
    assert _same(a, b)                                           # a seed in, the same bytes out
    assert not np.array_equal(a.image, base.image)
    assert a.image.dtype == np.float32 and a.image.min() >= -1 and a.image.max() <= 1
    assert a.brain_mask.sum() > 500
    if effect == "head":                                         # not skull-stripped: a ring of head around the brain
        ring = (cv2.dilate(a.brain_mask, np.ones((3, 3), np.uint8), iterations=6) > 0) & (a.brain_mask == 0)
        assert (a.image[0][ring] > -1).mean() > 0.9 and (a.image[0][0, :] == -1).all()
    else:
        assert (a.image[0][a.brain_mask == 0] == -1).all()


@pytest.mark.parametrize("effect", ["lesions", "lesion_levels"])
def test_lesion_effects_leave_healthy_slices_alone(effect):
    seed = sb.sample_seed("test", 0, 2)
    assert _same(sb.generate_slice(seed, healthy=True), sb.generate_slice(seed, healthy=True, realism=effect))


def test_field_of_view_sets_the_spacing_and_shrinks_the_brain():
    areas, plain = [], []
    for i in range(6):
        seed = sb.sample_seed("test", 0, i)
        s = sb.generate_slice(seed, healthy=True, realism="fov")
        assert 220 <= s.fov_mm <= 280 and s.spacing == pytest.approx((s.fov_mm / 128,) * 2)
        areas.append(s.brain_mask.sum())
        plain.append(sb.generate_slice(seed, healthy=True).brain_mask.sum())
    assert np.mean(areas) < 0.95 * np.mean(plain)
    assert sb.generate_slice(1).spacing == pytest.approx((220 / 128,) * 2)


def test_psf_sums_to_one_and_rings_only_without_taper():
    sharp, smooth = psf(0.5, False, 128), psf(0.5, True, 128)
    assert sharp.sum() == pytest.approx(1, abs=1e-5) and smooth.sum() == pytest.approx(1, abs=1e-5)
    assert sharp.min() < -0.02 and smooth.min() > -0.01              # Gibbs ringing without the window
    assert psf(1.0, False, 128).max() == pytest.approx(1, abs=1e-5)  # a full matrix: no blur


@pytest.mark.parametrize("lesion_type", ["glioma", "stroke", "wmh"])
def test_scanner_healthy_counterpart_is_paired_and_the_mask_matches_the_rendered_lesion(lesion_type):
    for i in range(3):
        seed = sb.sample_seed("test", 0, 40 + i)
        d = sb.generate_slice(seed, lesion_type=lesion_type, realism="scanner")
        h = sb.generate_slice(seed, lesion_type=lesion_type, healthy=True, realism="scanner")
        assert d.level == h.level and d.lesion_mask.sum() >= sb.MIN_LESION_PX
        assert (d.lesion_mask <= d.brain_mask).all()
        diff = d.image[0] - h.image[0]
        m = d.lesion_mask.astype(bool)
        if lesion_type != "glioma":                               # a glioma's mass effect moves tissue around it
            far = cv2.dilate(d.lesion_mask, np.ones((3, 3), np.uint8), iterations=14) == 0
            assert np.abs(diff[far & (d.brain_mask > 0)]).max() < 1e-6
            assert np.abs(diff[m]).mean() > 3 * np.abs(diff[~m & (d.brain_mask > 0)]).mean()
        assert diff[m].mean() > 0.04                              # FLAIR lesions are bright


def _ventricle_distance_mm(s: sb.SynthSlice) -> np.ndarray | None:
    """Distance (mm) to the ventricles of the slice's healthy counterpart: dark CSF deep inside the brain."""
    h = sb.generate_slice(s.seed, lesion_type="wmh", healthy=True, realism="lesions")
    brain = h.brain_mask.astype(np.uint8)
    mm = h.spacing[0]
    depth = cv2.distanceTransform(brain, cv2.DIST_L2, 5) * mm
    vent = ((h.image[0] < -0.6) & (depth > 22.0)).astype(np.uint8)
    if vent.sum() * mm * mm < 30:
        return None
    return cv2.distanceTransform(1 - vent, cv2.DIST_L2, 5) * mm


def _periventricular_share(realism: str, n: int = 10) -> float:
    shares = []
    for i in range(n):
        s = sb.generate_slice(sb.sample_seed("test", 0, 60 + i), lesion_type="wmh", realism=realism)
        d = _ventricle_distance_mm(s)
        if d is not None:
            shares.append(float((d[s.lesion_mask > 0] < 10.0).mean()))
    assert len(shares) >= n // 2
    return float(np.mean(shares))


def test_wmh_lesions_are_periventricular_caps_and_bands():
    real = _periventricular_share("lesions")
    assert real > 0.6                                             # most WMH lie along the ventricles
    assert real > _periventricular_share("default") + 0.15        # the old scattered foci would fail this


def test_periventricular_wmh_are_roughly_symmetric():
    balanced, pv = 0, 0
    for i in range(12):
        s = sb.generate_slice(sb.sample_seed("test", 0, 80 + i), lesion_type="wmh", realism="lesions")
        assert s.detail.startswith("Fazekas ")
        if "above the ventricles" in s.detail:                   # deep foci only: need not be symmetric
            continue
        pv += 1
        cols = np.nonzero(s.lesion_mask)[1]
        mid = np.nonzero(s.brain_mask.any(axis=0))[0].mean()
        balanced += 0.2 < float((cols > mid).mean()) < 0.8
    assert pv >= 5 and balanced >= 0.8 * pv


def test_all_levels_reaches_the_skull_base_and_the_vertex():
    """``all_levels`` draws healthy slices beyond the scanner's levels (39-130) at both ends, each with a brain."""
    slices = [sb.generate_slice(sb.sample_seed("train", 0, i), healthy=True, realism="all_levels") for i in range(40)]
    levels = [s.level for s in slices]
    assert min(levels) < 39 and max(levels) > 130 and min(levels) >= 21 and max(levels) <= 144
    assert min(s.brain_mask.sum() for s in slices) > 500
    lesion = sb.generate_slice(sb.sample_seed("train", 0, 3), lesion_type="glioma", realism="all_levels")
    assert lesion.level == sb.generate_slice(sb.sample_seed("train", 0, 3), lesion_type="glioma").level


def test_lesion_levels_puts_gliomas_and_strokes_at_the_skull_base_too():
    """``lesion_levels`` draws gliomas and strokes over every level (so a classifier trained with ``all_levels`` has
    diseased skull-base slices as well as healthy ones); WMH stays periventricular."""
    effects = "all_levels,lesion_levels"
    seeds = [sb.sample_seed("train", 0, i) for i in range(30)]
    for kind in ("glioma", "stroke"):
        slices = [sb.generate_slice(s, lesion_type=kind, realism=effects) for s in seeds]
        levels = [s.level for s in slices]
        assert min(levels) < 48 and max(levels) > 124, (kind, levels)
        assert all(s.lesion_mask.sum() >= sb.MIN_LESION_PX for s in slices)
    wmh = [sb.generate_slice(s, lesion_type="wmh", realism=effects).level for s in seeds[:10]]
    assert min(wmh) >= 66 and max(wmh) <= 122


def test_a_level_without_room_for_the_lesion_moves_and_keeps_its_healthy_pair():
    """A seed whose drawn level had no room for its lesion (Fazekas WMH on a small brain in a wide field of view
    used to raise) moves towards the middle of the lesion's levels; its healthy counterpart follows it."""
    seed = 281474976711956
    sick = sb.generate_slice(seed, realism="scanner")
    well = sb.generate_slice(seed, realism="scanner", healthy=True, lesion_type=sick.lesion_type)
    assert sick.lesion_mask.sum() >= sb.MIN_LESION_PX and well.lesion_mask.sum() == 0
    assert sick.level == well.level
    away = sick.lesion_mask == 0
    far = cv2.erode(away.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)     # past the PSF (6 px)
    assert np.abs(sick.image - well.image)[:, far].max() < 1e-5


def test_skull_strip_residue_sits_at_the_skull_base_edge_inside_the_mask_and_keeps_pairs_paired():
    from diffuse_core.data.synthbrain.anatomy import load_templates

    z0 = load_templates()["z0"]
    low = high = 0
    for i in range(60):
        seed = sb.sample_seed("test", 0, i)
        plain = sb.generate_slice(seed, healthy=True, realism="all_levels")
        res = sb.generate_slice(seed, healthy=True, realism="all_levels,residue")
        assert plain.level == res.level
        changed = plain.image[0] != res.image[0]
        if plain.level - z0 > 8:                                  # above MNI z = +8: never
            assert _same(plain, res)
            high += 1
        elif plain.level - z0 < -12 and changed.any():            # below z = -12: always (where a blob found an edge)
            low += 1
            assert (res.brain_mask >= plain.brain_mask).all()     # the strip kept it: the mask grows, never shrinks
            assert (res.image[0][res.brain_mask == 0] == -1).all()
            near = cv2.dilate(plain.brain_mask, np.ones((3, 3), np.uint8), iterations=2) > 0
            n, parts = cv2.connectedComponents((changed & (plain.brain_mask == 0)).astype(np.uint8))
            assert all((near & (parts == k) ).any() for k in range(1, n))   # every blob attached to the brain's edge
            ys = np.nonzero(changed)[0]
            assert ys.mean() < np.nonzero(plain.brain_mask)[0].mean() + 5     # in front or at the temporal poles
    assert low >= 3 and high >= 3
    for i in range(40):                                           # a low diseased slice and its counterpart
        seed = sb.sample_seed("test", 0, 100 + i)
        d = sb.generate_slice(seed, lesion_type="stroke", realism="residue")
        if d.level - z0 < -12:
            h = sb.generate_slice(seed, lesion_type="stroke", healthy=True, realism="residue")
            plain = sb.generate_slice(seed, lesion_type="stroke", healthy=True)
            assert not np.array_equal(h.image, plain.image)        # the residue is there, in both
            far = cv2.dilate(d.lesion_mask, np.ones((3, 3), np.uint8), iterations=4) == 0
            assert np.array_equal(d.image[0][far], h.image[0][far])
            break
    else:
        pytest.fail("no low stroke slice among the seeds tried")
