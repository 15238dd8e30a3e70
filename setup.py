"""Builds the Cython kernels in src/ into the fastbptt package (metadata: pyproject.toml).

Compiler flags: -O3 vectorises the fused elementwise loops; -fno-trapping-math lets GCC turn
the branch-free selects of src/_vmath.pxd into SIMD blends (it changes no computed value, it only
stops treating floating-point exception flags as observable). No -ffast-math and no -march:
the package must run on any x86-64 and give the reference's answers.

On x86-64 each cell kernel (src/_rnn.pyx, ...) is built twice from the same source: for the
baseline (SSE2) and, as fastbptt._<cell>_avx2, with -mavx2 -mfma. The elementwise passes
(tanh, sigmoid, exp) then run 4 doubles or 8 floats at a time, and the per-step products run on
a Wh packed once per call (src/_packed.h), or for up to 4 sequences over a short call on Wh
in place (src/_few.h); fastbptt/_kernels.py picks the AVX2 build at import
time only where the CPU has AVX2 and FMA. The test hooks (src/_blas_hooks.pyx) are built twice
too, so that tests/ reach the packed products of the AVX2 build, and so are the NaN scan of the
input checks (src/_checks.pyx), which reads the weights on every call, and the transposed copies
of fastbptt.torch's weights and their gradients (src/_transpose.pyx).

OpenMP: the cell kernels run one call on several threads with Cython's ``prange``
(src/_shards.pxd), compiled and linked with -fopenmp where the compiler takes it (checked by
compiling a small program); FASTBPTT_OPENMP=0 builds without. Without OpenMP the same source
builds and every call runs on one thread.

FASTBPTT_DEBUG=1 turns bounds and initialisation checks back on for debugging.
FASTBPTT_BUILD=_rnn,_lstm (developers) builds only those kernels, e.g. with
`python setup.py build_ext --inplace`, leaving the others' compiled modules as they are.
"""
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTBPTT_DEBUG", "") == "1"
ONLY = [name for name in os.environ.get("FASTBPTT_BUILD", "").split(",") if name]
FLAGS = ["-O3", "-fno-trapping-math"]
# baseline and AVX2+FMA
TWO_BUILDS = {"_rnn", "_lstm", "_gru", "_jordan", "_blas_hooks", "_checks", "_transpose"}
X86 = platform.machine().lower() in ("x86_64", "amd64") and os.name != "nt"
GENERATED = Path("build") / "generated"
# built with OpenMP where there is one
THREADED = {"_rnn", "_lstm", "_gru", "_jordan", "_floor", "_cpu"}


def openmp_flags():
    """-fopenmp if the C compiler builds and links an OpenMP program with it, else nothing."""
    if os.environ.get("FASTBPTT_OPENMP", "1") == "0" or os.name == "nt":
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "omp.c"
        source.write_text("#include <omp.h>\n"
                          "int main(void) { return omp_get_max_threads() < 1; }\n")
        done = subprocess.run([compiler, "-fopenmp", str(source), "-o", str(Path(tmp) / "omp")],
                              capture_output=True)
    return ["-fopenmp"] if done.returncode == 0 else []


OPENMP = openmp_flags()


def variant_source(stem, suffix):
    """A one-line .pyx that compiles src/<stem>.pyx again under the module name <stem><suffix>."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    path = GENERATED / f"{stem}{suffix}.pyx"
    text = f'include "{stem}.pyx"\n'
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


# the modules that read arrays through NumPy's C API (the input checks' fast path, the
# transposed copies)
NUMPY_API = {"_checks", "_transpose"}

extensions = []
for path in sorted(glob("src/*.pyx")):
    stem = Path(path).stem
    if ONLY and stem not in ONLY:
        continue
    numpy_api = {}
    if stem in NUMPY_API:
        import numpy
        numpy_api = {"include_dirs": ["src", numpy.get_include()],
                     "define_macros": [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]}
    omp = OPENMP if stem in THREADED else []
    options = {"include_dirs": ["src"], "extra_link_args": omp, **numpy_api}
    extensions.append(Extension(f"fastbptt.{stem}", [path], extra_compile_args=FLAGS + omp,
                                **options))
    if X86 and stem in TWO_BUILDS:
        extensions.append(Extension(f"fastbptt.{stem}_avx2", [variant_source(stem, "_avx2")],
                                    extra_compile_args=FLAGS + ["-mavx2", "-mfma"] + omp,
                                    **options))

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
}
# cythonize looks only at timestamps: regenerate the C when the directives changed (a debug build
# and the next normal one would otherwise share stale C)
STAMP = Path("build") / "cython-directives.txt"
FORCE = not STAMP.exists() or STAMP.read_text() != repr(DIRECTIVES)
modules = cythonize(extensions, include_path=["src"], compiler_directives=DIRECTIVES, force=FORCE)
STAMP.parent.mkdir(exist_ok=True)
STAMP.write_text(repr(DIRECTIVES))

setup(ext_modules=modules)
