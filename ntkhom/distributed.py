"""Several processes (hosts) as one JAX program: ``jax.distributed.initialize`` from flags or environment.

After initialization ``jax.devices()`` lists the devices of every process, so the mesh of
:func:`ntkhom.sharding.device_mesh` spans all hosts; every process runs the same program on the same inputs.
Where the settings come from, first match wins:

1. ``--coordinator-address HOST:PORT --num-processes N --process-id I`` (command line);
2. ``NTKHOM_COORDINATOR``, ``NTKHOM_NUM_PROCESSES``, ``NTKHOM_PROCESS_ID`` (environment);
3. ``--distributed`` or ``NTKHOM_DISTRIBUTED=1``: JAX detects the cluster itself (SLURM, Open MPI, Kubernetes,
   Cloud TPU; ``jax.distributed.initialize()`` without arguments).

Without any of them the process runs alone and nothing is initialized. Collectives between CPU processes
go through gloo (``jax_cpu_collectives_implementation``), which is set before initializing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import NamedTuple

import jax

__all__ = ["Settings", "add_arguments", "settings_from", "initialize", "initialize_from_args", "device_summary",
           "ENVIRONMENT", "header_line"]

#: Environment variables read when the command line does not give the setting.
ENVIRONMENT = {
    "coordinator_address": "NTKHOM_COORDINATOR",
    "num_processes": "NTKHOM_NUM_PROCESSES",
    "process_id": "NTKHOM_PROCESS_ID",
    "auto": "NTKHOM_DISTRIBUTED",
}
#: Seconds to wait for every process to join before giving up (JAX's own default is 300).
DEFAULT_TIMEOUT = 300


class Settings(NamedTuple):
    """How to join the other processes; ``auto`` lets JAX detect the cluster (SLURM, MPI, ...)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False

    @property
    def requested(self) -> bool:
        return self.auto or any(v is not None for v in (self.coordinator_address, self.num_processes,
                                                          self.process_id))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the multi-host flags on a command's parser (one argument group)."""
    group = parser.add_argument_group("several hosts (jax.distributed)")
    group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                       help=f"address of process 0 (env {ENVIRONMENT['coordinator_address']})")
    group.add_argument("--num-processes", type=int, default=None,
                       help=f"number of processes (env {ENVIRONMENT['num_processes']})")
    group.add_argument("--process-id", type=int, default=None,
                       help=f"this process's index, 0..num_processes-1 (env {ENVIRONMENT['process_id']})")
    group.add_argument("--distributed", action="store_true", default=None,
                       help=f"let JAX detect the cluster: SLURM, Open MPI, ... (env {ENVIRONMENT['auto']}=1)")


def _integer(value, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def settings_from(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of parsed flags (:func:`add_arguments`), each missing one taken from ``environ``."""
    environ = os.environ if environ is None else environ

    def pick(name: str):
        value = getattr(args, name, None) if args is not None else None
        return environ.get(ENVIRONMENT[name]) if value is None else value

    auto = pick("auto") if args is None or getattr(args, "distributed", None) is None else args.distributed
    return Settings(
        coordinator_address=pick("coordinator_address") or None,
        num_processes=_integer(pick("num_processes"), "--num-processes"),
        process_id=_integer(pick("process_id"), "--process-id"),
        auto=str(auto).lower() in ("1", "true", "yes") if auto is not None else False,
    )


def _check(settings: Settings) -> None:
    explicit = (settings.coordinator_address, settings.num_processes, settings.process_id)
    if settings.auto or all(v is None for v in explicit):
        return
    if settings.num_processes is not None and settings.num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {settings.num_processes}")
    if any(v is None for v in explicit):
        raise ValueError("several processes need all of --coordinator-address, --num-processes and --process-id "
                         f"(or {', '.join(list(ENVIRONMENT.values())[:3])}); got "
                         f"coordinator={settings.coordinator_address!r}, num_processes={settings.num_processes}, "
                         f"process_id={settings.process_id}")
    if ":" not in settings.coordinator_address:
        raise ValueError(f"--coordinator-address must be HOST:PORT, got {settings.coordinator_address!r}")
    if not 0 <= settings.process_id < settings.num_processes:
        raise ValueError(f"--process-id must be in 0..{settings.num_processes - 1}, got {settings.process_id}")


def _use_gloo_on_cpu() -> None:
    # Cross-process collectives on CPU need an implementation; gloo ships with jaxlib. The option only
    # concerns CPU devices, so setting it is harmless on GPU hosts.
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError):  # pragma: no cover - JAX versions without the option
        pass


def initialize(settings: Settings | None = None, *, timeout: int = DEFAULT_TIMEOUT) -> bool:
    """Join the other processes (``jax.distributed.initialize``) when ``settings`` ask for it.

    Call before any other JAX work. ``timeout``: seconds to wait for all processes to join. Returns True
    when this process is now one of several, False when it runs alone (no settings, or one process).
    """
    settings = settings_from() if settings is None else settings
    _check(settings)
    if not settings.requested or settings.num_processes == 1:
        return False
    _use_gloo_on_cpu()
    if settings.auto and settings.coordinator_address is None:
        jax.distributed.initialize(initialization_timeout=int(timeout))
    else:
        jax.distributed.initialize(settings.coordinator_address, settings.num_processes, settings.process_id,
                                   initialization_timeout=int(timeout))
    return jax.process_count() > 1


def initialize_from_args(args: argparse.Namespace) -> bool:
    """:func:`initialize` from flags registered by :func:`add_arguments`, falling back to the environment."""
    return initialize(settings_from(args))


def device_summary(mesh=None) -> dict:
    """Processes, devices and the mesh (if any) of this run, as plain values for run headers and ``run.json``."""
    devices = jax.devices()
    summary = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "platform": devices[0].platform,
        "device_kind": getattr(devices[0], "device_kind", ""),
    }
    if mesh is not None:
        summary["mesh"] = {str(name): int(size) for name, size in mesh.shape.items()}
    return summary


def header_line(summary: dict | None = None) -> str:
    """One line for a run header, e.g. ``devices: 8 x gpu (NVIDIA H100), 2 processes``."""
    summary = device_summary() if summary is None else summary
    line = f"devices: {summary['device_count']} x {summary['platform']}"
    if summary.get("device_kind"):
        line += f" ({summary['device_kind']})"
    if summary["process_count"] > 1:
        line += f", {summary['process_count']} processes (this is {summary['process_index']})"
    if "mesh" in summary:
        line += ", sharded over " + ", ".join(f"{name}={size}" for name, size in summary["mesh"].items())
    return line
