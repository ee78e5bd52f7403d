"""Folders of small files (`providers_dir`, `manifests_dir`) on local disk and on each
cloud's real endpoint: list by suffix, read, replace, delete, missing files and folders."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from ampd.storage.folder import Folder, FolderUnreadable, LocalFolder, open_folder
from support.clouds import SCHEMES, endpoint, new_bucket


@pytest.fixture(scope="module")
def endpoints() -> Iterator[dict[str, Any]]:
    """Each cloud's endpoint, started when a test first needs it."""
    with ExitStack() as stack:
        yield _Lazy(stack)


class _Lazy(dict):
    def __init__(self, stack: ExitStack) -> None:
        super().__init__()
        self._stack = stack

    def __missing__(self, scheme: str) -> Any:
        self[scheme] = self._stack.enter_context(endpoint(scheme))
        return self[scheme]


@pytest.fixture(params=["local", *SCHEMES])
def folder(request, tmp_path: Path, endpoints, monkeypatch: pytest.MonkeyPatch) -> Folder:  # noqa: ANN001
    if request.param == "local":
        return open_folder(f"file://{tmp_path}/providers")
    running = endpoints[request.param]
    return open_folder(f"{request.param}://{new_bucket(running, monkeypatch)}/amp/providers")


def test_files_are_listed_read_replaced_and_deleted(folder: Folder) -> None:
    assert folder.names(".toml") == []  # a folder that does not exist yet is empty
    folder.write("b.toml", b"kind = 1\n")
    folder.write("a.toml", b"kind = 2\n")
    folder.write("notes.txt", b"-")
    assert folder.names(".toml") == ["a.toml", "b.toml"]
    folder.write("a.toml", b"kind = 3\n")
    assert folder.read("a.toml") == b"kind = 3\n"
    folder.delete("a.toml")
    folder.delete("a.toml")  # already gone: nothing happens
    assert folder.names(".toml") == ["b.toml"]
    with pytest.raises(FileNotFoundError):
        folder.read("a.toml")
    for bad in ("", "../x.toml", "sub/x.toml"):
        with pytest.raises(ValueError, match="invalid file name"):
            folder.write(bad, b"")
    assert folder.where("b.toml").endswith("/providers/b.toml")


def test_a_file_is_not_a_local_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(FolderUnreadable, match="not a folder"):
        LocalFolder(tmp_path / "file").names(".toml")


# fake-gcs-server answers a missing bucket 500, which is retried, where GCS answers 404.
@pytest.mark.parametrize("scheme", ["s3", "az"])
def test_a_missing_bucket_is_refused(scheme: str, endpoints, monkeypatch) -> None:  # noqa: ANN001
    new_bucket(endpoints[scheme], monkeypatch)  # the endpoint's variables
    with pytest.raises(FolderUnreadable, match="cannot list"):
        open_folder(f"{scheme}://no-such-bucket-x/providers").names(".toml")
