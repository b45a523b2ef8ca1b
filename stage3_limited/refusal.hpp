/// @file refusal.hpp
/// @brief Refusing a connection politely without blocking the accept loop.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>

#include "lab/net.hpp"
#include "lab/response.hpp"

namespace lab {

/// @brief Most refused sockets lingering at once; past it the oldest is closed at once.
inline constexpr std::size_t kMaxLingering = 256;
/// @brief How long a refused socket waits for its client to finish sending and close.
inline constexpr std::chrono::milliseconds kRefusalLinger{1000};
/// @brief Seconds a refused client is told to wait (`Retry-After`).
inline constexpr int kRetryAfterSeconds = 1;

/// @brief Sends 429/503 replies from the accept loop and closes the sockets on one thread.
///
/// The reply is small, so it fits the empty send buffer of a fresh socket and goes out
/// without waiting. Closing is the slow part: the client's request bytes must be read and
/// dropped first, or the kernel answers them with a reset that can wipe the reply. One
/// background thread does that for at most kMaxLingering sockets, each for at most
/// kRefusalLinger, so a flood costs bounded memory, descriptors and threads.
class Refuser {
  public:
    /// @brief Starts the lingering thread.
    Refuser();
    /// @brief Not copyable: it owns what it holds.
    Refuser(const Refuser&) = delete;
    /// @brief Not copy-assignable.
    Refuser& operator=(const Refuser&) = delete;
    /// @brief Stops the thread and closes every socket still lingering.
    ~Refuser();

    /// @brief Sends the 429/503 @p status reply to @p connection and hands it over for closing.
    ///
    /// Never throws: out of memory, the client still gets a fixed 503 and a close.
    void refuse(Connection connection, int status) noexcept;

  private:
    struct Lingering {
        Fd fd;
        Clock::time_point deadline;
    };
    void run();

    std::mutex mutex_;
    std::deque<Lingering> queue_;  // handed over, not yet picked up by the thread
    Fd wake_;                      // eventfd that interrupts the thread's poll
    bool stopping_ = false;
    std::thread thread_;
};

/// @brief The 429/503 reply, with Retry-After and a body that names the limit.
[[nodiscard]] Response refusal_response(int status);

}  // namespace lab
