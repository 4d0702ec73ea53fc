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
