"""boto3 on an S3 store, for the two things pyarrow's S3FileSystem (26.0.1) cannot do:
conditional writes (``If-None-Match``/``If-Match``, the run leases of :mod:`kdray.lease`)
and a probe with short timeouts that needs no region lookup first (:mod:`kdray.store_check`).

The client gets the endpoint, scheme, region and credentials that pyarrow parsed from the
store's URI (``S3FileSystem.__reduce__`` returns them), so both libraries talk to the same
place as the same user; with no credentials in the URI, boto3's own chain (environment
variables, ``~/.aws``, an instance role) supplies them, as the AWS SDK does for pyarrow.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs


def fs_options(fs: pafs.S3FileSystem) -> dict[str, Any]:
    """The options an S3FileSystem was built with (endpoint, region, credentials, ...)."""
    _, (options,) = fs.__reduce__()
    return dict(options)


def parse(uri: str) -> tuple[dict[str, Any], str]:
    """pyarrow's reading of an ``s3://`` URI (options, ``bucket/prefix``), without touching
    the network: a URI naming neither a region nor an endpoint makes ``from_uri`` ask S3 for
    the bucket's region (default timeouts, tens of seconds when S3 is unreachable), so a
    placeholder region stands in (``region`` is then ``""``; boto3 follows S3's redirect to
    the bucket's own region)."""
    placeholder = "region" not in parse_qs(urlsplit(uri).query)
    if placeholder:
        uri += ("&" if "?" in uri else "?") + "region=us-east-1"
    fs, root = pafs.FileSystem.from_uri(uri)
    options = fs_options(fs)
    if placeholder:
        options["region"] = ""
    return options, root


def has_credentials(options: dict[str, Any]) -> bool:
    """Credentials in the URI, or from boto3's chain (environment, ``~/.aws``, instance role)."""
    if options.get("anonymous") or options.get("access_key"):
        return True
    import boto3

    return boto3.session.Session().get_credentials() is not None


def client(options: dict[str, Any], *, connect_timeout: float = 5.0, read_timeout: float = 20.0,
           attempts: int = 3):
    """A boto3 S3 client for the store whose pyarrow options are ``options``."""
    import boto3
    from botocore.config import Config

    endpoint = options.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme') or 'https'}://{endpoint}"
    keys = {}
    if options.get("access_key"):
        keys = dict(aws_access_key_id=options["access_key"],
                    aws_secret_access_key=options["secret_key"],
                    aws_session_token=options.get("session_token") or None)
    return boto3.client("s3", endpoint_url=endpoint, region_name=options.get("region") or None,
                        config=Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                      retries={"max_attempts": attempts, "mode": "standard"}),
                        **keys)


def split(root: str) -> tuple[str, str]:
    """``"bucket/prefix/x"`` -> ``("bucket", "prefix/x")``."""
    bucket, _, prefix = root.strip("/").partition("/")
    return bucket, prefix
