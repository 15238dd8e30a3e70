"""Every build of each cell's kernels that runs on this CPU (baseline x86-64 and AVX2+FMA)
equals the reference; the default run of the other tests covers only the one picked at import."""
import importlib

import numpy as np
import pytest
from conftest import assert_close, make_problem
from test_equivalence import CASE_IDS, CASES, compare

import fastbptt
import fastbptt.reference as ref
from fastbptt._kernels import variants


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


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch", "time"])
def test_a_cache_moves_between_builds(cell, time_major, dtype, monkeypatch):
    """A cache made by one build and differentiated by another (and refilled by the first
    again) gives the reference's gradients: each build reads the cache through its own
    ``Buffers``, made again where the one kept on the cache came from the other build."""
    wrapper = importlib.import_module(f"fastbptt.{cell}")
    builds = variants(f"_{cell}")
    if len(builds) < 2:
        pytest.skip("one build of the kernels runs on this CPU")
    forward = getattr(fastbptt, f"{cell}_forward")
    backward = getattr(fastbptt, f"{cell}_backward")
    args, kwargs, dh = make_problem(cell, 3, 5, 4, 6, dtype=dtype, time_major=time_major)
    _, expected_cache = getattr(ref, f"{cell}_forward")(*args, **kwargs)
    expected = getattr(ref, f"{cell}_backward")(dh, expected_cache)
    for first, second in (builds, builds[::-1]):
        monkeypatch.setattr(wrapper, f"_{cell}", first)
        _, cache = forward(*args, **kwargs)
        monkeypatch.setattr(wrapper, f"_{cell}", second)
        got = backward(dh, cache)
        monkeypatch.setattr(wrapper, f"_{cell}", first)
        forward(*args, **kwargs, out=cache)
        again = backward(dh, cache)
        for name in expected._fields:
            assert_close(getattr(got, name), getattr(expected, name), dtype, name)
            assert_close(getattr(again, name), getattr(expected, name), dtype, name)
