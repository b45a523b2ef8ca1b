/// @file threads.hpp
/// @brief The handler threads of a threaded server: start, reap, join.
#pragma once

#include <atomic>
#include <cstddef>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

namespace lab {

/// @brief Starts one thread per task and joins every one of them; no thread is ever lost.
///
/// Finished threads are joined the next time a task is started, so the set holds only the
/// threads still running plus a few just finishing. The destructor joins the rest.
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

    /// @brief Runs @p task on a new thread; false if the thread could not be created.
    ///
    /// On failure @p task is destroyed unrun, so whatever it owns (a socket, a limit slot)
    /// is released at once.
    template <class Task>
    bool spawn(Task task) {
        std::lock_guard lock(mutex_);
        reap_locked();
        auto entry = entries_.emplace(entries_.end());
        try {
            entry->thread = std::thread([task = std::move(task), entry]() mutable {
                task();
                entry->done.store(true, std::memory_order_release);
            });
        } catch (const std::system_error&) {
            entries_.erase(entry);
            return false;
        }
        return true;
    }

    /// @brief Waits for every thread to finish.
    void join_all() {
        std::lock_guard lock(mutex_);
        for (auto& entry : entries_) {
            if (entry.thread.joinable()) entry.thread.join();
        }
        entries_.clear();
    }

  private:
    struct Entry {
        std::thread thread;
        std::atomic<bool> done{false};
    };

    // Joins and forgets threads whose task has returned.
    void reap_locked() {
        for (auto it = entries_.begin(); it != entries_.end();) {
            if (it->done.load(std::memory_order_acquire)) {
                it->thread.join();
                it = entries_.erase(it);
            } else {
                ++it;
            }
        }
    }

    std::mutex mutex_;
    std::list<Entry> entries_;
};

}  // namespace lab
