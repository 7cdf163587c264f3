import functools
import hashlib
import http.server
import threading

import pytest

from ffcore.data.fetch import FetchError, RemoteFile, Source, fetch


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on loopback serving a folder of generated files."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _publish(root, name, content):
    (root / name).write_bytes(content)
    return RemoteFile(name, hashlib.md5(content).hexdigest(), hashlib.sha256(content).hexdigest())


def test_fetch_downloads_and_verifies(server, tmp_path):
    root, url = server
    files = (_publish(root, "a.gz", b"alpha" * 1000), _publish(root, "b.gz", b"beta"))
    seen = []
    paths = fetch("x", tmp_path / "dest", source=Source(url, files), on_progress=lambda n, d, t: seen.append((n, d, t)))
    assert [p.read_bytes() for p in paths] == [b"alpha" * 1000, b"beta"]
    assert ("a.gz", 5000, 5000) in seen
    # a second fetch keeps valid files: it works even with the mirror gone
    (root / "a.gz").unlink()
    assert fetch("x", tmp_path / "dest", source=Source(url, files))[0].read_bytes() == b"alpha" * 1000


def test_checksum_mismatch_leaves_nothing_behind(server, tmp_path):
    root, url = server
    remote = _publish(root, "a.gz", b"original")
    (root / "a.gz").write_bytes(b"tampered")
    with pytest.raises(FetchError, match="checksum mismatch for a.gz"):
        fetch("x", tmp_path / "dest", source=Source(url, (remote,)))
    assert list((tmp_path / "dest").iterdir()) == []


def test_missing_file_on_mirror_is_a_clear_error(server, tmp_path):
    _, url = server
    with pytest.raises(FetchError, match="could not download .*nope.gz.*404"):
        fetch("x", tmp_path / "dest", source=Source(url, (RemoteFile("nope.gz", "0" * 32),)))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        fetch("cifar", "/tmp/unused")
