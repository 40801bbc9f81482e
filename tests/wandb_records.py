"""Read the run record of a W&B offline run (``run-*.wandb``: W&B's LevelDB-style log of
``wandb_internal_pb2.Record`` protobufs), to check what a trial's run was created with."""

from __future__ import annotations

import glob
import os
import struct

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7  # ":W&B" + 3 version bytes, then records: crc32 (4), length (2), type (1)


def records(path: str) -> list[pb.Record]:
    data = open(path, "rb").read()
    pos, out, buf = HEADER, [], b""
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            out.append(chunk)
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            out.append(buf + chunk)
    parsed = []
    for raw in out:
        r = pb.Record()
        r.ParseFromString(raw)
        parsed.append(r)
    return parsed


def offline_runs(wandb_dir: str) -> dict[str, pb.RunRecord]:
    """display name -> run record of every offline run under ``wandb_dir``."""
    runs = {}
    for path in glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*", "run-*.wandb")):
        for r in records(path):
            if r.WhichOneof("record_type") == "run":
                runs[r.run.display_name] = r.run
    return runs


def summaries(wandb_dir: str) -> dict[str, dict[str, object]]:
    """display name -> the summary keys and values (JSON-decoded) of every offline run."""
    import json

    out: dict[str, dict[str, object]] = {}
    for path in glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*", "run-*.wandb")):
        recs = records(path)
        name = next(r.run.display_name for r in recs if r.WhichOneof("record_type") == "run")
        for r in recs:
            if r.WhichOneof("record_type") == "summary":
                for item in r.summary.update:
                    out.setdefault(name, {})[item.key] = json.loads(item.value_json)
    return out
