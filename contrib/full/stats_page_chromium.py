#!/usr/bin/env python3
"""The stats page in a real browser (full test tier): headless Chromium renders it (a
screenshot is saved), the servers in maint, drain and down show in their colours, and the
admin form posted by the browser through chromium-driver and Selenium puts a server into
maintenance, the 303 landing on the page's "[ DONE ]" line.

  stats_page_chromium.py PROXY_BINARY OUTPUT_DIR
"""
import os, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from benchlib import cli as runtime_cli  # noqa: E402
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

proxy, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
d = tempfile.mkdtemp(prefix="stats-chromium-")
sock = d + "/admin.sock"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cli(line):
    return runtime_cli(sock, line)


def wait(cond, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


port, backend, dead = free_port(), free_port(), free_port()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", backend))
srv.listen(64)  # accepts (kernel backlog) for the layer-4 checks
cfg = f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
listen stats
    bind 127.0.0.1:{port}
    stats enable
    stats uri /
    stats refresh 30s
    stats admin if TRUE
backend app
    server up1 127.0.0.1:{backend} check inter 200ms
    server maint1 127.0.0.1:{backend} check inter 200ms
    server drain1 127.0.0.1:{backend} check inter 200ms
    server down1 127.0.0.1:{dead} check inter 200ms
"""
open(d + "/p.cfg", "w").write(cfg)
p = subprocess.Popen([proxy, "-f", d + "/p.cfg"], stderr=open(out + "/proxy.log", "w"))
failures = []
try:
    assert wait(lambda: os.path.exists(sock)), "no stats socket"
    assert cli("set server app/maint1 state maint; set server app/drain1 state drain") == "\n\n"
    assert wait(lambda: ",DOWN," in cli("show stat")), "down1 never went down"
    # A screenshot by Chromium itself.
    shot = out + "/stats-page.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,900", f"http://127.0.0.1:{port}/"], capture_output=True, timeout=60)
    if not (os.path.exists(shot) and os.path.getsize(shot) > 10000):
        failures.append("no screenshot")
    options = Options()
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"]:
        options.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        if "HAProxy version" not in driver.page_source:
            failures.append("version string missing")
        rows = {}
        for tr in driver.find_elements(By.CSS_SELECTOR, "tr"):
            cells = tr.find_elements(By.TAG_NAME, "td")
            if cells:
                rows[cells[0].text.strip()] = tr.get_attribute("class")
        expected = {"maint1": "maintain", "drain1": "active_draining", "down1": "active_down", "up1": "active_up"}
        for name, cls in expected.items():
            if rows.get(name) != cls:
                failures.append(f"{name}: class {rows.get(name)!r}, expected {cls!r}")
        # The admin form, as an operator would use it: tick up1, choose MAINT, Apply.
        driver.find_element(By.CSS_SELECTOR, "input[name=s][value=up1]").click()
        form = driver.find_element(By.CSS_SELECTOR, "input[name=s][value=up1]").find_element(By.XPATH, "ancestor::form")
        Select(form.find_element(By.NAME, "action")).select_by_value("maint")
        form.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait(lambda: ";st=" in driver.current_url)
        if not driver.current_url.endswith(";st=DONE"):
            failures.append(f"after the post: {driver.current_url}")
        if "[ DONE ]" not in driver.page_source:
            failures.append("no DONE line after the post")
        if "app,up1," not in cli("show stat") or ",MAINT," not in [l for l in cli("show stat").splitlines() if l.startswith("app,up1,")][0]:
            failures.append("up1 is not in maintenance")
        driver.save_screenshot(out + "/stats-page-after.png")
    finally:
        driver.quit()
finally:
    p.terminate()
    p.wait()
    srv.close()
print("stats page in Chromium:", "ok" if not failures else "FAILED: " + "; ".join(failures))
sys.exit(1 if failures else 0)
