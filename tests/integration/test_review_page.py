"""The clerical review page, end to end: real broker, real worker, headless Chromium (Selenium).

Two records score in the review band; the page sends a browser that is not signed in to the sign-in
page; the reviewer signs in with their token; the page shows the pair side by side with the score
waterfall; they click "Same person"; the linker applies the decision, recorded under the name of
the credential, and the two records become one citizen. Screenshots go to ``artifacts/screenshots/``
(CASELINK_ARTIFACTS to move them) for CI to keep.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from caselink.infra.topics import LINK_INPUT_TOPIC, person_events_topic
from caselink.schemas import default_serde
from confluent_kafka import Producer

from caselink.core.kafka import read_to_end
from caselink.core.settings import Settings
from caselink.demo import start_worker
from tests.events import encoded_person_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARTIFACTS = Path(os.environ.get("CASELINK_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
T0 = datetime(2026, 11, 1, tzinfo=UTC)
JAMES = {"given_names": "James", "family_name": "Smith", "date_of_birth": "1980-05-12", "sex": "M",
         "addresses": [{"lines": ["4 Elm Road"], "postcode": "LS1 1AA"}]}
JIM = {"given_names": "Jim", "family_name": "Smith", "date_of_birth": "1980-05-12", "sex": "M",
       "addresses": [{"lines": ["9 Oak Lane"], "postcode": "LS6 2BB"}]}


def get(port: int, path: str, token: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def post(port: int, path: str, body: dict, token: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (OSError, ValueError, KeyError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.3)


@pytest.fixture
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are required (infra/ensure-chromium.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_accepting_a_possible_match_makes_one_citizen(pipeline_settings: Settings, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    serde = default_serde()
    producer = Producer({"bootstrap.servers": pipeline_settings.kafka.bootstrap_servers})
    for agency, rid, person in (("health", "H-JS", JAMES), ("police", "P-JS", JIM)):
        producer.produce(person_events_topic(agency), encoded_person_event(agency, rid, person, at=T0),
                         key=f"{agency}:{rid}".encode())
    assert producer.flush(10) == 0

    tokens = {"a.reviewer": secrets.token_urlsafe(24), "a.reader": secrets.token_urlsafe(24)}
    os.environ["CASELINK_WEB__TOKENS"] = json.dumps({"A. Reviewer": {"role": "reviewer", "token": tokens["a.reviewer"]},
                                                     "A. Reader": {"role": "reader", "token": tokens["a.reader"]}})
    try:
        worker = start_worker(pipeline_settings, data_dir=tmp_path / "worker")
    finally:
        del os.environ["CASELINK_WEB__TOKENS"]
    reader, reviewer = tokens["a.reader"], tokens["a.reviewer"]
    try:
        wait_for(lambda: get(worker.port, "/review", reader)["open"] == 1, 90)
        before = {get(worker.port, "/records/health/H-JS", reader)["citizen_id"],
                  get(worker.port, "/records/police/P-JS", reader)["citizen_id"]}
        assert len(before) == 2
        pair = {"left": "health:H-JS", "right": "police:P-JS", "same_person": True}
        assert post(worker.port, "/review/decide", {**pair, "by": "Someone Else"}, None) == 401
        assert post(worker.port, "/review/decide", pair, reader) == 403  # a reader may look, not decide

        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        assert browser.current_url.endswith("/login?next=/review/ui")  # not signed in: the sign-in page
        browser.find_element(By.ID, "token").send_keys("not-a-token")
        browser.find_element(By.ID, "sign-in").click()
        error = WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.ID, "error")))
        assert "not known" in error.text
        browser.save_screenshot(str(shots / "review-0-sign-in.png"))
        browser.find_element(By.ID, "token").send_keys(reviewer)
        browser.find_element(By.ID, "sign-in").click()
        WebDriverWait(browser, 15).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".pair")))
        assert browser.current_url.endswith("/review/ui")
        assert browser.find_element(By.ID, "reviewer").text == "A. Reviewer"  # from the credential

        card = browser.find_element(By.CSS_SELECTOR, ".pair")
        assert card.get_attribute("data-left") == "health:H-JS" and card.get_attribute("data-right") == "police:P-JS"
        assert "James Smith" in card.text and "Jim Smith" in card.text
        bars = card.find_elements(By.CSS_SELECTOR, "svg.waterfall rect.bar")
        assert {b.get_attribute("data-field") for b in bars} >= {"prior", "given_name", "date_of_birth",
                                                                  "match weight"}
        browser.save_screenshot(str(shots / "review-1-queue.png"))

        card.find_element(By.CSS_SELECTOR, "button.accept").click()
        WebDriverWait(browser, 15).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".pair .status"),
                                                                          "accepted"))
        browser.save_screenshot(str(shots / "review-2-accepted.png"))

        cid = wait_for(lambda: (a := get(worker.port, "/records/health/H-JS", reader)["citizen_id"]) ==
                       get(worker.port, "/records/police/P-JS", reader)["citizen_id"] and a, 60)
        assert cid in before  # the older citizen survives the merge
        wait_for(lambda: get(worker.port, "/review", reader)["open"] == 0, 30)
        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        assert browser.find_element(By.ID, "empty").text == "Nothing to review."
        browser.save_screenshot(str(shots / "review-3-empty.png"))
    finally:
        worker.stop()
    serde = default_serde()
    verdicts = [serde.decode(m.value())[1] for m in read_to_end(pipeline_settings, [LINK_INPUT_TOPIC])
                if serde.decode(m.value())[0] == "ReviewDecision"]
    assert [v["decided_by"] for v in verdicts] == ["A. Reviewer"]  # one decision, under the credential's name
    log = (tmp_path / "worker" / "worker.log").read_text()
    assert "refused POST /review/decide" in log and "refused GET /review/ui" in log


def test_the_web_api_serves_https_with_a_certificate(pipeline_settings: Settings, tmp_path: Path,
                                                     monkeypatch) -> None:
    """Optional TLS: with a certificate the worker's web API answers HTTPS (and `caselink status` reads it)."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("CASELINK_WEB__TLS_CERTFILE", str(cert))
    monkeypatch.setenv("CASELINK_WEB__TLS_KEYFILE", str(key))
    worker = start_worker(pipeline_settings, data_dir=tmp_path / "worker")
    try:
        context = ssl.create_default_context(cafile=str(cert))

        def https(path: str, token: str | None = None) -> dict:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            request = urllib.request.Request(f"https://127.0.0.1:{worker.port}{path}", headers=headers)
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return json.loads(response.read())

        assert wait_for(lambda: https("/health")["status"] == "ok", 90)
        assert https("/review", worker.tokens["reader"])["open"] == 0
        with pytest.raises(OSError):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health", timeout=5)
        from caselink.core.settings import Settings as Fresh
        from caselink.ops import worker_health

        settings = Fresh(kafka=pipeline_settings.kafka, worker={"web_port": worker.port})
        assert worker_health(settings)["status"] == "ok"
    finally:
        worker.stop()
