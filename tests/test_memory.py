"""Memory estimates and XLA allocation failures as one line with the size asked for."""

import pytest

from ntkhom import memory


def test_check_memory_refuses_more_than_available_and_names_the_size(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 10 * 2**30)
    memory.check_memory(7 * 2**30, "small")  # under 80 percent of 10 GiB
    n = 60_000
    need = memory.kernel_bytes(n, matrices=3)
    assert need == 3 * n * n * 8
    with pytest.raises(memory.MemoryLimitError, match=r"--n 60000 needs 80\.5 GiB, but only 10 GiB"):
        memory.check_memory(need, "--n 60000")
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: None)
    memory.check_memory(need, "unknown memory: no refusal")


def test_allocation_failure_reads_the_size_from_an_xla_error():
    xla = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 40000000000 bytes.")
    assert memory.allocation_failure(xla) == ("out of memory: an allocation of 37.3 GiB failed; use smaller sizes")
    other = RuntimeError("RESOURCE_EXHAUSTED: Failed to allocate request for 12.5GiB (13421772800B) on device")
    assert "12.5 GiB" in memory.allocation_failure(other)
    assert memory.allocation_failure(ValueError("shapes do not match")) is None
    assert "unknown size" in memory.allocation_failure(MemoryError())


def test_available_bytes_is_positive_on_this_machine():
    available = memory.available_bytes()
    assert available is None or available > 0


def test_dense_kernels_too_large_for_memory_are_refused_before_allocating(monkeypatch):
    # With 1 MiB "available", a 300 x 301 float64 kernel (3 matrices: 2.2 MB) is refused in one line naming
    # the size and the matrix-free alternative; 100 points fit; under jit the inputs are traced, not checked.
    import jax
    import numpy as np

    from ntkhom import kernels, models

    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 2**20)
    rng = np.random.default_rng(0)
    x, x2 = rng.normal(size=(300, 3)), rng.normal(size=(301, 3))
    model = models.two_layer(8)
    params = model.init(jax.random.PRNGKey(0), 3)
    calls = [lambda: kernels.closed_form_ntk_relu(x, x2), lambda: kernels.empirical_ntk(model, params, x, x2),
             lambda: kernels.empirical_ntk_two_layer(model, params, x, x2), lambda: kernels.infinite_ntk(model, x, x2)]
    for call in calls:
        with pytest.raises(memory.MemoryLimitError, match=r"of 300 x 301 points .* needs .* ntkhom\.operators") as info:
            call()
        assert "\n" not in str(info.value)
    assert kernels.closed_form_ntk_relu(x[:100]).shape == (100, 100)
    assert jax.jit(kernels.closed_form_ntk_relu)(x).shape == (300, 300)
