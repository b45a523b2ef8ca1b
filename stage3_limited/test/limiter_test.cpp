// Unit tests of the stage 3 connection limiter: verdicts, RAII slots, and a concurrency check.
#include "limiter.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using lab::ConnectionLimiter;
using Verdict = ConnectionLimiter::Verdict;
using Slot = ConnectionLimiter::Slot;

// The count the snapshot holds for @p client; also checks that zero counts are never stored.
std::size_t held_by(const ConnectionLimiter& limiter, const std::string& client) {
    const auto snapshot = limiter.snapshot();
    const auto it = snapshot.per_client.find(client);
    if (it == snapshot.per_client.end()) return 0;
    EXPECT_GT(it->second, 0u) << "entry for " << client << " kept at zero";
    return it->second;
}

TEST(ConnectionLimiter, ReportsItsLimits) {
    const ConnectionLimiter limiter(3, 9);
    EXPECT_EQ(limiter.max_per_client(), 3u);
    EXPECT_EQ(limiter.max_total(), 9u);
    const auto snapshot = limiter.snapshot();
    EXPECT_EQ(snapshot.total, 0u);
    EXPECT_TRUE(snapshot.per_client.empty());
}

TEST(ConnectionLimiter, AdmitsUpToPerClientLimit) {
    ConnectionLimiter limiter(2, 10);
    auto first = limiter.try_acquire("a");
    auto second = limiter.try_acquire("a");
    auto third = limiter.try_acquire("a");
    EXPECT_EQ(first.verdict, Verdict::admitted);
    EXPECT_TRUE(first.slot.held());
    EXPECT_EQ(second.verdict, Verdict::admitted);
    EXPECT_TRUE(second.slot.held());
    EXPECT_EQ(third.verdict, Verdict::client_full);
    EXPECT_FALSE(third.slot.held());
    EXPECT_EQ(held_by(limiter, "a"), 2u);
    EXPECT_EQ(limiter.snapshot().total, 2u);

    // Another client is unaffected.
    auto other = limiter.try_acquire("b");
    EXPECT_EQ(other.verdict, Verdict::admitted);
    EXPECT_EQ(held_by(limiter, "b"), 1u);
}

TEST(ConnectionLimiter, AdmitsUpToTotalLimit) {
    ConnectionLimiter limiter(2, 3);
    auto a1 = limiter.try_acquire("a");
    auto b1 = limiter.try_acquire("b");
    auto c1 = limiter.try_acquire("c");
    ASSERT_EQ(a1.verdict, Verdict::admitted);
    ASSERT_EQ(b1.verdict, Verdict::admitted);
    ASSERT_EQ(c1.verdict, Verdict::admitted);
    auto d1 = limiter.try_acquire("d");
    EXPECT_EQ(d1.verdict, Verdict::server_full);
    EXPECT_FALSE(d1.slot.held());
    auto a2 = limiter.try_acquire("a");  // under its own limit, but the server is full
    EXPECT_EQ(a2.verdict, Verdict::server_full);
    EXPECT_FALSE(a2.slot.held());
    const auto snapshot = limiter.snapshot();
    EXPECT_EQ(snapshot.total, 3u);
    EXPECT_EQ(snapshot.per_client.count("d"), 0u) << "refused client must not get an entry";
}

TEST(ConnectionLimiter, PerClientLimitIsCheckedFirst) {
    ConnectionLimiter limiter(2, 2);
    auto a1 = limiter.try_acquire("a");
    auto a2 = limiter.try_acquire("a");
    ASSERT_EQ(a2.verdict, Verdict::admitted);
    // The server is full and "a" is at its own limit: "a" is told it holds too many.
    EXPECT_EQ(limiter.try_acquire("a").verdict, Verdict::client_full);
    EXPECT_EQ(limiter.try_acquire("b").verdict, Verdict::server_full);
}

TEST(ConnectionLimiter, RefusalsDoNotChangeCounts) {
    ConnectionLimiter limiter(1, 2);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(limiter.try_acquire("a").verdict, Verdict::client_full);
        EXPECT_EQ(limiter.try_acquire("c").verdict, Verdict::server_full);
    }
    const auto snapshot = limiter.snapshot();
    EXPECT_EQ(snapshot.total, 2u);
    EXPECT_EQ(snapshot.per_client.size(), 2u);
    EXPECT_EQ(held_by(limiter, "a"), 1u);
    EXPECT_EQ(held_by(limiter, "b"), 1u);
}

TEST(ConnectionLimiter, DestructionReleasesAndErasesEntry) {
    ConnectionLimiter limiter(2, 5);
    {
        auto a = limiter.try_acquire("a");
        ASSERT_TRUE(a.slot.held());
        EXPECT_EQ(held_by(limiter, "a"), 1u);
    }
    const auto snapshot = limiter.snapshot();
    EXPECT_EQ(snapshot.total, 0u);
    EXPECT_EQ(snapshot.per_client.count("a"), 0u);
    EXPECT_TRUE(snapshot.per_client.empty());
}

TEST(ConnectionLimiter, ReleaseIsIdempotent) {
    ConnectionLimiter limiter(3, 5);
    auto a1 = limiter.try_acquire("a");
    auto a2 = limiter.try_acquire("a");
    a1.slot.release();
    EXPECT_FALSE(a1.slot.held());
    EXPECT_EQ(held_by(limiter, "a"), 1u);
    EXPECT_EQ(limiter.snapshot().total, 1u);
    a1.slot.release();
    a1.slot.release();
    EXPECT_EQ(held_by(limiter, "a"), 1u) << "a second release must not give back a2's slot";
    EXPECT_EQ(limiter.snapshot().total, 1u);
    a2.slot.release();
    EXPECT_EQ(limiter.snapshot().total, 0u);
    EXPECT_TRUE(limiter.snapshot().per_client.empty());
}

TEST(ConnectionLimiter, DefaultSlotHoldsNothing) {
    Slot slot;
    EXPECT_FALSE(slot.held());
    slot.release();
    EXPECT_FALSE(slot.held());
}

TEST(ConnectionLimiter, MoveConstructionTransfersTheSlot) {
    ConnectionLimiter limiter(2, 5);
    auto admission = limiter.try_acquire("a");
    {
        Slot moved(std::move(admission.slot));
        EXPECT_TRUE(moved.held());
        EXPECT_FALSE(admission.slot.held());  // NOLINT(bugprone-use-after-move): checked on purpose
        admission.slot.release();             // moved-from: must not release
        EXPECT_EQ(held_by(limiter, "a"), 1u);
    }
    EXPECT_EQ(limiter.snapshot().total, 0u);
    EXPECT_TRUE(limiter.snapshot().per_client.empty());
}

TEST(ConnectionLimiter, MovedFromSlotDoesNotReleaseTwice) {
    ConnectionLimiter limiter(2, 5);
    auto keep = limiter.try_acquire("a");
    {
        auto admission = limiter.try_acquire("a");
        Slot moved(std::move(admission.slot));
        EXPECT_EQ(held_by(limiter, "a"), 2u);
        // admission (moved-from) and moved both end here: exactly one slot comes back.
    }
    EXPECT_EQ(held_by(limiter, "a"), 1u);
    EXPECT_EQ(limiter.snapshot().total, 1u);
    EXPECT_TRUE(keep.slot.held());
}

TEST(ConnectionLimiter, MoveAssignmentReleasesTheOldSlot) {
    ConnectionLimiter limiter(2, 5);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    ASSERT_EQ(limiter.snapshot().total, 2u);
    a.slot = std::move(b.slot);
    EXPECT_TRUE(a.slot.held());
    EXPECT_FALSE(b.slot.held());  // NOLINT(bugprone-use-after-move): checked on purpose
    const auto snapshot = limiter.snapshot();
    EXPECT_EQ(snapshot.total, 1u);
    EXPECT_EQ(snapshot.per_client.count("a"), 0u);
    EXPECT_EQ(held_by(limiter, "b"), 1u);
    a.slot.release();
    EXPECT_EQ(limiter.snapshot().total, 0u);
    EXPECT_TRUE(limiter.snapshot().per_client.empty());
}

TEST(ConnectionLimiter, MoveAssignmentIntoEmptySlot) {
    ConnectionLimiter limiter(2, 5);
    Slot target;
    {
        auto admission = limiter.try_acquire("a");
        target = std::move(admission.slot);
    }
    EXPECT_TRUE(target.held());
    EXPECT_EQ(held_by(limiter, "a"), 1u);
    target = Slot{};
    EXPECT_FALSE(target.held());
    EXPECT_EQ(limiter.snapshot().total, 0u);
}

TEST(ConnectionLimiter, SlotsWorkInContainers) {
    ConnectionLimiter limiter(4, 8);
    std::vector<Slot> slots;
    for (int i = 0; i < 4; ++i) slots.push_back(limiter.try_acquire("a").slot);
    EXPECT_EQ(held_by(limiter, "a"), 4u);  // vector growth moved slots without releasing
    slots.erase(slots.begin());
    EXPECT_EQ(held_by(limiter, "a"), 3u);
    slots.clear();
    EXPECT_EQ(limiter.snapshot().total, 0u);
}

TEST(ConnectionLimiter, CapacityIsFullyRestoredAfterRelease) {
    ConnectionLimiter limiter(2, 5);
    for (int round = 0; round < 3; ++round) {
        SCOPED_TRACE(round);
        std::vector<Slot> slots;
        for (const std::string client : {"a", "b"}) {
            for (int i = 0; i < 2; ++i) {
                auto admission = limiter.try_acquire(client);
                ASSERT_EQ(admission.verdict, Verdict::admitted) << client << " #" << i;
                slots.push_back(std::move(admission.slot));
            }
        }
        auto c1 = limiter.try_acquire("c");
        ASSERT_EQ(c1.verdict, Verdict::admitted);
        EXPECT_EQ(limiter.try_acquire("c").verdict, Verdict::server_full);
        EXPECT_EQ(limiter.try_acquire("a").verdict, Verdict::client_full);
        const auto snapshot = limiter.snapshot();
        EXPECT_EQ(snapshot.total, 5u);
        EXPECT_EQ(snapshot.per_client.size(), 3u);
        slots.clear();
        c1.slot.release();
        EXPECT_EQ(limiter.snapshot().total, 0u);
        EXPECT_TRUE(limiter.snapshot().per_client.empty());
    }
}

TEST(ConnectionLimiter, ConcurrentUseNeverExceedsLimits) {
    constexpr std::size_t kPerClient = 3;
    constexpr std::size_t kTotal = 7;
    constexpr int kThreads = 8;
    constexpr int kIterations = 4000;
    const std::array<std::string, 4> clients{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"};

    ConnectionLimiter limiter(kPerClient, kTotal);
    std::array<std::atomic<int>, 4> holders{};
    std::atomic<int> total_holders{0};
    std::atomic<int> per_client_violations{0};
    std::atomic<int> total_violations{0};
    std::atomic<int> snapshot_violations{0};
    std::atomic<int> admitted{0};
    std::atomic<int> refused{0};

    auto worker = [&](int id) {
        for (int i = 0; i < kIterations; ++i) {
            // Each thread holds up to two slots at once, so 8 threads contend for 7 places.
            const auto first = static_cast<std::size_t>(id + i) % clients.size();
            const auto second = static_cast<std::size_t>(id * 3 + i / 2) % clients.size();
            std::array<ConnectionLimiter::Admission, 2> held{limiter.try_acquire(clients[first]),
                                                             limiter.try_acquire(clients[second])};
            const std::array<std::size_t, 2> keys{first, second};
            for (std::size_t k = 0; k < 2; ++k) {
                if (held[k].verdict != Verdict::admitted) {
                    refused.fetch_add(1);
                    if (held[k].slot.held()) snapshot_violations.fetch_add(1);
                    continue;
                }
                admitted.fetch_add(1);
                if (holders[keys[k]].fetch_add(1) + 1 > static_cast<int>(kPerClient)) {
                    per_client_violations.fetch_add(1);
                }
                if (total_holders.fetch_add(1) + 1 > static_cast<int>(kTotal)) {
                    total_violations.fetch_add(1);
                }
            }
            if (i % 64 == 0) {
                const auto snapshot = limiter.snapshot();
                std::size_t sum = 0;
                for (const auto& [client, count] : snapshot.per_client) {
                    if (count == 0 || count > kPerClient) snapshot_violations.fetch_add(1);
                    sum += count;
                }
                if (sum != snapshot.total || snapshot.total > kTotal) {
                    snapshot_violations.fetch_add(1);
                }
            }
            if (i % 8 == 0) std::this_thread::yield();
            // Count ourselves out before giving the slot back, so holders never over-counts.
            for (std::size_t k = 0; k < 2; ++k) {
                if (held[k].verdict != Verdict::admitted) continue;
                holders[keys[k]].fetch_sub(1);
                total_holders.fetch_sub(1);
                held[k].slot.release();
            }
        }
    };

    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int id = 0; id < kThreads; ++id) threads.emplace_back(worker, id);
    for (auto& thread : threads) thread.join();

    EXPECT_EQ(per_client_violations.load(), 0);
    EXPECT_EQ(total_violations.load(), 0);
    EXPECT_EQ(snapshot_violations.load(), 0);
    EXPECT_EQ(admitted.load() + refused.load(), kThreads * kIterations * 2);
    EXPECT_GT(admitted.load(), 0);
    const auto snapshot = limiter.snapshot();
    EXPECT_EQ(snapshot.total, 0u);
    EXPECT_TRUE(snapshot.per_client.empty());

    // Afterwards the full capacity is available again.
    std::vector<Slot> slots;
    for (std::size_t c = 0; c < 2; ++c) {
        for (std::size_t i = 0; i < kPerClient; ++i) {
            auto admission = limiter.try_acquire(clients[c]);
            ASSERT_EQ(admission.verdict, Verdict::admitted);
            slots.push_back(std::move(admission.slot));
        }
    }
    auto last = limiter.try_acquire(clients[2]);
    EXPECT_EQ(last.verdict, Verdict::admitted);
    EXPECT_EQ(limiter.try_acquire(clients[3]).verdict, Verdict::server_full);
}

// Stage 3's rule: a closed connection's thread still counts, so its place in the total stays
// taken until its Slot is destroyed, while its client may connect again at once.
TEST(ConnectionLimiter, AClosedConnectionFreesItsClientButKeepsItsPlace) {
    ConnectionLimiter limiter(1, 2, false, ConnectionLimiter::Handover::when_released);
    auto a = limiter.try_acquire("a");
    auto b = limiter.try_acquire("b");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    ASSERT_EQ(b.verdict, Verdict::admitted);
    a.slot.connection_closed();
    a.slot.connection_closed();  // twice changes nothing
    const auto snap = limiter.snapshot();
    EXPECT_EQ(snap.total, 1U);
    EXPECT_EQ(snap.per_client.count("a"), 0U);
    // "a" is under its own limit again, but the server's places are both still taken: the
    // newcomer waits for the closed one (up to kHandoverWait), then is refused.
    EXPECT_EQ(limiter.try_acquire("a").verdict, Verdict::server_full);
    a.slot.release();
    const auto again = limiter.try_acquire("a");
    EXPECT_EQ(again.verdict, Verdict::admitted);
    EXPECT_EQ(limiter.snapshot().total, 2U);
}

TEST(ConnectionLimiter, ANewcomerWaitsForAPlaceThatIsComingFree) {
    ConnectionLimiter limiter(5, 1, false, ConnectionLimiter::Handover::when_released);
    auto a = limiter.try_acquire("a");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    a.slot.connection_closed();
    std::atomic<bool> returned{false};
    ConnectionLimiter::Admission newcomer;
    std::thread accepting([&] {
        newcomer = limiter.try_acquire("b");
        returned = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(returned.load());  // a's thread is not gone yet
    a.slot.release();               // ... now it is
    accepting.join();
    EXPECT_EQ(newcomer.verdict, Verdict::admitted);
}

TEST(ConnectionLimiter, AServerFullOfOpenConnectionsRefusesAtOnce) {
    ConnectionLimiter limiter(5, 1, false, ConnectionLimiter::Handover::when_released);
    auto a = limiter.try_acquire("a");
    ASSERT_EQ(a.verdict, Verdict::admitted);
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(limiter.try_acquire("b").verdict, Verdict::server_full);
    EXPECT_LT(std::chrono::steady_clock::now() - start, lab::kHandoverWait);
}

}  // namespace
