/// @file serving_threads.hpp
/// @brief A bounded set of threads that each accept and serve connections themselves.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include "lab/log.hpp"
#include "lab/net.hpp"

namespace lab {

/// @brief Up to `max_threads` threads, each running accept → serve → accept on one Listener.
///
/// Handing each connection from an accepting thread to a serving thread costs a wake-up and
/// a context switch per connection, which on a small file costs more than the serving
/// itself. Here the thread that accepts a connection serves it, and while it does, the next
/// thread takes its turn in accept(). Threads are started only as load needs
/// them: when the last thread waiting to accept takes a client, it starts another one
/// (while fewer than `max_threads` exist), so a thread is ready for the next client. They are
/// kept afterwards, and all of them are joined when shutdown is requested.
class ServingThreads {
  public:
    /// @brief The accept turn: held from accept() until the handler passes it on.
    using Turn = std::unique_lock<std::mutex>;
    /// @brief What a thread does with each accepted connection.
    ///
    /// It is called holding @p turn and must call `turn.unlock()` once it has decided on
    /// the connection (admitted or refused), before serving it: then connections are
    /// admitted in the order they were accepted. If it does not, the turn passes when it
    /// returns.
    using Handler = std::function<void(Connection, Turn& turn)>;

    /// @brief Threads for @p listener, at most @p max_threads (≥ 1), serving with @p handler.
    ServingThreads(Listener& listener, std::size_t max_threads, Handler handler)
        : listener_(listener), max_threads_(max_threads), handler_(std::move(handler)) {}
    /// @brief Not copyable: it owns what it holds.
    ServingThreads(const ServingThreads&) = delete;
    /// @brief Not copy-assignable.
    ServingThreads& operator=(const ServingThreads&) = delete;
    /// @brief Joins every thread still running.
    ~ServingThreads() { join_all(); }

    /// @brief Serves on the calling thread (and those it starts) until shutdown; joins them all.
    void run() {
        loop();
        join_all();
    }

  private:
    // One thread's life: wait in accept(), make sure someone else waits, serve, repeat.
    void loop() {
        while (true) {
            ++waiting_;
            // Only the thread holding the turn is blocked in accept(): the kernel reserves a
            // descriptor for every blocked accept(), and a whole pool of them would hold as
            // many descriptors as threads, leaving none for files (Apache's prefork
            // serialises accept() with a mutex too). The others queue on the lock.
            Turn turn(accept_mutex_);
            auto connection = listener_.accept();
            if (--waiting_ == 0 && connection) start_another();
            if (!connection) return;
            handler_(std::move(*connection), turn);
        }
    }

    // Starts one more thread if the cap allows; failure leaves the running ones serving.
    void start_another() {
        std::lock_guard lock(mutex_);
        if (stopping_ || threads_.size() + 1 >= max_threads_) return;
        try {
            threads_.emplace_back([this] { loop(); });
        } catch (const std::system_error& error) {
            log_error(std::string("cannot start another thread: ") + error.what());
        }
    }

    void join_all() {
        std::vector<std::thread> threads;
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
            threads.swap(threads_);
        }
        for (auto& thread : threads) {
            if (thread.joinable()) thread.join();
        }
    }

    Listener& listener_;
    const std::size_t max_threads_;
    const Handler handler_;
    std::mutex accept_mutex_;
    std::atomic<std::size_t> waiting_{0};  // threads in accept_one() right now
    std::mutex mutex_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;  // started by loop(); the run() caller is not here
};

}  // namespace lab
