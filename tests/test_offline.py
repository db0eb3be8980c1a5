"""Offline is a guarantee: a whole `localaug run` with the REAL student and teacher opens no connection.

An audit hook sees every socket connect and every DNS lookup in the process; anything that is not
loopback is recorded and refused. The run must finish, and the record must stay empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

GUARD = r"""
import ipaddress, json, sys
LOG = sys.argv.pop(1)

def loopback(host):
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False

def hook(event, args):
    if event == "socket.connect":
        addr = args[1]
        host = addr[0] if isinstance(addr, tuple) else None
        if isinstance(addr, (str, bytes)):  # AF_UNIX: local by definition
            return
        if not loopback(host):
            open(LOG, "a").write(json.dumps([event, str(addr)]) + "\n")
            raise OSError("network disabled by test")
    elif event == "socket.getaddrinfo":
        if not loopback(args[0] if isinstance(args[0], str) else None):
            open(LOG, "a").write(json.dumps([event, str(args[0])]) + "\n")
            raise OSError("DNS disabled by test")

sys.addaudithook(hook)
from localaug.cli import main
sys.argv = ["localaug"] + sys.argv[1:]
main()
"""


@pytest.mark.slow
def test_whole_run_with_real_models_makes_no_network_attempt(tmp_path: Path) -> None:
    log = tmp_path / "attempts.jsonl"
    env = dict(os.environ)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(var, None)  # the CLI must set these itself
    # The README's `localaug run` (the demo, the default recipe, student and teacher), with a private cache and
    # run dir, on fewer rows: every stage runs (preflight, out-of-fold students, teacher, verifier, dedup, report).
    # The preflight labels 4 seeds, not all 12: the 1.5B teacher's labelling was a third of the run's time.
    config = tmp_path / "run.yaml"
    config.write_text("preflight: 4\n")
    cmd = [sys.executable, "-c", GUARD, str(log), "run", "--config", str(config), "--cache",
           str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "run"), "--seed-size", "12", "--test-size", "12",
           "--epochs", "1", "--per-wrong", "1"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", attempts
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["finished"] is True
    assert manifest["models"]["teacher"].startswith("llama.cpp:")  # the teacher ran (the preflight, at least)
    assert manifest["preflight"]["total"] == 4 and "iter_00/verify" in manifest["stages"]
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "accuracy.png").exists()


HYGIENE = r"""
import json, os, sys
import localaug  # first: it must set the switches before any hub library is imported
import datasets.config, huggingface_hub, huggingface_hub.constants as hub, transformers.utils.hub as th
print(json.dumps({"hub_offline": huggingface_hub.is_offline_mode(), "hub_telemetry_off": hub.HF_HUB_DISABLE_TELEMETRY,
                  "hub_implicit_token_off": hub.HF_HUB_DISABLE_IMPLICIT_TOKEN,
                  "transformers_offline": th.is_offline_mode(), "datasets_offline": datasets.config.HF_DATASETS_OFFLINE,
                  "do_not_track": os.environ.get("DO_NOT_TRACK")}))
"""


def test_hub_switches_are_set_before_the_hub_libraries_are_imported() -> None:
    # A user's environment that asks for the opposite must not win.
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "0"}
    res = subprocess.run([sys.executable, "-c", HYGIENE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen == {"hub_offline": True, "hub_telemetry_off": True, "hub_implicit_token_off": True,
                    "transformers_offline": True, "datasets_offline": True, "do_not_track": "1"}, seen
