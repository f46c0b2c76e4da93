"""The web console in a real headless browser (Debian's chromium, driven by selenium),
against a real running node that received, analysed and reported real data.

The scenario (synthetic, built here): an HL7 feed admits the patient and sends blood
pressure, INR, anticoagulant use and onset time; dcmtk storescu sends a 24-slice head CT
phantom with a hematoma (tests/support/phantoms.py) and a 3-slice series no selection
rule accepts. The node reports to a counting PACS; a second destination, "archive", and
the on-call webhook are down, so their deliveries become dead letters (max_attempts 1).
Then the archive comes back and the administrator retries its dead letters from the
console. One browser session serves the whole module, as the on-call doctor and the
administrator would use it: log in, look, act.

Set HEMEX_CONSOLE_SCREENSHOTS=docs/console to write the screenshots of each page there
(docs/admin.md shows them); without it they go to the test's temporary folder only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from daemon.app import Node
from daemon.console.accounts import AccountsFile
from domain.delivery import DeliveryState
from domain.study import StudyState
from tests.support.browser import full_page_screenshot, headless_chromium
from tests.support.counting_pacs import CountingPacs
from tests.support.hl7_peers import MllpClient, adt, msa, obx, oru
from tests.support.node_settings import loopback_node_settings
from tests.support.peers import wait_until
from tests.support.phantoms import PhantomSeries, make_head_ct_series

pytestmark = pytest.mark.integration

ADMIN, VIEWER = ("dr.admin", "admin-password-1"), ("oncall", "viewer-password-1")
ISSUER = "HOSP-A"  # the phantom's Issuer of Patient ID
PAGES = ("login", "studies", "study", "deliveries", "alerts")


@dataclass
class Scenario:
    node: Node
    base: str
    ct: PhantomSeries
    too_short: PhantomSeries
    pacs: CountingPacs
    archive_port: int
    archive_holder: socket.socket
    shots: Path
    archive: CountingPacs | None = None
    extra: list[CountingPacs] = field(default_factory=list)

    def archive_comes_back(self) -> CountingPacs:
        """The archive's port was bound and never listened on (connections refused); now
        a PACS answers there."""
        self.archive_holder.close()
        self.archive = CountingPacs(port=self.archive_port, ae_title="ARCHIVE").start()
        return self.archive

    def dead(self) -> list[tuple[str, str]]:
        with self.node.db.reading() as repos:
            return [(d.destination, d.path.name) for d in repos.outbox.items(state=DeliveryState.DEAD)]

    def audit(self) -> list[dict[str, object]]:
        path = self.node.settings.log_dir / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()]


def _send(node: Node, series: PhantomSeries) -> None:
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "HEMEX", "127.0.0.1", str(node.dicom_port),
                             *map(str, series.paths)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    work = tmp_path_factory.mktemp("console")
    pacs = CountingPacs(ae_title="PACS").start()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    archive_port = int(holder.getsockname()[1])
    settings = loopback_node_settings(
        work / "node", None,
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port},
                      {"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive_port,
                       "timeout_s": 2.0}],
        outbox={"max_attempts": 1},
        report={"validate_with_dicom3tools": False},
        alerts={"min_volume_ml": 10.0, "webhooks": [{"name": "oncall-pager", "timeout_s": 2.0,
                                                     "url": f"http://127.0.0.1:{archive_port}/page"}]},
        metrics={"port": 0},
        console={"auth": "accounts"},
    )
    accounts = AccountsFile(settings.console_accounts_path)
    accounts.set(ADMIN[0], "admin", ADMIN[1])
    accounts.set(VIEWER[0], "viewer", VIEWER[1])
    node = Node(settings)
    node.start()
    scenario = None
    try:
        assert node.hl7 is not None and node.metrics_port is not None
        with MllpClient(node.hl7.port) as client:
            acks = [client.send(adt("ADT-1", patient_id="PHANTOM-0001", issuer=ISSUER, dob="19520304", sex="F")),
                    client.send(oru("ORU-1", [
                        obx(1, "8480-6", "182", "mm[Hg]", "20261122100500"),
                        obx(2, "8462-4", "104", "mm[Hg]", "20261122100500"),
                        obx(3, "6301-6", "2.6", "{INR}", "20261122100000"),
                        obx(4, "HEMEX-ANTICOAG", "Y^Yes", "", "20261122100000", value_type="CWE", system="L"),
                        obx(5, "11368-8", "20261122083000", "", "20261122094500", value_type="DTM"),
                    ], obr_time="20261122100000", patient_id="PHANTOM-0001", issuer=ISSUER))]
        assert [msa(ack)[1] for ack in acks] == ["AA", "AA"]
        ct = make_head_ct_series(work / "ct", slices=24, rows=256, pixel_mm=0.9)
        too_short = make_head_ct_series(work / "short", slices=3, rows=64, pixel_mm=3.6, patient_id="PHANTOM-0002",
                                        accession="ACC-PHANTOM-2")
        _send(node, ct)
        _send(node, too_short)
        shots = Path(os.environ.get("HEMEX_CONSOLE_SCREENSHOTS", "") or work / "screenshots")
        scenario = Scenario(node, f"http://127.0.0.1:{node.metrics_port}", ct, too_short, pacs, archive_port, holder,
                            shots)

        def settled() -> bool:
            with node.db.reading() as repos:
                states = {s.identity.study_uid: s.state for s in repos.studies.recent(0)}
            return (states.get(ct.study_uid) is StudyState.FINAL
                    and states.get(too_short.study_uid) is StudyState.NO_SERIES and len(scenario.dead()) == 7)

        wait_until(settled, timeout_s=180, interval_s=0.5)
        yield scenario
    finally:
        node.stop()
        pacs.stop()
        holder.close()
        if scenario is not None and scenario.archive is not None:
            scenario.archive.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def _screenshot(browser: WebDriver, scenario: Scenario, page: str) -> Path:
    """The page as a PNG in ``scenario.shots``, reduced to 256 colours (small enough for git)."""
    path = full_page_screenshot(browser, scenario.shots / f"{page}.png")
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    browser.set_window_size(1360, 900)
    return path


def _text(browser: WebDriver, selector: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, selector).text


def _click_to_next_page(browser: WebDriver, element: WebElement) -> None:
    """Click something that loads a new page, and wait until the new page is there
    (a click returns as soon as the browser took it, not when the page has loaded)."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(page))
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _log_in(browser: WebDriver, name: str, password: str) -> None:
    for field_id, value in (("name", name), ("password", password)):
        field = browser.find_element(By.ID, field_id)
        field.clear()
        field.send_keys(value)
    _click_to_next_page(browser, browser.find_element(By.ID, "login"))


def test_login_refuses_a_wrong_password_then_lets_the_doctor_in(browser: WebDriver, scenario: Scenario) -> None:
    browser.get(scenario.base + "/studies")
    assert "/login" in browser.current_url  # no page without a login
    _screenshot(browser, scenario, "login")
    _log_in(browser, ADMIN[0], "not-my-password")
    assert "wrong password" in _text(browser, "#login-error")
    _log_in(browser, *ADMIN)
    assert browser.current_url.endswith("/studies")
    assert _text(browser, "#user") == "dr.admin (admin)"


def test_studies_page_shows_state_volume_and_risk_of_todays_studies(browser: WebDriver, scenario: Scenario) -> None:
    browser.get(scenario.base + "/studies")
    rows = {row.find_elements(By.TAG_NAME, "td")[1].text: row
            for row in browser.find_elements(By.CSS_SELECTOR, "#studies tbody tr")}
    assert set(rows) == {"PHANTOM-0001", "PHANTOM-0002"}
    reported = rows["PHANTOM-0001"]
    assert reported.find_element(By.CSS_SELECTOR, ".state").text == "final"
    volume = float(reported.find_element(By.CSS_SELECTOR, ".volume").text.split()[0])
    assert volume == pytest.approx(scenario.ct.hematoma_volume_ml, rel=0.10)
    assert reported.find_element(By.CSS_SELECTOR, ".risk").text == "not available"
    assert "4 delivered" in reported.find_element(By.CSS_SELECTOR, ".deliveries").text
    assert "5 dead" in reported.find_element(By.CSS_SELECTOR, ".deliveries").text
    skipped = rows["PHANTOM-0002"].find_element(By.CSS_SELECTOR, ".state").text
    assert "no series" in skipped and "fewer than 20" in skipped  # the reason, not just the state
    _screenshot(browser, scenario, "studies")


def test_study_page_shows_key_image_figures_clinical_sources_and_deliveries(
        browser: WebDriver, scenario: Scenario) -> None:
    browser.get(scenario.base + "/studies")
    reported = next(row for row in browser.find_elements(By.CSS_SELECTOR, "#studies tbody tr[data-handle]")
                    if "PHANTOM-0001" in row.text)
    _click_to_next_page(browser, reported.find_element(By.TAG_NAME, "a"))
    handle = browser.current_url.rsplit("/", 1)[-1]
    assert handle.startswith("st-") and "PHANTOM" not in browser.current_url  # no PHI in the URL
    image = browser.find_element(By.ID, "key-image")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 512
    measurements = _text(browser, "#measurements")
    assert "hemex-threshold" in measurements and "planimetry" in measurements
    assert "not available" in _text(browser, "#risk") and "no validated expansion model" in _text(browser, "#risk")
    clinical = {row.find_elements(By.TAG_NAME, "td")[0].text.split()[0]: row.text
                for row in browser.find_elements(By.CSS_SELECTOR, "#clinical tbody tr")}
    assert "182 mmHg" in clinical["systolic_bp_mmhg"] and "LN:8480-6" in clinical["systolic_bp_mmhg"]
    assert "2026-11-22 10:05" in clinical["systolic_bp_mmhg"]  # when it was measured
    assert "LN:6301-6" in clinical["pt_inr"] and "yes" in clinical["anticoagulant_use"]
    deliveries = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")]
    assert sum("archive" in row and "dead" in row for row in deliveries) == 4
    assert sum(row.startswith("pacs") and "delivered" in row for row in deliveries) == 4
    assert any("key-image-capture.dcm" in row for row in deliveries)
    viewed = [r for r in scenario.audit() if r["action"] == "console-study-viewed"]
    assert viewed and viewed[-1]["user"] == ADMIN[0] and viewed[-1]["study_uid"] == scenario.ct.study_uid
    _screenshot(browser, scenario, "study")


def test_alerts_page_shows_the_alert_and_where_it_went(browser: WebDriver, scenario: Scenario) -> None:
    browser.get(scenario.base + "/alerts")
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")]
    assert len(rows) == 2
    reported = next(text for text in rows if "PHANTOM-0001" in text)
    assert "hematoma volume" in reported and "oncall-pager (webhook): dead" in reported
    not_analysed = next(text for text in rows if "PHANTOM-0002" in text)
    assert "not analysed" in not_analysed and "oncall-pager (webhook): dead" in not_analysed
    _screenshot(browser, scenario, "alerts")


def test_dead_letters_retried_from_the_console_reach_the_archive_once_it_is_back(
        browser: WebDriver, scenario: Scenario) -> None:
    browser.get(scenario.base + "/deliveries")
    # The reported study's 4 objects and alert, and the other study's "not analysed"
    # notice SR and alert: the archive and the pager are down.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")) == 7
    _screenshot(browser, scenario, "deliveries")
    archive = scenario.archive_comes_back()
    for row in browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr"):
        if "archive" in row.text:
            row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    _click_to_next_page(browser, browser.find_element(By.ID, "retry-selected"))
    assert "5 dead letter(s) queued for delivery again" in _text(browser, ".flash")
    wait_until(lambda: len(archive.receptions()) == 5, timeout_s=30, interval_s=0.2)
    assert sorted(r.modality for r in archive.receptions()) == ["KO", "OT", "SEG", "SR", "SR"]
    # Not selected: still dead.
    assert sorted(scenario.dead()) == [("oncall-pager", "ich-alert-risk-unknown.json"),
                                       ("oncall-pager", "not-analysed.json")]
    browser.get(scenario.base + "/deliveries")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")) == 2
    retried = [r for r in scenario.audit() if r["action"] == "console-dead-letters-retried"]
    assert len(retried) == 1 and retried[0]["user"] == ADMIN[0] and retried[0]["count"] == 5


def test_the_doctor_on_call_sees_everything_but_cannot_retry(browser: WebDriver, scenario: Scenario) -> None:
    browser.get(scenario.base + "/studies")
    _click_to_next_page(browser, browser.find_element(By.ID, "logout"))
    assert "/login" in browser.current_url
    _log_in(browser, *VIEWER)
    assert _text(browser, "#user") == "oncall (viewer)"
    browser.get(scenario.base + "/deliveries")
    assert browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")
    assert not browser.find_elements(By.ID, "retry-all") and not browser.find_elements(By.ID, "retry-selected")


def test_every_page_was_captured(scenario: Scenario) -> None:
    """The screenshots docs/admin.md shows exist and are real pictures of the pages."""
    for page in PAGES:
        with Image.open(scenario.shots / f"{page}.png") as image:
            assert image.width == 1360 and image.height >= 400
            assert len(image.getcolors(maxcolors=4096) or range(4097)) > 8  # not a blank page
