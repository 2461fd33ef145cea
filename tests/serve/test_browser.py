"""The real thing: `breastcad serve` in its own process, the page driven in headless Chromium
(Debian's `chromium`, installed by .ci/run) through Playwright: upload, read the answer, save a
screenshot (to $BREASTCAD_SCREENSHOTS as well, when set)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium not installed (.ci/run installs Debian's chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(bundles):
    port = free_port()
    args = [sys.executable, "-m", "breastcad", "serve", "--port", str(port)]
    for name in ("image", "tabular", "paired"):
        args += ["--model", str(bundles[name])]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stdout.read()}")
        else:
            pytest.fail("the server did not answer /healthz within 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def patch(tmp_path: Path) -> Path:
    """A real IDC patch when the shared data is here, else a synthetic one."""
    real = sorted((SHARED_DATA / "idc").rglob("*class1.png"))[:1]
    if real:
        return real[0]
    path = tmp_path / "patch.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), np.uint8)).save(path)
    return path


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("BREASTCAD_SCREENSHOTS"):
        keep = Path(os.environ["BREASTCAD_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / name)
    return path


def test_upload_an_image_and_read_the_result(server, browser, tmp_path):
    image = patch(tmp_path)
    models = httpx.get(f"{server}/api/v1/models").json()
    single = next(m for m in models if m["kind"] == "image" and not m["bilateral"])
    with open(image, "rb") as f:
        url = f"{server}/api/v1/predict?model={single['id']}"
        api = httpx.post(url, files={"file": (image.name, f)}).json()
    page = browser.new_page()
    page.goto(server)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", single["id"])
    assert "not a medical device" in page.inner_text("#notice").lower()
    assert "idc_cnn" in page.inner_text("#card")
    page.set_input_files("#file", str(image))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#prediction") == api["prediction"]
    shown = page.inner_text("#probabilities")
    for cls, p in api["probabilities"].items():
        assert f"{cls}\t{p:.3f}" in shown
    assert page.get_attribute("#cam-image", "src").startswith("data:image/png;base64,")
    assert page.is_visible("#cam-image")
    assert not page.is_visible("#warning")  # a PNG names no modality
    shot = screenshot(page, tmp_path, "upload.png")
    width, height = Image.open(shot).size
    assert width >= 600 and height >= 400

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is text, not an image")
    page.set_input_files("#file", str(bad))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "415" in page.inner_text("#error") and "not an image" in page.inner_text("#error")
    page.close()


def test_a_mammogram_sent_to_a_histology_model_is_answered_with_a_warning(
    server, browser, tmp_path
):
    """The page shows the API's warning above the answer, and the header only de-identified."""
    from tests.serve.conftest import dicom_bytes

    scan = tmp_path / "scan.dcm"
    scan.write_bytes(dicom_bytes(PatientName="Roe^Richard", PatientID="ID-98765"))
    models = httpx.get(f"{server}/api/v1/models").json()
    single = next(m for m in models if m["kind"] == "image" and not m["bilateral"])
    page = browser.new_page()
    page.goto(server)
    page.wait_for_selector("#model option", state="attached")
    page.select_option("#model", single["id"])
    page.set_input_files("#file", str(scan))
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    assert page.is_visible("#warning")
    warning = page.inner_text("#warning")
    assert warning.startswith("Warning: DICOM Modality MG (mammography)")
    assert "trained on histopathology images" in warning
    assert "Modality MG" in page.inner_text("#dicom")
    assert "Roe" not in page.content() and "ID-98765" not in page.content()
    screenshot(page, tmp_path, "upload-other-modality.png")
    page.close()


def test_upload_a_womans_two_breasts_and_read_each_against_the_other(server, browser, tmp_path):
    """The second file field shows for a model fitted on pairs only; with both images the
    page shows what `/api/v1/predict/pair` answers, a file name as text, never markup."""
    rng = np.random.default_rng(5)
    left, right = tmp_path / "<i>left.png", tmp_path / "right.png"
    for path in (left, right):
        Image.fromarray(rng.integers(0, 256, (50, 50, 3), np.uint8)).save(path)
    models = httpx.get(f"{server}/api/v1/models").json()
    paired = next(m for m in models if m["bilateral"])
    assert paired["bilateral"]["threshold"] == 0.45
    with open(left, "rb") as a, open(right, "rb") as b:
        files = {"file": (left.name, a), "other": (right.name, b)}
        api = httpx.post(f"{server}/api/v1/predict/pair?model={paired['id']}", files=files)
    api = api.json()
    page = browser.new_page()
    page.goto(server)
    page.wait_for_selector("#model option", state="attached")
    single = next(m for m in models if m["kind"] == "image" and not m["bilateral"])
    page.select_option("#model", single["id"])
    assert not page.is_visible("#other")
    page.select_option("#model", paired["id"])
    assert page.is_visible("#other")
    page.set_input_files("#file", str(left))
    page.set_input_files("#other", str(right))
    page.click("#submit")
    page.wait_for_selector("#pair-result:not([hidden])")
    rows = page.inner_text("#pair-table tbody").splitlines()
    assert rows[0].startswith("<i>left.png") and rows[1].startswith("right.png")
    positive = api["positive_class"]
    for row, side in zip(rows, ("image", "other"), strict=True):
        answer = api[side]
        assert f"{answer['probabilities'][positive]:.3f}\t{answer['prediction']}" in row
        assert row.endswith(f"{answer['p_bilateral']:.3f}\t{answer['prediction_bilateral']}")
    assert "0.450" in page.inner_text("#pair-decision")
    overlays = page.query_selector_all("#pair-images img")  # Grad-CAM of each (box ticked)
    assert len(overlays) == 2 and all(o.is_visible() for o in overlays)
    assert "<i>left.png alone" in page.inner_text("#pair-images")
    assert page.is_hidden("#result")
    screenshot(page, tmp_path, "pair.png")
    page.close()


def test_enter_the_wdbc_features_and_read_the_result(server, browser, tmp_path, wdbc):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_selector("#model option", state="attached")
    tabular = [o for o in page.eval_on_selector_all("#model option", "o => o.map(e => e.value)")]
    page.select_option("#model", next(v for v in tabular if v.startswith("logreg")))
    row = dict(zip(wdbc.feature_names, map(float, wdbc.X[0]), strict=True))
    for name, value in row.items():
        page.fill(f'#feature-inputs input[name="{name}"]', repr(value))
    page.click("#submit-tabular")
    page.wait_for_selector("#result:not([hidden])")
    api = httpx.post(f"{server}/api/v1/predict/tabular", json={"features": row}).json()
    assert page.inner_text("#prediction") == api["prediction"]
    assert f"{api['p_malignant']:.3f}" in page.inner_text("#probabilities")
    screenshot(page, tmp_path, "tabular.png")
    page.close()


def test_api_docs_render_with_no_request_leaving_the_machine(server, browser, tmp_path):
    """/docs (Swagger UI) draws the API from files the server ships itself: every request
    outside the server is refused, and the page still lists the endpoints."""
    page = browser.new_page()
    outside: list[str] = []

    def only_local(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(server + "/docs")
    page.get_by_text("/api/v1/predict/tabular").first.wait_for(state="attached", timeout=30_000)
    assert "breastcad" in page.title()
    assert outside == []
    screenshot(page, tmp_path, "api-docs.png")
    assert httpx.get(f"{server}/redoc").status_code == 404  # its bundle fetches from a CDN
    page.close()
