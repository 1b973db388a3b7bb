"""The web console in headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium): the page loads, takes the user's
keys, shows a snapshot started through boto3 with its progress moving to
completed, the volume's lineage, the zones' chunk nodes and the space
saved by dedup, and the browser logs no errors. A screenshot is saved in
the test's output directory (and where CAIRN_CONSOLE_SCREENSHOT says)."""
import os
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from cluster import Cluster, wait_for
from util import GIB, make_image, nbd_write


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of its own: the dedup figures count only this test's data."""
    c = Cluster(tmp_path / "data").start()
    yield c
    c.stop()


@pytest.fixture
def browser():
    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1100"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()


def row(browser, element_id):
    """(state, progress, text) of a row, read in one go: the page rebuilds
    its tables on every refresh, so element handles go stale."""
    r = browser.execute_script(
        "const r = document.getElementById(arguments[0]);"
        "return r ? [r.dataset.state, r.dataset.progress || '0', r.innerText] : null;",
        element_id)
    return None if r is None else (r[0], int(r[1]), r[2])


def js(browser, expr):
    return browser.execute_script(f"return {expr};")


def test_console_follows_a_snapshot(own_cluster, browser, tmp_path):
    cluster = own_cluster
    ec2 = cluster.client("ec2")
    browser.get(cluster.endpoint + "/console")
    assert browser.title == "Cairn console"
    browser.find_element(By.ID, "access-key").send_keys(cluster.env["AWS_ACCESS_KEY_ID"])
    browser.find_element(By.ID, "secret-key").send_keys(cluster.env["AWS_SECRET_ACCESS_KEY"])
    browser.find_element(By.ID, "save-keys").click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed"),
             timeout=30, what="the console's first refresh")
    header = browser.find_element(By.ID, "where").text
    assert cluster.env["AWS_REGION"] in header and cluster.env["CAIRN_ACCOUNT_ID"] in header

    vol = ec2.create_volume(AvailabilityZone=cluster.zones[0], Size=2,
                            TagSpecifications=[{"ResourceType": "volume",
                                                "Tags": [{"Key": "Name", "Value": "console"}]}])
    vol = vol["VolumeId"]
    ec2.get_waiter("volume_available").wait(VolumeIds=[vol], WaiterConfig={"Delay": 1})
    nbd_write(cluster.nbd_uri(vol), make_image(tmp_path / "c.img", size=2 * GIB,
                                               data_blocks=range(0, 4096, 2)))
    first = ec2.create_snapshot(VolumeId=vol, Description="console")["SnapshotId"]

    seen = []

    def completed():
        r = row(browser, f"row-{first}")
        if r and (not seen or seen[-1] != r[:2]):
            seen.append(r[:2])
        return r and r[0] == "completed"

    wait_for(completed, timeout=600, interval=0.1, what="the snapshot to show completed")
    assert seen[0][0] == "pending" and seen[0][1] < 100, seen
    assert seen[-1] == ("completed", 100), seen
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and len(set(percents)) >= 2, seen

    # A second, incremental snapshot joins the volume's lineage after the first.
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    wait_for(lambda: (row(browser, f"row-{second}") or ("",))[0] == "completed", timeout=600,
             what="the second snapshot to show completed")
    lineage = wait_for(lambda: (lambda t: t if second in t else None)(row(browser, f"row-{vol}")[2]),
                       timeout=30, what="the lineage to show both snapshots")
    assert "console" in lineage and lineage.index(first) < lineage.index(second), lineage

    # What each copy sent after dedup: all of the data, then nothing new.
    sent = "[arguments[0], arguments[1]].map((id) => document.getElementById(`row-${id}`)?.cells[5].innerText)"
    assert wait_for(lambda: browser.execute_script(f"return {sent};", first, second) == ["1.0 GiB", "0 B"],
                    timeout=30, what="the bytes each copy sent")

    states = js(browser, "[...document.querySelectorAll('#zones tr[data-state]')]"
                         ".map((r) => r.dataset.state)")
    assert len(states) == 6 and set(states) == {"up"}, states
    zones = js(browser, "[...document.querySelectorAll('#zones h3')].map((h) => h.innerText)")
    assert zones[:2] == cluster.zones and zones[2].startswith("Outpost op-"), zones
    assert browser.find_element(By.ID, "verdict").text == "healthy"
    # Two snapshots of the same 1 GiB of data: at least half of it is deduplicated.
    saved = browser.find_element(By.ID, "saved").text
    assert saved.endswith("%)") and int(saved.rsplit("(", 1)[1].rstrip("%)")) >= 45, saved

    shot = tmp_path / "console.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"console screenshot: {shot}")
    if os.environ.get("CAIRN_CONSOLE_SCREENSHOT"):
        shutil.copy(shot, os.environ["CAIRN_CONSOLE_SCREENSHOT"])

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    assert browser.find_element(By.ID, "errors").text == "none"

    for s in (second, first):
        ec2.delete_snapshot(SnapshotId=s)
    ec2.delete_volume(VolumeId=vol)
