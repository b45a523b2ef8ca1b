"""The scoreboard of /server-status (stages 3 and 4 with --status), in a real browser.

Headless Chromium, driven over its DevTools protocol (harness/tests/cdp.py), keeps the page open
while the harness holds 12 idle connections from one address and is refused (429) on the
13th: the page must show 12 busy cells for that address and the refusal within 2 s, and free
them within 2 s of the holder closing. The page must load nothing but its own JSON, and its
counts must agree with the JSON's. ``LAB_SCOREBOARD_SHOT=PATH`` also saves the screenshot
taken while the slots are held (docs/img/scoreboard.png comes from that).
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from cdp import Browser
from conftest import LIMITED_STAGES, Holder, REASONS, connect, read_to_eof, request, \
    stage_params, wait_until
from test_browser import CHROMIUM

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary: apt-get install "
                                "chromium")

#: The address that holds idle connections, and how many the limit lets it hold.
HOLDER_IP = "127.0.23.1"
MAX_CLIENT = 12
#: The issue's bound on how long the page may take to show a change.
SHOW_WITHIN = 2.0
#: The cells of an idle server with -maxtotal 60.
IDLE = {"": {"busy": 0, "free": 60, "held": 60}}

# What the page shows, read from its DOM: cells per client, counters, free places.
PAGE_STATE = """(() => {
  const clients = {};
  for (const s of document.querySelectorAll("section.client")) {
    clients[s.dataset.client] = {
      busy: s.querySelectorAll(".cell.busy").length,
      free: s.querySelectorAll(".cell.free").length,
      held: Number(s.querySelector(".held").textContent),
    };
  }
  const n = id => Number(document.getElementById(id).textContent);
  return {clients, busy: n("busy"), free: n("free"), served: n("served"),
          refused_per_client: n("refused_per_client"), refused_total: n("refused_total"),
          reclaimed: n("reclaimed"), timed_out: n("timed_out")};
})()"""


def expected_from_json(status: dict) -> dict:
    """What the page must show for a JSON snapshot (the page's rules, restated)."""
    clients: dict[str, dict] = {}
    for slot in status["slots"]:
        c = clients.setdefault(slot["client"], {"busy": 0, "free": 0, "held": 0})
        c["busy"] += 1
        c["held"] += 1 if slot["counted"] else 0
    free = max(0, status["max_total"] - len(status["slots"]))
    clients[""] = {"busy": 0, "free": free, "held": free}
    return {"clients": clients, "busy": len(status["slots"]), "free": free,
            "served": status["served"] - status["status_views"],
            **{k: status[k] for k in ("refused_per_client", "refused_total", "reclaimed",
                                      "timed_out")}}


def html_state(html: str) -> dict:
    """The same counts, read from the server-rendered HTML with regular expressions."""
    html = html.split("<script>")[0]  # the script builds the same markup: not counts
    clients = {}
    for match in re.finditer(r'<section class="client" data-client="([^"]*)">(.*?)</section>',
                             html, re.S):
        body = match[2]
        clients[match[1]] = {"busy": body.count('class="cell busy'),
                             "free": body.count('class="cell free"'),
                             "held": int(re.search(r'class="held[^"]*">(\d+)<', body)[1])}
    n = {k: int(re.search(rf'id="{k}">(\d+)<', html)[1])
         for k in ("busy", "free", "served", "refused_per_client", "refused_total", "reclaimed",
                   "timed_out")}
    return {"clients": clients, **n}


@stage_params(LIMITED_STAGES)
def test_scoreboard_shows_held_and_refused_slots(stage, site, servers, tmp_path):
    server = servers(stage, site.root, "-maxclient", str(MAX_CLIENT), "-maxtotal", "60",
                     "-t", "30", "--status")
    origin = f"http://127.0.0.1:{server.port}/"
    with Browser(CHROMIUM, tmp_path / "profile") as browser:
        browser.call("Network.enable")
        browser.call("Page.enable")
        browser.call("Page.navigate", url=origin + "server-status?view=html")
        wait_until(lambda: browser.evaluate("document.readyState") == "complete", timeout=10,
                   message="the scoreboard to load")
        # Its own requests never show. Chromium may hold a spare connection open for the next
        # fetch (a real, idle connection, shown as such) until it uses it: wait for that.
        wait_until(lambda: browser.evaluate(PAGE_STATE)["clients"] == IDLE, timeout=SHOW_WITHIN,
                   interval=0.05, message="an idle scoreboard")

        with Holder() as holder:
            holder.open(server.port, MAX_CLIENT, source_ips=[HOLDER_IP])
            with connect(server.port, source_ip=HOLDER_IP) as refused:
                reply = read_to_eof(refused, deadline=time.monotonic() + 5)
            assert reply.startswith(f"HTTP/1.0 429 {REASONS[429]}".encode()), reply[:100]

            def shown():
                state = browser.evaluate(PAGE_STATE)
                held = state["clients"].get(HOLDER_IP, {})
                ok = held.get("busy") == MAX_CLIENT and state["refused_per_client"] >= 1
                return state if ok else None

            state = wait_until(shown, timeout=SHOW_WITHIN, interval=0.05,
                               message=f"{MAX_CLIENT} busy cells for {HOLDER_IP} and a 429")
            assert state["clients"][HOLDER_IP]["held"] == MAX_CLIENT
            assert state["busy"] == MAX_CLIENT and state["free"] == 60 - MAX_CLIENT, state
            cells = browser.evaluate(
                f'[...document.querySelectorAll(\'[data-client="{HOLDER_IP}"] .cell\')]'
                ".map(c => c.textContent)")
            assert all(re.fullmatch(r"R \d+\.\ds", c) for c in cells), cells

            shot = tmp_path / "scoreboard.png"
            browser.screenshot(shot)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("LAB_SCOREBOARD_SHOT"):
                shutil.copyfile(shot, os.environ["LAB_SCOREBOARD_SHOT"])

            # Nothing changes while the slots are held: the JSON, the browser's page (after
            # its next refresh) and a fresh server-rendered page must agree on every count.
            # (Retried only for the browser's spare connection, which may come and go.)
            def agree():
                expected = expected_from_json(server.status())
                page = browser.evaluate(PAGE_STATE)
                rendered = request(server.port, "/server-status", headers={"Accept": "text/html"})
                assert rendered.headers["content-type"] == "text/html; charset=utf-8"
                html = html_state(rendered.text())
                return page == expected == html or print(expected, page, html)

            wait_until(agree, timeout=SHOW_WITHIN, interval=0.1,
                       message="the JSON, the page and the rendered HTML to agree")
            assert expected_from_json(server.status())["clients"][HOLDER_IP]["busy"] == MAX_CLIENT

        wait_until(lambda: HOLDER_IP not in browser.evaluate(PAGE_STATE)["clients"],
                   timeout=SHOW_WITHIN, interval=0.05, message="the held cells to free")
        wait_until(lambda: browser.evaluate(PAGE_STATE)["clients"] == IDLE, timeout=SHOW_WITHIN,
                   interval=0.05, message="every cell free")
        assert browser.evaluate(PAGE_STATE)["refused_per_client"] >= 1

        urls = browser.requested_urls()
        assert urls, "no request seen in the browser's network log"
        outside = [u for u in urls if not u.startswith(origin + "server-status")]
        assert not outside, f"the scoreboard loaded other resources: {outside}"
        assert len(urls) >= 3, f"the page did not refresh itself: {urls}"
