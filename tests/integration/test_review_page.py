"""The review screen, end to end: real broker, real worker, headless Chromium (Selenium).

Two pairs wait for a person (a grandfather and grandson of one name and address; James and Jim
Smith); a caseworker signs in, reads them in plain language, filters, moves by keyboard, says "not
sure" with a note, decides, undoes and decides again, opens the numbers and the charts. The linker
applies each decision in order, recorded under the credential's name. Screenshots go to
``artifacts/screenshots/`` (CASELINK_ARTIFACTS to move them) for CI to keep.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
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
from tests.waiting import wait_for

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


NHS_GRANDFATHER = "9400001002"  # valid check digits
GRANDFATHER = {"given_names": "George", "family_name": "Richardson", "date_of_birth": "1942-03-02", "sex": "M",
               "identifiers": {"nhs_number": NHS_GRANDFATHER},
               "addresses": [{"lines": ["14 Moor Lane"], "locality": "Leeds", "postcode": "LS6 3QT"}]}
GRANDSON = {"given_names": "GEORGE", "family_name": "RICHARDSON", "date_of_birth": "2016-07-19", "sex": "M",
            "addresses": [{"lines": ["14 Moor Ln"], "postcode": "LS63QT"}]}
CASES = {"health": [{"case_id": "A1", "case_type": "outpatient", "status": "open", "opened_at": "2026-10-02",
                     "closed_at": None, "sensitivity": "normal"}],
         "education": [{"case_id": "S1", "case_type": "school place", "status": "open", "opened_at": "2026-09-01",
                        "closed_at": None, "sensitivity": "normal"}]}


def publish_people(settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    people = (("health", "H-GR1", GRANDFATHER), ("health", "H-GR3", {**GRANDFATHER, "phones": ["07700 900123"]}),
              ("education", "E-GR2", GRANDSON), ("health", "H-JS", JAMES), ("police", "P-JS", JIM))
    for agency, rid, person in people:
        producer.produce(person_events_topic(agency), encoded_person_event(
            agency, rid, person, at=T0, event_id=f"{agency}-{rid}", cases=CASES.get(agency, [])),
            key=f"{agency}:{rid}".encode())
    assert producer.flush(10) == 0


def test_a_caseworker_settles_possible_matches_by_keyboard_and_mouse(pipeline_settings: Settings, browser,
                                                                      tmp_path: Path) -> None:
    """The review screen in headless Chromium: sign in; the pairs in plain language with the conflicts
    first; filters by agency and strength; j/k between pairs; "not sure" with a note; decide by key;
    undo by button; decide again; the numbers one click away; the charts it links to render; every
    step recorded under the signed-in name. Screenshots in artifacts/screenshots/review-*.png."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    publish_people(pipeline_settings)
    tokens = {"a.reviewer": secrets.token_urlsafe(24), "a.reader": secrets.token_urlsafe(24)}
    os.environ["CASELINK_WEB__TOKENS"] = json.dumps({"A. Reviewer": {"role": "reviewer", "token": tokens["a.reviewer"]},
                                                     "A. Reader": {"role": "reader", "token": tokens["a.reader"]}})
    try:
        worker = start_worker(pipeline_settings, data_dir=tmp_path / "worker")
    finally:
        del os.environ["CASELINK_WEB__TOKENS"]
    reader, reviewer = tokens["a.reader"], tokens["a.reviewer"]
    wait = WebDriverWait(browser, 20)

    def current() -> object:
        return browser.find_element(By.CSS_SELECTOR, ".pair.current")

    def status_of(card_id: str, text: str) -> None:
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, f"#{card_id} .status"), text))

    try:
        wait_for(lambda: get(worker.port, "/review", reader)["open"] == 2, 90)
        smiths = {"left": "health:H-JS", "right": "police:P-JS", "same_person": True}
        assert post(worker.port, "/review/decide", {**smiths, "by": "Someone Else"}, None) == 401
        assert post(worker.port, "/review/decide", smiths, reader) == 403  # a reader may look, not decide

        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        assert browser.current_url.endswith("/login?next=/review/ui")  # not signed in: the sign-in page
        browser.find_element(By.ID, "token").send_keys("not-a-token")
        browser.find_element(By.ID, "sign-in").click()
        assert "not known" in wait.until(ec.presence_of_element_located((By.ID, "error"))).text
        browser.save_screenshot(str(shots / "review-0-sign-in.png"))
        browser.find_element(By.ID, "token").send_keys(reviewer)
        browser.find_element(By.ID, "sign-in").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".pair.current")))
        assert browser.find_element(By.ID, "reviewer").text == "A. Reviewer"  # from the credential
        assert browser.find_element(By.ID, "open-count").text == "2"

        # The strongest pair first: the grandfather and grandson, the age gap called out first.
        george = current()
        assert {george.get_attribute("data-left"), george.get_attribute("data-right")} == {"health:H-GR1",
                                                                                          "education:E-GR2"}
        assert george.find_element(By.CSS_SELECTOR, ".conflicts").text.startswith(
            "Watch out:\nBorn 74 years apart: 19 July 2016 and 2 March 1942.")  # first record's, then second's
        assert "Same first name: GEORGE / George, written differently." in george.text, george.text
        assert "that these two records are the same person" in george.text
        assert "Already joined to 1 other record(s) as one person" in george.text  # H-GR3, the same man
        assert "school place" in george.text and "outpatient" in george.text
        assert "match weight" not in george.text.lower() and "prior" not in george.text.lower()
        browser.save_screenshot(str(shots / "review-1-queue.png"))

        george.find_element(By.CSS_SELECTOR, "details summary").click()  # the numbers, one click away
        bars = george.find_elements(By.CSS_SELECTOR, "svg.waterfall rect.bar")
        assert {b.get_attribute("data-field") for b in bars} >= {"starting point", "first name", "date of birth",
                                                                  "family rule", "total"}
        assert all(b.size["width"] >= 1 for b in bars)
        browser.save_screenshot(str(shots / "review-2-numbers.png"))
        george.find_element(By.CSS_SELECTOR, "details summary").click()

        # Filters, in the page.
        Select(browser.find_element(By.ID, "filter-agency")).select_by_value("police")
        shown = [c for c in browser.find_elements(By.CSS_SELECTOR, ".pair") if c.is_displayed()]
        assert [c.get_attribute("data-right") for c in shown] == ["police:P-JS"]
        assert browser.find_element(By.ID, "shown-count").text == "1"
        browser.save_screenshot(str(shots / "review-3-filtered.png"))
        Select(browser.find_element(By.ID, "filter-agency")).select_by_value("")
        Select(browser.find_element(By.ID, "filter-strength")).select_by_value("strong")
        shown = [c for c in browser.find_elements(By.CSS_SELECTOR, ".pair") if c.is_displayed()]
        assert [c.get_attribute("id") for c in shown] == [george.get_attribute("id")]
        Select(browser.find_element(By.ID, "filter-strength")).select_by_value("")

        # The next pair by keyboard, and back.
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("j")
        smith = current()
        assert smith.get_attribute("data-right") == "police:P-JS"
        body.send_keys("k")
        assert current().get_attribute("id") == george.get_attribute("id")

        # Not sure needs a note; with one, the pair stays open and the next one comes up.
        body.send_keys("n")
        status_of(george.get_attribute("id"), "Write a note first")
        note = browser.switch_to.active_element
        note.send_keys("ask the school for the date of birth")
        note.send_keys("\ue00c")  # Escape: back to the page's keys
        body.send_keys("n")
        status_of(george.get_attribute("id"), "Marked not sure (A. Reviewer)")
        assert "A. Reviewer: not sure. “ask the school for the date of birth”" in george.text
        assert current().get_attribute("id") == smith.get_attribute("id")
        browser.save_screenshot(str(shots / "review-4-not-sure.png"))

        # Decide by key, undo by button, decide again.
        body.send_keys("s")
        status_of(smith.get_attribute("id"), "Decided: the same person (A. Reviewer).")
        assert browser.find_element(By.ID, "open-count").text == "1"
        browser.execute_script("arguments[0].scrollIntoView()", smith)
        browser.save_screenshot(str(shots / "review-5-decided.png"))
        smith.find_element(By.CSS_SELECTOR, "input.note").send_keys("wrong key: different addresses, check first")
        smith.find_element(By.CSS_SELECTOR, "button.undo").click()
        status_of(smith.get_attribute("id"), "Undone (A. Reviewer): the pair is open again.")
        assert browser.find_element(By.ID, "open-count").text == "2"
        browser.execute_script("arguments[0].scrollIntoView()", smith)
        browser.save_screenshot(str(shots / "review-6-undone.png"))
        smith.find_element(By.CSS_SELECTOR, "button.different").click()
        status_of(smith.get_attribute("id"), "Decided: different people (A. Reviewer).")

        # The linker applied them in order: the Smiths kept apart, the Georges still open, with the note.
        wait_for(lambda: get(worker.port, "/review", reader)["open"] == 1, 30)
        left_open = get(worker.port, "/review", reader)["items"][0]
        assert left_open["pair_key"] == "education:E-GR2|health:H-GR1"
        assert [n["note"] for n in left_open["notes"]] == ["ask the school for the date of birth"]
        assert (get(worker.port, "/records/health/H-JS", reader)["citizen_id"]
                != get(worker.port, "/records/police/P-JS", reader)["citizen_id"])
        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        assert browser.find_element(By.ID, "open-count").text == "1"
        assert "not sure. “ask the school for the date of birth”" in current().text

        # The charts it links to render in the browser.
        grandfather = current().find_element(By.CSS_SELECTOR, ".record[data-key='health:H-GR1'] a.cluster-link")
        grandfather.click()
        cluster = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.cluster")))
        assert len(cluster.find_elements(By.CSS_SELECTOR, "circle.record")) == 3  # two records, and the grandson
        assert cluster.find_elements(By.CSS_SELECTOR, "line.edge-link")
        assert cluster.find_elements(By.CSS_SELECTOR, "line.edge-review")
        assert browser.execute_script("return document.querySelector('svg.cluster').getBBox().width") > 100
        browser.save_screenshot(str(shots / "charts-citizen.png"))
        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        browser.find_element(By.ID, "charts-model").click()
        chart = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.mu-chart")))
        assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar")) > 10
        assert browser.execute_script("return document.querySelector('svg.mu-chart').getBBox().height") > 100
        browser.save_screenshot(str(shots / "charts-model.png"))
        browser.get(f"http://127.0.0.1:{worker.port}/charts/live")
        histogram = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.weights-histogram")))
        assert histogram.find_elements(By.CSS_SELECTOR, "rect.bin")
        assert len(histogram.find_elements(By.CSS_SELECTOR, "line.threshold")) == 2
        cells = browser.find_elements(By.CSS_SELECTOR, "svg.completeness rect.cell")
        assert {c.get_attribute("data-agency") for c in cells} == {"health", "education", "police"}
        assert browser.execute_script("return document.querySelector('svg.completeness').getBBox().width") > 300
        browser.save_screenshot(str(shots / "charts-live.png"))
    finally:
        worker.stop()
    serde = default_serde()
    verdicts = [serde.decode(m.value())[1] for m in read_to_end(pipeline_settings, [LINK_INPUT_TOPIC])
                if serde.decode(m.value())[0] == "ReviewDecision"]
    assert [(v["decided_by"], v["action"], v["same_person"] if v["action"] is None else None) for v in verdicts] == [
        ("A. Reviewer", "not_sure", None), ("A. Reviewer", None, True), ("A. Reviewer", "undo", None),
        ("A. Reviewer", None, False)]
    assert verdicts[2]["reason"] == "wrong key: different addresses, check first"
    log = (tmp_path / "worker" / "worker.log").read_text()
    assert "refused POST /review/decide" in log and "refused GET /review/ui" in log
    assert log.count("review decision ") == 4


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
