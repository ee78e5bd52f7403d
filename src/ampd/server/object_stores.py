"""DataFusion's own object stores for a remote data dir: queries read Parquet straight from
S3, GCS or Azure (ranged reads, no local copy), configured from the same environment
variables as the writers' store (`storage/cloud.py`)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from datafusion import SessionContext
from datafusion.object_store import AmazonS3, GoogleCloud, MicrosoftAzure


def register_data_store(ctx: SessionContext, data_dir: str) -> None:
    """Make `data_dir`'s bucket readable by `ctx`; nothing to do for a local data dir."""
    scheme, sep, rest = data_dir.partition("://")
    if not sep or scheme == "file":
        return
    bucket = rest.split("/", 1)[0]
    ctx.register_object_store(f"{scheme}://", _store(scheme, bucket), bucket)


@lru_cache(maxsize=8)
def _store(scheme: str, bucket: str) -> Any:
    env = os.environ
    if scheme == "s3":
        return AmazonS3(
            bucket_name=bucket,
            region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
            access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            endpoint=env.get("AWS_ENDPOINT"),
            allow_http=_flag("AWS_ALLOW_HTTP"),
        )
    if scheme == "gs":
        # DataFusion's GCS store reads no variables itself: the service-account file (which
        # may also carry `gcs_base_url` and `disable_oauth`, for an emulator) is passed on.
        path = env.get("GOOGLE_SERVICE_ACCOUNT_PATH") or env.get("GOOGLE_SERVICE_ACCOUNT")
        return GoogleCloud(bucket_name=bucket, service_account_path=path)
    if scheme == "az":
        # The other AZURE_* variables (AZURITE_BLOB_STORAGE_URL too) it reads on its own.
        return MicrosoftAzure(
            container_name=bucket,
            account=env.get("AZURE_STORAGE_ACCOUNT_NAME"),
            access_key=env.get("AZURE_STORAGE_ACCOUNT_KEY"),
            use_emulator=_flag("AZURE_STORAGE_USE_EMULATOR"),
            allow_http=_flag("AZURE_ALLOW_HTTP"),
        )
    raise ValueError(f"data_dir {scheme}://{bucket}: unknown object store scheme {scheme!r}")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
