"""The clerical review page, end to end: real broker, real worker, headless Chromium (Selenium).

Two records score in the review band; the page shows them side by side with the score waterfall;
a reviewer types their name and clicks "Same person"; the linker applies the decision and the two
records become one citizen. Screenshots go to ``artifacts/screenshots/`` (CASELINK_ARTIFACTS to
move them) for CI to keep.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from caselink.infra.topics import person_events_topic
from caselink.schemas import default_serde
from confluent_kafka import Producer

from caselink.core.settings import Settings
from caselink.demo import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARTIFACTS = Path(os.environ.get("CASELINK_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
T0 = datetime(2026, 11, 1, tzinfo=UTC)
JAMES = {"given_names": "James", "family_name": "Smith", "date_of_birth": "1980-05-12", "sex": "M",
         "addresses": [{"lines": ["4 Elm Road"], "postcode": "LS1 1AA"}]}
JIM = {"given_names": "Jim", "family_name": "Smith", "date_of_birth": "1980-05-12", "sex": "M",
       "addresses": [{"lines": ["9 Oak Lane"], "postcode": "LS6 2BB"}]}


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


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
        producer.produce(person_events_topic(agency), serde.encode("PersonEvent", {
            "event_id": f"{agency}-{rid}", "agency": agency, "source_record_id": rid, "source_version": 1,
            "op": "UPSERT", "occurred_at": T0, "emitted_at": T0, "person": person, "cases": [], "source": {}}),
            key=f"{agency}:{rid}".encode())
    assert producer.flush(10) == 0

    worker = start_worker(pipeline_settings, data_dir=tmp_path / "worker")
    try:
        wait_for(lambda: get(worker.port, "/review")["open"] == 1, 90)
        before = {get(worker.port, "/records/health/H-JS")["citizen_id"], get(worker.port, "/records/police/P-JS")[
            "citizen_id"]}
        assert len(before) == 2

        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        card = browser.find_element(By.CSS_SELECTOR, ".pair")
        assert card.get_attribute("data-left") == "health:H-JS" and card.get_attribute("data-right") == "police:P-JS"
        assert "James Smith" in card.text and "Jim Smith" in card.text
        bars = card.find_elements(By.CSS_SELECTOR, "svg.waterfall rect.bar")
        assert {b.get_attribute("data-field") for b in bars} >= {"prior", "given_name", "date_of_birth",
                                                                  "match weight"}
        browser.save_screenshot(str(shots / "review-1-queue.png"))

        card.find_element(By.CSS_SELECTOR, "button.accept").click()  # no name yet: refused in the page
        assert "enter your name" in card.find_element(By.CSS_SELECTOR, ".status").text
        browser.find_element(By.ID, "reviewer").send_keys("A. Reviewer")
        card.find_element(By.CSS_SELECTOR, "button.accept").click()
        WebDriverWait(browser, 15).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".pair .status"),
                                                                          "accepted"))
        browser.save_screenshot(str(shots / "review-2-accepted.png"))

        cid = wait_for(lambda: (a := get(worker.port, "/records/health/H-JS")["citizen_id"]) ==
                       get(worker.port, "/records/police/P-JS")["citizen_id"] and a, 60)
        assert cid in before  # the older citizen survives the merge
        wait_for(lambda: get(worker.port, "/review")["open"] == 0, 30)
        browser.get(f"http://127.0.0.1:{worker.port}/review/ui")
        assert browser.find_element(By.ID, "empty").text == "Nothing to review."
        browser.save_screenshot(str(shots / "review-3-empty.png"))
    finally:
        worker.stop()
