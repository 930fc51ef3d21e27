"""Several processes as one JAX program: two processes on localhost (2 CPU devices each, gloo collectives)
compute the same lambda_min, kernel and grid as one process; settings from flags and environment."""

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sharded_worker

from ntkhom import distributed

WORKER = Path(sharded_worker.__file__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_compute_what_one_process_does():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    address = f"127.0.0.1:{_free_port()}"
    workers = [subprocess.Popen([sys.executable, str(WORKER), address, "2", str(rank)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=300)  # bounded: a lost peer cannot hang the suite
            assert worker.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    expected = sharded_worker.reference()
    for result in outputs:
        assert result["processes"] == 2 and result["devices"] == 4
        sharded_worker.check_against_reference(result, expected)


def _parse(argv):
    parser = argparse.ArgumentParser()
    distributed.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_win_over_environment_and_environment_fills_the_rest():
    environ = {"NTKHOM_COORDINATOR": "10.0.0.1:1234", "NTKHOM_NUM_PROCESSES": "4", "NTKHOM_PROCESS_ID": "3"}
    settings = distributed.settings_from(_parse(["--process-id", "1"]), environ)
    assert settings == distributed.Settings("10.0.0.1:1234", 4, 1, False)
    assert settings.requested
    assert distributed.settings_from(_parse([]), {}) == distributed.Settings()
    assert not distributed.settings_from(_parse([]), {}).requested
    assert distributed.settings_from(_parse(["--distributed"]), {}).auto
    assert distributed.settings_from(_parse([]), {"NTKHOM_DISTRIBUTED": "1"}).auto
    with pytest.raises(ValueError, match="--num-processes must be an integer"):
        distributed.settings_from(_parse([]), {"NTKHOM_NUM_PROCESSES": "two"})


@pytest.mark.parametrize("settings, message", [
    (distributed.Settings("127.0.0.1:1", 2, None), "need all of"),
    (distributed.Settings("localhost", 2, 0), "HOST:PORT"),
    (distributed.Settings("127.0.0.1:1", 2, 2), "--process-id must be in 0..1"),
    (distributed.Settings("127.0.0.1:1", 0, 0), "--num-processes must be >= 1"),
    (distributed.Settings(None, 0, None), "--num-processes must be >= 1"),  # said first, not "need all of"
])
def test_incomplete_or_bad_settings_are_refused_before_joining(settings, message):
    with pytest.raises(ValueError, match=message):
        distributed.initialize(settings)


def test_alone_nothing_is_initialized():
    assert distributed.initialize(distributed.Settings()) is False
    assert distributed.initialize(distributed.Settings("127.0.0.1:1", 1, 0)) is False
    summary = distributed.device_summary()
    assert summary["process_count"] == 1 and summary["device_count"] >= 1
    assert distributed.header_line(summary).startswith(f"devices: {summary['device_count']} x ")
