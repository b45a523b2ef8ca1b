#include "status.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <string_view>

namespace lab {

namespace {

/// Most free cells the scoreboard draws one by one; past it, it says how many more.
constexpr std::size_t kFreeCellsDrawn = 2000;

// Appends `, "name": value` (or without the comma for the first field).
void field(std::string& json, const char* name, std::uint64_t value) {
    if (json.size() > 1) json += ", ";
    json += '"';
    json += name;
    json += "\": ";
    json += std::to_string(value);
}

// The name the page shows for a phase (a closed connection is still closing: its place is
// taken until its thread or its object is gone).
const char* state_name(const ConnectionLimiter::SlotView& slot) {
    if (!slot.counted) return "closing";
    switch (slot.phase) {
        case Phase::reading:
            return "reading";
        case Phase::sending:
            return "sending";
        case Phase::closing:
        case Phase::status:
            break;
    }
    return "closing";
}

// One counter of the scoreboard: its JSON key and what the page calls it.
struct CounterRow {
    const char* key;
    const char* label;
};

constexpr std::array<CounterRow, 5> kCounterRows{{
    {"served", "served (status pages not counted)"},
    {"refused_per_client", "refused per client (429)"},
    {"refused_total", "refused in all (503)"},
    {"reclaimed", "reclaimed (408)"},
    {"timed_out", "timed out"},
}};

// The page around the server-rendered tables: styles, and the script that redraws them from
// the JSON. Markup built here and in render() below must stay the same.
constexpr std::string_view kHead = R"html(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>server-status: scoreboard</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 monospace;margin:1em;background:#fff;color:#111}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1em;margin:.6em 0 .2em}
table{border-collapse:collapse}td,th{padding:1px 8px;text-align:left}td.n{text-align:right}
.spark{color:#1e6fbf;letter-spacing:-1px}
.cells{display:flex;flex-wrap:wrap;gap:3px}
.cell{display:inline-block;min-width:4.5em;padding:2px 3px;border-radius:3px;text-align:center}
.reading{background:#f6c343}.sending{background:#4caf50;color:#fff}.closing{background:#9e9e9e;color:#fff}
.free{background:#eef;color:#889;min-width:1.2em}
.full{color:#b00020;font-weight:bold}
</style></head><body>
<h1>Scoreboard of /server-status</h1>
<p>R = reading the request head, S = sending, C = closing, . = free; a cell shows its
connection's age in seconds. Refreshed twice a second from the JSON
(<a href="/server-status?view=json">/server-status?view=json</a>); this page's own requests are
not shown.</p>
)html";

constexpr std::string_view kTail = R"html(<p id="note"></p>
<script>
"use strict";
// Redraws the page from /server-status's JSON twice a second; keeps a minute of each counter.
const KEYS = ["served", "refused_per_client", "refused_total", "reclaimed", "timed_out"];
const SAMPLES = 120, FREE_DRAWN = 2000, BARS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588";
const history = {};
let last = null;
const esc = s => String(s).replace(/[&<>"]/g, c => "&#" + c.charCodeAt(0) + ";");
const letter = {reading: "R", sending: "S", closing: "C"};
function cell(s) {
  const age = (s.age_ms / 1000).toFixed(1);
  return '<span class="cell busy ' + s.state + '" title="' + s.state + ", " + age + ' s">' +
         letter[s.state] + " " + age + "s</span>";
}
function spark(values) {
  const top = Math.max(1, ...values);
  return values.map(v => v === 0 ? " " : BARS[Math.min(7, Math.floor(v * 7 / top))]).join("");
}
// A counter as the page shows it: "served" leaves out the status pages (its own fetches).
const value = (st, k) => k === "served" ? st.served - st.status_views : st[k];
function render(st) {
  for (const k of KEYS) {
    const h = history[k] || (history[k] = []);
    if (last !== null) h.push(Math.max(0, value(st, k) - value(last, k)));
    if (h.length > SAMPLES) h.shift();
    document.getElementById(k).textContent = value(st, k);
    document.getElementById("spark-" + k).textContent = spark(h);
  }
  last = st;
  const groups = new Map();
  for (const s of st.slots) {
    if (!groups.has(s.client)) groups.set(s.client, []);
    groups.get(s.client).push(s);
  }
  let html = "";
  for (const [client, slots] of groups) {
    const held = slots.filter(s => s.counted).length;
    const full = held >= st.max_per_client ? " full" : "";
    html += '<section class="client" data-client="' + esc(client) + '"><h2>' + esc(client) +
            ': <span class="held' + full + '">' + held + "</span> / " + st.max_per_client +
            '</h2><div class="cells">' + slots.map(cell).join(" ") + "</div></section>\n";
  }
  const free = Math.max(0, st.max_total - st.slots.length);
  html += '<section class="client" data-client=""><h2>free: <span class="held">' + free +
          "</span> / " + st.max_total + '</h2><div class="cells">' +
          '<span class="cell free">.</span> '.repeat(Math.min(free, FREE_DRAWN)) +
          (free > FREE_DRAWN ? "and " + (free - FREE_DRAWN) + " more" : "") + "</div></section>\n";
  document.getElementById("clients").innerHTML = html;
  document.getElementById("busy").textContent = st.slots.length;
  document.getElementById("free").textContent = free;
  document.getElementById("note").textContent = "";
}
async function refresh() {
  try {
    const reply = await fetch("/server-status?view=json", {cache: "no-store"});
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    render(await reply.json());
  } catch (e) {
    document.getElementById("note").textContent = "not refreshed: " + e.message;
  }
}
setInterval(refresh, 500);
refresh();
</script>
</body></html>
)html";

// Appends one busy cell, as the script's cell() draws it.
void cell(std::string& html, const ConnectionLimiter::SlotView& slot) {
    const char* state = state_name(slot);
    std::array<char, 32> age{};
    static_cast<void>(std::snprintf(age.data(), age.size(), "%.1f",
                                    static_cast<double>(slot.age.count()) / 1000));
    const std::string_view letter = state[0] == 'r' ? "R" : state[0] == 's' ? "S" : "C";
    html += "<span class=\"cell busy ";
    html += state;
    html += "\" title=\"";
    html += state;
    html += ", ";
    html += age.data();
    html += " s\">";
    html += letter;
    html += ' ';
    html += age.data();
    html += "s</span> ";
}

/// @brief Appends one client's heading and cells (client "" is the free places).
void client_section(std::string& html, const std::string& client, std::size_t held,
                    std::size_t limit, bool full) {
    // Client keys are addresses as inet_ntop() prints them: nothing in them needs escaping.
    html += R"(<section class="client" data-client=")" + client + R"("><h2>)";
    html += client.empty() ? "free" : client;
    html += ": <span class=\"held";
    html += full ? " full" : "";
    html += "\">" + std::to_string(held) + "</span> / " + std::to_string(limit);
    html += "</h2><div class=\"cells\">";
}

}  // namespace

std::string status_json(const ConnectionLimiter& limiter, const Counters& counters) {
    const auto snap = limiter.snapshot();
    std::string json = "{";
    field(json, "active", snap.total);
    // Client keys are addresses as inet_ntop() prints them: nothing in them needs escaping.
    json += ", \"per_client\": {";
    const char* sep = "";
    for (const auto& [client, count] : snap.per_client) {
        json += sep;
        json += "\"" + client + "\": " + std::to_string(count);
        sep = ", ";
    }
    json += "}";
    field(json, "accepted", counters.accepted.load());
    // "served" has always counted status pages too; the scoreboard subtracts status_views.
    field(json, "served", counters.served.load() + counters.status_views.load());
    field(json, "refused_per_client", counters.refused_per_client.load());
    field(json, "refused_total", counters.refused_total.load());
    field(json, "timed_out", counters.timed_out.load());
    field(json, "reclaimed", snap.reclaimed);
    field(json, "max_per_client", limiter.max_per_client());
    field(json, "max_total", limiter.max_total());
    field(json, "status_views", counters.status_views.load());
    json += ", \"slots\": [";
    sep = "";
    for (const auto& slot : snap.slots) {
        json += sep;
        json += R"({"client": ")" + slot.client + R"(", "state": ")" + state_name(slot) +
                R"(", "counted": )" + (slot.counted ? "true" : "false") +
                ", \"age_ms\": " + std::to_string(slot.age.count()) + "}";
        sep = ", ";
    }
    json += "]}\n";
    return json;
}

std::string status_html(const ConnectionLimiter& limiter, const Counters& counters) {
    const auto snap = limiter.snapshot();
    const std::size_t busy = snap.slots.size();
    const std::size_t free = limiter.max_total() > busy ? limiter.max_total() - busy : 0;
    std::string html(kHead);
    html += "<p>Limits: " + std::to_string(limiter.max_per_client()) + " per client, " +
            std::to_string(limiter.max_total()) + " in all. Busy: <b id=\"busy\">" +
            std::to_string(busy) + "</b>, free: <b id=\"free\">" + std::to_string(free) +
            "</b>.</p>\n<table id=\"counters\">\n";
    const auto value = [&](std::string_view key) -> std::uint64_t {
        // The page never counts itself: status pages (its own fetches) are left out.
        if (key == "served") return counters.served.load();
        if (key == "refused_per_client") return counters.refused_per_client.load();
        if (key == "refused_total") return counters.refused_total.load();
        if (key == "reclaimed") return snap.reclaimed;
        return counters.timed_out.load();
    };
    for (const auto& row : kCounterRows) {
        html += "<tr><th>" + std::string(row.label) + R"(</th><td class="n" id=")" + row.key +
                "\">" + std::to_string(value(row.key)) + R"(</td><td class="spark" id="spark-)" +
                row.key + "\"></td></tr>\n";
    }
    html += "</table>\n<div id=\"clients\">\n";
    // Grouped by client in order of each client's oldest place, as the script groups them.
    std::vector<std::string> order;
    for (const auto& slot : snap.slots) {
        if (std::find(order.begin(), order.end(), slot.client) == order.end()) {
            order.push_back(slot.client);
        }
    }
    for (const auto& client : order) {
        std::size_t held = 0;
        for (const auto& slot : snap.slots) held += slot.client == client && slot.counted ? 1 : 0;
        client_section(html, client, held, limiter.max_per_client(),
                       held >= limiter.max_per_client());
        for (const auto& slot : snap.slots) {
            if (slot.client == client) cell(html, slot);
        }
        html += "</div></section>\n";
    }
    client_section(html, "", free, limiter.max_total(), false);
    for (std::size_t i = 0; i < std::min(free, kFreeCellsDrawn); ++i) {
        html += "<span class=\"cell free\">.</span> ";
    }
    if (free > kFreeCellsDrawn) html += "and " + std::to_string(free - kFreeCellsDrawn) + " more";
    html += "</div></section>\n</div>\n";
    html += kTail;
    return html;
}

}  // namespace lab
