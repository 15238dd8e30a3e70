"""What the commands share to write their results: the output folder and the figures.

The output folder is made and tried (a file is created in it and removed) before any work, so
that a folder that exists but cannot be written is refused at once rather than after a long
run. If writing a result fails later all the same, ``OutDir`` writes it, and what follows, to a
new folder in the system's temporary folder and says where: results are never lost.

The figures are matplotlib's ``Figure`` objects, drawn without pyplot, so no global backend is
chosen and nothing opens a window. matplotlib (like tqdm) is an optional dependency, the
``cli`` extra: without it a command writes its tables and says how to get the pictures.
"""
import os
import sys
import tempfile

CLI_EXTRA = "pip install 'fastbptt[cli]'"
DPI = 120


def make_out_dir(command, path):
    """Create the output folder ``path`` (``--out``) if needed and try writing a file in it;
    False, with the error printed for ``fastbptt COMMAND``, where either fails."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        print(f"fastbptt {command}: error: --out {path}: cannot create the folder ({err})",
              file=sys.stderr)
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".fastbptt-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        print(f"fastbptt {command}: error: --out {path}: cannot write in the folder ({err})",
              file=sys.stderr)
        return False
    return True


class OutDir:
    """Where a command writes its results: ``--out``, until writing there fails; from then on
    a new folder in the system's temporary folder, said on stderr."""

    def __init__(self, command, path):
        self.command, self.path, self.moved = command, path, False

    def write(self, name, write):
        """``write(path)`` for the file ``name`` in the folder: (its path, what write
        returned). Where it fails with an OSError in ``--out``, it is written to the fallback
        folder instead (an error there goes on)."""
        path = os.path.join(self.path, name)
        try:
            return path, write(path)
        except OSError as err:
            if self.moved:
                raise
            self.path, self.moved = tempfile.mkdtemp(prefix=f"fastbptt-{self.command}-"), True
            print(f"fastbptt {self.command}: cannot write {path} ({err}); writing the results "
                  f"to {self.path} instead", file=sys.stderr)
            path = os.path.join(self.path, name)
            return path, write(path)


def figure():
    """A new matplotlib Figure (8 x 5 inches, tight layout), or None without matplotlib; save it
    with ``fig.savefig(path, dpi=DPI)``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(8, 5), layout="tight")
