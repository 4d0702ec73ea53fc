"""Regenerate the ``default`` teaching set from SynthBrain (deterministic: same code, same files).

    python teaching_sets/build_default.py [--out teaching_sets/default]

Each case is a SynthBrain slice whose seed comes from the "teaching" seed range (disjoint from train/val/test). For
every wanted case (modality, lesion type, scale, contrast, a territory or size requirement) the script walks the
teaching seeds in order and takes the first one that satisfies it, so the choice is reproducible.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from diffuse_core.data import synthbrain as sb  # noqa: E402

SIZE = 128
NAME = "default"
DESCRIPTION = ("SynthBrain teaching set: FLAIR gliomas, ischaemic strokes and white-matter hyperintensities from "
               "obvious to subtle, non-contrast CT strokes, and healthy slices for comparison. Synthetic images "
               "(ICBM152 anatomy, simulated lesions): for learning, not for diagnosis.")

# (modality, lesion_type, lesion_scale, contrast, requirement, note template). Requirement: wanted properties of
# the slice. The note is formatted with the slice's own properties: {where} (side and lobe, or "both hemispheres"),
# {loc} (full location), {size}, {terr} (vascular territory), {n} and {n_pv} (WMH foci, periventricular ones).
WANTED = [
    ("flair", "glioma", 1.35, 1.0, {"size": {"large"}, "detail": "high-grade"},
     "Large {where} glioma with a necrotic centre and finger-like FLAIR-bright oedema tracking along the white "
     "matter; look for the effaced sulci and compressed ventricle that the healthy counterfactual should restore."),
    ("flair", "glioma", 1.0, 0.85, {"size": {"medium", "large"}, "detail": "high-grade"},
     "{Size} {where} tumour whose outline (the whole tumour) includes the vasogenic oedema around a heterogeneous "
     "core, so the abnormal area is larger than the mass itself."),
    ("flair", "glioma", 0.75, 0.7, {"size": {"medium"}},
     "{Size} FLAIR-hyperintense lesion in the {loc}: a hyperintensity that respects no vascular territory and spreads "
     "through white matter favours a glioma over an infarct."),
    ("flair", "glioma", 0.45, 0.45, {"size": {"small", "medium"}, "detail": "low-grade"},
     "Faint, non-enhancing FLAIR hyperintensity in the {loc}, the kind of low-grade glioma that is easy to "
     "overlook: compare its signal with the mirror-image white matter of the other hemisphere."),
    ("flair", "stroke", 1.2, 1.0, {"size": {"large"}, "detail": "MCA territory"},
     "Large wedge of FLAIR hyperintensity in the {where} involving cortex and underlying white matter, "
     "filling the {terr}: the vascular distribution points to an infarct rather than a tumour."),
    ("flair", "stroke", 0.9, 0.8, {"size": {"medium", "large"}, "detail": "MCA branch"},
     "{Size} infarct confined to part of the middle cerebral artery supply ({terr}) in the {where}: "
     "a branch occlusion spares the rest of the territory."),
    ("flair", "stroke", 1.0, 0.75, {"size": {"medium", "large"}, "detail": "PCA"},
     "Posterior cerebral artery infarct of the {where}: medial occipital cortex and white matter are "
     "FLAIR-bright along the interhemispheric surface."),
    ("flair", "stroke", 0.9, 0.75, {"size": {"medium", "large"}, "detail": "ACA"},
     "Anterior cerebral artery infarct: a paramedian strip of FLAIR hyperintensity along the falx in the {where}, "
     "sparing the lateral convexity supplied by the MCA."),
    ("flair", "stroke", 0.8, 0.5, {"size": {"small"}, "detail": "lacunar"},
     "Small lacunar infarct in the {loc}, a tiny FLAIR-bright focus of deep small-vessel occlusion that is easily "
     "mistaken for a white-matter hyperintensity."),
    ("flair", "wmh", 1.5, 1.0, {"size": {"medium", "large"}, "pv": True},
     "Multiple FLAIR-bright foci ({n}, of which {n_pv} periventricular) in the {loc}: the typical pattern of "
     "small-vessel disease, graded by how far the foci extend and coalesce."),
    ("flair", "wmh", 1.0, 0.8, {"size": {"small", "medium"}},
     "A few ({n}) scattered white-matter hyperintensities in the {loc}: small, round and without mass effect, "
     "unlike a tumour or an infarct."),
    ("flair", "wmh", 0.6, 0.5, {"size": {"small"}},
     "Only {n} tiny, low-contrast FLAIR-bright spots in the {loc}: white-matter hyperintensities this small test a "
     "reader's search pattern and the anomaly map's sensitivity."),
    ("ct", "stroke", 1.3, 1.0, {"size": {"large"}, "detail": "MCA territory"},
     "Established infarct on non-contrast CT: the {terr} of the {where} is hypodense and the grey-white "
     "boundary is erased (brain window, centre 40 / width 80 HU)."),
    ("ct", "stroke", 0.9, 0.75, {"size": {"medium", "large"}, "detail": "MCA branch"},
     "{Size} cortical-subcortical hypodensity of the {where} ({terr}) on CT: compare the grey-white contrast "
     "with the same gyri on the other side."),
    ("ct", "stroke", 1.0, 0.45, {"size": {"medium", "large"}, "detail": "MCA territory"},
     "Subtle early ischaemic change on CT in the {loc}: only a few HU of hypodensity and a slight loss of grey-white "
     "differentiation; a narrow window helps."),
]
HEALTHY = [
    ("flair", (56, 64), "Normal FLAIR at the level of {level}: the temporal lobes, midbrain cisterns and cerebellum "
                        "look separate at this level and must not be mistaken for lesions."),
    ("flair", (70, 80), "Normal FLAIR at the level of {level}: the deep grey nuclei are slightly brighter than the "
                        "internal capsule and the two sides are symmetric."),
    ("flair", (84, 92), "Normal FLAIR at the level of {level}: dark, symmetric CSF in the ventricles with no "
                        "periventricular hyperintensity, the reference for the WMH cases."),
    ("flair", (96, 104), "Normal FLAIR at the level of {level}: cortex slightly brighter than white matter, as in "
                         "BraTS FLAIR, with thin dark sulci reaching the surface."),
    ("flair", (110, 122), "Normal FLAIR at the level of {level}: homogeneous white matter between the gyri; any "
                          "bright spot here would be abnormal."),
    ("ct", (84, 92), "Normal non-contrast CT at the level of {level}: grey matter about 10-15 HU denser than white "
                     "matter, the contrast an early infarct erases."),
]


# Seeds passed over: a case whose first matching seed the shipped models call against its label (issue 36: the quiz,
# the Healthy check and the verdict agree on every shipped case; tests/test_teaching.py checks the whole set) is
# searched again after all the other cases, from the next unused teaching seed, so that no other case changes. The
# set therefore holds no case the shipped models miss: it is for teaching, and it does not measure them (their
# sensitivity is measured on SynthBrain validation and test slices; see the model cards). {case number: {seed: why}}
PASSED_OVER: dict[int, dict[int, str]] = {
    4: {1125899906842641: "the FLAIR verdict calls it normal (peak anomaly 0.042 under 0.210; Dice 0.00); slices of "
                          "this spec made from validation seeds are called abnormal in 5 of 6",
        1125899906842764: "the FLAIR verdict calls it normal (peak anomaly 0.048 under 0.210; Dice 0.00; 36 pixels)"},
}


# Healthy cases the shipped models change more than the app's Healthy check allows and that stay, each marked in the
# manifest (``healthy_check_fails``; tests/test_teaching.py checks that every other case agrees and that a marked one
# still fails). None since 2026-12-07: the healthy CT case (21) failed the check while the CT card redrew the
# paper's 10 % of every brain (1.85 % flagged); with the CT card's weighted region it has nothing flagged
# (docs/research/2026-12-07-ct-mask-and-score.md).
KNOWN_HEALTHY_FLAGS: dict[int, str] = {}


def difficulty(s: sb.SynthSlice) -> str:
    if s.contrast < 0.6 or s.lesion_size == "small":
        return "subtle"
    if s.contrast >= 0.9 and s.lesion_size in ("medium", "large") or s.lesion_size == "large" and s.contrast >= 0.75:
        return "easy"
    return "moderate"


def level_name(level: int) -> str:
    z = level - 72  # MNI z, mm
    if z < -8:
        return "the temporal lobes and posterior fossa"
    if z < 8:
        return "the basal ganglia and third ventricle"
    if z < 20:
        return "the frontal horns and bodies of the lateral ventricles"
    if z < 34:
        return "the bodies of the lateral ventricles and corona radiata"
    return "the centrum semiovale and high convexity"


def note_for(s: sb.SynthSlice, template: str) -> str:
    words = s.location.split()
    if words[:1] == ["bilateral"]:
        where = "both hemispheres"
    elif len(words) >= 2 and words[1] in ("frontal", "parietal", "temporal", "occipital"):
        where = f"{words[0]} {words[1]} lobe"
    elif len(words) >= 2 and words[1] in ("frontoparietal", "temporo-occipital"):
        where = f"{words[0]} {words[1]} region"
    else:
        where = s.location.split(" (")[0]
    n = n_pv = 0
    if s.lesion_type == "wmh":                      # detail: "N foci (M periventricular)"
        n, n_pv = int(s.detail.split()[0]), int(s.detail.split("(")[1].split()[0])
    return template.format(where=where, loc=s.location.split(" (")[0], size=s.lesion_size,
                           Size=s.lesion_size.capitalize() if s.lesion_size != "medium" else "Medium-sized",
                           terr=s.detail, n=n, n_pv=n_pv, level=level_name(s.level))


def _matches(s: sb.SynthSlice, req: dict) -> bool:
    if s.level < req.get("min_level", 62):          # supratentorial levels read best for teaching
        return False
    if s.lesion_size not in req.get("size", {s.lesion_size}):
        return False
    if "detail" in req and not s.detail.startswith(req["detail"]) and req["detail"] not in s.detail:
        return False
    if req.get("pv") and not (" periventricular)" in s.detail and not s.detail.split("(")[1].startswith("0 ")):
        return False
    return True


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for p in list(out.glob("*_image.nii.gz")) + list(out.glob("*_mask.nii.gz")) + list(out.glob("*.png")):
        p.unlink()
    cases = []
    index = 0                     # teaching seeds are consumed in order, one search after the other

    def next_seed() -> int:
        nonlocal index
        seed = sb.sample_seed("teaching", 0, index)
        index += 1
        return seed

    used_levels: list[int] = []
    healthy_cases: list[dict] = []
    used_places: set[tuple[str, str]] = set()      # no two cases of one lesion type in the same place
    def find(k: int):
        mod, lt, scale, contrast, req, _ = WANTED[k - 1]
        for _ in range(2000):
            seed = next_seed()
            s = sb.generate_slice(seed, (mod,), SIZE, healthy=False, lesion_type=lt, lesion_scale=scale,
                                  contrast=contrast)
            place = (lt, " ".join(s.location.split()[:2]), s.detail if lt == "stroke" else "")
            if _matches(s, req) and place not in used_places:
                if seed in PASSED_OVER.get(k, {}):
                    return None                     # searched again after the other cases
                used_places.add(place)
                return s
        raise RuntimeError(f"no teaching seed matched case {k}: {mod} {lt} {req}")

    found = {k: find(k) for k in range(1, len(WANTED) + 1)}
    for j, (mod, (lo, hi), note) in enumerate(HEALTHY, start=len(WANTED) + 1):
        for _ in range(2000):
            seed = next_seed()
            s = sb.generate_slice(seed, (mod,), SIZE, healthy=True)
            if lo <= s.level <= hi and s.level not in used_levels:
                break
        used_levels.append(s.level)
        entry = _entry(out, f"case{j:02d}_{mod}_healthy", s, mod, note)
        if j in KNOWN_HEALTHY_FLAGS:
            entry["healthy_check_fails"] = KNOWN_HEALTHY_FLAGS[j]
        healthy_cases.append(entry)
    for k in sorted(k for k, s in found.items() if s is None):     # the passed-over cases, searched again
        while found[k] is None:
            found[k] = find(k)
    for k, (mod, lt, scale, _, _, note) in enumerate(WANTED, start=1):
        entry = _entry(out, f"case{k:02d}_{mod}_{lt}", found[k], mod, note, lesion_scale=scale)
        if k in PASSED_OVER:
            entry["passed_over"] = [{"seed": seed, "why": why} for seed, why in PASSED_OVER[k].items()]
        cases.append(entry)
    cases += healthy_cases
    manifest = {"name": NAME, "description": DESCRIPTION,
                "generator": {"name": "SynthBrain", "version": sb.SYNTHBRAIN_VERSION, "size": SIZE,
                              "fov_mm": sb.FOV_MM, "spacing_mm": sb.pixel_mm(SIZE),     # spacing also in headers
                              "seed_range": "teaching", "script": "teaching_sets/build_default.py"},
                "cases": cases}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def _entry(out: Path, cid: str, s: sb.SynthSlice, mod: str, note: str, lesion_scale: float | None = None) -> dict:
    names = sb.save_case(s, out, cid)
    healthy = s.lesion_type == "none"
    entry = {"id": cid, "modality": mod, "lesion_type": s.lesion_type,
             "location": f"axial level of {level_name(s.level)}" if healthy else s.location,
             "difficulty": "easy" if healthy else difficulty(s), "note": note_for(s, note), "seed": s.seed,
             "healthy": healthy, "image": names["image"], "mask": names["mask"], "preview": names["preview"],
             "lesion_size": s.lesion_size, "level": s.level, "detail": s.detail,
             "lesion_pixels": int(s.lesion_mask.sum())}
    if not healthy:
        entry["generate"] = {"lesion_type": s.lesion_type, "lesion_scale": lesion_scale, "contrast": s.contrast,
                             "size": SIZE, "modalities": [mod]}
    else:
        entry["generate"] = {"healthy": True, "size": SIZE, "modalities": [mod]}
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / NAME))
    args = ap.parse_args(argv)
    path = build(Path(args.out))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
