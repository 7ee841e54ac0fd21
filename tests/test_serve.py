"""digitdet serve through its HTTP interface on a loopback port: good photos, every bad input, and
the page in a real headless Chromium (skipped where Debian's chromium + chromium-driver are absent)."""
import io
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

import digitdet
from digitdet.data.images import list_images
from digitdet.io import read_pred_csv

uvicorn = pytest.importorskip("uvicorn")
from digitdet.serve.app import create_app, free_port, wait_until_up  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "runs" / "test-artifacts"


@pytest.fixture(scope="module")
def server():
    """A real uvicorn server on 127.0.0.1 in a thread, small limits to test them: (base URL)."""
    app = create_app(digitdet.Reader(device="cpu", threads=1), max_bytes=200_000, max_pixels=1_000_000)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, 30)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def truth(tiny_data, tmp_path_factory):
    """What predict reads in the fixture's test photos: {file name: number}."""
    from digitdet.cli import main
    out = tmp_path_factory.mktemp("pred")
    assert main(["predict", "--images", str(tiny_data / "test"), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    numbers = read_pred_csv(out / "pred.csv")
    return {p.name: numbers[i] for i, p in list_images(tiny_data / "test")}


def _png(size=(90, 48), colour="white") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_reads_a_photo_sent_either_way(server, tiny_data, truth):
    path = sorted((tiny_data / "test").glob("*.png"))[0]
    multipart = httpx.post(f"{server}/v1/read", files={"image": (path.name, path.read_bytes(), "image/png")})
    raw = httpx.post(f"{server}/v1/read", content=path.read_bytes(), headers={"content-type": "image/png"})
    for r in (multipart, raw):
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["number"] or "-1") == truth[path.name]
        assert set(body) == {"number", "digits", "width", "height", "ms"} and body["ms"] >= 0
        assert all(set(d) == {"digit", "box", "score"} and len(d["box"]) == 4 for d in body["digits"])
    assert raw.json()["digits"] == multipart.json()["digits"]
    assert httpx.post(f"{server}/v1/read", content=_png()).json()["number"] is None  # no digits: null
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert "/v1/read" in httpx.get(f"{server}/openapi.json").json()["paths"]


@pytest.mark.parametrize("send, status", [
    (dict(content=b"this is not a picture", headers={"content-type": "image/png"}), 400),
    (dict(content=_png()[:60], headers={"content-type": "image/png"}), 400),  # truncated
    (dict(content=b"", headers={"content-type": "image/png"}), 400),  # zero bytes
    (dict(content=b"\0" * 300_000, headers={"content-type": "image/png"}), 413),  # over 200 kB
    (dict(content=_png((2000, 1000), "black"), headers={"content-type": "image/png"}), 413),  # 2 MP: a bomb here
    (dict(content=b'{"image": 1}', headers={"content-type": "application/json"}), 415),
    (dict(files={"photo": ("a.png", _png(), "image/png")}), 400),  # no 'image' field
])
def test_bad_input_is_a_json_error_and_the_server_goes_on(server, tiny_data, truth, send, status):
    r = httpx.post(f"{server}/v1/read", **send)
    assert r.status_code == status and r.json()["error"], r.text
    path = sorted((tiny_data / "test").glob("*.png"))[1]
    again = httpx.post(f"{server}/v1/read", files={"image": (path.name, path.read_bytes(), "image/png")})
    assert again.status_code == 200 and (again.json()["number"] or "-1") == truth[path.name]


def test_requests_are_served_concurrently(server, tiny_data, truth):
    paths = sorted((tiny_data / "test").glob("*.png")) * 4

    def post(path):
        return path.name, httpx.post(f"{server}/v1/read", content=path.read_bytes(), timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, paths))
    assert all(r.status_code == 200 and (r.json()["number"] or "-1") == truth[name] for name, r in answers)


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_the_page_reads_a_photo_in_a_real_browser(server, tiny_data, truth):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=900,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(f"{server}/")
        path = sorted((tiny_data / "test").glob("*.png"))[2]
        driver.find_element(By.ID, "file").send_keys(str(path))
        shown = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "number").get_attribute("data-number"))
        expected = truth[path.name]
        assert shown == (expected if expected != "-1" else "-")
        assert "px, read in" in driver.find_element(By.ID, "meta").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "serve_page.png"))
    finally:
        driver.quit()
