"""Downloading a missing dataset, against an HTTP server on the loopback address."""

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from recbole_hyper.config import PluginConfig
from recbole_hyper.data.download import DownloadError
from tests.helpers import fast_config

ROWS = ["user_id:token\titem_id:token\ttimestamp:float"] + [
    f"u{u}\ti{(u * 5 + t) % 17 + 1}\t{t}" for u in range(1, 9) for t in range(1, 8)
]


def zipped(name="Tiny_Set", folder=""):
    """A zip in RecBole's layout: atomic files named after the archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(f"{folder}{name}.inter", "\n".join(ROWS) + "\n")
        z.writestr(f"{folder}{name}.item", "item_id:token\n" + "\n".join(f"i{i}" for i in range(1, 18)) + "\n")
    return buffer.getvalue()


@pytest.fixture
def server():
    """Serves ``server.files[path] = bytes``; ``server.lie_about_length`` sends a longer Content-Length."""
    files = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (100 if Handler.lie else 0)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    Handler.lie = False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.files, httpd.handler = files, Handler
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()


def build(data_path, **settings):
    return PluginConfig(
        model="Mamba4Rec", dataset="shop",
        config_dict=fast_config(data_path=str(data_path), show_progress=False, **settings),
    )


def leftovers(data_path: Path):
    return sorted(p.name for p in data_path.iterdir()) if data_path.exists() else []


def test_a_missing_dataset_is_downloaded_checked_and_renamed(server, tmp_path, in_tmp):
    body = zipped(folder="Tiny_Set/")
    server.files["/Tiny_Set.zip"] = body
    data = tmp_path / "data"
    config = build(data, download_url=server.url + "/Tiny_Set.zip", download_sha256=hashlib.sha256(body).hexdigest())
    assert sorted(p.name for p in (data / "shop").iterdir()) == ["shop.inter", "shop.item"]
    assert (data / "shop" / "shop.inter").read_text().splitlines() == ROWS
    assert leftovers(data) == ["shop"], "no temporary folder is left"
    assert config["load_col"]["inter"] == ["user_id", "item_id", "timestamp"]


@pytest.mark.parametrize("fault", ["offline", "missing", "truncated", "not_zip", "checksum", "off"])
def test_a_failed_download_is_one_clear_error_and_writes_nothing(fault, server, tmp_path, in_tmp):
    body = zipped()
    url = server.url + "/Tiny_Set.zip"
    settings = {"download_url": url}
    if fault == "offline":
        settings["download_url"] = "http://127.0.0.1:9/Tiny_Set.zip"  # nothing listens on the discard port
    elif fault == "truncated":
        server.files["/Tiny_Set.zip"] = body
        server.handler.lie = True
    elif fault == "not_zip":
        server.files["/Tiny_Set.zip"] = b"<html>not here</html>"
    elif fault == "checksum":
        server.files["/Tiny_Set.zip"] = body
        settings["download_sha256"] = "ab" * 32
    elif fault == "off":
        server.files["/Tiny_Set.zip"] = body
        settings["allow_download"] = False
    data = tmp_path / "data"
    expected = {
        "offline": "could not be downloaded", "missing": "could not be downloaded", "truncated": "broke off|incomplete",
        "not_zip": "not a zip", "checksum": "not the expected", "off": "not found",
    }[fault]
    with pytest.raises(Exception) as caught:
        build(data, **settings)
    assert caught.type.__name__ in ("DownloadError", "DatasetNotFoundError")
    import re

    assert re.search(expected, str(caught.value)), str(caught.value)
    assert "shop" in str(caught.value) and str(data / "shop") in str(caught.value)
    assert leftovers(data) == [], "nothing is written on failure"
    assert issubclass(DownloadError, Exception)


def test_known_datasets_have_recbole_addresses():
    from recbole_hyper.data.download import known_url

    assert known_url("ml-1m").endswith(".zip")
    assert known_url("no-such-dataset") is None
