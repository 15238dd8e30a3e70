"""Layouts of the per-step arrays, in Python (``src/_layout.pxd`` is the kernels' side).

The caller's per-step arrays are batch-major (N, T, ...) or, with ``time_major=True``,
time-major (T, N, ...). Every array fastbptt makes for the caller is C-contiguous in the
caller's layout, so one matrix product covers all steps and the kernels pass it to BLAS as it
is; the cache and the reference index it by step through a time-major view, which costs no copy.
"""
import numpy as np


def swap_major(arr, time_major):
    """Between the caller's layout and the step-indexed (T, N, ...) one, either way: a view.

    Swapping the first two axes is its own inverse, so this one function turns a caller's array
    into its view by step and a view by step back into the caller's layout."""
    return arr if time_major else arr.swapaxes(0, 1)


def empty_steps(n_steps, n_batch, width, dtype, time_major):
    """A new per-step array, C-contiguous in the caller's layout: (N, T, width), or
    (T, N, width) if ``time_major``."""
    if time_major:
        return np.empty((n_steps, n_batch, width), dtype)
    return np.empty((n_batch, n_steps, width), dtype)


def empty_by_step(n_steps, n_batch, width, dtype, time_major):
    """The (T, N, width) view of a new ``empty_steps`` array, indexed by step."""
    return swap_major(empty_steps(n_steps, n_batch, width, dtype, time_major), time_major)


def readonly(arr):
    """A read-only view of ``arr``. (``setflags`` rather than ``flags.writeable =``, which makes
    a flags object first: this runs on every forward.)"""
    view = arr.view()
    view.setflags(write=False)
    return view
