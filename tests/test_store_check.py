"""``--store`` is checked before any work: a file, an unwritable or read-only location, a
missing bucket, an unreachable endpoint and missing credentials each give one line naming
the (redacted) store and the cause, exit code 2, quickly, and Ray never starts."""

import os
import subprocess
import sys
import time

import pytest

from conftest import STABLE_LR, TINY_TRIFEATURE, _free_port
from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment

EXP = Experiment("tri", ("trifeature-shape",), (("resnet20", "lenet5"),), (2.0,), (0.8,), (0,),
                 recipe={"epochs": 1, "batch_size": 100, "lr": STABLE_LR}, data=TINY_TRIFEATURE)


@pytest.fixture
def no_sweep(monkeypatch):
    """The sweep (and so Ray) must never start: a bad store is an error before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("run_plan called with an unusable store")

    monkeypatch.setattr("kdray.sweep.driver.run_plan", refuse)


def _refused(argv, capsys, *expected):
    t0 = time.monotonic()
    code = sweep_main([EXP], argv + ["--wandb-mode", "disabled", "--no-analysis"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    for text in expected:
        assert text in err, err
    assert took < 15, f"the check took {took:.0f} s"  # a bound, not a timing


def test_local_stores_that_cannot_be_used(tmp_path, capsys, no_sweep):
    afile = tmp_path / "afile"
    afile.write_text("not a store")
    _refused(["--store", str(afile)], capsys, f"error: --store '{afile}': is a file, expected a folder")
    _refused(["--store", str(afile / "sub")], capsys, f"{afile} is a file, so no folder")
    _refused(["--store", "/proc/kdray-store"], capsys, "--store '/proc/kdray-store': cannot be written")
    _refused(["--store", "/sys/kdray-store"], capsys, "--store '/sys/kdray-store': cannot be written")
    # a dry run only reads: a store that does not exist yet is fine, a file is not
    _refused(["--store", str(afile), "--dry-run"], capsys, "is a file, expected a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_folder_is_refused(tmp_path, capsys, no_sweep):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused(["--store", str(ro / "store")], capsys, "cannot be written (Permission denied")
    finally:
        ro.chmod(0o755)


def test_s3_stores_that_cannot_be_used(s3_uri, s3_endpoint, capsys, no_sweep, monkeypatch,
                                       tmp_path):
    bucket = s3_uri.split("@", 1)[1].split("/", 1)[0]
    missing = s3_uri.replace(f"@{bucket}/", "@kdray-no-such-bucket/")
    _refused(["--store", missing], capsys, "error: --store 's3://***@kdray-no-such-bucket/study",
             "bucket 'kdray-no-such-bucket' does not exist")
    unreachable = s3_uri.replace(s3_endpoint, f"127.0.0.1:{_free_port()}")
    _refused(["--store", unreachable], capsys, "cannot reach S3 at http://127.0.0.1:")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role on this machine
    keyless = s3_uri.replace("testing:testing@", "")
    _refused(["--store", keyless], capsys, f"--store '{keyless}': no S3 credentials")
    assert "testing" not in capsys.readouterr().err


def test_a_usable_store_passes_and_the_probe_leaves_nothing(s3_uri, tmp_path):
    from kdray.store_check import check_store

    store = check_store(s3_uri)
    assert store.fs.get_file_info(store.root).type.name == "NotFound"  # the probe is gone
    local = check_store(tmp_path / "new" / "store")
    assert os.listdir(local.root) == []


def test_the_trial_command_checks_its_store_too(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    out = subprocess.run([sys.executable, "-m", "kdray.trial", "--store", str(afile),
                          "--dataset", "trifeature-shape", "--role", "nds", "--arch", "lenet5"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == \
        f"error: --store '{afile}': is a file, expected a folder"
