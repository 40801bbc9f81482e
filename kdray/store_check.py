"""``--store`` checked before any work (before Ray starts): one line naming the store and
what is wrong with it, never a traceback minutes later.

:func:`check_store` returns the :class:`~kdray.store.Store` once it is usable, and raises a
``ValueError`` (``--store 's3://***@bucket/study': bucket 'bucket' does not exist``; the
URI redacted by :func:`kdray.store.redact`) when it is not:

- a local store: the path, or a folder above it, is a file; the folder cannot be created or
  written (no permission, a read-only mount, a path under ``/proc``). A sweep creates the
  folder and writes, then deletes, one empty probe file in it; a dry run only reads.
- an S3 store: no credentials (none in the URI, none from the environment, ``~/.aws`` or an
  instance role); the endpoint cannot be reached; the bucket does not exist or is not ours;
  the prefix cannot be written (a sweep puts, then deletes, one empty probe object). The
  probe uses boto3 (:mod:`kdray.s3`) with a 3 s connect and 5 s read timeout and 2 attempts,
  so an unreachable endpoint is named within seconds; pyarrow's own defaults retry for tens
  of seconds, and without a region in the URI pyarrow first asks S3 for the bucket's region.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from kdray import s3
from kdray.store import Store, redact

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
ATTEMPTS = 2


class Unusable(Exception):
    """Why a store cannot be used (the message is the cause, without the store's name)."""


def check_store(uri: str | os.PathLike, *, write: bool = True) -> Store:
    """The store at ``uri``, checked (see the module docstring): ``write`` for a sweep or a
    trial, read-only for a dry run. Raises ``ValueError`` naming the store and the cause."""
    uri = os.fspath(uri)
    try:
        if uri.startswith("s3://"):
            _check_s3(uri, write)
        elif "://" not in uri or uri.startswith("file://"):
            _check_local(Path(os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))),
                         write)
    except Unusable as e:
        raise ValueError(f"--store {redact(uri)!r}: {' '.join(str(e).split())}") from None
    return Store(uri)  # any other scheme: Store names it


def _check_local(path: Path, write: bool) -> None:
    above = path
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise Unusable("is a file, expected a folder" if above == path
                       else f"{above} is a file, so no folder can be made under it")
    if not write:
        if path.exists() and not os.access(path, os.R_OK | os.X_OK):
            raise Unusable("is not readable")
        return
    probe = path / f".kdray-write-check-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise Unusable(f"cannot be written ({e.strerror or type(e).__name__}: "
                       f"{e.filename or path})") from None


def _check_s3(uri: str, write: bool) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        options, root = s3.parse(uri)
    except Exception as e:  # noqa: BLE001 - pyarrow names what it could not parse
        raise Unusable(f"is not a usable S3 URI ({e})") from None
    if not s3.has_credentials(options):
        raise Unusable("no S3 credentials: none in the URI (s3://KEY:SECRET@bucket/...) and "
                       "none from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws or an "
                       "instance role")
    client = s3.client(options, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                       attempts=ATTEMPTS)
    bucket, prefix = s3.split(root)
    endpoint = client.meta.endpoint_url
    try:
        client.head_bucket(Bucket=bucket)
        if write:
            key = "/".join(p for p in (prefix, f".kdray-write-check-{uuid.uuid4().hex}") if p)
            client.put_object(Bucket=bucket, Key=key, Body=b"")
            client.delete_object(Bucket=bucket, Key=key)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket"):
            raise Unusable(f"bucket {bucket!r} does not exist (at {endpoint})") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise Unusable(f"access denied to bucket {bucket!r} ({code}): check the "
                           f"credentials and the bucket's policy") from None
        raise Unusable(f"S3 refused: {code} ({e})") from None
    except BotoCoreError as e:  # no connection, a timeout, no credentials after all
        raise Unusable(f"cannot reach S3 at {endpoint} ({type(e).__name__}: {e})") from None
