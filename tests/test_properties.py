"""Property-based: kernels equal the reference on shapes, dtypes, layouts and truncation patterns
drawn by hypothesis, beyond the hand-picked cases of test_equivalence."""
import numpy as np
from conftest import make_problem
from hypothesis import given, settings
from hypothesis import strategies as st
from test_equivalence import CELL_OPTIONS, compare

problems = st.fixed_dictionaries({
    "cell": st.sampled_from(sorted(CELL_OPTIONS)),
    "n_batch": st.integers(1, 4),
    "n_steps": st.integers(1, 12),
    "n_input": st.integers(1, 6),
    "n_hidden": st.integers(1, 9),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "time_major": st.booleans(),
    "seed": st.integers(0, 2**16),
    "xi_seed": st.integers(0, 2**16),
    "weight_scale": st.floats(0.1, 3.0),
})


@settings(max_examples=60, deadline=None)
@given(problems)
def test_kernels_equal_reference_on_drawn_problems(p):
    cell, dtype = p["cell"], p["dtype"]
    args, kwargs, dh = make_problem(cell, p["n_batch"], p["n_steps"], p["n_input"],
                                    p["n_hidden"], dtype=dtype, time_major=p["time_major"],
                                    seed=p["seed"], weight_scale=p["weight_scale"])
    rng = np.random.default_rng(p["xi_seed"])
    xi = rng.choice([0.0, 0.5, 1.0, 2.0], size=p["n_steps"])
    dhT = rng.standard_normal(args[1].shape).astype(dtype)
    options = CELL_OPTIONS[cell][rng.integers(len(CELL_OPTIONS[cell]))]
    compare(cell, args, {**kwargs, **options}, dh, dtype, xi=xi, dhT=dhT)
