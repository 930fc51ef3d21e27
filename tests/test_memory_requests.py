"""Requests too large for memory are refused in one line before anything is allocated: the data generators
(ntkhom.data) against the available memory, and `ntkhom spectrum` against --memory-gb with estimates that
count what grows with d (the inputs and the first-layer weights), not only the (n, n) kernels.

Nothing large is allocated here: the available memory is patched small, and the random draws that would
allocate are patched to fail, so that a check that let a request through cannot take the machine down."""

import argparse

import jax
import numpy as np
import pytest
from cli_helpers import run_cli

from ntkhom import data, memory
from ntkhom.experiments import matrix_free, scale
from ntkhom.memory import MemoryLimitError

GIB = 2**30


@pytest.fixture
def no_large_draws(monkeypatch):
    """jax.random.normal and uniform refuse any draw of more than 10^6 numbers (the checks come first)."""
    for name in ("normal", "uniform"):
        original = getattr(jax.random, name)

        def guarded(key, shape=(), *args, _original=original, **kwargs):
            assert int(np.prod(shape)) <= 10**6, f"a draw of shape {shape} was allocated"
            return _original(key, shape, *args, **kwargs)

        monkeypatch.setattr(jax.random, name, guarded)


def test_generators_refuse_sizes_beyond_the_available_memory(monkeypatch, no_large_draws):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 8 * GIB)
    key = jax.random.PRNGKey(0)
    # The audit's sphere(key, 10**6, 10**5): in float32 two (n, d) arrays of 4e11 bytes each, 745 GiB.
    with pytest.raises(MemoryLimitError) as info:
        data.sphere(key, 10**6, 10**5, dtype=np.float32)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("sphere of shape (1000000, 100000) (float32")
    assert "needs 745 GiB, but only 8 GiB is available" in message and "smaller n or d" in message
    with pytest.raises(MemoryLimitError, match=r"sphere of shape \(1000000, 100000\) \(float64.* needs 1\.46 TiB"):
        data.sphere(key, 10**6, 10**5)  # JAX's float: float64 in these tests
    with pytest.raises(MemoryLimitError, match=r"gaussian_clusters of shape \(1000000, 100000\)"):
        data.gaussian_clusters(key, 10**6, 10**5)
    with pytest.raises(MemoryLimitError, match=r"circle of shape \(1000000000, 3\)"):
        data.circle(key, 10**9)
    # What fits is generated as before, and whole floats still count as sizes.
    assert data.sphere(key, 20, 3).shape == (20, 3) and data.sphere(key, 4.0, 2).shape == (4, 2)
    assert data.circle(key, 10).shape == (10, 3)
    # 80 percent of the available memory may be planned for: 2 x 1 MiB of float64 fits 2.6 MiB, not 2.4 MiB.
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(2.6 * 2**20))
    assert data.sphere(key, 2**10, 2**7).shape == (2**10, 2**7)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(2.4 * 2**20))
    with pytest.raises(MemoryLimitError, match="needs 2 MiB"):
        data.sphere(key, 2**10, 2**7)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: None)  # unknown: no refusal
    assert data.sphere(key, 3, 2).shape == (3, 2)


def test_array_bytes_counts_copies_of_a_shape():
    assert memory.array_bytes((10**6, 10**5), copies=2, itemsize=4) == 8 * 10**11
    assert memory.array_bytes((7,)) == 56 and memory.array_bytes((3, 0, 2)) == 0


def test_the_estimates_count_the_inputs_and_the_network_parameters():
    n, d, m = 20, 10**8, 16
    assert scale.input_bytes(n, d) == 8 * (3 * n * d + 32 * d)  # three (n, d) copies and the teacher's weights
    assert scale.parameter_bytes(d, m) == 8 * (m * (d + 1) + m + 1)
    assert scale.parameter_bytes(d, m, depth=2) == scale.parameter_bytes(d, m) + 8 * m * (m + 1)
    assert scale.parameter_bytes(d) == 0  # infinite width only
    kernels_and_jacobian = 5 * n * n * 8 + n * m * (d + 1) * 8
    assert scale.dense_spectrum_bytes(n, d, m) == (kernels_and_jacobian + scale.input_bytes(n, d)
                                                   + scale.parameter_bytes(d, m))
    assert scale.matrix_free_spectrum_bytes(n, d, m) == (matrix_free.matrix_free_bytes(n, d, m)
                                                         + scale.input_bytes(n, d) + scale.parameter_bytes(d, m))
    # Infinite width at a large d: the (n, n) kernels are 16 KB, the inputs 68.5 GiB.
    assert scale.dense_spectrum_bytes(n, d) > 68 * GIB > 10**4 * scale.dense_spectrum_bytes(n, 1)
    # A wide network on few points: its first layer (1024 x 20001 float64, 156 MiB) outweighs the rest of the
    # matrix-free path, so that a budget of 0.1 GiB refuses it.
    wide = scale.matrix_free_spectrum_bytes(10, 20_000, 1024)
    assert matrix_free.matrix_free_bytes(10, 20_000, 1024) < 0.1 * GIB < wide
    args = argparse.Namespace(kernel_path="matrix-free", memory_gb=0.1)
    with pytest.raises(MemoryLimitError, match=r"matrix-free path needs 1\d\d MiB, more than --memory-gb 0\.1"):
        scale.choose_path(args, n=10, dense_bytes=scale.dense_spectrum_bytes(10, 20_000, 1024),
                          matrix_free_bytes=wide)


@pytest.mark.parametrize("path", [[], ["--dense"]])
def test_spectrum_refuses_inputs_beyond_memory_gb_where_the_kernels_fit(tmp_path, capsys, path):
    # Infinite width, n = 20, d = 20000: the (n, n) kernels take 16 KB, the inputs 14 MiB, over 5.12 MiB.
    assert scale.dense_spectrum_bytes(20, 1) < 0.005 * GIB < scale.input_bytes(20, 20_000)
    out = tmp_path / "run"
    code, err = run_cli(["spectrum", *path, "--n", "20", "--d", "20000", "--widths", "--seeds", "1",
                         "--s", "0.5", "1.0", "--memory-gb", "0.005", "--quiet", "--out", out], capsys)
    assert code == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("ntkhom spectrum: error: ")
    # refused before the inputs are made, whichever path is asked for
    assert "the inputs at --n 20 --d 20000 and the network need 14 MiB before any kernel" in line, line
    assert "more than --memory-gb 0.005 (5.12 MiB)" in line and "smaller --n or --d" in line
    assert not (out / "points.csv").exists()


def test_spectrum_at_d_1e8_is_refused_in_one_line_before_the_data_are_drawn(tmp_path, capsys, monkeypatch,
                                                                          no_large_draws):
    # The audit's request (killed by the OS before): 20 points in 10^8 dimensions, 30 GiB for the sphere alone.
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 8 * GIB)
    out = tmp_path / "run"
    code, err = run_cli(["spectrum", "--n", "20", "--d", str(10**8), "--widths", "16", "--seeds", "1",
                         "--s", "0.5", "1.0", "--quiet", "--out", out], capsys)
    assert code == 2 and len(err) == 1, err
    # 3 (n, d) float64 arrays while loading (44.7 GiB) and the teacher's (d, 32) weights (23.8 GiB) and the
    # width-16 network's first layer (11.9 GiB)
    assert "the inputs at --n 20 --d 100000000 and the network need 80.5 GiB" in err[0], err
    assert "more than the 6.4 GiB available here" in err[0], err
    assert not (out / "points.csv").exists()
