"""What verifying a teacher's weights costs on S3: the ETag comparison against hashing.

    python benchmarks/teacher_verify.py           # the paper's largest teachers' sizes
    python benchmarks/teacher_verify.py --tiny    # 1 MB, to check it runs

Every sweep checks every teacher of its plan (``kdray.store.Store.model_problem``). On S3 it
compares the object's ETag with the one run.json recorded (one HEAD request); without a
recorded ETag it downloads the weights and compares their SHA-256 with ``model_sha256``.
This writes a file of each of the paper's teacher sizes to an S3 server (moto, on 127.0.0.1,
started here) through the store, and times side by side the ETag check and the hashing that
the other check needs (the hashing alone: a lower bound of that check). The download that
comes before the hashing is timed apart, at 4, 16 and 32 MB: moto answers pyarrow's ranged
reads of one object in time that grows faster than the object's size (a 438 MB read did not
finish in minutes), so it says nothing of real S3's rate there. The HEAD request's cost
does not grow with the size.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.store import MODEL, Store, sha256_bytes  # noqa: E402

# float32 state-dict bytes of kdray's builds (Store.model_problem's docstring)
SIZES_MB = {"ResNet-50": 102.4, "ViT-B/16": 346.3, "BERT-base": 437.9}


def moto_store() -> tuple[Store, object]:
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    bucket = f"kdray-{uuid.uuid4().hex[:12]}"
    pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                      endpoint_override=f"http://127.0.0.1:{port}",
                      allow_bucket_creation=True).create_dir(bucket)
    return Store(f"s3://testing:testing@{bucket}/bench?endpoint_override=127.0.0.1:{port}"
                 f"&scheme=http&region=us-east-1"), server


def best_seconds(work, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``work``, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(store: Store, name: str, megabytes: float, repeats: int) -> None:
    """ETag check and SHA-256 check of one stored object of ``megabytes``. The SHA-256 side
    is timed as the hashing alone (a lower bound: the download comes on top, see
    :func:`download`)."""
    data = os.urandom(int(megabytes * 1e6))
    run_id = f"bench-{name.replace('/', '-').lower()}"
    store.write_bytes(store.run_path(run_id, MODEL), data)
    record = {"model_sha256": sha256_bytes(data),
              "model_etag": store.etag(store.run_path(run_id, MODEL))}
    assert store.model_problem(run_id, record) is None  # the check passes, by its ETag
    etag = best_seconds(lambda: store.model_problem(run_id, record), repeats)
    hashed = best_seconds(lambda: sha256_bytes(data), repeats)
    print(f"  {name:<10} {megabytes:7.1f} MB   ETag (HEAD) {etag * 1e3:7.1f} ms   "
          f"SHA-256 alone {hashed * 1e3:8.1f} ms   ratio {hashed / etag:6.0f}x", flush=True)
    store.fs.delete_file(store.run_path(run_id, MODEL))


def download(store: Store, megabytes: float, repeats: int) -> None:
    """What the SHA-256 check downloads first, through the store, from moto."""
    data = os.urandom(int(megabytes * 1e6))
    path = store.run_path("bench-download", MODEL)
    store.write_bytes(path, data)
    assert store.read_bytes(path) == data
    took = best_seconds(lambda: store.read_bytes(path), repeats)
    print(f"  {megabytes:7.1f} MB   download {took * 1e3:8.1f} ms", flush=True)


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/teacher_verify.py", description_of(__doc__))
    p.add_argument("--tiny", action="store_true", help="1 MB, one repeat")
    return p


def main() -> None:
    args = parser().parse_args()
    sizes = {"tiny": 1.0} if args.tiny else SIZES_MB
    repeats = 1 if args.tiny else 3
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request lines
    store, server = moto_store()
    try:
        print(f"teacher verification on S3 (moto on 127.0.0.1), best of {repeats}:")
        for name, mb in sizes.items():
            measure(store, name, mb, repeats)
        print("the download that the SHA-256 check needs first, from moto (its ranged reads "
              "slow down with the object's size; real S3 streams at the network's rate):")
        for mb in ([1.0] if args.tiny else [4.0, 16.0, 32.0]):
            download(store, mb, repeats)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
