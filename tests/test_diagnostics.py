"""Model table and DCN check: the numbers the workflow tabulates."""

import json

import pandas as pd
import pytest
import torch
from torch import nn

from micml.diagnostics import model_rows, multiply_accumulates, write_dcn_check


def test_multiply_accumulates_counts_a_known_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    # conv: 8*4*4 outputs x 3*3*3 weights; linear: 10 outputs x 128 inputs
    assert multiply_accumulates(net, (1, 3, 4, 4)) == 8 * 16 * 27 + 10 * 128


def test_model_table_matches_the_measured_reference():
    """Spec section 9: the eval forward at 512x512 is 66.0 GMAC, the training forward (motion
    module on) 507.2 GMAC, and 7,546,319 parameters are used at inference."""
    rows = {row["variant"]: row for row in model_rows(["dsfnet", "micml", "micml_motion_at_test"], [512])}
    assert rows["dsfnet"]["gmac_512"] == pytest.approx(66.0, abs=0.05)
    assert rows["micml"]["gmac_512"] == rows["dsfnet"]["gmac_512"]  # motion skipped in eval
    assert rows["micml_motion_at_test"]["gmac_512"] == pytest.approx(507.2, abs=0.1)
    assert rows["micml"]["params_inference"] == rows["dsfnet"]["params_inference"] == 7_546_319
    assert rows["micml"]["params_total"] == 7_546_319 + 1_217_600


def test_dcn_check_writes_a_passed_report(tmp_path):
    result = write_dcn_check(tmp_path / "check.json", tmp_path / "check.md", use_gpu=False)
    assert result["passed"] and result["device"] == "cpu"
    assert json.loads((tmp_path / "check.json").read_text())["passed"] is True
    assert "| gather |" in (tmp_path / "check.md").read_text()
