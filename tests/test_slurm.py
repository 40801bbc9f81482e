"""The paper on a SLURM cluster as docs/clusters.md gives it: ``sbatch cluster/slurm.sbatch
sweeps/full_paper.py ...`` on a real SLURM of this machine (tests/slurm.py: a private
munged, slurmctld and two slurmd, ``kd1`` and ``kd2``, on 127.0.0.1), the store a moto S3
bucket whose keys come from the environment, as on a cluster.

The job file is submitted unchanged from the repository root; only its placeholders
(partition, GPUs, CPUs) and the output file are given on sbatch's command line, which wins
over its ``#SBATCH`` lines. The sweep is ``--smoke-test``: CPU-only trials, one CPU per
SLURM node, so the four teacher/NDS trials of stage 1 run two at a time, one on each node.

1. the job ends 0, every run is complete in the store, ``tables.md`` is written, the trials
   ran on both nodes (run.json's Ray node ids are those the job listed for kd1 and kd2),
   and nothing of the job is left (no job step, no Ray process, no driver);
2. a job with a local store on its two nodes ends non-zero with the store error, and
   leaves nothing;
3. a job cancelled while its trials run (``scancel``) leaves nothing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from kdray.store import Store
from kdray.sweep.cli import smoke_variant
from kdray.sweep.grid import expand, narrow
from kdray.sweep.paper import EXPERIMENTS
from slurm import MACHINES, SBATCH, LocalSlurm, missing

pytestmark = pytest.mark.trains  # and cluster, from the slurm fixture (tests/resources.py)
SWEEP = ["sweeps/full_paper.py", "--smoke-test", "--datasets", "trifeature-shape"]
# the placeholders of cluster/slurm.sbatch, for this SLURM: its partition, no GPU, one CPU
FILLED_IN = ["--partition=kdray", "--gres=none", "--cpus-per-task=1"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # moto's


@pytest.fixture(scope="module")
def slurm(starts_cluster):
    why = missing()
    if why:
        pytest.skip(why)
    cluster = LocalSlurm()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
    assert cluster.leftovers() == []


def submit(slurm: LocalSlurm, name: str, *args: str) -> tuple[str, Path]:
    """``sbatch cluster/slurm.sbatch ARGS`` as a user runs it; returns the job id and its
    output file. sbatch's own output is printed (pytest shows it on failure)."""
    output = slurm.tmp / f"{name}-%j.out"
    out = slurm.slurm("sbatch", *FILLED_IN, f"--output={output}",
                      str(SBATCH.relative_to(SBATCH.parents[1])), *args,
                      env=slurm.environment(**CREDENTIALS))
    print(f"$ sbatch ... {' '.join(args)}\n{out.stdout}{out.stderr}")
    match = re.fullmatch(r"Submitted batch job (\d+)\n", out.stdout)
    assert match, out.stdout + out.stderr
    return match[1], Path(str(output).replace("%j", match[1]))


def ended(slurm: LocalSlurm, job: str, output: Path) -> tuple[dict[str, str], str]:
    """The job's fields once it has ended, and its output (printed)."""
    info = slurm.wait(job)
    text = output.read_text() if output.exists() else ""
    print(f"--- job {job}: {info['JobState']}, exit {info['ExitCode']}\n{text}")
    return info, text


def s3_store(s3_uri: str) -> str:
    """The fixture's bucket without the keys in the URI: the job gets them from its
    environment (AWS_ACCESS_KEY_ID, ...), as on a cluster."""
    return s3_uri.replace("testing:testing@", "")


def test_sbatch_runs_the_paper_on_two_slurm_nodes(slurm, s3_uri, tmp_path):
    job, output = submit(slurm, "paper", *SWEEP, "--store", s3_store(s3_uri),
                         "--wandb-dir", str(slurm.tmp / "wandb"))
    info, text = ended(slurm, job, output)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), slurm.logs()[-6000:]
    assert "0 failed, 0 not launched" in text
    assert text.rstrip().endswith(f"kdray: the Ray nodes on {' '.join(MACHINES)} stopped")

    store = Store(s3_uri)
    plan = expand(smoke_variant(narrow(EXPERIMENTS, datasets=["trifeature-shape"]),
                                str(tmp_path / "data")))
    assert sorted(store.list_run_ids()) == sorted(s.run_id for s in plan.all)
    assert all(store.is_complete(s.run_id) for s in plan.all)
    assert store.exists(store.path("analysis", "tables.md"))

    # the trials ran on both SLURM nodes: the job named each node's Ray node id when they
    # had all joined ("... (head, node <id>, kd1), ... (node <id>, kd2)")
    (joined,) = re.findall(r"^cluster: 2 of 2 nodes joined: (.*)$", text, re.M)
    ray_node = {node_id: name for node_id, name in re.findall(r"node (\w{12}), (kd\d)", joined)}
    assert sorted(ray_node.values()) == list(MACHINES), joined
    ran_on = {s.run_id: ray_node.get(store.read_run_json(s.run_id)["node"]["node_id"][:12])
              for s in plan.all}
    assert set(ran_on.values()) == set(MACHINES), ran_on
    assert slurm.no_job_processes() == []


def test_a_failing_or_cancelled_job_stops_its_ray_nodes(slurm, tmp_path):
    # a local store on two nodes: refused by the sweep before any work, the job non-zero
    local = str(tmp_path / "results")
    job, output = submit(slurm, "local-store", *SWEEP, "--store", local)
    info, text = ended(slurm, job, output)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", info
    for part in (f"--store: '{local}' is a path on this machine's disk",
                 "(2 node(s) alive: ", ", kd1)", ", kd2)", "--shared-store",
                 "kdray: sweeps/full_paper.py exited with 2"):
        assert part in text, (part, text[-6000:])
    assert slurm.no_job_processes() == []

    # cancelled while its trials run: SLURM signals the script and the steps, and the
    # script ends its Ray nodes
    job, output = submit(slurm, "cancelled", *SWEEP, "--store", str(slurm.tmp / "shared"),
                         "--shared-store")
    deadline = time.monotonic() + 300
    while "stage 1: " not in (output.read_text() if output.exists() else ""):
        assert slurm.job(job)["JobState"] not in ("COMPLETED", "FAILED"), output.read_text()
        assert time.monotonic() < deadline, "stage 1 did not begin in 300 s"
        time.sleep(0.5)
    slurm.slurm("scancel", job)
    info, text = ended(slurm, job, output)
    assert info["JobState"] == "CANCELLED", info
    assert slurm.no_job_processes() == []
