"""The service through FastAPI's TestClient: real bundles, real decoding, every error path."""

from __future__ import annotations

import base64
import io
import struct
import tempfile
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastcad.config import ServiceSettings
from breastcad.data.imaging import decode_image
from breastcad.errors import ConfigError
from breastcad.predict import ImagePrediction, Predictor
from breastcad.serve import create_app
from breastcad.serve.app import get_models
from breastcad.serve.models import ServedModels
from tests.serve.conftest import dicom_bytes, png


def client(bundles, **settings) -> TestClient:
    models = settings.pop("models", [bundles["image"], bundles["tabular"]])
    return TestClient(create_app(ServiceSettings(models=models, **settings)))


@pytest.fixture(scope="module")
def api(bundles) -> TestClient:
    return client(bundles)


def upload(api: TestClient, data: bytes, name: str = "x.png", query: str = "", **kw):
    return api.post(f"/api/v1/predict{query}", files={"file": (name, data, "image/png")}, **kw)


def test_health_models_page_and_docs(api, bundles):
    assert api.get("/healthz").json() == {"status": "ok", "models": 2}
    models = {m["kind"]: m for m in api.get("/api/v1/models").json()}
    image = models["image"]
    assert image["classes"] == ["benign", "idc"] and image["positive_class"] == "idc"
    assert image["threshold"] == pytest.approx(0.3)
    assert image["metrics"]["macro_auc"]["ci_low"] == pytest.approx(0.4)
    assert image["input"]["size"] == 50 and image["runtime"] == "torch"
    assert image["test_time_augmentation"] == "none"
    assert models["tabular"]["test_time_augmentation"] is None
    assert len(models["tabular"]["input"]["features"]) == 30
    assert models["tabular"]["runtime"] == "sklearn" and "test set" in image["evaluation"]
    page = api.get("/")
    assert page.status_code == 200 and "not a medical device" in page.text.lower()
    assert api.get("/static/app.js").status_code == 200
    docs = api.get("/docs").text  # served from the package, not a CDN
    assert "cdn" not in docs.lower() and "/static-offline-docs/swagger-ui-bundle.js" in docs
    assert api.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/api/v1/predict", "/api/v1/predict/tabular", "/api/v1/models", "/healthz"} <= set(
        paths
    )


def test_image_prediction_matches_the_predictor(api, bundles):
    data = png(1)
    answer = upload(api, data).json()
    expected = Predictor.from_bundle(bundles["image"]).predict_image(decode_image(data))
    assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert answer["prediction"] == expected.prediction
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    assert answer["model"]["id"].startswith("idc_cnn@") and answer["threshold"] == 0.3
    assert answer["image"] == {"height": 50, "width": 50, "model_input": [50, 50, 3]}
    assert answer["explanation"] is None and answer["dicom"] is None
    assert answer["warning"] is None  # a PNG names no modality: nothing to check
    assert "not a medical device" in answer["notice"]
    # the raw body (curl --data-binary) gives the same answer
    raw = api.post("/api/v1/predict", content=data, headers={"content-type": "image/png"})
    assert raw.json()["probabilities"] == answer["probabilities"]


def test_explanation_is_the_model_input_and_the_map_over_the_upload(api):
    answer = upload(api, png(2, (80, 60)), query="?explain=true").json()
    ex = answer["explanation"]
    assert ex["method"] == "grad-cam" and ex["target"] == answer["prediction"]
    shown = {k: Image.open(io.BytesIO(base64.b64decode(ex[k]))) for k in ex if k.endswith("png")}
    assert shown["input_png"].size == (50, 50)  # what the model saw
    assert shown["overlay_png"].size == (60, 80)  # the upload: 80 high, 60 wide
    assert {image.mode for image in shown.values()} == {"RGB"}


def test_dicom_upload_never_returns_identifiers(api):
    data = dicom_bytes(PatientName="Roe^Richard", PatientID="ID-98765")
    response = upload(api, data, "scan.dcm")
    assert response.status_code == 200
    assert response.json()["dicom"]["PatientIdentityRemoved"] == "YES"
    assert response.json()["dicom"]["Modality"] == "MG"
    # the test bundle learnt from histology: a mammogram's answer comes with why it does not apply
    assert response.json()["warning"].startswith("DICOM Modality MG (mammography), but the model")
    assert "histopathology" in response.json()["warning"]
    for secret in ("Roe", "ID-98765", "ACC-777", "St Example", "19700101", "Smith"):
        assert secret not in response.text


def truncated_png() -> bytes:
    return png(3)[:200]


def bomb_png(side: int = 60_000) -> bytes:
    """A tiny file declaring side x side pixels (3.6 gigapixels)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


BAD_UPLOADS = [
    (b"just some text, not an image", "notes.png", 415, "not an image"),
    (truncated_png(), "cut.png", 400, "truncated"),
    (b"", "empty.png", 400, "empty"),
    (bomb_png(), "bomb.png", 413, "decompression bomb"),
    (dicom_bytes(with_pixels=False), "nopixels.dcm", 415, "without pixel data"),
    (png(0, (1, 1)), "dot.png", 422, "1x1 pixels is too small to classify"),
    (png(0, (300, 7)), "sliver.png", 422, "7x300 pixels is too small"),
]


# named by file: the DICOM's UIDs are new in every process, and test ids must not be (pytest-xdist
# workers collect the same ids or refuse to run)
@pytest.mark.parametrize(
    ("data", "name", "status", "words"), BAD_UPLOADS, ids=[case[1] for case in BAD_UPLOADS]
)
def test_bad_images_get_a_4xx_naming_the_problem(api, data, name, status, words):
    response = upload(api, data, name)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"] and name in response.json()["detail"]


def test_upload_limits_with_and_without_content_length(bundles):
    api = client(bundles, max_upload_mb=0.01)  # 10 KiB
    big = png(4, (200, 200))
    assert len(big) > 20_000
    assert upload(api, big).status_code == 413
    chunks = (big[i : i + 4096] for i in range(0, len(big), 4096))  # chunked: no length
    streamed = api.post("/api/v1/predict", content=chunks, headers={"content-type": "image/png"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]
    form = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + big * 4 + b"\r\n--XyZ--\r\n"
    )
    chunked_form = api.post(
        "/api/v1/predict",
        content=(form[i : i + 4096] for i in range(0, len(form), 4096)),
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert chunked_form.status_code == 413
    huge_json = (b'{"features": {"a": 1.0, "b": "' + b"x" * 200_000 + b'"}}',)
    tabular = api.post(
        "/api/v1/predict/tabular",
        content=iter(huge_json),
        headers={"content-type": "application/json"},
    )
    assert tabular.status_code == 413 and tabular.json()["code"] == "too_large"
    declared = api.post("/api/v1/predict/tabular", content=huge_json[0])
    assert declared.status_code == 413
    small_limit = client(bundles, max_pixels=1000)
    assert upload(small_limit, png(5, (50, 50))).status_code == 413


def test_request_shape_errors(api):
    assert api.post("/api/v1/predict", json={"x": 1}).status_code == 415
    no_file = api.post("/api/v1/predict", files={"other": ("a.png", png(), "image/png")})
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]
    unknown = upload(api, png(), query="?model=nope")
    assert unknown.status_code == 404 and "idc_cnn@" in unknown.json()["detail"]
    wrong_kind = upload(api, png(), query="?model=logreg")
    assert wrong_kind.status_code == 422 and wrong_kind.json()["code"] == "wrong_kind"
    # two images in one request: refused, not answered for the first alone
    two = [("file", ("a.png", png(0), "image/png")), ("file", ("b.png", png(1), "image/png"))]
    for path in ("/api/v1/predict", "/api/v1/predict/pair"):
        both = api.post(path, files=two)
        assert both.status_code == 422 and both.json()["code"] == "too_many_files", path
        assert "2 files named 'file'" in both.json()["detail"]
    # stacks and formats Pillow opens but breastcad does not read: 415 with the reason
    frames = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (10, 90, 200)]
    for fmt, words in (("TIFF", "3-page TIFF"), ("GIF", "a GIF image")):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
        stack = upload(api, buffer.getvalue(), f"stack.{fmt.lower()}")
        assert stack.status_code == 415 and words in stack.json()["detail"], stack.text


def test_tabular_prediction_and_field_errors(api, bundles, wdbc):
    row = dict(zip(wdbc.feature_names, map(float, wdbc.X[0]), strict=True))
    answer = api.post("/api/v1/predict/tabular", json={"features": row}).json()
    predictor = Predictor.from_bundle(bundles["tabular"])
    assert answer["p_malignant"] == pytest.approx(float(predictor.predict_proba(wdbc.X[:1])[0]))
    assert answer["prediction"] == ("malignant" if answer["p_malignant"] >= 0.5 else "benign")
    partial = dict(list(row.items())[:10])
    missing = api.post("/api/v1/predict/tabular", json={"features": partial})
    assert missing.status_code == 422 and "missing" in missing.json()["detail"]
    unknown = api.post("/api/v1/predict/tabular", json={"features": {**row, "shoe size": 9}})
    assert unknown.status_code == 422 and "shoe size" in unknown.json()["detail"]
    text = api.post("/api/v1/predict/tabular", json={"features": {**row, "mean radius": "big"}})
    assert text.status_code == 422 and "mean radius" in text.json()["detail"]
    for value in ("NaN", "Infinity", "1e400"):  # JSON extensions Python's parser accepts
        body = '{"features": {"mean radius": ' + value + "}}"
        answer = api.post(
            "/api/v1/predict/tabular", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422 and "finite" in answer.json()["detail"], value


def test_a_flip_tta_bundle_serves_the_averaged_answer(tmp_path):
    """The service predicts through the Predictor, so a bundle trained with `--tta flip`
    answers with the average of the upload and its mirror image, and says so."""
    from tests.conftest import make_image_bundle

    folder = make_image_bundle(tmp_path / "idc", test_time_augmentation="flip")
    api = TestClient(create_app(ServiceSettings(models=[folder])))
    assert api.get("/api/v1/models").json()[0]["test_time_augmentation"] == "flip"
    data = png(4)
    answer = upload(api, data).json()["probabilities"]
    expected = Predictor.from_bundle(folder).predict_image(decode_image(data)).probabilities
    assert answer == pytest.approx(expected, abs=1e-6)
    mirrored = io.BytesIO()
    Image.open(io.BytesIO(data)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored, "PNG")
    assert upload(api, mirrored.getvalue()).json()["probabilities"] == pytest.approx(
        answer, abs=1e-5
    )


def test_api_key_when_configured(bundles):
    api = client(bundles, api_key="s3cret")
    assert api.get("/healthz").status_code == 200
    assert api.get("/api/v1/models").status_code == 401
    assert api.get("/api/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
    assert upload(api, png()).status_code == 401
    assert api.get("/api/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_cors_off_by_default_and_on_when_configured(api, bundles):
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in api.get("/api/v1/models", headers=origin).headers
    allowed = client(bundles, cors_origins=["https://elsewhere.example"])
    headers = allowed.get("/api/v1/models", headers=origin).headers
    assert headers["access-control-allow-origin"] == "https://elsewhere.example"


def test_the_service_never_says_whether_a_model_learnt_from_an_upload(bundles, tmp_path):
    """A bundle that knows an image (its hashes: `predict` marks it) answers an upload of that
    image exactly as of any other: nothing in the response tells the uploader it was a
    training image."""
    from tests.conftest import with_training_hashes

    known = tmp_path / "known.png"
    known.write_bytes(png(4))
    bundle = with_training_hashes(bundles["image"], [known], tmp_path)
    rows = Predictor.from_bundle(bundle).predict_paths([known], progress=False, jobs=1)
    assert rows["seen_in_training"].tolist() == ["same"]  # the bundle does know it
    served = client(bundles, models=[bundle])
    answers = [upload(served, data) for data in (known.read_bytes(), png(5))]
    assert [a.status_code for a in answers] == [200, 200]
    keys = [set(a.json()) for a in answers]
    assert keys[0] == keys[1] and not any("seen" in k or "training" in k for k in keys[0])


def test_uploads_never_touch_disk_unless_configured(bundles, tmp_path, monkeypatch):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    big = png(6, (700, 700))  # > 1 MB: Starlette's own form parser would spool it to disk
    assert len(big) > 1_100_000
    assert upload(client(bundles), big).status_code == 200
    assert list(spool.iterdir()) == []
    kept = tmp_path / "kept"
    assert upload(client(bundles, store_uploads=kept), big, "Doe_Jane_MRN42.png").status_code == 200
    (stored,) = kept.iterdir()
    assert stored.read_bytes() == big and "Doe" not in stored.name and stored.suffix == ".png"
    # kept for this account alone, not for every user of a shared machine
    assert (kept.stat().st_mode & 0o777, stored.stat().st_mode & 0o777) == (0o700, 0o600)
    # a folder that cannot be written is refused at start (every upload was a 500)
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("x")
    with pytest.raises(ConfigError, match=r"--store-uploads .* cannot be written"):
        client(bundles, store_uploads=blocked / "uploads")


class FixedPredictor(Predictor):
    """A replaceable Predictor: the real bundle, fixed answers."""

    def predict_batch(self, pixels: np.ndarray, explain=None) -> list[ImagePrediction]:
        return [ImagePrediction(p, {"benign": 0.25, "idc": 0.75}, "idc") for p in pixels]


def test_predictor_is_replaceable_and_failures_are_500_without_details(bundles):
    app = create_app(ServiceSettings(models=[bundles["image"]]))
    from breastcad.bundle import load_bundle

    fixed = FixedPredictor(load_bundle(bundles["image"]))
    served = ServedModels([fixed])
    app.dependency_overrides[get_models] = lambda: served
    answer = upload(TestClient(app), png()).json()
    assert answer["probabilities"] == {"benign": 0.25, "idc": 0.75}

    class Broken(Predictor):
        def predict_batch(self, pixels, explain=None):
            raise RuntimeError("secret internals /home/patient-names")

    broken = ServedModels([Broken(fixed.bundle)])
    app.dependency_overrides[get_models] = lambda: broken
    response = upload(TestClient(app, raise_server_exceptions=False), png())
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert "secret" not in response.text


def test_serve_command_refuses_an_empty_key_variable(bundles, monkeypatch):
    from typer.testing import CliRunner

    from breastcad.cli import app

    monkeypatch.delenv("BREASTCAD_TEST_KEY", raising=False)
    args = ["serve", "--model", str(bundles["image"]), "--api-key-env", "BREASTCAD_TEST_KEY"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "BREASTCAD_TEST_KEY" in result.output


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL on corrupt TIFF tags
def test_mutated_files_never_get_a_500(api):
    """Flipped bytes, truncations and insertions in PNG, JPEG, TIFF and DICOM files: every
    answer is a prediction or a 4xx (600 variants were tried while writing this; 120 here)."""
    rng = np.random.default_rng(0)
    seeds = {"png": png(1, (40, 30)), "dcm": dicom_bytes()}
    for fmt, array in (
        ("JPEG", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)),
        ("TIFF", rng.integers(0, 65535, (30, 40), dtype=np.uint16)),
    ):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, fmt)
        seeds[fmt.lower()] = buffer.getvalue()
    statuses = set()
    for suffix, data in seeds.items():
        for i in range(30):
            d = bytearray(data)
            if i % 3 == 0:
                for _ in range(rng.integers(1, 20)):
                    d[rng.integers(0, len(d))] = rng.integers(0, 256)
            elif i % 3 == 1:
                d = d[: rng.integers(1, len(d))]
            else:
                at = rng.integers(0, len(d))
                d[at:at] = rng.bytes(int(rng.integers(1, 200)))
            status = upload(api, bytes(d), f"f.{suffix}").status_code
            assert status < 500, (suffix, i)
            statuses.add(status)
    assert 200 in statuses and 400 in statuses


def test_model_card_metrics_from_image_and_tabular_bundles():
    from breastcad.serve.answers import metrics_table

    tabular = {
        "protocol": "10 x repeated stratified 10-fold cross-validation",
        "note": "estimated for the same procedure",
        "summary": {"roc_auc": {"mean": 0.99, "sd": 0.01, "ci_low": 0.98, "ci_high": 1.0}},
    }
    table, how = metrics_table(tabular)
    assert table == {"roc_auc": {"value": 0.99, "ci_low": 0.98, "ci_high": 1.0}}
    assert how.startswith("10 x repeated")
    image = {
        "macro_auc": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95},
        "n_groups": {"value": None},
    }
    table, how = metrics_table(image)
    assert list(table) == ["macro_auc"] and "test set" in how


def test_a_pair_of_breasts_is_scored_each_against_the_other(bundles, tmp_path):
    """`/api/v1/predict/pair`: each image alone as `/predict` gives it, and each against the
    other with the bundle's bilateral fit, the same numbers as the Predictor's; a model
    without a fit, a missing `other` and a raw body are refused with 4xx naming the problem."""
    from tests.conftest import make_image_bundle

    fit = {"slope": 2.0, "intercept": -0.5, "threshold": 0.4, "chosen_on": "the validation part"}
    paired = make_image_bundle(tmp_path / "paired", seed=1, bilateral=fit)  # its own id
    api = client(bundles, models=[paired, bundles["image"]])
    key = Predictor.from_bundle(paired).bundle.model_id
    first, second = png(11), png(12)
    files = {"file": ("l.png", first, "image/png"), "other": ("r.png", second, "image/png")}
    response = api.post(f"/api/v1/predict/pair?model={key}", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold_bilateral"] == 0.4 and "validation part" in body["bilateral_fit"]
    predictor = Predictor.from_bundle(paired)
    alone = [upload(api, data, query=f"?model={key}").json() for data in (first, second)]
    for side, single in zip(("image", "other"), alone, strict=True):
        assert body[side]["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)
        assert body[side]["prediction"] == single["prediction"]
    probs = [np.array([[a["probabilities"][c] for c in predictor.classes]]) for a in alone]
    expected = predictor.pair_probability(probs[0], probs[1])[0]
    assert body["image"]["p_bilateral"] == pytest.approx(expected, abs=1e-6)
    # the score is antisymmetric: the two logits add to twice the intercept
    logits = [
        np.log(body[s]["p_bilateral"] / (1 - body[s]["p_bilateral"])) for s in ("image", "other")
    ]
    assert sum(logits) == pytest.approx(2 * fit["intercept"], abs=1e-6)
    for side in ("image", "other"):
        flagged = body[side]["p_bilateral"] >= 0.4
        assert body[side]["prediction_bilateral"] == ("idc" if flagged else "benign")
    assert body["image"]["filename"] == "l.png" and body["other"]["filename"] == "r.png"
    assert body["image"]["explanation"] is None  # only when asked for
    shown = api.post(f"/api/v1/predict/pair?model={key}&explain=true", files=files).json()
    for side in ("image", "other"):
        assert shown[side]["p_bilateral"] == pytest.approx(body[side]["p_bilateral"], abs=1e-6)
        overlay = base64.b64decode(shown[side]["explanation"]["overlay_png"])
        assert Image.open(io.BytesIO(overlay)).size == (50, 50)  # the upload's own geometry
    quiet = client(bundles, models=[paired], explain=False)
    off = quiet.post("/api/v1/predict/pair?explain=true", files=files)
    assert off.status_code == 422 and off.json()["code"] == "explain_off"

    plain = Predictor.from_bundle(bundles["image"]).bundle.model_id
    refused = api.post(f"/api/v1/predict/pair?model={plain}", files=files)
    assert refused.status_code == 422 and "no bilateral fit" in refused.json()["detail"]
    one = api.post(f"/api/v1/predict/pair?model={key}", files={"file": files["file"]})
    assert one.status_code == 422 and "'other'" in one.json()["detail"]
    raw = api.post(
        f"/api/v1/predict/pair?model={key}", content=first, headers={"content-type": "image/png"}
    )
    assert raw.status_code == 415 and "'file' and 'other'" in raw.json()["detail"]
    assert "/api/v1/predict/pair" in api.get("/openapi.json").json()["paths"]


def test_a_pair_of_mammograms_that_is_not_one_womans_two_breasts_is_refused(bundles, tmp_path):
    """Two DICOM mammograms say whose which breast they are: a pair of one woman's left and
    right is scored, two women or the same side twice get 422 `not_a_pair`, and the
    message names neither patient."""
    from tests.conftest import make_image_bundle

    fit = {"slope": 1.0, "intercept": 0.0, "threshold": 0.5, "chosen_on": "the validation part"}
    paired = make_image_bundle(tmp_path / "paired", seed=2, bilateral=fit)
    api = client(bundles, models=[paired])

    def post(first: bytes, second: bytes):
        files = {
            "file": ("a.dcm", first, "application/dicom"),
            "other": ("b.dcm", second, "application/dicom"),
        }
        return api.post("/api/v1/predict/pair", files=files)

    left, right = dicom_bytes(laterality="L"), dicom_bytes(laterality="R")
    scored = post(left, right)
    assert scored.status_code == 200, scored.text
    assert 0 < scored.json()["image"]["p_bilateral"] < 1
    assert "MRN-0042-SECRET" not in scored.text  # headers shown de-identified
    stranger = dicom_bytes(laterality="R", PatientID="MRN-0099-OTHER")
    for first, second, problem in (
        (left, stranger, "different women (by their DICOM header)"),
        (right, stranger, "different women"),
        (left, left, "both images are of the left breast"),
    ):
        refused = post(first, second)
        assert refused.status_code == 422 and refused.json()["code"] == "not_a_pair"
        assert problem in refused.json()["detail"]
        assert "MRN" not in refused.text
