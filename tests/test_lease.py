"""Run leases (kdray.lease) on a local folder and on moto's S3: one owner per run under
concurrent claims, live owners respected, dead ones taken over, damaged leases named."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from kdray import RunSpec
from kdray.lease import Owner, lease_files, machine
from kdray.store import Store, predictions_table

RUNS = [f"run-{i:02d}" for i in range(12)]


def _lease(store, run_id):
    got = lease_files(store).read(f"runs/{run_id}.json")
    return None if got is None else json.loads(got[0])


def test_one_owner_per_run_under_concurrent_claims(store_uri):
    store = Store(store_uri)
    owners = [Owner(store, log=lambda m: None) for _ in range(4)]
    start, claims = threading.Barrier(len(owners)), {}

    def claim(owner):
        start.wait()  # all four claim the same runs at once
        claims[owner.id] = owner.claim(RUNS)

    for owner in owners:
        owner.__enter__()
    try:
        threads = [threading.Thread(target=claim, args=(o,)) for o in owners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for run_id in RUNS:
            holders = [o for o in owners if run_id in claims[o.id].mine]
            assert len(holders) == 1, (run_id, [o.id for o in holders])
            assert _lease(store, run_id)["owner"] == holders[0].id
            for other in owners:
                if other is not holders[0]:
                    assert f"leased by driver {holders[0].id}" in claims[other.id].elsewhere[run_id]
    finally:
        for owner in owners:
            owner.__exit__(None, None, None)
    assert all(_lease(store, r) is None for r in RUNS)  # released on exit


def test_live_owner_is_left_alone_a_dead_one_taken_over(store_uri):
    store = Store(store_uri)
    with Owner(store, log=lambda m: None) as first:
        assert first.claim(RUNS[:2]).mine == RUNS[:2]
        with Owner(store, log=lambda m: None) as second:
            busy = second.claim(RUNS[:3])
            assert busy.mine == [RUNS[2]] and set(busy.elsewhere) == set(RUNS[:2])
            assert f"(pid {first.pid}), heartbeat" in busy.elsewhere[RUNS[0]]
        said = []
        # an owner silent for longer than stale_after_s is dead: its leases are taken over
        with Owner(store, log=said.append, stale_after_s=-1) as third:
            assert third.claim(RUNS[:2]).mine == RUNS[:2]
            assert f"lease: {RUNS[0]}: taken over from {first.id} (stale)" in said
            first.release(RUNS[:2])  # the first owner's release cannot drop the new leases
            assert _lease(store, RUNS[0])["owner"] == third.id


def test_an_owner_whose_process_is_gone_is_dead_at_once(store_uri):
    store = Store(store_uri)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    files = lease_files(store)
    files.put("owners/gone.json", json.dumps({"owner": "gone", "machine": machine(),
                                              "pid": int(gone), "heartbeat": time.time()}).encode())
    files.put(f"runs/{RUNS[0]}.json", json.dumps({"owner": "gone"}).encode())
    files.put(f"runs/{RUNS[1]}.json", b"\x00 not a lease")  # a damaged lease has no owner
    with Owner(store, log=lambda m: None) as owner:
        assert owner.claim(RUNS[:2]).mine == RUNS[:2]


def test_a_run_committed_meanwhile_is_released_not_trained(store_uri):
    store = Store(store_uri)
    spec = RunSpec(dataset="trifeature-shape", role="nds", arch="lenet5")
    table = predictions_table(spec.run_id, spec.to_dict(), np.arange(3), np.zeros(3), np.zeros(3))
    sha = store.write_predictions(spec.run_id, table)
    store.write_model(spec.run_id, {"w": torch.ones(1)})
    store.write_run_json(spec.run_id, {"run_id": spec.run_id, "spec": spec.to_dict(),
                                       "predictions_sha256": sha})
    with Owner(store, log=lambda m: None) as owner:
        claim = owner.claim([spec.run_id, RUNS[0]])
        assert claim.complete == [spec.run_id] and claim.mine == [RUNS[0]]
        assert _lease(store, spec.run_id) is None


def test_the_trial_command_does_not_train_a_run_leased_elsewhere(tmp_path):
    store = Store(tmp_path / "store")
    spec = RunSpec(dataset="trifeature-shape", role="nds", arch="lenet5", epochs=1)
    with Owner(store, log=lambda m: None) as sweep:
        assert sweep.claim([spec.run_id]).mine == [spec.run_id]
        out = subprocess.run([sys.executable, "-m", "kdray.trial", "--store", str(tmp_path / "store"),
                              "--dataset", "trifeature-shape", "--role", "nds", "--arch", "lenet5",
                              "--epochs", "1", "--wandb-mode", "disabled"],
                             capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert f"error: {spec.run_id} is running elsewhere: leased by driver {sweep.id}" in out.stderr
    assert store.list_run_ids() == []  # nothing trained, nothing written
