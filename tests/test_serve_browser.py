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
        assert "Wrong token" in driver.find_element("id", "login-error").text
        driver.find_element("id", "token").send_keys(TOKEN)
        driver.find_element("id", "login").click()
        # The click returns before the redirect after the form post has loaded.
        WebDriverWait(driver, 10).until(lambda d: d.current_url == server.url + "/")
        driver.find_element("link text", campaign).click()
        assert f"Campaign {campaign}" in driver.find_element("tag name", "h1").text
        images = driver.find_elements("css selector", "img.chart")
        assert len(images) == 4  # capability, timeline, volume, account links
        for img in images:
            width = driver.execute_script(
                "return arguments[0].complete ? arguments[0].naturalWidth : 0;", img)
            assert width > 0, img.get_attribute("alt")
        # The wrong token's 401 answer is logged as a failed load; nothing else may fail.
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and "/login - " not in e["message"]]
        assert errors == []
    finally:
        server.kill()
