"""The reference's gradients against central finite differences (float64)."""
import numpy as np
import pytest

import fastbptt.reference as ref

from conftest import make_problem
from test_equivalence import CASE_IDS, CASES


def loss_and_grads(cell, args, kwargs, dh, dhT, xi=None):
    """L = sum(h * dh) + sum(hT * dhT): its gradient is backward(dh, dhT=dhT)."""
    h, cache = getattr(ref, f"{cell}_forward")(*args, **kwargs)
    loss = float(np.sum(h * dh) + np.sum(cache.hT * dhT))
    return loss, getattr(ref, f"{cell}_backward")(dh, cache, dhT=dhT, xi=xi)


@pytest.mark.parametrize("cell,opts", CASES, ids=CASE_IDS)
def test_reference_gradients_match_finite_differences(cell, opts):
    args, kwargs, dh = make_problem(cell, 2, 4, 3, 3, seed=3, weight_scale=1.0)
    kwargs = {**kwargs, **opts}
    if opts.get("nonlinearity") == "relu":   # keep pre-activations away from the kink
        args[4] = args[4] + 0.3
    dhT = np.random.default_rng(4).standard_normal(args[1].shape)
    _, grads = loss_and_grads(cell, args, kwargs, dh, dhT)
    named = dict(zip(("dx", "dh0", "dWx", "dWh", "db"), range(5)))
    targets = [(name, args, i) for name, i in named.items()]
    if cell == "lstm":
        targets.append(("dc0", kwargs, "c0"))
    if cell == "gru":
        targets.append(("dbh", kwargs, "bh"))
    eps = 1e-6
    for name, holder, key in targets:
        param = holder[key]
        numeric = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + eps
            plus, _ = loss_and_grads(cell, args, kwargs, dh, dhT)
            param[idx] = old - eps
            minus, _ = loss_and_grads(cell, args, kwargs, dh, dhT)
            param[idx] = old
            numeric[idx] = (plus - minus) / (2 * eps)
        analytic = getattr(grads, name)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
