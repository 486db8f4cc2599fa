"""The engine environment manager: the Python environment in which the studio runs ``python -m engine``.

The studio never imports torch, so it can run frozen (PyInstaller) without one. On first start it looks for a
Python that can ``import engine, torch`` — the one the user chose before, the studio's own interpreter (when it is
not frozen), or the managed environment under the user data directory — and, when none works, creates the managed
one: a virtual environment (``uv venv`` when uv is on PATH, else ``python3 -m venv``), then a torch build that
fits the machine (CUDA when ``nvidia-smi`` reports a GPU, CPU otherwise) from PyTorch's index, then the engine.
Progress comes from parsing pip's ``--progress-bar raw`` lines and uv's summaries. The user may instead point it
at any existing Python that has the engine.

Everything here is plain Python, testable without a QApplication; the installer that runs a plan and the
first-start dialog are :mod:`studio.widgets.engine_env_dialog`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable


from engine.contract.runs import data_dir
from engine.contract.safe_json import load_json_file, safe_json_loads

TORCH_VERSION = "2.13.0"  # the version pyproject pins; the CUDA and CPU builds share it
PACKAGE = "compression-studio"
CONFIG_FILE = "engine_env.json"
TORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
# (minimum CUDA version the driver reports, wheel variant), newest first: a driver runs wheels built for its
# CUDA version or older.
CUDA_VARIANTS = ((13.0, "cu130"), (12.8, "cu128"), (12.6, "cu126"))
PROBE = ("import json, sys\nout = {'python': sys.version.split()[0]}\n"
         "try:\n    import engine; out['engine'] = engine.__version__\n"
         "except Exception as e: out['problem'] = repr(e)\n"
         "try:\n    import torch; out['torch'] = torch.__version__; out['cuda'] = torch.cuda.is_available()\n"
         "except Exception as e: out.setdefault('problem', repr(e))\nprint(json.dumps(out))\n")

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass
class GpuInfo:
    name: str
    memory_mib: int
    driver: str


@dataclass
class Machine:
    """What decides the torch build: the GPUs nvidia-smi lists and the CUDA version its driver supports."""

    gpus: list[GpuInfo] = field(default_factory=list)
    cuda: float | None = None

    @property
    def torch_variant(self) -> str:
        """``cpu`` or a ``cuXYZ`` wheel variant the driver can run (cpu when the driver is too old for any)."""
        if not self.gpus or self.cuda is None:
            return "cpu"
        return next((variant for minimum, variant in CUDA_VARIANTS if self.cuda >= minimum), "cpu")

    def describe(self) -> str:
        if not self.gpus:
            return "no NVIDIA GPU found: the engine will use the CPU build of torch"
        names = ", ".join(f"{g.name} ({g.memory_mib / 1024:.0f} GiB)" for g in self.gpus)
        return f"{names}; driver supports CUDA {self.cuda}: torch build {self.torch_variant}"


def parse_gpu_csv(text: str) -> list[GpuInfo]:
    """``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits`` output."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit():
            gpus.append(GpuInfo(name=parts[0], memory_mib=int(parts[1]), driver=parts[2]))
    return gpus


def parse_cuda_version(text: str) -> float | None:
    """The ``CUDA Version: 12.4`` of plain ``nvidia-smi`` output (what the driver supports)."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    return float(f"{match[1]}.{match[2]}") if match else None


def detect_machine(run: Runner = subprocess.run) -> Machine:
    """Ask nvidia-smi (absent or failing means no usable NVIDIA GPU)."""
    if not shutil.which("nvidia-smi"):
        return Machine()
    try:
        query = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=20)
        header = run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return Machine()
    if query.returncode != 0:
        return Machine()
    return Machine(gpus=parse_gpu_csv(query.stdout), cuda=parse_cuda_version(header.stdout))


# ---- finding an environment ------------------------------------------------------------------------------------

@dataclass
class EngineEnv:
    """A Python interpreter and what it can import."""

    python: Path
    engine_version: str = ""
    torch_version: str = ""
    cuda: bool = False
    problem: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.engine_version and self.torch_version)

    def command(self, *args: str) -> list[str]:
        """The engine's command line in this environment, e.g. ``command("run", "spec.yaml")``."""
        return [str(self.python), "-m", "engine", *args]


def probe_argv(python: str | Path) -> list[str]:
    """The command that reports what ``python`` can import (one JSON line on stdout)."""
    return [str(python), "-s", "-c", PROBE]


def parse_probe(python: str | Path, stdout: str, stderr: str = "") -> EngineEnv:
    env = EngineEnv(python=Path(python))
    try:
        info = safe_json_loads(stdout.strip().splitlines()[-1], allow_nan=True)
    except (ValueError, IndexError):
        env.problem = f"{python} is not a working Python ({stderr.strip()[-200:]})"
        return env
    env.engine_version, env.torch_version = info.get("engine", ""), info.get("torch", "")
    env.cuda, env.problem = bool(info.get("cuda")), info.get("problem", "")
    return env


def probe(python: str | Path, run: Runner = subprocess.run, timeout: float = 180) -> EngineEnv:
    """What ``python`` can import, in a child process (the studio itself never imports torch). Takes seconds:
    call it off the GUI thread, or run :func:`probe_argv` in a QProcess and parse with :func:`parse_probe`."""
    try:
        result = run(probe_argv(python), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EngineEnv(python=Path(python), problem=f"cannot run {python}: {exc}")
    return parse_probe(python, result.stdout, result.stderr)


def managed_env_dir() -> Path:
    return data_dir() / "engine-env"


def env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def chosen_python() -> Path | None:
    """The interpreter the user picked (or the installer made), remembered in the data directory."""
    try:
        value = load_json_file(data_dir() / CONFIG_FILE).get("python")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(value) if value else None


def remember_python(python: str | Path) -> None:
    (data_dir() / CONFIG_FILE).write_text(json.dumps({"python": str(python)}, indent=2), encoding="utf-8")


def candidates() -> list[Path]:
    """Interpreters to try, best first, without duplicates."""
    found = [chosen_python()]
    if not getattr(sys, "frozen", False):
        found.append(Path(sys.executable))  # a pip/pipx/uv install: the engine sits next to the studio
    found.append(env_python(managed_env_dir()))
    unique: list[Path] = []
    for path in found:
        if path is not None and path.exists() and path not in unique:
            unique.append(path)
    return unique


def find_engine_env(check: Callable[[Path], EngineEnv] = probe) -> EngineEnv | None:
    """The first candidate that imports both the engine and torch, or None (then offer to create one)."""
    for python in candidates():
        env = check(python)
        if env.ok:
            return env
    return None


# ---- creating one ----------------------------------------------------------------------------------------------

@dataclass
class Step:
    title: str
    argv: list[str]
    weight: float  # share of the whole install (downloads dominate)
    expected_packages: int = 1  # a rough count, for progress before pip knows the total


def package_source() -> str:
    """What to install the engine from: a wheel bundled with the frozen app, else this source checkout, else the
    same version from PyPI."""
    bundle = Path(getattr(sys, "_MEIPASS", "")) / "wheels"
    wheels = sorted(bundle.glob("compression_studio-*.whl")) if bundle.name and bundle.is_dir() else []
    if wheels:
        return str(wheels[-1])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "engine").is_dir():
        return str(checkout)
    from studio import __version__  # the studio and the engine ship in one package, with one version

    return f"{PACKAGE}=={__version__}"


def base_python(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """A Python ≥ 3.10 on PATH to build the environment from (``uv`` is preferred and needs none)."""
    for name in ("python3.12", "python3.13", "python3.11", "python3.10", "python3", "python"):
        path = which(name)
        if path:
            return path
    return None


def install_plan(target: Path, variant: str, source: str, *, uv: str | None = None,
                 python: str | None = None) -> list[Step]:
    """The commands that create ``target`` with torch (``variant``: cpu or cuXYZ) and the engine."""
    py = str(env_python(target))
    index = TORCH_INDEX.format(variant=variant)
    torch_packages = 6 if variant == "cpu" else 25  # the CUDA build pulls the nvidia-* wheels
    torch_weight = 0.45 if variant == "cpu" else 0.75
    if uv:
        return [Step("Creating the environment", [uv, "venv", "--python", "3.12", str(target)], 0.05),
                Step(f"Installing torch {TORCH_VERSION} ({variant})",
                     [uv, "pip", "install", "--python", py, f"torch=={TORCH_VERSION}", "--index-url", index],
                     torch_weight, torch_packages),
                Step("Installing the engine", [uv, "pip", "install", "--python", py, source], 0.95 - torch_weight, 60)]
    if not python:
        raise RuntimeError("no Python 3.10+ or uv found on PATH: install one of them, or point Compression "
                           "Studio at an existing environment that has the engine.")
    pip = [py, "-m", "pip", "install", "--progress-bar", "raw", "--disable-pip-version-check"]
    return [Step("Creating the environment", [python, "-m", "venv", str(target)], 0.04),
            Step("Updating pip", [py, "-m", "pip", "install", "--upgrade", "pip"], 0.03),  # raw progress: pip ≥ 24.1
            Step(f"Installing torch {TORCH_VERSION} ({variant})",
                 pip + [f"torch=={TORCH_VERSION}", "--index-url", index], torch_weight, torch_packages),
            Step("Installing the engine", pip + [source], 0.93 - torch_weight, 60)]


class StepProgress:
    """Turns one step's pip/uv output lines into a fraction of that step (monotonic) and a short message."""

    _PROGRESS = re.compile(r"^Progress (\d+) of (\d+)")
    _COLLECT = re.compile(r"^(Collecting|Processing|Downloading|Using cached|Requirement already satisfied:)\s+(\S+)")
    _UV = re.compile(r"^(Resolved|Prepared|Installed|Audited) (\d+) packages?")

    def __init__(self, expected_packages: int = 1) -> None:
        self.expected = max(expected_packages, 1)
        self.packages = 0
        self.file_fraction = 0.0
        self.fraction = 0.0
        self.message = ""

    def feed(self, line: str) -> float:
        line = line.strip()
        estimate = None
        if match := self._PROGRESS.match(line):
            done, total = int(match[1]), int(match[2])
            self.file_fraction = done / total if total else 0.0
            self.message = f"{self.message.split(' (')[0]} ({done / 2**20:.0f} of {total / 2**20:.0f} MiB)"
        elif match := self._COLLECT.match(line):
            self.packages += match[1] != "Downloading"
            self.file_fraction = 0.0
            self.message = f"{match[1].rstrip(':')} {match[2]}"
        elif line.startswith("Installing collected packages"):
            estimate, self.message = 0.9, "Installing…"
        elif line.startswith("Successfully installed") or line.startswith("Successfully uninstalled"):
            estimate, self.message = 1.0, line[:120]
        elif match := self._UV.match(line):
            self.expected = max(self.expected, int(match[2]))
            estimate = {"Resolved": 0.1, "Prepared": 0.85, "Installed": 1.0, "Audited": 1.0}[match[1]]
            self.message = line[:120]
        if estimate is None:  # downloads: most of the step, spread over the packages expected
            done = self.packages - 1 + self.file_fraction if self.packages else 0.0
            estimate = 0.85 * min(max(done, 0.0) / self.expected, 1.0)
        self.fraction = max(self.fraction, min(estimate, 1.0))
        return self.fraction


def default_plan(target: Path | None = None) -> list[Step]:
    """The plan for this machine: the managed environment, the torch build nvidia-smi calls for, the engine."""
    return install_plan(target or managed_env_dir(), detect_machine().torch_variant, package_source(),
                        uv=shutil.which("uv"), python=base_python())


def overall_fraction(steps: list[Step], index: int, step_fraction: float) -> float:
    """Progress of the whole plan when step ``index`` is ``step_fraction`` done."""
    total = sum(s.weight for s in steps) or 1.0
    return (sum(s.weight for s in steps[:index]) + steps[index].weight * step_fraction) / total
