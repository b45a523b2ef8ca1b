"""Builds (if needed) and runs the Google Benchmark micro-benchmarks in bench/micro.

The binary is ``<build>/bin/parser_bench`` when the top-level CMakeLists.txt includes
bench/micro; otherwise bench/micro is configured on its own into ``<build>/bench-micro``
(it then compiles its own copy of common/). Either way the build is incremental.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Bounds on configuring, building and running, in seconds.
CONFIGURE_TIMEOUT = 300
BUILD_TIMEOUT = 900
RUN_TIMEOUT = 600


@dataclass
class MicroResult:
    """One benchmark: time per call in nanoseconds."""

    name: str
    real_ns: float
    cpu_ns: float
    iterations: int
    error: str = ""


@dataclass
class MicroRun:
    binary: str = ""
    library_build_type: str = ""
    results: list[MicroResult] | None = None
    error: str = ""


def _to_ns(value: float, unit: str) -> float:
    return value * {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}.get(unit, 1.0)


def find_or_build(repo: Path, build_dir: Path, workdir: Path, log) -> Path:
    """The parser_bench binary, built into @p build_dir/bench-micro when the project lacks it."""
    in_project = build_dir / "bin" / "parser_bench"
    if in_project.is_file():
        return in_project
    own = build_dir / "bench-micro"
    log(f"building bench/micro into {own}")
    with open(workdir / "micro-build.log", "wb") as out:
        subprocess.run(["cmake", "-S", str(repo / "bench" / "micro"), "-B", str(own),
                        "-DCMAKE_BUILD_TYPE=Release"], stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, check=True, timeout=CONFIGURE_TIMEOUT)
        subprocess.run(["cmake", "--build", str(own), "-j", "2"], stdin=subprocess.DEVNULL,
                       stdout=out, stderr=subprocess.STDOUT, check=True, timeout=BUILD_TIMEOUT)
    return own / "bin" / "parser_bench"


def run(repo: Path, build_dir: Path, workdir: Path, min_time: float, log) -> MicroRun:
    """Runs every benchmark for at least @p min_time seconds each; never raises."""
    micro = MicroRun()
    try:
        binary = find_or_build(repo, build_dir, workdir, log)
        micro.binary = str(binary)
        out_path = workdir / "micro.json"
        with open(out_path, "wb") as out, open(workdir / "micro.stderr", "wb") as err:
            subprocess.run([str(binary), "--benchmark_format=json",
                            f"--benchmark_min_time={min_time}"], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, check=True, timeout=RUN_TIMEOUT)
        data = json.loads(out_path.read_text())
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as error:
        micro.error = f"{type(error).__name__}: {error} (see {workdir})"
        return micro
    micro.library_build_type = data.get("context", {}).get("library_build_type", "")
    micro.results = []
    for bench in data.get("benchmarks", []):
        unit = bench.get("time_unit", "ns")
        micro.results.append(MicroResult(
            name=bench["name"],
            real_ns=_to_ns(bench.get("real_time", 0.0), unit),
            cpu_ns=_to_ns(bench.get("cpu_time", 0.0), unit),
            iterations=int(bench.get("iterations", 0)),
            error=bench.get("error_message", "") if bench.get("error_occurred") else "",
        ))
    return micro
