"""Fetching: local paths stay paths, URLs become bytes, a missing file is a MediaError at the list stage."""

import io

import pytest

from instvl.media.fetch import MediaError, as_file, fetch_media, media_size, read_bytes, read_head, sha256_of


def test_local_files_are_paths_and_remote_ones_bytes(tmp_path):
    import fsspec

    path = tmp_path / "clip.mp4"
    path.write_bytes(b"0123456789")
    assert fetch_media(str(path)) == str(path) == fetch_media(f"file://{path}")
    with fsspec.open("memory:///fetch-test/clip.mp4", "wb") as f:
        f.write(b"0123456789")
    remote = fetch_media("memory:///fetch-test/clip.mp4")
    assert remote == b"0123456789"
    for media in (str(path), remote):
        assert media_size(media) == 10 and read_head(media, 4) == b"0123"
        assert read_bytes(media) == b"0123456789"
    assert sha256_of(remote) == sha256_of(str(path))
    assert as_file(str(path)) == str(path) and isinstance(as_file(remote), io.BytesIO)


@pytest.mark.parametrize("uri", ["{tmp}/gone.mp4", "file://{tmp}/gone.mp4", "memory:///fetch-test/gone.mp4"])
def test_a_missing_file_is_a_media_error(uri, tmp_path):
    uri = uri.format(tmp=tmp_path)
    with pytest.raises(MediaError, match="missing file") as caught:
        fetch_media(uri)
    assert caught.value.uri == uri and caught.value.stage == "list"
