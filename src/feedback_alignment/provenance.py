"""What produced a result file: the commit of the code, the machine, and JSON-ready values.

Every writer of results (the experiments' tables, the tuner's searches, the step-time and memory
benchmarks) records where its numbers came from, so that a figure in the docs can be traced to
the code and the machine that made it. They share these helpers so that the commit and the
processor are read one way everywhere, and a NaN becomes ``null`` in every file alike.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

_PACKAGE = Path(__file__).resolve().parent


def git(*args: str, cwd: Path = _PACKAGE) -> str | None:
    """``git args`` run in ``cwd`` (the installed package's folder by default): its output with
    surrounding white space removed, or ``None`` where git is missing, fails or takes over 10 s
    (an installed wheel is in no repository)."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> str | None:
    """The full hash of the checkout's ``HEAD``, or ``None`` outside a repository."""
    return git("rev-parse", "HEAD") or None


def commit_label() -> str:
    """``git describe --always --dirty``: the nearest tag and the commits since it, or the
    abbreviated commit where there is no tag, with ``-dirty`` when tracked files differ from it;
    ``"unknown"`` outside a repository. The label a rendered table shows beside its search."""
    return git("describe", "--always", "--dirty") or "unknown"


def modified_sources() -> list[str]:
    """The checkout's modified tracked paths under ``src/`` (work in progress that measured code
    may include); empty outside a repository."""
    top = git("rev-parse", "--show-toplevel")
    if top is None:
        return []
    status = git("status", "--porcelain", "--untracked-files=no", "--", "src", cwd=Path(top))
    return [line[3:] for line in (status or "").splitlines() if line.strip()]


def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine a measurement ran on: Python, torch, platform, processor, CPU count, torch
    threads, device (with the GPU's name on CUDA), the UTC time and the load average (a busy
    machine slows every timing)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def sanitize(value: Any) -> Any:
    """JSON-ready: NaN and infinities become ``None``, dataclasses dicts, paths strings, tuples
    lists, dict keys strings (strict JSON has no NaN, and a reader in another language fails on
    Python's ``NaN`` token)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value
