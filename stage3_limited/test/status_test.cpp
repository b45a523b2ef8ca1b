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
              "\"reclaimed\": 0, \"max_per_client\": 12, \"max_total\": 60, \"status_views\": 0, "
              "\"slots\": []}\n");
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
    const std::string json = lab::status_json(limiter, counters);
    EXPECT_EQ(json.substr(0, json.find(", \"status_views\"")),
              "{\"active\": 3, \"per_client\": {\"127.0.0.2\": 2, \"::1\": 1}, \"accepted\": 7, "
              "\"served\": 3, \"refused_per_client\": 2, \"refused_total\": 1, \"timed_out\": 1, "
              "\"reclaimed\": 0, \"max_per_client\": 2, \"max_total\": 5");
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

// Drops the age (it moves with the clock) from every slot of a status JSON.
std::string without_ages(std::string json) {
    for (auto at = json.find(", \"age_ms\": "); at != std::string::npos;
         at = json.find(", \"age_ms\": ", at)) {
        json.erase(at, json.find('}', at) - at);
    }
    return json;
}

TEST(StatusJson, ListsEverySlotWithItsStateExceptTheStatusPage) {
    lab::ConnectionLimiter limiter(2, 5);
    const lab::Counters counters;
    auto a = limiter.try_acquire("127.0.0.2");
    auto b = limiter.try_acquire("127.0.0.2");
    auto c = limiter.try_acquire("::1");
    auto asking = limiter.try_acquire("127.0.0.1");
    b.slot.reclaimable()->set_phase(lab::Phase::sending);
    c.slot.reclaimable()->set_phase(lab::Phase::closing);
    asking.slot.reclaimable()->set_phase(lab::Phase::status);
    const std::string json = without_ages(lab::status_json(limiter, counters));
    EXPECT_NE(json.find("\"slots\": [{\"client\": \"127.0.0.2\", \"state\": \"reading\", "
                        "\"counted\": true}, {\"client\": \"127.0.0.2\", \"state\": \"sending\", "
                        "\"counted\": true}, {\"client\": \"::1\", \"state\": \"closing\", "
                        "\"counted\": true}]}"),
              std::string::npos)
        << json;
    // A closed connection no longer counts for its client, but its place is still taken.
    a.slot.connection_closed();
    const std::string closed = without_ages(lab::status_json(limiter, counters));
    EXPECT_NE(closed.find("{\"client\": \"127.0.0.2\", \"state\": \"closing\", "
                          "\"counted\": false}"),
              std::string::npos)
        << closed;
}

TEST(StatusHtml, ShowsTheSameSlotsAndCountsAsTheJson) {
    lab::ConnectionLimiter limiter(2, 5);
    lab::Counters counters;
    auto a = limiter.try_acquire("127.0.0.2");
    auto b = limiter.try_acquire("127.0.0.2");
    auto asking = limiter.try_acquire("127.0.0.1");
    asking.slot.reclaimable()->set_phase(lab::Phase::status);
    counters.refused_per_client = 4;
    const std::string html = lab::status_html(limiter, counters);
    EXPECT_NE(html.find("<section class=\"client\" data-client=\"127.0.0.2\"><h2>127.0.0.2: "
                        "<span class=\"held full\">2</span> / 2"),
              std::string::npos)
        << html;
    EXPECT_EQ(html.find("data-client=\"127.0.0.1\""), std::string::npos) << "shows itself";
    EXPECT_NE(html.find("id=\"refused_per_client\">4<"), std::string::npos);
    EXPECT_NE(html.find("Busy: <b id=\"busy\">2</b>, free: <b id=\"free\">3</b>"),
              std::string::npos);
    // Self-contained: nothing is loaded from anywhere else.
    EXPECT_EQ(html.find("src="), std::string::npos);
    EXPECT_EQ(html.find("<link", html.find("<link rel=\"icon\" href=\"data:,\">") + 1),
              std::string::npos);  // only the empty icon, which spares a /favicon.ico request
    EXPECT_EQ(html.find("http"), std::string::npos);
}

}  // namespace
