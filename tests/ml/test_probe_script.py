"""scripts/probe_served_model.py: its joint context table agrees with ml.context's counting."""

import importlib.util
import os

import numpy as np
import pytest

from ml.classes import CLASSES
from ml.context import ClinicalContext, fit_context_prior
from ml.data import Record

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "probe_served_model.py")


@pytest.fixture(scope="module")
def probe():
    pytest.importorskip("sklearn", reason="the probe script needs the 'train' extra (scikit-learn)")
    spec = importlib.util.spec_from_file_location("probe_served_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(contexts, dxs):
    return [Record(image_id=f"i{n}", lesion_id=f"l{n}", dx=dx, path="", context=c)
            for n, (c, dx) in enumerate(zip(contexts, dxs))]


def test_it_counts_a_joint_table_like_the_single_field_one_when_the_second_field_says_nothing(probe):
    # Every image male: age x sex jointly must carry exactly what age alone does.
    contexts = ([ClinicalContext(age=25, sex="male")] * 20 + [ClinicalContext(age=75, sex="male")] * 30
                + [ClinicalContext(age=75, sex="male", site="face")] * 10)
    dxs = ["nv"] * 20 + ["bcc"] * 25 + ["nv"] * 5 + ["akiec"] * 10
    train = _records(contexts, dxs)
    asked = [ClinicalContext(age=28, sex="male"), ClinicalContext(age=77, sex="male"), ClinicalContext(age=77),
             ClinicalContext(age=50, sex="male")]
    joint = probe.joint_offsets(train, asked, ("age", "sex"))
    single = fit_context_prior(contexts, np.array([CLASSES.index(d) for d in dxs]))
    np.testing.assert_allclose(joint[:2], [single.offsets(c) for c in asked[:2]], atol=1e-9)
    assert joint[1][CLASSES.index("bcc")] > 0 > joint[0][CLASSES.index("bcc")]
    # A missing field, or a pair never seen in training, adds nothing.
    np.testing.assert_array_equal(joint[2:], np.zeros((2, len(CLASSES))))
