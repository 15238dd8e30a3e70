"""What the commands share to write their results: the output folder and the figures.

The figures are matplotlib's ``Figure`` objects, drawn without pyplot, so no global backend is
chosen and nothing opens a window. matplotlib (like tqdm) is an optional dependency, the
``cli`` extra: without it a command writes its tables and says how to get the pictures.
"""
import os
import sys

CLI_EXTRA = "pip install 'fastbptt[cli]'"
DPI = 120


def make_out_dir(command, path):
    """Create the output folder ``path`` (``--out``) if needed; False, with the error printed
    for ``fastbptt COMMAND``, where it cannot be."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        print(f"fastbptt {command}: error: --out {path}: cannot create the folder ({err})",
              file=sys.stderr)
        return False
    return True


def figure():
    """A new matplotlib Figure (8 x 5 inches, tight layout), or None without matplotlib; save it
    with ``fig.savefig(path, dpi=DPI)``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(8, 5), layout="tight")
