"""Every build of each cell's kernels that runs on this CPU (baseline x86-64 and AVX2+FMA)
equals the reference; the default run of the other tests covers only the one picked at import."""
import importlib

import numpy as np
import pytest

from fastbptt._kernels import variants

from conftest import make_problem
from test_equivalence import CASES, CASE_IDS, compare


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", [(3, 7, 4, 5), (1, 9, 3, 4), (2, 5, 6, 33)],
                         ids=lambda s: "N{}T{}D{}H{}".format(*s))
def test_every_build_equals_reference(cell, opts, shape, dtype, monkeypatch):
    wrapper = importlib.import_module(f"fastbptt.{cell}")
    builds = variants(f"_{cell}")
    assert builds, "no compiled build found"
    for build in builds:
        monkeypatch.setattr(wrapper, f"_{cell}", build)
        args, kwargs, dh = make_problem(cell, *shape, dtype=dtype)
        xi = np.ones(shape[1])
        xi[shape[1] // 2] = 0
        compare(cell, args, {**kwargs, **opts}, dh, dtype, xi=xi)
