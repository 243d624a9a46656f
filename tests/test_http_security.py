"""The server facing a hostile network, over real HTTP on loopback: the demo reads no server file, API
keys and scopes, the demo's login, cross-site writes and DNS rebinding, CORS, the write rate limit, body
size and time limits, bounded ids, one error shape, and no server paths in answers."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder
from serve_fixtures import encode, make_bundle, noise, solid, write_image
from serve_http import ServerProcess, file_data, files, gradio_call, png, served

from distilshot.core.manifest import load_manifest
from distilshot.demo.app import mount_demo
from distilshot.errors import DistilshotError
from distilshot.serve.api import create_app
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.security import ApiKeys, RateLimiter, Security

RED, BLUE = (255, 0, 0), (0, 0, 255)
READ_KEY = "read-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
OTHER_ADMIN_KEY = "admin-key-two-0123456789"
KEYS_TEXT = f"# test keys\nread:{READ_KEY}\nadmin:{ADMIN_KEY}\nadmin:{OTHER_ADMIN_KEY}\n"
DISTILSHOT = Path(sys.executable).parent / "distilshot"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def dump(store: Path) -> list[str]:
    with sqlite3.connect(store) as conn:
        return list(conn.iterdump())


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def classifier(bundle, tmp_path):
    with FewShotClassifier(bundle, tmp_path / "s.db") as classifier:
        classifier.register("red", [png(RED), png((240, 0, 0))])
        yield classifier


@pytest.fixture
def open_api(classifier):
    """The default app (no keys, loopback); yields a client."""
    with served(create_app(classifier)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.fixture
def keyed_api(classifier):
    security = Security(keys=ApiKeys.parse(KEYS_TEXT, "test"), writes_per_minute=None)
    with (
        served(create_app(classifier, security=security)) as url,
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        yield c


# -- the demo reads no server file ------------------------------------------------------------------


@pytest.fixture
def demo(bundle, tmp_path):
    """The API with the demo mounted, no keys; yields (client, classifier)."""
    with FewShotClassifier(bundle, tmp_path / "demo.db") as classifier:
        app = create_app(classifier, home="/demo/")
        mount_demo(app, classifier)
        with served(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client, classifier


def upload(client: httpx.Client, name: str, data: bytes) -> str:
    r = client.post("/demo/gradio_api/upload", files=[("files", (name, data, "image/png"))])
    assert r.status_code == 200, r.text
    return r.json()[0]


def test_demo_events_read_no_file_outside_their_uploads(demo, tmp_path):
    client, classifier = demo
    secret = write_image(tmp_path / "private" / "secret.png", solid((1, 2, 3)))
    # a path anywhere on the server: Gradio's own check, which mounting had left off, refuses it
    event, _ = gradio_call(client, "register", ["stolen", [file_data(secret)]])
    assert event == "error"
    event, _ = gradio_call(client, "classify", [file_data(secret), None])
    assert event == "error"
    # a file in Gradio's upload folder that this process never received (another app's upload):
    # Gradio lets it through, the demo does not
    foreign = write_image(Path(get_upload_folder()) / "not-ours" / "foreign.png", solid((4, 5, 6)))
    event, out = gradio_call(client, "register", ["foreign", [file_data(foreign)]])
    assert event == "complete" and "foreign.png: not a file uploaded to this demo" in out[-1]
    event, out = gradio_call(client, "classify", [file_data(foreign), None])
    assert event == "complete" and "not a file uploaded to this demo" in out[0]
    assert classifier.classes() == []
    # what the page does, upload and then name the upload, works
    uploaded = upload(client, "mine.png", png(RED))
    event, out = gradio_call(client, "register", ["mine", [file_data(uploaded)]])
    assert event == "complete" and "registered **mine** with 1 image" in out[-1]
    event, out = gradio_call(client, "classify", [file_data(upload(client, "q.png", png(RED))), None])
    assert event == "complete" and out[0] == "Answer: mine"


def test_demo_sketchpad_reads_no_server_file(bundle, tmp_path):
    replace(load_manifest(bundle), dataset="omniglot").save(bundle)  # the demo offers sketchpads
    secret = write_image(tmp_path / "private" / "secret.png", solid((1, 2, 3)))
    with FewShotClassifier(bundle, tmp_path / "d.db") as classifier:
        app = create_app(classifier, home="/demo/")
        mount_demo(app, classifier)
        with served(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            value = {"background": None, "layers": [], "composite": file_data(secret)}
            event, _ = gradio_call(client, "add_drawing", [value])
            assert event == "error"


# -- API keys and scopes ----------------------------------------------------------------------------


def test_keys_parse_with_clear_errors_that_never_show_the_key():
    keys = ApiKeys.parse(KEYS_TEXT, "keys.txt")
    assert len(keys) == 3 and "key-0123" not in repr(keys)
    assert keys.check(READ_KEY) == ("read", 0) and keys.check(OTHER_ADMIN_KEY) == ("admin", 2)
    assert keys.check(READ_KEY + "x") is None and keys.check("") is None
    assert ApiKeys.parse(f"read:{READ_KEY}, admin:{ADMIN_KEY}", "env").check(ADMIN_KEY) == ("admin", 1)
    short = "tooshort"
    for text, match in [
        (f"write:{READ_KEY}", "entry 1: expected read:KEY or admin:KEY"),
        (READ_KEY, "expected read:KEY"),
        (f"read:{READ_KEY}\nadmin:{short}", "entry 2: a key must be at least 16 characters"),
        (f"read:{READ_KEY} x", "at least 16 characters"),  # no spaces inside a key
        (f"read:{READ_KEY}\nadmin:{READ_KEY}", "given twice"),
        ("# only a comment\n\n", "holds no API keys"),
    ]:
        with pytest.raises(DistilshotError, match=match) as raised:
            ApiKeys.parse(text, "keys.txt")
        assert READ_KEY not in str(raised.value) and short not in str(raised.value)
    with pytest.raises(DistilshotError, match="not both"):
        ApiKeys.load(Path("keys.txt"), {"DISTILSHOT_API_KEYS": f"read:{READ_KEY}"})
    assert ApiKeys.load(None, {}) is None


def test_routes_need_a_key_of_their_scope(keyed_api, classifier, tmp_path):
    client = keyed_api
    shot = classifier.shots("red")[0].id
    reads = [
        ("GET", "/v1/model", {}),
        ("GET", "/v1/classes", {}),
        ("GET", "/v1/classes/red", {}),
        ("GET", f"/v1/classes/red/shots/{shot}/image", {}),
        ("POST", "/v1/classify", {"files": files(("q.png", png(RED)))}),
    ]
    for method, path, extra in reads:
        missing = client.request(method, path, **extra)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", path
        assert missing.json()["error"] == "NotAuthenticated"
        wrong = client.request(method, path, headers=bearer(READ_KEY[:-1] + "X"), **extra)
        assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
        for key in (READ_KEY, ADMIN_KEY):
            assert client.request(method, path, headers=bearer(key), **extra).status_code == 200, path
    before = classifier.classes()
    writes = [
        ("POST", "/v1/classes", {"data": {"name": "blue"}, "files": files(("b.png", png(BLUE)))}),
        ("POST", "/v1/classes/red/shots", {"files": files(("r.png", png(RED)))}),
        ("DELETE", f"/v1/classes/red/shots/{shot}", {}),
        ("DELETE", "/v1/classes/red", {}),
        ("GET", "/v1/store/export", {}),
        ("POST", "/v1/store/import", {"files": {"store": ("x.db", b"whatever")}}),
    ]
    for method, path, extra in writes:
        assert client.request(method, path, **extra).status_code == 401, path
        refused = client.request(method, path, headers=bearer(READ_KEY), **extra)
        assert refused.status_code == 403 and "scope admin" in refused.json()["detail"], path
    assert classifier.classes() == before
    admin = bearer(ADMIN_KEY)
    created = client.post(
        "/v1/classes", headers=admin, data={"name": "blue"}, files=files(("b.png", png(BLUE)))
    )
    assert created.status_code == 201
    assert client.get("/v1/store/export", headers=admin).content.startswith(b"SQLite format 3\x00")
    assert client.delete("/v1/classes/blue", headers=admin).json() == {"removed": "blue"}
    assert client.get("/v1/health").status_code == 200  # liveness stays open
    spec = client.get("/v1/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"401", "403"} <= set(spec["paths"]["/v1/classes"]["post"]["responses"])


def test_the_demo_asks_for_a_login_and_admin_to_change_classes(bundle, tmp_path):
    keys = ApiKeys.parse(KEYS_TEXT, "test")
    with FewShotClassifier(bundle, tmp_path / "d.db") as classifier:
        app = create_app(classifier, home="/demo/", security=Security(keys=keys))
        mount_demo(app, classifier, keys=keys)
        with served(app) as url:
            with httpx.Client(base_url=url, timeout=60) as anonymous:
                assert anonymous.get("/demo/gradio_api/login_check").status_code == 401
                r = anonymous.post("/demo/gradio_api/call/register", json={"data": ["x", []]})
                assert r.status_code == 401
                for user, password in [("admin", READ_KEY), ("read", "not-a-key"), ("root", ADMIN_KEY)]:
                    r = anonymous.post("/demo/login", data={"username": user, "password": password})
                    assert r.status_code == 400, (user, r.text)
            with (
                httpx.Client(base_url=url, timeout=60) as reader,
                httpx.Client(base_url=url, timeout=60) as admin,
            ):
                r = reader.post("/demo/login", data={"username": "read", "password": ADMIN_KEY})
                assert r.status_code == 200  # admin implies read
                red = [file_data(upload(reader, "r.png", png(RED)))]
                event, out = gradio_call(reader, "register", ["red", red])
                assert event == "complete" and "needs an admin key" in out[-1]
                assert classifier.classes() == []
                r = admin.post("/demo/login", data={"username": "admin", "password": ADMIN_KEY})
                assert r.status_code == 200
                red = [file_data(upload(admin, "r.png", png(RED)))]
                event, out = gradio_call(admin, "register", ["red", red])
                assert event == "complete" and "registered **red**" in out[-1]
                query = file_data(upload(reader, "q.png", png(RED)))
                event, out = gradio_call(reader, "classify", [query, None])
                assert event == "complete" and out[0] == "Answer: red"


# -- the serve command --------------------------------------------------------------------------------


def run_serve(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DISTILSHOT), "serve", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if k != "DISTILSHOT_API_KEYS"}, **(env or {})},
    )


def test_serve_on_a_public_address_needs_keys(bundle, tmp_path):
    common = ["--bundle", bundle, "--store", tmp_path / "s.db", "--no-demo", "--port", "0"]
    refused = run_serve(*common, "--host", "0.0.0.0")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: --host 0.0.0.0 is not a loopback address: give API keys")
    assert len(refused.stderr.strip().splitlines()) == 1
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(f"admin:{ADMIN_KEY}\nread:short\n")
    bad = run_serve(*common, "--host", "0.0.0.0", "--api-keys", keyfile)
    assert bad.returncode == 2 and "entry 2: a key must be at least 16" in bad.stderr
    assert ADMIN_KEY not in bad.stderr
    keyfile.write_text(KEYS_TEXT)
    both = run_serve(*common, "--api-keys", keyfile, env={"DISTILSHOT_API_KEYS": f"read:{READ_KEY}"})
    assert both.returncode == 2 and "not both" in both.stderr

    server = ServerProcess(
        "--bundle", bundle, "--store", tmp_path / "s.db", "--no-demo", "--host", "0.0.0.0",
        "--allowed-host", "classes.example",
        env={"DISTILSHOT_API_KEYS": f"read:{READ_KEY},admin:{ADMIN_KEY}"},
    )  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/v1/classes").status_code == 401
            assert client.get("/v1/classes", headers=bearer(READ_KEY)).json() == []
            named = client.get("/v1/classes", headers={**bearer(READ_KEY), "Host": "classes.example"})
            assert named.status_code == 200
            assert client.get("/v1/health", headers={"Host": "evil.example"}).status_code == 400
            assert "server" not in client.get("/v1/health").headers  # no uvicorn banner
    finally:
        server.stop()
    assert READ_KEY not in "".join(server.output) and ADMIN_KEY not in "".join(server.output)

    open_server = ServerProcess(
        "--bundle", bundle, "--store", tmp_path / "s.db", "--no-demo", "--host", "0.0.0.0",
        "--insecure-no-auth",
    )  # fmt: skip
    try:
        assert "WARNING: no API keys" in "".join(open_server.output)
        assert httpx.get(f"{open_server.url}/v1/classes", timeout=60).status_code == 200
    finally:
        open_server.stop()


# -- cross-site requests and DNS rebinding -------------------------------------------------------------


def test_cross_site_writes_are_refused_and_change_nothing(open_api, classifier, tmp_path):
    client = open_api
    before = dump(tmp_path / "s.db")
    form = {"data": {"name": "blue"}, "files": files(("b.png", png(BLUE)))}
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{client.base_url.port + 1}"},  # another origin of this machine
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = client.post("/v1/classes", headers=headers, **form)
        assert r.status_code == 403, (headers, r.text)
        assert r.json()["error"] == "CrossSiteRequest"
    assert client.delete("/v1/classes/red", headers={"Origin": "http://evil.example"}).status_code == 403
    assert dump(tmp_path / "s.db") == before
    # reads and same-origin writes (the demo's) pass
    assert client.get("/v1/classes", headers={"Origin": "http://evil.example"}).status_code == 200
    own = {"Origin": f"http://127.0.0.1:{client.base_url.port}", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/v1/classes", headers=own, **form).status_code == 201


def test_a_key_lets_a_write_through_from_anywhere(keyed_api):
    r = keyed_api.post(
        "/v1/classes",
        headers={**bearer(ADMIN_KEY), "Origin": "http://tool.example"},
        data={"name": "blue"},
        files=files(("b.png", png(BLUE))),
    )
    assert r.status_code == 201


def test_dns_rebinding_other_host_names_are_refused(open_api):
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
        r = open_api.get("/v1/classes", headers={"Host": host})
        assert r.status_code == 400 and r.json()["error"] == "InvalidHost", host
    for host in ("localhost", "127.0.0.1:1234", "[::1]:80", "LOCALHOST"):
        assert open_api.get("/v1/classes", headers={"Host": host}).status_code == 200, host


def test_cors_is_off_unless_an_origin_is_allowed(open_api, classifier):
    simple = open_api.get("/v1/classes", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in open_api.options("/v1/classes", headers=preflight).headers
    security = Security(cors_origins=("https://app.example",))
    with served(create_app(classifier, security=security)) as url, httpx.Client(base_url=url) as client:
        allowed = client.get("/v1/classes", headers={"Origin": "https://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        asked = {"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"}
        assert (
            "DELETE"
            in client.options("/v1/classes/red", headers=asked).headers["access-control-allow-methods"]
        )
        other = client.get("/v1/classes", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with pytest.raises(DistilshotError, match="must look like https://host"):
        Security(cors_origins=("app.example",))


# -- rate limit, body size and time --------------------------------------------------------------------


def test_writes_are_rate_limited_per_key(classifier):
    security = Security(keys=ApiKeys.parse(KEYS_TEXT, "test"), writes_per_minute=2)
    with served(create_app(classifier, security=security)) as url, httpx.Client(base_url=url) as client:

        def add(key: str) -> httpx.Response:
            return client.post("/v1/classes/red/shots", headers=bearer(key), files=files(("r.png", png(RED))))

        assert [add(ADMIN_KEY).status_code for _ in range(2)] == [200, 200]
        limited = add(ADMIN_KEY)
        assert limited.status_code == 429 and limited.json()["error"] == "TooManyRequests"
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert add(OTHER_ADMIN_KEY).status_code == 200  # another key has its own bucket
        reads = [client.get("/v1/classes", headers=bearer(ADMIN_KEY)).status_code for _ in range(5)]
        assert reads == [200] * 5  # reads are not limited
    assert len(classifier.shots("red")) == 5


def test_token_bucket_refills():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second, 60 at most
    assert all(limiter.acquire("a") == 0 for _ in range(60))
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0
    now[0] = 2.5
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") == pytest.approx(0.5)


def content_length(response: bytes) -> int:
    """The Content-Length of a raw HTTP response (0 until its headers are complete)."""
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    lengths = [line.split(":", 1)[1] for line in head.split("\r\n") if line.startswith("content-length:")]
    return int(lengths[0]) if lengths else 0


def test_a_trickled_body_times_out(classifier):
    with served(create_app(classifier, security=Security(body_timeout_s=0.5))) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
            started = time.monotonic()
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < content_length(answer):
                chunk = sock.recv(65536)  # headers and body may come in separate packets
                if not chunk:
                    break
                answer += chunk
            answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and '"error":"RequestTimeout"' in answer
        assert time.monotonic() - started < 20


def test_body_limits_answer_in_the_error_shape(classifier):
    app = create_app(classifier, max_request_bytes=100_000, max_import_bytes=1000)
    with served(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        big = encode(noise((400, 400)))
        declared = client.post("/v1/classes", data={"name": "x"}, files=files(("big.png", big)))
        assert declared.status_code == 413 and declared.json()["error"] == "RequestTooLarge"

        def chunks():
            yield b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
            for _ in range(50):
                yield b"\x00" * 10_000

        streamed = client.post(
            "/v1/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert streamed.status_code == 413 and streamed.json()["error"] == "RequestTooLarge"
        store = client.post("/v1/store/import", files={"store": ("x.db", b"0" * 5000)})
        assert store.status_code == 413 and "1000 bytes" in store.json()["detail"]
        many = client.post("/v1/classify", files=files(*((f"{i}.png", b"x") for i in range(300))))
        assert many.status_code == 400 and many.json()["error"] == "BadRequest"
        assert "Too many files" in many.json()["detail"]


# -- ids, error shape, paths ---------------------------------------------------------------------------


def test_out_of_range_shot_ids_are_validation_errors(open_api, classifier):
    for shot in (2**63, 2**64 + 5, 0, -1):
        for method in ("GET", "DELETE"):
            path = f"/v1/classes/red/shots/{shot}" + ("/image" if method == "GET" else "")
            r = open_api.request(method, path)
            assert r.status_code == 422, (method, shot, r.text)
            assert r.json()["error"] == "ValidationError" and "shot_id" in r.json()["detail"]
    assert open_api.get(f"/v1/classes/red/shots/{2**63 - 1}/image").status_code == 404
    assert len(classifier.shots("red")) == 2


def test_framework_errors_have_the_documented_shape(open_api):
    invalid = open_api.post("/v1/classify", params={"top_k": 0}, files=files(("q.png", png(RED))))
    assert invalid.status_code == 422
    assert invalid.json() == {
        "detail": "query.top_k: Input should be greater than or equal to 1",
        "error": "ValidationError",
    }
    no_images = open_api.post("/v1/classes", data={"name": "x"})
    assert no_images.status_code == 422 and "images: Field required" in no_images.json()["detail"]
    unknown = open_api.get("/v1/nothing")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found", "error": "NotFound"}
    options = open_api.options("/v1/classes/red")
    assert options.status_code == 405 and options.json()["error"] == "MethodNotAllowed"
    assert options.headers["allow"] == "DELETE, GET"
    assert open_api.put("/v1/classes").headers["allow"] == "GET, POST"


def test_answers_name_no_server_path(open_api, bundle, tmp_path):
    model = open_api.get("/v1/model").json()
    assert model["bundle"] == "bundle" and model["store"] == "s.db"
    missing = open_api.get("/v1/classes/nope")
    assert (
        missing.status_code == 404
        and missing.json()["detail"] == "there is no class 'nope' in the store s.db"
    )
    junk = open_api.post("/v1/store/import", files={"store": ("x.db", b"not a store at all")})
    assert junk.status_code == 400 and "not a distilshot support store" in junk.json()["detail"]
    for r in (missing, junk, open_api.get("/v1/model")):
        assert str(tmp_path) not in r.text and "/tmp" not in r.text, r.text
