"""The course's question 2, built: --allow-agent / --deny-agent on every stage (1 to 4).

Matching is a case-insensitive substring test on the User-Agent header; deny rules win; with
allow rules present, a request whose User-Agent matches none (or that sends none) gets 403
with a body that says why. A request with several User-Agent fields is refused if any one of
them would be refused on its own, whatever their order (the status page too).
"""

from __future__ import annotations

import subprocess

from conftest import LIMITED_STAGES, parse_response, raw, request, run_cli, stage_params

CURL = "curl/7.88.1"
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
EDGE = CHROME + " Edg/120.0.2210.91"
OPERA = CHROME + " OPR/106.0.0.0"
HEADLESS = CHROME.replace("Chrome/", "HeadlessChrome/")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"

#: The rule set the docs give for "Chrome, and not the browsers that only look like it".
CHROME_ONLY = ("--allow-agent", "Chrome/", "--deny-agent", "Edg/", "--deny-agent", "OPR/",
               "--deny-agent", "HeadlessChrome")


def get(server, agent: str | None):
    headers = {} if agent is None else {"User-Agent": agent}
    return request(server.port, "/index.html", headers=headers)


@stage_params()
def test_chrome_only_rules(stage, site, servers):
    server = servers(stage, site.root, *CHROME_ONLY)
    served = get(server, CHROME)
    assert served.status == 200
    assert served.body == site.bytes_of("index.html")
    for agent, why in [(EDGE, "Edg/"), (OPERA, "OPR/"), (HEADLESS, "HeadlessChrome")]:
        refused = get(server, agent)
        assert refused.status == 403, agent
        assert why in refused.text(), refused.text()
        assert site.bytes_of("index.html") not in refused.body
    curl = get(server, CURL)
    assert curl.status == 403
    assert "matches none" in curl.text()
    missing = get(server, None)
    assert missing.status == 403
    assert "no User-Agent" in missing.text()


@stage_params(LIMITED_STAGES)
def test_no_rules_serves_every_agent(stage, site, servers):
    server = servers(stage, site.root)
    for agent in [CURL, CHROME, EDGE, None]:
        assert get(server, agent).status == 200, agent


@stage_params()
def test_matching_ignores_case_and_deny_wins(stage, site, servers):
    server = servers(stage, site.root, "--allow-agent", "CURL", "--deny-agent", "curl/7")
    assert get(server, "curl/8.5.0").status == 200
    assert get(server, CURL).status == 403


@stage_params(LIMITED_STAGES)
def test_real_curl_is_refused_by_chrome_only(stage, site, servers):
    server = servers(stage, site.root, *CHROME_ONLY)
    out = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", server.url + "index.html"],
        capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout == "403"
    spoofed = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "-A", CHROME, "-o", "/dev/null", "-w", "%{http_code}",
         server.url + "index.html"],
        capture_output=True, text=True, timeout=10, check=True)
    # The header is the client's word: curl claiming to be Chrome is served.
    assert spoofed.stdout == "200"


@stage_params()
def test_empty_pattern_is_a_usage_error(stage, tmp_path):
    result = run_cli(stage, "-r", str(tmp_path), "--allow-agent", "")
    assert result.returncode == 2
    assert b"pattern" in result.stderr


def get_with_agents(server, agents: list[str], target: str = "/index.html"):
    """GET @p target with one User-Agent field per entry of @p agents, in that order."""
    fields = "".join(f"User-Agent: {agent}\r\n" for agent in agents)
    return parse_response(raw(server.port, f"GET {target} HTTP/1.0\r\n{fields}\r\n".encode()))


@stage_params()
def test_every_user_agent_field_counts(stage, site, servers):
    # A second User-Agent field must not get a request past the rules, in either order.
    denied = servers(stage, site.root, "--deny-agent", "curl")
    for agents in ([FIREFOX, CURL], [CURL, FIREFOX]):
        reply = get_with_agents(denied, agents)
        assert reply.status == 403, f"{agents} past --deny-agent curl: {reply.status_line!r}"
        assert site.bytes_of("index.html") not in reply.body
    assert get_with_agents(denied, [FIREFOX, CHROME]).status == 200
    allowed = servers(stage, site.root, *CHROME_ONLY)
    for agents in ([CHROME, CURL], [CURL, CHROME], [CHROME, EDGE]):
        reply = get_with_agents(allowed, agents)
        assert reply.status == 403, f"{agents} past the Chrome-only rules: {reply.status_line!r}"
    assert get_with_agents(allowed, [CHROME, CHROME]).status == 200


@stage_params(LIMITED_STAGES)
def test_status_page_judges_every_user_agent_field(stage, site, servers):
    server = servers(stage, site.root, "--status", "--deny-agent", "curl")
    for agents in ([FIREFOX, CURL], [CURL, FIREFOX]):
        reply = get_with_agents(server, agents, "/server-status")
        assert reply.status == 403, f"{agents} got /server-status: {reply.status_line!r}"
        assert b"per_client" not in reply.body
    assert get_with_agents(server, [FIREFOX], "/server-status").status == 200
