"""The paper's headline command as written, through Ray's cluster launcher: ``ray up``, ``ray
submit``, ``ray down`` of ``cluster/onprem.yaml`` on three ssh "machines" of this one
(tests/launcher.py: a dedicated user, a private sshd, stand-in GPUs), the store a moto S3
bucket.

``ray submit`` copies only the script to the head's home and runs it there; the project
reaches the machines only through ``file_mounts`` and the setup commands; each machine
declares its GPUs and node kind when Ray starts on it (``kdray.sweep.node_kind``). The sweep is
``--smoke-test``: CPU-only trials that keep their node kind, so placement by kind is
observed on machines whose GPUs are logical.
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml

from kdray.store import Store
from kdray.sweep.cli import smoke_variant
from kdray.sweep.cluster import trial_resources
from kdray.sweep.grid import expand, narrow
from kdray.sweep.paper import EXPERIMENTS
from launcher import ONPREM, LocalMachines, missing, normalise, launch_config

PORTS = {"--port=": 7000, "$RAY_HEAD_IP:": 7000, "--dashboard-port=": 7002,
         "--dashboard-agent-listen-port=": 0, "--min-worker-port=": 0, "--max-worker-port=": 0}


def _validated(cfg: dict) -> dict:
    """``cfg`` through Ray's schema and its own preparation (what ``ray up`` does first)."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_the_test_config_is_onprem_yaml_with_only_addresses_ports_paths_and_cpus_changed():
    raw = yaml.safe_load(ONPREM.read_text())
    cfg = launch_config("kdl0", "/tmp/kdl-x/id_ed25519", 2222, PORTS)
    assert cfg != raw and normalise(cfg) == normalise(raw)
    for key, change in [("worker_start_ray_commands", lambda c: c.pop(0)),  # no `ray stop`
                        ("setup_commands", lambda c: c.append("pip install kdray")),
                        ("file_mounts", lambda c: c.update({"~/kdray": "."})),
                        ("auth", lambda c: c.update(ssh_proxy_command="ssh -W %h:%p bastion"))]:
        changed = copy.deepcopy(cfg)
        change(changed[key])
        assert normalise(changed) != normalise(raw), key  # anything else is a difference
    for config in (raw, cfg):  # both are what `ray up` accepts: one node type, the workers kept
        prepared = _validated(config)
        (node_type,) = prepared["available_node_types"].values()
        assert node_type["min_workers"] == node_type["max_workers"] == 2


@pytest.fixture
def machines(tmp_path, starts_cluster):
    """Three machines of this one for Ray's local provider; everything removed afterwards,
    also when the test fails (the head's Ray logs are kept beside the test first)."""
    why = missing()
    if why:
        pytest.skip(why)
    m = LocalMachines()
    try:
        m.start()
        yield m
    finally:
        m.keep_logs(tmp_path / "head-logs")
        m.close()


def _logged(tmp_path: Path, name: str, out) -> str:
    """The command's output, kept beside the test (and printed: pytest shows it on failure)."""
    text = f"$ ray {' '.join(out.args[1:]) if isinstance(out.args, list) else out.args}\n" \
           f"(exit {out.returncode})\n{out.stdout}{out.stderr}"
    (tmp_path / f"{name}.log").write_text(text)
    print(text)
    return text


@pytest.mark.ray
@pytest.mark.trains
def test_ray_up_submit_and_down_run_the_paper_on_three_machines(machines, s3_uri, tmp_path):
    config = str(machines.config_path)
    up = machines.ray("up", "-y", "--no-config-cache", config)
    assert up.returncode == 0, _logged(tmp_path, "up", up)[-6000:]
    _logged(tmp_path, "up", up)

    # the command; the URI quoted for the head's shell (`ray submit` joins the
    # script's arguments into one shell command, and an S3 endpoint's URI has a `&`)
    submit = machines.ray("submit", "--no-config-cache", config, "sweeps/full_paper.py", "--",
                          "--smoke-test", "--datasets", "trifeature-shape", "--seeds", "0",
                          "--store", shlex.quote(s3_uri), timeout=1800)
    text = _logged(tmp_path, "submit", submit)
    assert submit.returncode == 0, text[-8000:]
    assert "0 failed, 0 not launched" in text, text[-8000:]

    store = Store(s3_uri)
    plan = expand(smoke_variant(narrow(EXPERIMENTS, datasets=["trifeature-shape"], seeds=[0]),
                                str(tmp_path / "data")))
    assert sorted(store.list_run_ids()) == sorted(s.run_id for s in plan.all)
    assert all(store.is_complete(s.run_id) for s in plan.all)
    assert store.exists(store.path("analysis", "tables.md"))
    # every trial ran on a worker machine of the kind its architecture needs (the head has
    # no GPU and so no kind), as run.json records it
    nodes = {}
    for spec in plan.all:
        need = trial_resources(spec.arch, spec.teacher_arch if spec.role == "ds" else None,
                               spec.dataset)
        (kind,) = {"gpu_small", "gpu_large"} & set(need)
        node = store.read_run_json(spec.run_id)["node"]
        assert node["node_kind"] == kind and node["node_gpus"] == 1, (spec.run_id, node)
        nodes.setdefault(kind, set()).add(node["node_id"])
    assert set(nodes) == {"gpu_small"} and len(nodes["gpu_small"]) == 1  # trifeature: small

    # a sweep that fails exits non-zero through `ray submit`: here a local store, refused on
    # this cluster of three machines before any work
    local = f"{machines.tmp}/tmp/results"
    failing = machines.ray("submit", "--no-config-cache", config, "sweeps/full_paper.py", "--",
                           "--smoke-test", "--datasets", "trifeature-shape", "--store", local)
    text = _logged(tmp_path, "submit-failing", failing)
    assert failing.returncode != 0, text[-6000:]
    for part in (f"--store: '{local}' is a path on this machine's disk",
                 "(3 node(s) alive: ", ", gpu_small)", ", gpu_large)", "--shared-store"):
        assert part in text, (part, text[-6000:])

    down = machines.ray("down", "-y", config, timeout=600)
    machines.up = False
    assert down.returncode == 0, _logged(tmp_path, "down", down)[-6000:]
    machines.close()
    assert machines.leftovers() == []
