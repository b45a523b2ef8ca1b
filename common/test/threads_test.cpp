// Unit tests of ThreadSet: a thread per connection, finished threads reaped without waiting
// for the next connection, every thread joined, a task destroyed only after its thread, and
// failures kept inside their thread.
#include "lab/threads.hpp"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <utility>

#include "lab/log.hpp"

namespace {

using namespace std::chrono_literals;

// One end of a fresh socketpair as a Connection (the other end is closed: nobody reads it).
lab::Connection fake_connection() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    ::close(fds[1]);
    return lab::Connection{lab::Fd(fds[0]), "127.0.0.1"};
}

// How many memory regions have exactly the size of a default thread stack: every thread
// not yet joined keeps one (glibc also caches a few stacks of joined threads for reuse).
int stack_sized_regions() {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    std::size_t stack = 0;
    pthread_attr_getstacksize(&attr, &stack);
    pthread_attr_destroy(&attr);
    std::ifstream maps("/proc/self/maps");
    std::string line;
    int count = 0;
    while (std::getline(maps, line)) {
        const auto dash = line.find('-');
        const auto space = line.find(' ');
        const auto begin = std::stoull(line.substr(0, dash), nullptr, 16);
        const auto end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
        if (end - begin == stack) ++count;
    }
    return count;
}

// Spawns @p count handlers that finish at once, and waits until they have.
void run_short_tasks(lab::ThreadSet& threads, int count) {
    std::atomic<int> done{0};
    for (int i = 0; i < count; ++i) {
        ASSERT_TRUE(threads.spawn(fake_connection(), [&done](lab::Connection) { ++done; }));
    }
    for (int i = 0; i < 500 && done.load() < count; ++i) std::this_thread::sleep_for(2ms);
    ASSERT_EQ(done.load(), count);
}

TEST(ThreadSet, RunsEachHandlerOnItsOwnThreadWithItsConnection) {
    lab::ThreadSet threads;
    std::atomic<bool> ran{false};
    std::thread::id seen;
    int fd = -1;
    lab::Connection connection = fake_connection();
    const int expected_fd = connection.fd.get();
    ASSERT_TRUE(threads.spawn(std::move(connection), [&](lab::Connection c) {
        seen = std::this_thread::get_id();
        fd = c.fd.get();
        std::this_thread::sleep_for(50ms);
        ran = true;
    }));
    threads.join_all();  // must wait for the 50 ms handler
    EXPECT_TRUE(ran.load());
    EXPECT_NE(seen, std::this_thread::get_id());
    EXPECT_EQ(fd, expected_fd);
}

TEST(ThreadSet, FinishedThreadsAreReapedWithoutANewSpawn) {
    lab::ThreadSet threads;
    const int before = stack_sized_regions();
    run_short_tasks(threads, 50);
    // Fifty threads left unjoined would keep fifty stacks mapped until the next spawn.
    // Reaped as they finish, at most the last one is left, plus glibc's small stack cache.
    int after = stack_sized_regions();
    for (int i = 0; i < 100 && after > before + 8; ++i) {
        std::this_thread::sleep_for(10ms);
        after = stack_sized_regions();
    }
    EXPECT_LE(after, before + 8) << "thread stacks mapped: " << before << " → " << after;
}

TEST(ThreadSet, AnExceptionEndsOnlyItsOwnThread) {
    lab::set_program_name("threads_test");
    lab::ThreadSet threads;
    ASSERT_TRUE(threads.spawn(fake_connection(),
                              [](lab::Connection) { throw std::runtime_error("boom"); }));
    std::atomic<bool> later{false};
    ASSERT_TRUE(threads.spawn(fake_connection(), [&](lab::Connection) { later = true; }));
    threads.join_all();
    EXPECT_TRUE(later.load());
}

TEST(ThreadSet, JoinAllOnAnEmptySetReturns) {
    lab::ThreadSet threads;
    threads.join_all();
    threads.join_all();
    SUCCEED();
}

// Set by a thread's thread_local objects as the thread exits, after its handler returned.
struct ExitMark {
    std::atomic<bool>* exited = nullptr;
    ~ExitMark() {
        if (exited != nullptr) *exited = true;
    }
};
thread_local ExitMark exit_mark;

// Stands for a limit slot in a task: notes, when destroyed, whether the thread had exited.
struct SlotProbe {
    std::atomic<bool>* exited;
    std::atomic<int>* seen_gone;  // 1: the thread was gone, 0: it was not
    SlotProbe(std::atomic<bool>* e, std::atomic<int>* s) : exited(e), seen_gone(s) {}
    SlotProbe(SlotProbe&& other) noexcept
        : exited(std::exchange(other.exited, nullptr)), seen_gone(other.seen_gone) {}
    SlotProbe(const SlotProbe&) = delete;
    SlotProbe& operator=(const SlotProbe&) = delete;
    SlotProbe& operator=(SlotProbe&&) = delete;
    ~SlotProbe() {
        if (exited != nullptr) *seen_gone = exited->load() ? 1 : 0;
    }
};

TEST(ThreadSet, ATaskIsDestroyedOnlyOnceItsThreadIsGone) {
    // A slot in the task counts until its thread can no longer add to the thread count:
    // stage 3's bound on threads rests on it.
    lab::ThreadSet threads;
    std::atomic<bool> exited{false};
    std::atomic<int> seen_gone{-1};
    ASSERT_TRUE(
        threads.spawn(fake_connection(), [probe = SlotProbe(&exited, &seen_gone)](lab::Connection) {
            exit_mark.exited = probe.exited;  // set as this thread's thread_locals are destroyed
        }));
    threads.join_all();  // every task is destroyed by then, not only every thread ended
    EXPECT_EQ(seen_gone.load(), 1) << "the task (and its slot) went while its thread still ran";
}

}  // namespace
