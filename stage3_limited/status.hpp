/// @file status.hpp
/// @brief Stage 3's live counters and the JSON that `/server-status` shows of them.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "limiter.hpp"

namespace lab {

/// @brief What happened to connections so far; each counter only grows.
struct Counters {
    std::atomic<std::uint64_t> accepted{0};            ///< Connections accepted.
    std::atomic<std::uint64_t> served{0};              ///< Requests parsed and answered.
    std::atomic<std::uint64_t> refused_per_client{0};  ///< Refused with 429.
    std::atomic<std::uint64_t> refused_total{0};       ///< Refused with 503.
    std::atomic<std::uint64_t> timed_out{0};           ///< No whole request head in time.
};

/// @brief The status page: slots held now (in all and per client), the counters (with the
/// limiter's count of reclaimed slots), the limits.
///
/// One JSON object on one line, keys in a fixed order, e.g.
/// `{"active": 1, "per_client": {"127.0.0.1": 1}, "accepted": 5, ..., "max_total": 60}`.
[[nodiscard]] std::string status_json(const ConnectionLimiter& limiter, const Counters& counters);

}  // namespace lab
