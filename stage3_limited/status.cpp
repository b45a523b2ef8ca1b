#include "status.hpp"

namespace lab {

namespace {

// Appends `, "name": value` (or without the comma for the first field).
void field(std::string& json, const char* name, std::uint64_t value) {
    if (json.size() > 1) json += ", ";
    json += '"';
    json += name;
    json += "\": ";
    json += std::to_string(value);
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
    field(json, "served", counters.served.load());
    field(json, "refused_per_client", counters.refused_per_client.load());
    field(json, "refused_total", counters.refused_total.load());
    field(json, "timed_out", counters.timed_out.load());
    field(json, "reclaimed", snap.reclaimed);
    field(json, "max_per_client", limiter.max_per_client());
    field(json, "max_total", limiter.max_total());
    json += "}\n";
    return json;
}

}  // namespace lab
