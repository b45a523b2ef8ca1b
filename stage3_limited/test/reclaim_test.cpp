// Unit tests of --reclaim-idle's choice in the limiter: when full, the oldest connection still
// waiting for its head gives up its slot; a connection whose head arrived never does.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "lab/fd.hpp"
#include "limiter.hpp"

namespace {

using lab::ConnectionLimiter;
using Verdict = ConnectionLimiter::Verdict;

TEST(Reclaim, OffByDefaultAFullServerRefuses) {
    ConnectionLimiter limiter(5, 2);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    EXPECT_EQ(limiter.try_acquire("c").verdict, Verdict::server_full);
    EXPECT_EQ(limiter.snapshot().reclaimed, 0U);
}

TEST(Reclaim, FullServerTakesTheOldestWaitingSlot) {
    ConnectionLimiter limiter(5, 2, true);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    ASSERT_EQ(b.verdict, Verdict::admitted);
    auto c = limiter.try_acquire("c");
    ASSERT_EQ(c.verdict, Verdict::admitted);
    // a was reclaimed: its session learns it when it tries to settle.
    EXPECT_FALSE(a.slot.reclaimable()->settle());
    EXPECT_TRUE(b.slot.reclaimable()->settle());
    auto snap = limiter.snapshot();
    EXPECT_EQ(snap.total, 2U);
    EXPECT_EQ(snap.per_client.count("a"), 0U);
    EXPECT_EQ(snap.per_client.at("b"), 1U);
    EXPECT_EQ(snap.per_client.at("c"), 1U);
    EXPECT_EQ(snap.reclaimed, 1U);
    a.slot.release();  // the reclaimed slot no longer counts: releasing it changes nothing
    EXPECT_EQ(limiter.snapshot().total, 2U);
}

TEST(Reclaim, SettledConnectionsAreNeverTaken) {
    ConnectionLimiter limiter(5, 2, true);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    ASSERT_EQ(b.verdict, Verdict::admitted);
    ASSERT_TRUE(a.slot.reclaimable()->settle());
    ASSERT_TRUE(b.slot.reclaimable()->settle());
    EXPECT_EQ(limiter.try_acquire("c").verdict, Verdict::server_full);
    EXPECT_TRUE(a.slot.reclaimable()->settle());  // still its own
    EXPECT_EQ(limiter.snapshot().reclaimed, 0U);
}

TEST(Reclaim, SkipsSettledOnesForTheOldestStillWaiting) {
    ConnectionLimiter limiter(5, 3, true);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    auto c = limiter.try_acquire("c");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    ASSERT_EQ(b.verdict, Verdict::admitted);
    ASSERT_EQ(c.verdict, Verdict::admitted);
    ASSERT_TRUE(a.slot.reclaimable()->settle());
    auto d = limiter.try_acquire("d");
    ASSERT_EQ(d.verdict, Verdict::admitted);
    EXPECT_TRUE(a.slot.reclaimable()->settle());
    EXPECT_FALSE(b.slot.reclaimable()->settle());
    EXPECT_TRUE(c.slot.reclaimable()->settle());
}

TEST(Reclaim, PerClientLimitStillAnswers429) {
    ConnectionLimiter limiter(1, 1, true);
    auto a = limiter.try_acquire("a");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    EXPECT_EQ(limiter.try_acquire("a").verdict, Verdict::client_full);
    EXPECT_TRUE(a.slot.reclaimable()->settle());
}

TEST(Reclaim, NewcomerMayTakeASlotOfItsOwnClient) {
    ConnectionLimiter limiter(2, 1, true);
    auto first = limiter.try_acquire("x");
    ASSERT_EQ(first.verdict, Verdict::admitted);
    auto second = limiter.try_acquire("x");
    ASSERT_EQ(second.verdict, Verdict::admitted);
    EXPECT_FALSE(first.slot.reclaimable()->settle());
    const auto snap = limiter.snapshot();
    EXPECT_EQ(snap.total, 1U);
    EXPECT_EQ(snap.per_client.at("x"), 1U);
    first.slot.release();
    second.slot.release();
    EXPECT_EQ(limiter.snapshot().total, 0U);
    EXPECT_TRUE(limiter.snapshot().per_client.empty());
}

TEST(Reclaim, WakesTheReaderAtOnce) {
    int fds[2] = {-1, -1};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    const lab::Fd server(fds[0]);
    const lab::Fd client(fds[1]);
    ConnectionLimiter limiter(5, 1, true);
    auto idle = limiter.try_acquire("a");
    ASSERT_EQ(idle.verdict, Verdict::admitted);
    ASSERT_TRUE(idle.slot.reclaimable()->attach(server.get()));
    std::thread reader([&] {
        pollfd p{server.get(), POLLIN, 0};
        // Without the reclaim this would wait the full 10 s.
        EXPECT_EQ(::poll(&p, 1, 10000), 1);
        char byte = 0;
        EXPECT_EQ(::recv(server.get(), &byte, 1, 0), 0);
    });
    auto newcomer = limiter.try_acquire("b");
    reader.join();
    EXPECT_EQ(newcomer.verdict, Verdict::admitted);
    EXPECT_FALSE(idle.slot.reclaimable()->settle());
}

TEST(Reclaim, ReclaimedBeforeAttachIsToldAtAttach) {
    ConnectionLimiter limiter(5, 1, true);
    auto idle = limiter.try_acquire("a");
    ASSERT_EQ(idle.verdict, Verdict::admitted);
    auto newcomer = limiter.try_acquire("b");
    ASSERT_EQ(newcomer.verdict, Verdict::admitted);
    EXPECT_FALSE(idle.slot.reclaimable()->attach(-1));
}

TEST(Reclaim, ConcurrentUseKeepsTheCountsExact) {
    // Threads acquire, maybe settle, and release at random while others reclaim: the total
    // never passes the limit and everything is given back at the end (TSan checks the locking).
    // Two idle slots held from the start make a reclaim certain even if the threads happen to
    // run one after another (one thread alone holds at most three).
    constexpr std::size_t kMax = 4;
    ConnectionLimiter limiter(3, kMax, true);
    std::vector<ConnectionLimiter::Slot> idle;
    for (int i = 0; i < 2; ++i) idle.push_back(limiter.try_acquire("idle").slot);
    ASSERT_EQ(limiter.snapshot().total, 2U);
    std::atomic<bool> over{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<unsigned>(t));
            std::vector<ConnectionLimiter::Slot> held;  // up to three at once per thread
            for (int i = 0; i < 2000; ++i) {
                std::string client = "c";
                client += static_cast<char>('0' + rng() % 5);
                auto admission = limiter.try_acquire(client);
                if (limiter.snapshot().total > kMax) over = true;
                if (admission.verdict == Verdict::admitted) {
                    if (rng() % 2 == 0) (void)admission.slot.reclaimable()->settle();
                    held.push_back(std::move(admission.slot));
                }
                if (held.size() > 2) held.erase(held.begin() + static_cast<long>(rng() % 3));
                if (rng() % 4 == 0) std::this_thread::yield();
            }
        });
    }
    for (auto& thread : threads) thread.join();
    idle.clear();
    EXPECT_FALSE(over.load());
    const auto snap = limiter.snapshot();
    EXPECT_EQ(snap.total, 0U);
    EXPECT_TRUE(snap.per_client.empty());
    EXPECT_GT(snap.reclaimed, 0U);
}

// Handover::when_released, stage 3's: a slot stands for a thread, so the newcomer has the
// reclaimed place only once the reclaimed Slot is destroyed (its thread gone).
TEST(ReclaimWhenReleased, NewcomerWaitsForTheReclaimedSlot) {
    int fds[2] = {-1, -1};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    const lab::Fd server(fds[0]);
    const lab::Fd client(fds[1]);
    ConnectionLimiter limiter(5, 1, true, ConnectionLimiter::Handover::when_released);
    auto idle = limiter.try_acquire("a");
    ASSERT_EQ(idle.verdict, Verdict::admitted);
    ASSERT_TRUE(idle.slot.reclaimable()->attach(server.get()));
    std::atomic<bool> returned{false};
    ConnectionLimiter::Admission newcomer;
    std::thread accepting([&] {
        newcomer = limiter.try_acquire("b");
        returned = true;
    });
    // The reclaim wakes the idle connection's reader ...
    pollfd p{server.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
    // ... but while its Slot lives, the newcomer has no place (it waits up to 1 s).
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(returned.load());
    EXPECT_FALSE(idle.slot.reclaimable()->settle());
    idle.slot.release();
    accepting.join();
    EXPECT_EQ(newcomer.verdict, Verdict::admitted);
    EXPECT_EQ(limiter.snapshot().total, 1U);
}

TEST(ReclaimWhenReleased, AReclaimedSlotNeverReleasedKeepsItsPlace) {
    ConnectionLimiter limiter(5, 2, true, ConnectionLimiter::Handover::when_released);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    ASSERT_EQ(b.verdict, Verdict::admitted);
    const auto start = std::chrono::steady_clock::now();
    // c reclaims a, waits for it in vain and is refused.
    EXPECT_EQ(limiter.try_acquire("c").verdict, Verdict::server_full);
    EXPECT_GE(std::chrono::steady_clock::now() - start, lab::kHandoverWait);
    // While a is still ending, d takes no second slot: it waits for a too, and is refused.
    EXPECT_EQ(limiter.try_acquire("d").verdict, Verdict::server_full);
    EXPECT_TRUE(b.slot.reclaimable()->settle());  // b was never taken
    EXPECT_EQ(limiter.snapshot().reclaimed, 1U);
    // a's Slot goes (its thread is gone): now there is room, with no reclaim.
    a.slot.release();
    const auto e = limiter.try_acquire("e");
    EXPECT_EQ(e.verdict, Verdict::admitted);
    EXPECT_EQ(limiter.snapshot().reclaimed, 1U);
    EXPECT_EQ(limiter.snapshot().total, 2U);
}

}  // namespace
