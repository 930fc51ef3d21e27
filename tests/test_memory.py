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
