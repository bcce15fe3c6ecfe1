"""Outputs in an object store: ``storage: s3://bucket/lab`` in ``params.yaml``.

The steps write their artifacts into the local ``lab/`` folder (the embedded default, and
what DVC versions); with ``storage`` set, each stage run whose checks all pass also puts its
artifacts under that URL at the same relative path (``lab/raw/web/00003`` →
``s3://bucket/lab/raw/web/00003``), through fsspec, so the store holds every artifact as
``lab/`` does, readable by anything that reads the bucket. Files already there with the same
size and content hash (S3's ETag of a single-part upload is the MD5) are not sent again;
files there that the artifact no longer has are removed. Credentials and endpoints come from
the usual environment and config of the store's library (``AWS_*``, ``AWS_ENDPOINT_URL``),
never from ``params.yaml``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from olmo_assets.lab.params import Lab

__all__ = ["publish", "storage_url"]


def storage_url(lab: Lab, folder: Path) -> str:
    """Where ``folder`` (inside ``lab/``) goes in the store."""
    assert lab.params.storage is not None
    relative = folder.resolve().relative_to(lab.root.resolve()).as_posix()
    return lab.params.storage.rstrip("/") + "/" + relative


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def publish(lab: Lab, folders: list[Path]) -> list[str]:
    """Put each folder under ``storage`` (see the module's docstring); the URLs written.
    An unreachable store raises an ``OSError`` naming the URL and the cause."""
    from fsspec.core import url_to_fs

    urls = []
    for folder in folders:
        url = storage_url(lab, folder)
        fs, root = url_to_fs(url)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        wanted = {p.relative_to(folder).as_posix(): p for p in files}
        try:
            present = {
                path[len(root) :].lstrip("/"): info
                for path, info in fs.find(root, detail=True).items()
            }
            for name, path in wanted.items():
                there = present.get(name)
                etag = str((there or {}).get("ETag", "")).strip('"')
                if there and there.get("size") == path.stat().st_size and etag == _md5(path):
                    continue
                fs.put_file(str(path), f"{root}/{name}")
            stale = [f"{root}/{name}" for name in present if name not in wanted]
            if stale:
                fs.rm(stale)
        except Exception as error:  # s3fs and botocore raise more than OSError
            raise OSError(
                f"storing {folder} at {url} failed: {error} (the store's credentials and "
                "endpoint come from its library's usual environment, e.g. AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID and AWS_ENDPOINT_URL)"
            ) from error
        urls.append(url)
    return urls
