/// @file status.hpp
/// @brief Stage 3's live counters and the JSON that `/server-status` shows of them.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "lab/session.hpp"
#include "limiter.hpp"

namespace lab {

/// @brief What happened to connections so far; each counter only grows.
struct Counters {
    std::atomic<std::uint64_t> accepted{0};  ///< Connections accepted.
    std::atomic<std::uint64_t> served{0};    ///< Requests parsed and answered, but status pages.
    std::atomic<std::uint64_t> refused_per_client{0};  ///< Refused with 429.
    std::atomic<std::uint64_t> refused_total{0};       ///< Refused with 503.
    std::atomic<std::uint64_t> timed_out{0};           ///< No whole request head in time.
    std::atomic<std::uint64_t> status_views{0};        ///< Status pages answered.

    /// @brief Counts how a connection ended (served, timed out, a status page shown).
    void count(SessionOutcome outcome) noexcept {
        if (outcome == SessionOutcome::served) ++served;
        if (outcome == SessionOutcome::status_page) ++status_views;
        if (outcome == SessionOutcome::timed_out) ++timed_out;
    }
};

/// @brief The status page: slots held now (in all and per client), the counters (with the
/// limiter's count of reclaimed slots), the limits.
///
/// One JSON object on one line, keys in a fixed order, e.g.
/// `{"active": 1, "per_client": {"127.0.0.1": 1}, "accepted": 5, ..., "max_total": 60}`.
/// After those keys, `"slots"` lists every taken place except the status page's own, oldest
/// first: `{"client": "127.0.0.1", "state": "reading", "counted": true, "age_ms": 812}`, state
/// one of `reading` (its request head), `sending`, `closing` (`counted` is false once the
/// connection is closed or reclaimed and only its place in the total remains).
[[nodiscard]] std::string status_json(const ConnectionLimiter& limiter, const Counters& counters);

/// @brief The scoreboard: the same snapshot as status_json() as one self-contained HTML page
/// (a table readable as text, in a terminal browser too) whose script fetches the JSON twice a
/// second and redraws it, with a sparkline of each counter over the last minute.
[[nodiscard]] std::string status_html(const ConnectionLimiter& limiter, const Counters& counters);

}  // namespace lab
