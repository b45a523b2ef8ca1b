"""Installs the Debian packages the benchmark needs, only those missing."""

from __future__ import annotations

import os
import shutil
import subprocess

#: Debian packages the benchmark uses, and what for.
PACKAGES = {
    "apache2-utils": "ab, the load generator",
    "nginx": "the reference server",
    # The binary and modules only: the apache2 package would also install and start a service.
    "apache2-bin": "Apache httpd (event MPM), the second reference server",
    "python3-matplotlib": "the plots",
    "libbenchmark-dev": "the parser micro-benchmarks (Google Benchmark)",
}

#: Bound on apt-get: a stuck mirror must not hang the benchmark forever.
APT_TIMEOUT = 900


def installed(package: str) -> bool:
    """True when dpkg knows @p package as installed."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure(packages: list[str], log) -> None:
    """Installs whichever of @p packages is missing with apt-get (as root, or through sudo)."""
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise SystemExit(f"bench: missing packages {' '.join(missing)}; install them as root: "
                             f"apt-get install -y {' '.join(missing)}")
        prefix = ["sudo"]
    log(f"installing {' '.join(missing)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        try:
            subprocess.run(prefix + command, stdin=subprocess.DEVNULL, env=env, check=True,
                           timeout=APT_TIMEOUT)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            raise SystemExit(f"bench: {' '.join(command)} failed: {error}") from error
