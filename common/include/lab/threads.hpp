/// @file threads.hpp
/// @brief The handler threads of a threaded server: start one per connection, reap, join.
#pragma once

#include <condition_variable>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "lab/log.hpp"
#include "lab/net.hpp"
#include "lab/session.hpp"

namespace lab {

/// @brief Starts one thread per connection and joins every one of them; no thread is lost.
///
/// Each thread, as it finishes, joins the thread that finished before it and leaves itself
/// to be joined by the next: so a finished thread's stack is freed as soon as another thread
/// finishes, and at any time the set holds the running threads plus at most one finished
/// one, whether or not new connections arrive. join_all() waits for the rest.
class ThreadSet {
  public:
    /// @brief An empty set.
    ThreadSet() = default;
    /// @brief Not copyable: it owns what it holds.
    ThreadSet(const ThreadSet&) = delete;
    /// @brief Not copy-assignable.
    ThreadSet& operator=(const ThreadSet&) = delete;
    /// @brief Joins every thread still running.
    ~ThreadSet() { join_all(); }

    /// @brief Runs `handler(std::move(connection))` on a new thread; false if none could start.
    ///
    /// When no thread (or no memory for one) can be had, @p handler is destroyed unrun, so
    /// whatever it owns (a limit slot) is released first, and then the client is told 503.
    /// Whatever escapes @p handler is logged and ends that thread only.
    template <class Handler>
    bool spawn(Connection connection, Handler handler) noexcept {
        // BEGIN SOLUTION stage2/spawn
        std::unique_ptr<Job<Handler>> job;
        try {
            job = std::make_unique<Job<Handler>>(std::move(connection), std::move(handler));
            std::lock_guard lock(mutex_);
            const auto self = running_.emplace(running_.end());
            try {
                *self = std::thread([this, self, raw = job.get()] {
                    finish(self, run_job(std::unique_ptr<Job<Handler>>(raw)));
                });
            } catch (...) {
                running_.erase(self);
                throw;
            }
            static_cast<void>(job.release());  // the new thread owns it now
            return true;
        } catch (const std::exception&) {  // std::system_error (no thread) or std::bad_alloc
            Connection unserved = job ? std::move(job->connection) : std::move(connection);
            // The handler, and what it holds (a limit slot), goes before the client is told.
            if (job) {
                job.reset();
            } else {
                [[maybe_unused]] const Handler dropped(std::move(handler));
            }
            send_unavailable(std::move(unserved));
            return false;
        }
        // STUB
        // // TODO(student): the hand-off of stage 2. Start a new thread that runs
        // // handler(std::move(connection)), and keep it in running_ so that join_all() can
        // // wait for it. The private helpers below do the rest: put both in a Job, add an
        // // entry for the thread to running_ under mutex_, start a std::thread on that entry
        // // whose body is finish(entry, run_job(job)), and give the Job to the thread. If no
        // // thread (or no memory) can be had: take the entry out again, destroy the handler
        // // first (it may hold a limit slot), then send_unavailable() and return false.
        // // Until then no thread starts: every client is told 503 and the handler never runs.
        // log_error("TODO(student): ThreadSet::spawn() is not written yet: 503, no thread");
        // static_cast<void>(Handler(std::move(handler)));
        // send_unavailable(std::move(connection));
        // return false;
        // END SOLUTION
    }

    /// @brief Waits for every thread to finish.
    void join_all() {
        std::unique_lock lock(mutex_);
        idle_.wait(lock, [this] { return running_.empty(); });
        std::thread last = std::move(finished_);
        lock.unlock();
        if (last.joinable()) last.join();
    }

  private:
    using Slot = std::list<std::thread>::iterator;

    template <class Handler>
    struct Job {
        Job(Connection c, Handler h) : connection(std::move(c)), handler(std::move(h)) {}
        Connection connection;
        Handler handler;
    };

    // Runs one job and destroys it, so what it owns is released before the thread is done.
    template <class Handler>
    static bool run_job(std::unique_ptr<Job<Handler>> job) noexcept {
        bool ok = true;
        try {
            job->handler(std::move(job->connection));
        } catch (...) {
            ok = false;
        }
        job.reset();
        return ok;
    }

    // Moves the calling thread from running_ to finished_, and joins the one it replaces.
    void finish(Slot self, bool ok) noexcept {
        if (!ok) log_error("a connection's thread ended with an exception");
        std::thread previous;
        {
            std::lock_guard lock(mutex_);
            previous = std::exchange(finished_, std::move(*self));
            running_.erase(self);
            if (running_.empty()) idle_.notify_all();
        }
        // `previous` has done its bookkeeping already: this join only waits for its exit.
        if (previous.joinable()) previous.join();
    }

    std::mutex mutex_;
    std::condition_variable idle_;
    std::list<std::thread> running_;  // one entry per thread still serving
    std::thread finished_;            // the last thread to finish, not joined yet
};

}  // namespace lab
