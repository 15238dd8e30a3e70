"""What an installation says about itself: ``fastbptt --version`` and ``fastbptt.show_config()``."""
import os

import pytest

import fastbptt
from fastbptt import _kernels
from fastbptt.cli import main


def test_version_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastbptt {fastbptt.__version__}"


def test_show_config_dicts_say_which_build_runs_and_the_blas():
    info = fastbptt.show_config(mode="dicts")
    assert set(info) >= {"fastbptt", "Python", "numpy", "Kernels", "Threads"}
    assert info["fastbptt"]["version"] == fastbptt.__version__
    assert os.path.samefile(info["fastbptt"]["location"], os.path.dirname(fastbptt.__file__))
    kernels = info["Kernels"]
    assert kernels["built"] is True                    # the tests run on built kernels
    assert kernels["running"] == ("avx2+fma" if _kernels.use_avx2() else "baseline")
    assert kernels["cpu has avx2+fma"] in (True, False)
    blas = next(v for k, v in info.items() if k.startswith("BLAS"))
    assert blas["scipy"]
    threads = info["Threads"]
    assert threads["blas threads per kernel call"] == 1        # the default
    assert threads["cpu count"] >= 1
    assert "OPENBLAS_NUM_THREADS" in threads["environment"]


def test_show_config_follows_the_thread_setting():
    try:
        fastbptt.set_blas_threads(2)
        assert fastbptt.show_config(mode="dicts")["Threads"]["blas threads per kernel call"] == 2
    finally:
        fastbptt.set_blas_threads(1)


def test_show_config_prints_by_default(capsys):
    assert fastbptt.show_config() is None
    out = capsys.readouterr().out
    for line in ("fastbptt:", f"  version: {fastbptt.__version__}", "Kernels:", "  running: ",
                 "Threads:", "  blas threads per kernel call: 1"):
        assert line in out, line


def test_show_config_mode_is_checked():
    with pytest.raises(ValueError, match="mode must be 'stdout' or 'dicts', got 'json'"):
        fastbptt.show_config(mode="json")
