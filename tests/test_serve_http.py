"""The HTTP API over real HTTP on loopback: every route, its errors, and that a refusal changes nothing."""

from __future__ import annotations

import io
import re
import sqlite3
from dataclasses import replace

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_fixtures import encode, expected_embedding, make_bundle, noise, png_claiming, solid
from serve_http import files, png, served

from distilshot.core.manifest import Rejection, load_manifest
from distilshot.serve.api import create_app
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.images import MAX_BYTES

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def api(bundle, tmp_path):
    """A server on a store holding red (2 shots) and blue; yields (client, classifier, store path)."""
    store = tmp_path / "s.db"
    with (
        FewShotClassifier(bundle, store) as classifier,
        served(create_app(classifier)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        r = client.post(
            "/v1/classes",
            data={"name": "red"},
            files=files(("r1.png", png(RED)), ("r2.png", png((240, 0, 0)))),
        )
        assert r.status_code == 201
        assert (
            client.post("/v1/classes", data={"name": "blue"}, files=files(("b.png", png(BLUE)))).status_code
            == 201
        )
        yield client, classifier, store


def dump(store) -> list[str]:
    with sqlite3.connect(store) as conn:
        return list(conn.iterdump())


def test_health_model_and_openapi(api, bundle):
    client, classifier, _ = api
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["classes"] == 2
    assert health["fingerprint"] == load_manifest(bundle).fingerprint()
    model = client.get("/v1/model").json()
    assert model["method"] == "protonet" and model["engine"] == classifier.engine.name
    assert model["rejection"] is None and model["classes"] == 2
    spec = client.get("/v1/openapi.json").json()
    assert spec["info"]["title"] == "distilshot"
    assert {"/v1/classes", "/v1/classify", "/v1/store/export", "/v1/store/import"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert client.get("/v1/docs").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/v1/docs"


def test_classes_shots_and_images(api):
    client, _, _ = api
    assert [(c["name"], c["shots"]) for c in client.get("/v1/classes").json()] == [("blue", 1), ("red", 2)]
    detail = client.get("/v1/classes/red").json()
    assert [s["source"] for s in detail["shot_list"]] == ["r1.png", "r2.png"]
    image = client.get(f"/v1/classes/red/shots/{detail['shot_list'][0]['id']}/image")
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).getpixel((0, 0)) == RED

    added = client.post("/v1/classes/blue/shots", files=files(("b2.png", png((0, 0, 200)))))
    assert added.status_code == 200 and added.json()["shots"] == 2
    first = detail["shot_list"][0]["id"]
    assert client.delete(f"/v1/classes/red/shots/{first}").json()["shots"] == 1
    last = detail["shot_list"][1]["id"]
    refused = client.delete(f"/v1/classes/red/shots/{last}")
    assert refused.status_code == 400 and "remove the class instead" in refused.json()["detail"]
    assert client.delete("/v1/classes/red").json() == {"removed": "red"}
    assert [c["name"] for c in client.get("/v1/classes").json()] == ["blue"]


def test_classify_a_batch_with_top_k_and_nearest_shots(api):
    client, _, _ = api
    r = client.post(
        "/v1/classify",
        params={"top_k": 2, "nearest": True},
        files=files(("q1.png", png((238, 0, 0))), ("q2.png", png((0, 20, 230)))),
    )
    assert r.status_code == 200
    predictions = r.json()["predictions"]
    assert [p["image"] for p in predictions] == ["q1.png", "q2.png"]
    assert [p["label"] for p in predictions] == ["red", "blue"]
    assert all(not p["unknown"] and p["threshold"] is None for p in predictions)
    q = expected_embedding((238, 0, 0))
    first = predictions[0]["top_k"]
    assert [t["label"] for t in first] == ["red", "blue"]
    assert first[1]["logit"] == pytest.approx(-float(((q - expected_embedding(BLUE)) ** 2).sum()), rel=1e-4)
    assert sum(t["score"] for t in first) == pytest.approx(1.0)
    red_shots = {s["source"]: s["id"] for s in client.get("/v1/classes/red").json()["shot_list"]}
    assert first[0]["shot"] == red_shots["r2.png"]  # (240, 0, 0) is nearer to (238, 0, 0) than (255, 0, 0)
    one = client.post("/v1/classify", params={"top_k": 1}, files=files(("q.png", png(RED))))
    assert (
        len(one.json()["predictions"][0]["top_k"]) == 1
        and one.json()["predictions"][0]["top_k"][0]["shot"] is None
    )


def test_unknown_below_the_calibrated_threshold(bundle, tmp_path):
    manifest = load_manifest(bundle)
    # A threshold by hand: the tiny model's logit is minus the squared distance in its 4-d space.
    replace(manifest, rejection=Rejection(-1.0, 0.95, "by hand", 0.95, 0.9)).save(bundle)
    with FewShotClassifier(bundle, tmp_path / "s.db") as classifier, served(create_app(classifier)) as url:
        client = httpx.Client(base_url=url, timeout=60)
        client.post("/v1/classes", data={"name": "red"}, files=files(("r.png", png(RED))))
        client.post("/v1/classes", data={"name": "blue"}, files=files(("b.png", png(BLUE))))
        near, far = png((250, 0, 0)), png(GREEN)
        predictions = client.post("/v1/classify", files=files(("near", near), ("far", far))).json()[
            "predictions"
        ]
        assert [(p["label"], p["unknown"], p["threshold"]) for p in predictions] == [
            ("red", False, -1.0),
            (None, True, -1.0),
        ]
        assert predictions[1]["top_k"][0]["logit"] < -1.0  # still ranked, only the answer is withheld
        lenient = client.post("/v1/classify", params={"threshold": -1000}, files=files(("far", far))).json()
        assert lenient["predictions"][0]["label"] is not None
        assert client.get("/v1/model").json()["rejection"]["threshold"] == -1.0


def bad_images() -> list[tuple[str, bytes, str]]:
    valid = encode(noise())
    return [
        ("corrupt.png", valid[:30] + b"\x00" * 50 + valid[80:], "corrupt"),
        ("truncated.png", valid[: len(valid) // 2], "truncated"),
        ("notes.txt", b"just some text, not an image", "not an image"),
        ("bomb.png", png_claiming(20000, 20000), "decompression bomb"),
        ("tiny.png", encode(solid(RED, (4, 4))), "too small"),
        ("huge.png", valid + b"\x00" * (MAX_BYTES + 1 - len(valid)), "limit"),
    ]


@pytest.mark.parametrize(("name", "data", "match"), bad_images(), ids=[b[0] for b in bad_images()])
def test_bad_uploads_get_a_specific_error_and_change_nothing(api, name, data, match):
    client, _, store = api
    before = dump(store)
    good = ("good.png", png(GREEN))
    for route, form in (("/v1/classes", {"name": "green"}), ("/v1/classes/red/shots", None)):
        r = client.post(route, data=form, files=files(good, (name, data)))
        assert r.status_code == 422, r.text
        assert (
            r.json()["error"] == "ImageError" and name in r.json()["detail"] and match in r.json()["detail"]
        )
    r = client.post("/v1/classify", files=files(good, (name, data)))
    assert r.status_code == 422 and match in r.json()["detail"]
    assert dump(store) == before


def test_bad_names_and_requests_change_nothing(api):
    client, _, store = api
    before = dump(store)
    for name, status, match in [
        ("", 422, None),  # a required form field: FastAPI's validation error
        ("  ", 400, "must not be empty"),
        ("a/b", 400, "path separator"),
        ("tab\there", 400, "control characters"),
        ("red", 409, "already registered"),
    ]:
        r = client.post("/v1/classes", data={"name": name}, files=files(("g.png", png(GREEN))))
        assert r.status_code == status, (name, r.text)
        if match:
            assert match in r.json()["detail"]
    assert client.post("/v1/classes", data={"name": "green"}).status_code == 422  # no images
    assert client.post("/v1/classes/nope/shots", files=files(("g.png", png(GREEN)))).status_code == 404
    assert client.delete("/v1/classes/nope").status_code == 404
    assert client.get("/v1/classes/red/shots/999/image").status_code == 404
    assert (
        client.post("/v1/classify", params={"top_k": 0}, files=files(("q.png", png(RED)))).status_code == 422
    )
    assert dump(store) == before


def test_every_common_mode_and_exif_orientation(api):
    client, _, _ = api
    rgb = Image.new("RGB", (24, 24), (250, 0, 0))
    variants = {
        "grey.png": encode(rgb.convert("L")),
        "rgba.png": encode(rgb.convert("RGBA")),
        "palette.png": encode(rgb.convert("P")),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=95),
        "sixteen.png": encode(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)),
        "photo.jpg": encode(rgb, "JPEG", quality=95),
    }
    r = client.post("/v1/classify", files=files(*variants.items()))
    assert r.status_code == 200
    # grey images have r = g = b, which the tiny model puts nearer to blue's mean than to red's; the
    # colour ones must come out red.
    labels = {p["image"]: p["label"] for p in r.json()["predictions"]}
    assert all(labels[name] == "red" for name in ("rgba.png", "palette.png", "cmyk.jpg", "photo.jpg"))
    assert set(labels) == set(variants)


def test_exif_orientation_is_applied_before_the_model_sees_the_image(tmp_path):
    # A model that sees only the top half of its input, and a landscape photo whose left half is red,
    # top-right quarter green and bottom-right blue, tagged "rotate 90° clockwise for display": upright, its
    # top half is the red left half; read as stored, its top half is red and green.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(Image.new("RGB", (20, 20), RED), (0, 0))
    stored.paste(Image.new("RGB", (20, 10), GREEN), (20, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    upright = encode(stored.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95)
    sideways = encode(stored, "JPEG", quality=95)
    bundle = make_bundle(tmp_path / "top", "top")
    with (
        FewShotClassifier(bundle, tmp_path / "s.db") as classifier,
        served(create_app(classifier)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        for name, image in (("upright", upright), ("sideways", sideways)):
            assert (
                client.post("/v1/classes", data={"name": name}, files=files((name, image))).status_code == 201
            )
        r = client.post("/v1/classify", params={"top_k": 2}, files=files(("tagged", tagged)))
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["predictions"]
    assert prediction["label"] == "upright"
    logits = {t["label"]: t["logit"] for t in prediction["top_k"]}
    assert logits["upright"] > logits["sideways"] + 1.0  # JPEG noise moves these by far less


def test_request_body_limit_is_enforced_before_reading(bundle, tmp_path):
    with FewShotClassifier(bundle, tmp_path / "s.db") as classifier:
        app = create_app(classifier, max_request_bytes=100_000)
        with served(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            big = encode(noise((400, 400)))  # ~480 kB of incompressible pixels
            declared = client.post("/v1/classes", data={"name": "x"}, files=files(("big.png", big)))
            assert declared.status_code == 413

            def chunks():  # no Content-Length: the limit must stop a streamed body too
                yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
                for _ in range(50):
                    yield b"\x00" * 10_000

            streamed = client.post(
                "/v1/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
            )
            assert streamed.status_code == 413
            assert client.get("/v1/classes").json() == []


def test_store_export_and_import_across_models(api, tmp_path):
    client, _, _ = api
    exported = client.get("/v1/store/export")
    assert exported.status_code == 200 and exported.content.startswith(b"SQLite format 3\x00")
    other = make_bundle(tmp_path / "other", "two")  # another model: the import re-embeds
    with (
        FewShotClassifier(other, tmp_path / "o.db") as classifier,
        served(create_app(classifier)) as url,
        httpx.Client(base_url=url, timeout=60) as target,
    ):
        r = target.post("/v1/store/import", files={"store": ("classes.db", exported.content)})
        assert r.status_code == 201, r.text
        assert [(c["name"], c["shots"]) for c in r.json()] == [("blue", 1), ("red", 2)]
        q = target.post("/v1/classify", files=files(("q.png", png((250, 0, 0))))).json()
        assert q["predictions"][0]["label"] == "red"
        again = target.post("/v1/store/import", files={"store": ("classes.db", exported.content)})
        assert again.status_code == 409 and "already registered" in again.json()["detail"]
        junk = target.post("/v1/store/import", files={"store": ("x.db", b"not a store at all")})
        assert junk.status_code == 400 and "not a distilshot support store" in junk.json()["detail"]
        assert len(target.get("/v1/classes").json()) == 2


def test_docs_page_loads_only_local_assets_that_are_served(api):
    client, _, _ = api
    page = client.get("/v1/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    urls = [a or b for a, b in urls]
    assert len(urls) == 4 and "/v1/openapi.json" in urls  # script, style, icon, the document
    assert all(u.startswith("/v1/") for u in urls), urls  # no CDN: the page works offline
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200 and answer.content, url
    assert "http://" not in page.text and "https://" not in page.text


def test_access_log_has_one_line_per_request_without_secrets(api, caplog):
    client, _, _ = api
    with caplog.at_level("INFO", logger="distilshot.access"):
        client.get("/v1/classes?api_key=sekrit-in-query", headers={"Authorization": "Bearer sekrit-header"})
        client.get("/v1/classes/no%0Asuch")
        client.post("/v1/classify", files=files(("q.png", b"not an image")))
    lines = [r.getMessage() for r in caplog.records if r.name == "distilshot.access"]
    assert len(lines) == 3, lines
    assert re.fullmatch(r"127\.0\.0\.1 GET /v1/classes 200 \d+\.\d ms", lines[0]), lines[0]
    assert re.fullmatch(r"127\.0\.0\.1 GET /v1/classes/no\\nsuch 404 \d+\.\d ms", lines[1]), lines[1]
    assert re.fullmatch(r"127\.0\.0\.1 POST /v1/classify 422 \d+\.\d ms", lines[2]), lines[2]
    assert "sekrit" not in caplog.text


def test_the_server_logs_requests_on_stderr_and_says_when_it_stops(bundle, tmp_path):
    from serve_http import ServerProcess

    server = ServerProcess("--bundle", bundle, "--store", tmp_path / "s.db", "--no-demo")
    try:
        httpx.get(f"{server.url}/v1/health?token=sekrit", timeout=30)
    finally:
        server.process.terminate()
        rest, _ = server.process.communicate(timeout=30)
    output = "".join(server.output) + rest
    assert re.search(r"127\.0\.0\.1 GET /v1/health 200 \d+\.\d ms", output), output
    assert output.rstrip().endswith(f"stopped serving on {server.url}") and "sekrit" not in output
