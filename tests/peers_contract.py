"""The peer contract report: every peer x clause x start method, stored with its machine.

``nox -s peers`` runs ``python -m tests.peers_contract``: each check
(``tests/peer_checks.py``) in an interpreter of its own, because a peer
may change the whole process (importing UltraDict turns off the resource
tracker's shared_memory registration) or hang it. A check is killed a
little after its deadline. When the process may (root on Linux), the run
gets a /dev/shm of its own, so what a check leaves there is its own and
the other work on the machine cannot touch the result; the entries are
removed after each check. The resource tracker's warnings come from the
check's stderr, which the runner reads to its end (the tracker holds it
open until it has cleaned up).

A race can hide in one run, so a check that holds runs again (3 runs in
all by default, ``--runs``): a clause holds if it held in every run, and a
failure is the first run's that failed. A peer failing a clause is the
report's finding: the run fails only if
the harness itself breaks. The result goes to ``docs/bench/contract/peers.json``,
which ``docs/_ext/peers.py`` renders on the primitive pages.

    python -m tests.peers_contract [--peer KEY ...] [--method spawn ...] [--out FILE]
    python -m tests.peers_contract check PEER CLAUSE METHOD   # one, in this process
    python -m tests.peers_contract check KEY CLAUSE METHOD module:Adapter PRIMITIVE  # a fake
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.leaks import SHM, private_dev_shm
from tests.peer_adapters import PEERS, Peer, adapter
from tests.peer_checks import CLAUSES, DEADLINE, Outcome, check, clauses_of

ROOT = Path(__file__).resolve().parent.parent
STORED = ROOT / "docs" / "bench" / "contract" / "peers.json"
METHODS = ("spawn", "fork")
#: Seconds past its deadline before a check is killed.
GRACE = 30.0
MARK = "PEER-OUTCOME "
#: Entries the harness itself makes (a spawn context's locks and events).
HARNESS = ("sem.mp-",)


def run_one(peer: Peer, clause: str, method: str, deadline: float = DEADLINE) -> Outcome:
    """Check ``clause`` on ``peer`` under ``method`` in this process."""
    ctx = multiprocessing.get_context(method)
    try:
        return check(clause, peer.primitive)(adapter(peer), ctx, time.monotonic() + deadline)
    except Exception as error:  # the check could not run: its setup or the peer's
        return Outcome("error", f"{type(error).__name__}: {str(error)[:120]}")


def installed(peer: Peer) -> str | None:
    """The peer's version, or None when it is not installed."""
    if importlib.util.find_spec(peer.module) is None:
        return None
    try:
        return importlib.metadata.version(peer.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _shm() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except FileNotFoundError:
        return set()


def tracker_cleaned(stderr: str) -> list[str]:
    """What the resource tracker says it cleaned up: ["1 leaked shared_memory object"]."""
    found = re.findall(r"resource_tracker: There appear to be (\d+) leaked (\w+) objects", stderr)
    return [f"{n} leaked {kind} object" + ("" if n == "1" else "s") for n, kind in found]


def run_isolated(peer: Peer, clause: str, method: str, private: bool) -> Outcome:
    """Run one check in a new interpreter; for "leaves", judge what it left behind."""
    before = _shm()
    command = [sys.executable, "-m", "tests.peers_contract", "check", peer.key, clause, method]
    if peer not in PEERS:  # a test's fake peer: named by its adapter
        command += [peer.adapter, peer.primitive]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **peer.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its children and tracker too, to kill them all if it hangs
    )
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE + GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        outcome = Outcome("error", f"no result in {DEADLINE + GRACE:.0f} s: killed")
    else:
        lines = [line for line in stdout.splitlines() if line.startswith(MARK)]
        if lines:
            outcome = Outcome(*json.loads(lines[-1].removeprefix(MARK)))
        else:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            outcome = Outcome(
                "error", f"the check crashed (exit {process.returncode}): {last[:120]}"
            )
    left = sorted(n for n in _shm() - before if not n.startswith(HARNESS))
    if private:
        for name in _shm():  # a /dev/shm of our own: all of it is this check's
            Path(SHM, name).unlink(missing_ok=True)
    if clause == "leaves" and outcome.state == "holds":
        problems = []
        if left:
            shown = ", ".join(left[:3]) + (", ..." if len(left) > 3 else "")
            problems.append(f"left {len(left)} in /dev/shm ({shown})")
        cleaned = tracker_cleaned(stderr)
        if cleaned:
            problems.append("the resource tracker cleaned up " + " and ".join(cleaned))
        if problems:
            outcome = Outcome("fails", "; ".join(problems))
    return outcome


def machine(private: bool) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "private_dev_shm": private,
    }


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", ".", ":(exclude)docs/bench", ":(exclude)docs/*.md")
    return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if dirty else "")


def run(peers: list[Peer], methods: list[str], out: Path, runs: int = 3) -> dict[str, Any]:
    """Check every clause of ``peers``; a check that holds runs again, ``runs`` times in all."""
    private = private_dev_shm()
    if not private:
        print("no /dev/shm of its own (needs root on Linux): other work may show in 'leaves'")
    planned = [
        (peer, clause)
        for peer in peers
        for clause in clauses_of(peer.primitive)
        if not peer.only or clause in peer.only
    ]
    total = sum(len(methods) for peer, clause in planned if clause not in peer.cannot)
    report: dict[str, Any] = {
        "generated_by": "nox -s peers",
        "datetime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(private),
        "deadline_seconds": DEADLINE,
        "runs": runs,
        "clauses": {c: {"primitive": k.primitive, "text": k.text} for c, k in CLAUSES.items()},
        "peers": [],
    }
    done = 0
    for peer in peers:
        version = installed(peer)
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for p, clause in planned:
            if p is not peer:
                continue
            results[clause] = {}
            if clause in peer.cannot:
                results[clause] = {"any": {"state": "n/a", "evidence": peer.cannot[clause]}}
                continue
            for method in methods:
                done += 1
                began = time.monotonic()
                tries = 0
                if version is None:
                    outcome = Outcome("skipped", f"not installed: {peer.install}")
                else:
                    # A race may hide in one run: a clause holds if it held in every run.
                    while True:
                        tries += 1
                        outcome = run_isolated(peer, clause, method, private)
                        if outcome.state != "holds" or tries >= runs:
                            break
                seconds = round(time.monotonic() - began, 1)
                results[clause][method] = {**outcome._asdict(), "seconds": seconds, "runs": tries}
                shown = f": {outcome.evidence}" if outcome.state != "holds" else ""
                print(
                    f"[{done}/{total}] {peer.key} {clause} {method}: {outcome.state}{shown}"
                    f" ({tries} run{'s' if tries != 1 else ''}, {seconds} s)",
                    flush=True,
                )
        report["peers"].append(
            {
                "key": peer.key,
                "label": peer.label,
                "primitive": peer.primitive,
                "distribution": peer.distribution,
                "version": version,
                "install": peer.install,
                "results": results,
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"stored in {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return report


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        key, clause, method, *fake = argv[1:]
        peer = next((p for p in PEERS if p.key == key), None)
        if peer is None:  # ADAPTER PRIMITIVE: a fake peer of the harness's own tests
            peer = Peer(key, key, fake[1], "none", "none", fake[0])
        outcome = run_one(peer, clause, method)
        print(MARK + json.dumps(list(outcome)), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.peers_contract")
    parser.add_argument("--peer", action="append", choices=[p.key for p in PEERS])
    parser.add_argument("--method", action="append", choices=METHODS)
    parser.add_argument("--out", type=Path, default=STORED)
    parser.add_argument("--runs", type=int, default=3, help="runs of a check that holds")
    args = parser.parse_args(argv)
    peers = [p for p in PEERS if not args.peer or p.key in args.peer]
    run(peers, args.method or list(METHODS), args.out, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
