"""Shared helpers: random problems for every cell, tolerances, layouts, scripts in a process of
their own."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbptt
import fastbptt.reference

RTOL = {np.float64: 1e-10, np.float32: 1e-4}
IMPLS = {"kernels": fastbptt, "reference": fastbptt.reference}
# the cells whose state is the hidden state h, with the weights Wx, Wh, b (make_problem's);
# Jordan's network, whose state is its output, has tests of its own (test_jordan.py)
HIDDEN_CELLS = [name for name, cell in fastbptt.CELLS.items() if not cell.output_feedback]


def assert_close(actual, expected, dtype, name=""):
    """Equal to rounding: max |actual - expected| <= rtol * max(1, max |expected|)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, name
    assert actual.dtype == np.dtype(dtype), name
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0))
    assert err <= RTOL[dtype] * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


def make_problem(cell, n_batch, n_steps, n_input, n_hidden, dtype=np.float64,
                 time_major=False, seed=0, weight_scale=0.5):
    """Random (args, kwargs) for the forward of ``fastbptt.CELLS[cell]`` and a random upstream
    gradient dh. The record says what the cell takes beyond ``x, h0, Wx, Wh, b``: an initial
    state (N, H) for each extra state (``c0``), each extra weight in its shape (``bh``)."""
    record = fastbptt.CELLS[cell]
    rng = np.random.default_rng(seed)
    gh = record.n_gates * n_hidden
    shape = (n_steps, n_batch, n_input) if time_major else (n_batch, n_steps, n_input)
    x = rng.standard_normal(shape).astype(dtype)
    h0 = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    Wx = (rng.standard_normal((n_input, gh)) * weight_scale / np.sqrt(n_input)).astype(dtype)
    Wh = (rng.standard_normal((n_hidden, gh)) * weight_scale / np.sqrt(n_hidden)).astype(dtype)
    b = (rng.standard_normal(gh) * 0.1).astype(dtype)
    kwargs = {"time_major": time_major}
    for name in record.extra_states:
        kwargs[name] = rng.standard_normal((n_batch, n_hidden)).astype(dtype)
    shapes = record.weight_shapes(n_input, n_hidden)
    for name in record.extra_weights:      # biases, drawn as b is
        kwargs[name] = (rng.standard_normal(shapes[name]) * 0.1).astype(dtype)
    dh = rng.standard_normal(shape[:2] + (n_hidden,)).astype(dtype)
    return [x, h0, Wx, Wh, b], kwargs, dh


def relayout(a, layout):
    """The same values as a Fortran-ordered, strided or read-only array."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" else "<"))
    if layout == "readonly":
        ro = a.copy()
        ro.flags.writeable = False
        return ro
    raise ValueError(layout)


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param


def run_script(script, *args, timeout=120, env=None):
    """What ``script``, run by a new Python process that finds this fastbptt first (the tests'
    ``sys.path``) with ``args`` after it and ``env`` added to the environment, printed as JSON
    on its last line; the test fails with the end of its stderr where the process exited
    otherwise than with 0 (a crash, a hang past ``timeout`` seconds raises)."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
