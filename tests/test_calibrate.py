"""The calibration of a model's app settings on SynthBrain validation slices (thresholds, verdict), through the one
assembly of a run."""

import numpy as np
import pytest

from diffuse_core.models.registry import is_installed, model_dir_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not is_installed(model_dir_for("classifier", None)), reason="no shipped models")]


def test_calibrate_chooses_thresholds_on_the_validation_slices_it_names():
    from diffuse_core.evaluation.calibrate import calibrate

    rec = calibrate(n_val=4, n_healthy=4, k=20, realism="scanner", batch_size=4)
    assert rec["data"]["synthbrain_realism"] == "scanner" and rec["data"]["synthbrain_val_diseased"] == 3
    assert rec["settings"]["k"] == 20 and rec["settings"]["mask_rule"]["kind"] == "weighted"
    v = rec["verdict"]
    # 4 healthy slices, 5 % false abnormal: the threshold is the 95th percentile of their peaks, so at most one is over
    assert np.isfinite(v["threshold"]) and v["healthy_called_abnormal"] <= 0.25
    assert 0.0 <= rec["validation_dice"] <= 1.0 and rec["anomaly_threshold"] > 0
    assert 0.0 <= rec["healthy_flagged"]["mean"] <= rec["healthy_flagged"]["max"] <= 1.0


def test_a_ct_model_is_calibrated_on_the_ct_threshold_grid():
    """An early infarct is only a few HU darker than its tissue: a CT model's pixel threshold is chosen on the finer,
    lower CT grid (as ct_check does), not on the MRI grid, whose lowest value was the optimum's floor."""
    from diffuse_core.evaluation.calibrate import calibrate, threshold_grid
    from diffuse_core.evaluation.ct_check import CT_THRESHOLD_GRID
    from diffuse_core.evaluation.protocol import THRESHOLD_GRID

    assert threshold_grid("ct") is CT_THRESHOLD_GRID and threshold_grid("flair") is THRESHOLD_GRID
    rec = calibrate(model_dir_for("ddpm", "ct"), score="signed", normalisation="absolute", n_val=4, n_healthy=4,
                    k=20, steps=2, batch_size=4)
    assert rec["data"]["modality"] == "ct" and rec["threshold_grid"] == "0.005..0.6 step 0.005"
    assert min(abs(rec["anomaly_threshold"] - t) for t in CT_THRESHOLD_GRID) < 1e-9
