"""The dashboard as a person uses it: headless Chromium (Debian's, via Selenium) signs in
with the token, opens a campaign from the list and sees its charts drawn.

Needs `scripts/setup-system.sh` (apt packages chromium, chromium-driver).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from browser import chromium, needs_chromium
from fixtures_serve import TOKEN, Server, seeded_state

pytestmark = needs_chromium


@pytest.fixture()
def driver():
    drv = chromium()
    yield drv
    drv.quit()


def test_login_open_campaign_see_chart(tmp_path: Path, driver) -> None:
    db, campaign = seeded_state(tmp_path)
    server = Server(db)
    try:
        driver.get(server.url + "/")
        assert driver.current_url.endswith("/login")  # not signed in: sent to the form
        driver.find_element("id", "token").send_keys("wrong-token-0123456789")
        driver.find_element("id", "login").click()
        # A click returns before the page the form post answers with has loaded.
        wait = WebDriverWait(driver, 10)
        error = wait.until(lambda d: (d.find_elements("id", "login-error") or [None])[0])
        assert "Wrong token" in error.text
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("id", "login").click()
        wait.until(lambda d: d.current_url == server.url + "/")
        driver.find_element("link text", campaign).click()
        heading = wait.until(lambda d: (d.find_elements("tag name", "h1") or [None])[0]
                             if d.current_url != server.url + "/" else None)
        assert f"Campaign {campaign}" in heading.text
        images = driver.find_elements("css selector", "img.chart")
        assert len(images) == 4  # capability, timeline, volume, account links
        # Every chart is drawn (loaded, with a width) within the wait, or the test fails.
        drawn = "return arguments[0].complete ? arguments[0].naturalWidth : 0;"
        for img in images:
            assert wait.until(lambda d, i=img: d.execute_script(drawn, i)), \
                img.get_attribute("alt")
        # The wrong token's 401 answer is logged as a failed load; nothing else may fail.
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and "/login - " not in e["message"]]
        assert errors == []
    finally:
        server.kill()
