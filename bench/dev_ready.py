"""How long `wfs dev` takes to be ready, paired against another checkout of the code.

    .venv/bin/python -m bench.dev_ready --runs 5                       # this code only
    .venv/bin/python -m bench.dev_ready --runs 5 --baseline /tmp/base  # interleaved pairs

Each run starts `wfs dev` on a warm state dir (one per code, created by a first, unmeasured
run: a fresh PostgreSQL's initdb would dominate and vary), and records two times from the
spawn: the banner (`workflow-service is ready`) and the first `/readyz` 200; and the seconds
the banner itself says (`own`: counted from `run_dev`, after the `wfs` command's imports).
The runs of the two codes alternate (A B A B ...), so a change in the machine's load hits
both alike. A baseline checkout runs with this venv and `PYTHONPATH=<baseline>`, so only the
code differs. Results, with the load average, go to stdout as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from bench.stack import SERVICE_URLS, free_port, wfs_binary

ROOT = Path(__file__).resolve().parents[1]
BANNER = "workflow-service is ready"


def run_once(code: Path, state_dir: Path, timeout: float = 120) -> dict[str, float]:
    """One `wfs dev` start from `code`: seconds to the banner and to /readyz 200, then stop."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (*SERVICE_URLS, "STATE_DIR")}
    env |= {"SMTP_PORT": str(free_port()), "LOG_LEVEL": "info"}
    if code != ROOT:
        env["PYTHONPATH"] = str(code)
    argv = [wfs_binary(), "dev", "--state-dir", str(state_dir), "--port", str(port)]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    marks: dict[str, float] = {}
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if BANNER in line and "banner" not in marks:
                marks["banner"] = time.monotonic() - t0
                said = re.search(r"ready \(([\d.]+)s\)", line)
                marks["own"] = float(said.group(1)) if said else float("nan")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with httpx.Client(timeout=2) as http:
            while "readyz" not in marks:
                if proc.poll() is not None or time.monotonic() - t0 > timeout:
                    raise RuntimeError("wfs dev did not get ready:\n" + "".join(lines[-30:]))
                try:
                    if http.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        marks["readyz"] = time.monotonic() - t0
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        while "own" not in marks and time.monotonic() - t0 < timeout:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        reader.join(10)
    return marks


def summary(runs: list[dict[str, float]]) -> dict[str, object]:
    return {
        key: {
            "median": round(statistics.median(r[key] for r in runs), 2),
            "all": [round(r[key], 2) for r in runs],
        }
        for key in ("banner", "readyz", "own")
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--baseline", type=Path, help="another checkout, run interleaved")
    p.add_argument("--state-root", type=Path, default=ROOT / ".wfs-bench-ready")
    args = p.parse_args()
    codes = {"this": ROOT}
    if args.baseline:
        codes["baseline"] = args.baseline.resolve()
    shutil.rmtree(args.state_root, ignore_errors=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
    for name, code in codes.items():  # warm-up: creates each state dir
        run_once(code, args.state_root / name)
    load = [os.getloadavg()]
    for _ in range(args.runs):
        for name, code in codes.items():
            results[name].append(run_once(code, args.state_root / name))
            print(name, results[name][-1], file=sys.stderr)
    load.append(os.getloadavg())
    report = {name: summary(runs) for name, runs in results.items()} | {
        "load_average_before_after": [[round(x, 2) for x in avg] for avg in load]
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(args.state_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
