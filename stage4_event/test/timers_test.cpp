// Unit tests of the timer heap, with a fake clock: time points are built, never read.
#include "timers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

namespace {

using std::chrono::milliseconds;

// A fixed origin, so every "now" in these tests is exact.
const lab::Clock::time_point kT0{std::chrono::hours(1)};

std::vector<std::uint64_t> ids(const std::vector<lab::TimerQueue::Entry>& entries) {
    std::vector<std::uint64_t> out;
    for (const auto& entry : entries) out.push_back(entry.id);
    return out;
}

TEST(TimerQueue, EmptyMeansWaitForever) {
    const lab::TimerQueue timers;
    EXPECT_EQ(timers.wait_ms(kT0), -1);
}

TEST(TimerQueue, PopsOnlyWhatIsDueEarliestFirst) {
    lab::TimerQueue timers;
    timers.schedule(3, kT0 + milliseconds(30));
    timers.schedule(1, kT0 + milliseconds(10));
    timers.schedule(2, kT0 + milliseconds(20));
    timers.schedule(4, kT0 + milliseconds(40));
    EXPECT_TRUE(timers.pop_due(kT0 + milliseconds(9)).empty());
    EXPECT_EQ(ids(timers.pop_due(kT0 + milliseconds(25))), (std::vector<std::uint64_t>{1, 2}));
    EXPECT_EQ(timers.size(), 2U);
    EXPECT_EQ(ids(timers.pop_due(kT0 + milliseconds(40))), (std::vector<std::uint64_t>{3, 4}));
    EXPECT_EQ(timers.size(), 0U);
}

TEST(TimerQueue, WaitIsRoundedUpAndNeverNegative) {
    lab::TimerQueue timers;
    timers.schedule(1, kT0 + std::chrono::microseconds(1500));
    EXPECT_EQ(timers.wait_ms(kT0), 2);  // 1.5 ms must not become 1 ms and wake too early
    EXPECT_EQ(timers.wait_ms(kT0 + milliseconds(5)), 0);
}

TEST(TimerQueue, EqualDeadlinesAllCome) {
    lab::TimerQueue timers;
    for (std::uint64_t id = 0; id < 100; ++id) timers.schedule(id, kT0 + milliseconds(5));
    EXPECT_EQ(timers.pop_due(kT0 + milliseconds(5)).size(), 100U);
}

TEST(TimerQueue, ManyRandomDeadlinesComeOutSorted) {
    lab::TimerQueue timers;
    std::uint64_t x = 12345;
    for (std::uint64_t id = 0; id < 5000; ++id) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        timers.schedule(id, kT0 + milliseconds(static_cast<long>((x >> 33) % 10000)));
    }
    const auto due = timers.pop_due(kT0 + milliseconds(10000));
    ASSERT_EQ(due.size(), 5000U);
    for (std::size_t i = 1; i < due.size(); ++i) EXPECT_LE(due[i - 1].when, due[i].when);
}

TEST(TimerQueue, CancelledEntriesAreGoneAtOnce) {
    lab::TimerQueue timers;
    timers.schedule(1, kT0 + milliseconds(10));
    timers.schedule(2, kT0 + milliseconds(20));
    timers.schedule(3, kT0 + milliseconds(30));
    timers.cancel(1);  // the top
    timers.cancel(3);  // the last
    timers.cancel(7);  // never scheduled: nothing happens
    EXPECT_EQ(timers.size(), 1U);
    EXPECT_EQ(timers.wait_ms(kT0), 20);
    EXPECT_EQ(ids(timers.pop_due(kT0 + milliseconds(100))), (std::vector<std::uint64_t>{2}));
    timers.cancel(2);  // already popped: nothing happens
    EXPECT_EQ(timers.wait_ms(kT0), -1);
}

TEST(TimerQueue, ScheduleAgainMovesTheOneEntry) {
    lab::TimerQueue timers;
    timers.schedule(1, kT0 + milliseconds(10));
    timers.schedule(2, kT0 + milliseconds(20));
    timers.schedule(1, kT0 + milliseconds(30));  // later
    EXPECT_EQ(timers.size(), 2U);
    EXPECT_EQ(timers.wait_ms(kT0), 20);
    timers.schedule(1, kT0 + milliseconds(5));  // earlier
    EXPECT_EQ(timers.size(), 2U);
    EXPECT_EQ(ids(timers.pop_due(kT0 + milliseconds(30))), (std::vector<std::uint64_t>{1, 2}));
}

// The issue-22 leak: a million connections that each open with an hour's deadline and close
// at once must leave nothing behind, however far away their deadlines are.
TEST(TimerQueue, ClosedConnectionsLeaveNothingBehind) {
    lab::TimerQueue timers;
    timers.schedule(1, kT0 + std::chrono::hours(1));  // one that stays open
    for (std::uint64_t id = 2; id < 1'000'002; ++id) {
        timers.schedule(id, kT0 + std::chrono::hours(1) + milliseconds(id % 7));
        if (id % 3 == 0) timers.schedule(id, kT0 + milliseconds(id % 11));  // moved earlier
        timers.cancel(id);
        ASSERT_LE(timers.size(), 2U);
    }
    EXPECT_EQ(timers.size(), 1U);
    EXPECT_EQ(ids(timers.pop_due(kT0 + std::chrono::hours(2))), (std::vector<std::uint64_t>{1}));
}

// Random schedules, reschedules and cancels against a plain map of id → deadline: the heap
// pops exactly the entries the map says are due, in deadline order, and nothing else.
TEST(TimerQueue, AgreesWithASimpleModelUnderRandomChurn) {
    lab::TimerQueue timers;
    std::map<std::uint64_t, lab::Clock::time_point> model;
    std::uint64_t x = 987654321;
    const auto next = [&x](std::uint64_t bound) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        return (x >> 33) % bound;
    };
    auto now = kT0;
    for (int round = 0; round < 200; ++round) {
        for (int op = 0; op < 100; ++op) {
            const std::uint64_t id = next(300);
            if (next(4) == 0) {
                timers.cancel(id);
                model.erase(id);
            } else {
                const auto when = now + milliseconds(static_cast<long>(next(1000)));
                timers.schedule(id, when);
                model[id] = when;
            }
        }
        ASSERT_EQ(timers.size(), model.size());
        now += milliseconds(static_cast<long>(next(200)));
        const auto due = timers.pop_due(now);
        std::size_t expected = 0;
        for (auto it = model.begin(); it != model.end();) {
            if (it->second <= now) {
                ++expected;
                it = model.erase(it);
            } else {
                ++it;
            }
        }
        ASSERT_EQ(due.size(), expected);
        for (std::size_t i = 0; i < due.size(); ++i) {
            EXPECT_LE(due[i].when, now);
            if (i > 0) {
                EXPECT_LE(due[i - 1].when, due[i].when);
            }
            EXPECT_EQ(model.count(due[i].id), 0U);  // gone from the model: it was due
        }
    }
}

}  // namespace
