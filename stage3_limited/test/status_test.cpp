// Unit tests of stage 3's status page: the JSON shows what the limiter holds and the counters.
#include "status.hpp"

#include <gtest/gtest.h>

#include <string>

#include "limiter.hpp"

namespace {

TEST(StatusJson, IdleServerShowsZerosAndItsLimits) {
    const lab::ConnectionLimiter limiter(12, 60);
    const lab::Counters counters;
    EXPECT_EQ(lab::status_json(limiter, counters),
              "{\"active\": 0, \"per_client\": {}, \"accepted\": 0, \"served\": 0, "
              "\"refused_per_client\": 0, \"refused_total\": 0, \"timed_out\": 0, "
              "\"reclaimed\": 0, \"max_per_client\": 12, \"max_total\": 60}\n");
}

TEST(StatusJson, ShowsHeldSlotsPerClientAndTheCounters) {
    lab::ConnectionLimiter limiter(2, 5);
    lab::Counters counters;
    auto a1 = limiter.try_acquire("127.0.0.2");
    auto a2 = limiter.try_acquire("127.0.0.2");
    auto b = limiter.try_acquire("::1");
    counters.accepted = 7;
    counters.served = 3;
    counters.refused_per_client = 2;
    counters.refused_total = 1;
    counters.timed_out = 1;
    EXPECT_EQ(lab::status_json(limiter, counters),
              "{\"active\": 3, \"per_client\": {\"127.0.0.2\": 2, \"::1\": 1}, \"accepted\": 7, "
              "\"served\": 3, \"refused_per_client\": 2, \"refused_total\": 1, \"timed_out\": 1, "
              "\"reclaimed\": 0, \"max_per_client\": 2, \"max_total\": 5}\n");
}

TEST(StatusJson, ReleasedSlotsLeaveThePage) {
    lab::ConnectionLimiter limiter(2, 5);
    const lab::Counters counters;
    {
        auto held = limiter.try_acquire("10.0.0.1");
        ASSERT_EQ(held.verdict, lab::ConnectionLimiter::Verdict::admitted);
        EXPECT_NE(lab::status_json(limiter, counters).find("\"10.0.0.1\": 1"), std::string::npos);
    }
    const std::string after = lab::status_json(limiter, counters);
    EXPECT_EQ(after.find("10.0.0.1"), std::string::npos) << after;
    EXPECT_NE(after.find("\"active\": 0"), std::string::npos) << after;
}

}  // namespace
