// Unit tests of the timer heap, with a fake clock: time points are built, never read.
#include "timers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
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
    timers.push(kT0 + milliseconds(30), 3);
    timers.push(kT0 + milliseconds(10), 1);
    timers.push(kT0 + milliseconds(20), 2);
    timers.push(kT0 + milliseconds(40), 4);
    EXPECT_TRUE(timers.pop_due(kT0 + milliseconds(9)).empty());
    EXPECT_EQ(ids(timers.pop_due(kT0 + milliseconds(25))), (std::vector<std::uint64_t>{1, 2}));
    EXPECT_EQ(timers.size(), 2U);
    EXPECT_EQ(ids(timers.pop_due(kT0 + milliseconds(40))), (std::vector<std::uint64_t>{3, 4}));
    EXPECT_EQ(timers.size(), 0U);
}

TEST(TimerQueue, WaitIsRoundedUpAndNeverNegative) {
    lab::TimerQueue timers;
    timers.push(kT0 + std::chrono::microseconds(1500), 1);
    EXPECT_EQ(timers.wait_ms(kT0), 2);  // 1.5 ms must not become 1 ms and wake too early
    EXPECT_EQ(timers.wait_ms(kT0 + milliseconds(5)), 0);
}

TEST(TimerQueue, EqualDeadlinesAllCome) {
    lab::TimerQueue timers;
    for (std::uint64_t id = 0; id < 100; ++id) timers.push(kT0 + milliseconds(5), id);
    EXPECT_EQ(timers.pop_due(kT0 + milliseconds(5)).size(), 100U);
}

TEST(TimerQueue, ManyRandomDeadlinesComeOutSorted) {
    lab::TimerQueue timers;
    std::uint64_t x = 12345;
    for (std::uint64_t id = 0; id < 5000; ++id) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        timers.push(kT0 + milliseconds(static_cast<long>((x >> 33) % 10000)), id);
    }
    const auto due = timers.pop_due(kT0 + milliseconds(10000));
    ASSERT_EQ(due.size(), 5000U);
    for (std::size_t i = 1; i < due.size(); ++i) EXPECT_LE(due[i - 1].when, due[i].when);
}

}  // namespace
