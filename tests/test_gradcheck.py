"""The reference's gradients against central finite differences (float64)."""
import numpy as np
import pytest
from conftest import make_problem
from test_equivalence import CASE_IDS, CASES

import fastbptt.reference as ref


def loss_and_grads(cell, args, kwargs, dh, dhT, xi=None):
    """L = sum(h * dh) + sum(hT * dhT): its gradient is backward(dh, dhT=dhT)."""
    record = ref.CELLS[cell]
    h, cache = record.forward(*args, **kwargs)
    loss = float(np.sum(h * dh) + np.sum(cache.hT * dhT))
    return loss, record.backward(dh, cache, dhT=dhT, xi=xi)


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
    record = ref.CELLS[cell]         # and what the cell has beyond them: dc0 (LSTM), dbh (GRU)
    extra_inputs = record.extra_states + record.extra_weights
    targets += [(name, kwargs, key) for name, key in zip(record.extra_grads, extra_inputs)]
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
