"""The docs' sbatch script on a real single-node Slurm: shards, `report`, a killed task resumed.

`local_slurm` starts munged, slurmctld and slurmd (``-N localhost``) in the foreground, as
children of this process, with their own key, sockets, state and logs under a temporary folder
and a generated ``slurm.conf`` (no system file is read or changed: ``SLURM_CONF`` points the
client commands at it). The test submits the sbatch script of docs/covid_cxr.md, read from the
docs, as a job array of shards over a tiny plan, cancels one task after its first unit, submits
that task again, merges the shards with ``reproduce.py report`` and checks that the merged
records are those of one sequential run. Every daemon is stopped by its pid and waited for.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``.ci/slurm_setup.sh`` installs them); skipped
with one line otherwise. Marked ``slow`` too, so CI runs it once, on TensorFlow.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "covid_cxr.md"
SCRIPT = REPO / "examples" / "covid_cxr" / "reproduce.py"
PROGRAMS = ("mungekey", "munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")
TERMINAL = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE",
}  # fmt: skip
# A tiny plan: 2 experiments x 2 folds = 4 units, 2 per shard.
TINY = [
    "--deterministic", "--n-images", "48", "--image-size", "32", "--epochs", "1",
    "--weights", "none", "--alpha", "paper", "--experiments", "freeze", "stochastic",
    "--folds", "1", "2",
]  # fmt: skip
SHARDS = 2


def docs_sbatch_script() -> str:
    """The sbatch script of docs/covid_cxr.md (the bash block that starts with ``#SBATCH``)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    scripts = [b for b in blocks if b.startswith("#!/bin/bash\n#SBATCH")]
    assert len(scripts) == 1, "docs/covid_cxr.md: expected one sbatch script"
    return scripts[0]


def why_no_slurm():
    """Why Slurm cannot start here (one line), or ``None``."""
    if os.geteuid() != 0:
        return "Slurm cannot start: slurmd needs root (it runs each job as its user)"
    missing = [p for p in PROGRAMS if shutil.which(p, path=os.environ["PATH"] + ":/usr/sbin")]
    missing = sorted(set(PROGRAMS) - set(missing))
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing): run .ci/slurm_setup.sh"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=kerasfreeze
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
MinJobAge=600
GresTypes=gpu
NodeName=localhost CPUs=2 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
# Two stand-in GPUs, so that the docs' script runs with its own --gres=gpu:1 (one per task).
# Slurm drops a GPU without a device file; these two are never opened (no cgroup constrains
# devices here) and the jobs compute on the CPU.
GRES_CONF = (
    "NodeName=localhost Name=gpu File=/dev/null\nNodeName=localhost Name=gpu File=/dev/zero\n"
)


class LocalSlurm:
    """A running single-node Slurm: its environment for the client commands and its daemons."""

    def __init__(self, root: Path, say=print):
        self.root = root
        self.say = say  # where the job ids and task states go
        self.procs = {}
        self.env = dict(os.environ, SLURM_CONF=str(root / "slurm.conf"))
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env['PATH']}:/usr/sbin"

    def start(self):
        root = self.root
        for d in ("munge", "state", "spool"):
            (root / d).mkdir(parents=True)
        (root / "munge").chmod(0o755)  # munged refuses a socket folder others may write to
        munge_socket = root / "munge" / "munge.socket"
        subprocess.run(["mungekey", "-c", "-k", str(root / "munge.key")], check=True)
        self._spawn(
            "munged",
            ["munged", "-F", "-f", f"--key-file={root / 'munge.key'}",
             f"--socket={munge_socket}", f"--pid-file={root / 'munged.pid'}",
             f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munged.seed'}"],
        )  # fmt: skip
        self._wait(lambda: munge_socket.exists(), 10, "munged's socket")
        (root / "slurm.conf").write_text(
            SLURM_CONF.format(
                root=root,
                munge_socket=munge_socket,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
            )  # fmt: skip
        )
        (root / "gres.conf").write_text(GRES_CONF)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(root / "slurm.conf")])
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(root / "slurm.conf")])
        self._wait(self.node_idle, 60, "node localhost idle")

    def _spawn(self, name, argv):
        log = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 (closed with the process)
        self.procs[name] = (subprocess.Popen(argv, stdout=log, stderr=log, env=self.env), log)

    def _wait(self, ready, timeout, what):
        deadline = time.monotonic() + timeout
        while not ready():
            for name, (proc, _) in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode})\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {timeout} s\n{self.logs()}")
            time.sleep(0.2)

    def logs(self):
        out = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            text = path.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def run(self, *argv, check=True):
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}")
        return proc.stdout

    def node_idle(self):
        proc = subprocess.run(
            ["scontrol", "-o", "show", "node", "localhost"],
            env=self.env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return proc.returncode == 0 and re.search(r"\bState=IDLE\b", proc.stdout) is not None

    def tasks(self, job_id):
        """``{array task id: state}`` of an array job (``scontrol show job``)."""
        out = self.run("scontrol", "-o", "show", "job", str(job_id))
        states = {}
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            states[fields.get("ArrayTaskId", "?")] = fields["JobState"]
        return states

    def wait_job(self, job_id, timeout=600):
        """Waits until every task of ``job_id`` has ended; its states, printed as they change."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            states = self.tasks(job_id)
            if states != last:
                self.say(f"[slurm] job {job_id}: {_states(states)}")
                last = states
            if all(s in TERMINAL for s in states.values()) and all(t.isdigit() for t in states):
                return states
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} unfinished after {timeout} s\n{self.logs()}")
            time.sleep(0.5)

    def stop(self):
        """Cancels every job, stops the daemons by pid (slurmd, slurmctld, munged) and waits."""
        if "slurmctld" in self.procs and self.procs["slurmctld"][0].poll() is None:
            subprocess.run(
                ["scancel", "--quiet", "--user=root"], env=self.env, timeout=30, check=False
            )
        for name in ("slurmd", "slurmctld", "munged"):
            if name not in self.procs:
                continue
            proc, log = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()


@contextlib.contextmanager
def local_slurm(root: Path, say=print):
    """A single-node Slurm on localhost under ``root``, stopped afterwards (see `LocalSlurm`)."""
    slurm = LocalSlurm(root, say)
    try:
        slurm.start()
        yield slurm
    finally:
        slurm.stop()


def _states(states):
    """``task 1 RUNNING, task 2 PENDING`` (an array's pending tasks may share one entry)."""
    return ", ".join(f"task {t} {s}" for t, s in sorted(states.items()))


def _tail(logs):
    """The end of every job's output file."""
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
        for p in sorted(logs.glob("*.out"))
    )


def _records(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))}


def _array_with_a_task_killed_and_resubmitted(tmp_path, script, runs, logs, env, say):
    """Runs the docs' script as an array of `SHARDS` tasks on a local Slurm, cancels the last
    task after its first unit, submits that task again; returns the last shard's folder."""
    t0 = time.monotonic()
    with local_slurm(tmp_path / "slurm", say) as slurm:
        say(f"[slurm] node localhost idle {time.monotonic() - t0:.1f} s after start")
        # The jobs inherit this environment, as from a shell with the virtual environment on.
        slurm.env.update(env, RUNS=str(runs), SHARDS=str(SHARDS))
        slurm.env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}:/usr/sbin"
        # The docs' script as a user submits it; the command line overrides its #SBATCH lines
        # that do not fit this node (16 CPUs a task).
        sbatch = ["sbatch", "--parsable", "--cpus-per-task=1", f"--output={logs}/%x_%A_%a.out"]

        def submit(array):
            out = slurm.run(*sbatch, f"--array={array}", str(script), *TINY)
            job = out.strip().split(";")[0]
            say(f"[slurm] job {job}: sbatch --array={array} <docs' script> {' '.join(TINY)}")
            return job

        job = submit(f"1-{SHARDS}")
        # Cancel task 2 once its first unit's record is written, while its second unit runs.
        first = runs / f"shard{SHARDS}" / "records" / "stochastic_fold1.json"
        deadline = time.monotonic() + 600
        while not first.exists():
            if slurm.tasks(job).get(str(SHARDS)) in TERMINAL or time.monotonic() > deadline:
                pytest.fail(f"task {job}_{SHARDS} wrote no record\n{_tail(logs)}\n{slurm.logs()}")
            time.sleep(0.2)
        say(f"[slurm] job {job}: {_states(slurm.tasks(job))}")
        slurm.run("scancel", f"{job}_{SHARDS}")
        say(f"[slurm] scancel {job}_{SHARDS}: after its first unit, during its second")
        states = slurm.wait_job(job)
        assert states == {"1": "COMPLETED", str(SHARDS): "CANCELLED"}, _tail(logs)
        shard2 = runs / f"shard{SHARDS}"
        assert sorted(_records(shard2)) == ["stochastic_fold1.json"]  # killed mid-run
        kept = first.stat().st_mtime_ns, first.read_bytes()
        # Resubmit the cancelled task: it skips the finished unit and runs the other.
        again = submit(str(SHARDS))
        assert slurm.wait_job(again) == {str(SHARDS): "COMPLETED"}, _tail(logs)
        assert (first.stat().st_mtime_ns, first.read_bytes()) == kept  # not rewritten
        resumed = (logs / f"covid_cxr_{again}_{SHARDS}.out").read_text()
        assert "stochastic fold 1: already complete" in resumed, resumed
        assert "[done] 1 run(s), 1 skipped" in resumed, resumed
        say(f"[slurm] job {again}: task {SHARDS} skipped stochastic fold 1 (complete), ran fold 2")
    return shard2


def test_docs_sbatch_array_merges_to_the_sequential_run_and_a_killed_task_resumes(tmp_path, capsys):
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)

    def say(line):  # to the terminal, also from a pytest-xdist worker, so that CI logs show it
        with capsys.disabled():
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    script = tmp_path / "covid_cxr.sbatch"
    script.write_text(docs_sbatch_script())
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), PYTHONUNBUFFERED="1")
    env["KERAS_FREEZE_CACHE"] = str(tmp_path / "cache")
    # The sequential run, beside the array (one CPU thread each with --deterministic).
    seq_log = open(tmp_path / "sequential.log", "w")  # noqa: SIM115 (closed below)
    sequential = subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, "--out", str(tmp_path / "sequential")],
        cwd=REPO, env=env, stdout=seq_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        shard2 = _array_with_a_task_killed_and_resubmitted(tmp_path, script, runs, logs, env, say)
        sequential.wait(timeout=900)
    finally:
        if sequential.poll() is None:
            sequential.kill()
            sequential.wait()
        seq_log.close()
    output = (tmp_path / "sequential.log").read_text()
    assert sequential.returncode == 0, output[-6000:]

    # Each shard holds its units once; `report` merges them into the sequential run's records.
    assert sorted(_records(runs / "shard1")) == ["freeze_fold1.json", "freeze_fold2.json"]
    assert sorted(_records(shard2)) == ["stochastic_fold1.json", "stochastic_fold2.json"]
    merged = tmp_path / "merged"
    report = subprocess.run(
        [sys.executable, str(SCRIPT), "report", str(runs / "shard1"), str(shard2),
         "--out", str(merged)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    assert "4 record(s) from 2 folder(s)" in report.stdout
    ours, seq = _records(merged), _records(tmp_path / "sequential")
    assert sorted(ours) == sorted(seq) == [
        "freeze_fold1.json", "freeze_fold2.json", "stochastic_fold1.json", "stochastic_fold2.json"
    ]  # fmt: skip
    for name in seq:
        for key in ("predictions", "history", "metrics"):
            assert ours[name][key] == seq[name][key], (name, key)
    for table in ("table1_macro.md", "table2_weighted.md"):
        assert (merged / table).read_text() == (tmp_path / "sequential" / table).read_text()
    say("[slurm] report over shard1 shard2: the 4 records equal the sequential run's")
