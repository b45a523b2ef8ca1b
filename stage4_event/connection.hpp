/// @file connection.hpp
/// @brief One connection of the event-driven server, as a state machine that never blocks.
#pragma once

#include <cstdint>
#include <string>

#include "lab/net.hpp"
#include "lab/request.hpp"
#include "lab/response.hpp"
#include "lab/session.hpp"
#include "limiter.hpp"
#include "status.hpp"

namespace lab {

/// @brief What a connection waits for next.
enum class Interest {
    read,   ///< Its socket becoming readable (or its deadline).
    write,  ///< Its socket becoming writable (or its deadline).
    close,  ///< Nothing: it is finished and may be destroyed, which closes it.
};

/// @brief One client connection of stage 4: reading the head → sending the reply → lingering.
///
/// The same steps as the blocking serve_connection(), cut wherever a thread would wait:
/// advance() does all that the socket allows right now and answers what to wait for next;
/// the event loop calls it again when that happens or when deadline() passes. Nothing here
/// blocks, and nothing here knows about epoll, so a test can drive it over a socketpair.
class EventConnection {
  public:
    /// @brief An admitted connection, holding @p slot until it is destroyed.
    EventConnection(Connection connection, ConnectionLimiter::Slot slot,
                    const ServerContext& context, Counters& counters, Clock::time_point now);

    /// @brief A refused connection: it sends @p response (429/503) and lingers, holding no slot.
    EventConnection(Connection connection, Response response, const ServerContext& context,
                    Counters& counters, Clock::time_point now);

    /// @brief Not copyable: it owns a socket.
    EventConnection(const EventConnection&) = delete;
    /// @brief Not copy-assignable.
    EventConnection& operator=(const EventConnection&) = delete;

    /// @brief Makes all the progress the socket allows now; what to wait for next.
    ///
    /// Also handles a deadline that has passed. Never throws for anything the client does;
    /// std::bad_alloc may escape, and the caller then destroys the connection.
    [[nodiscard]] Interest advance(Clock::time_point now);

    /// @brief The server is stopping: a reply under way gets kShutdownGrace, the rest ends.
    [[nodiscard]] Interest stop(Clock::time_point now);

    /// @brief When advance() must be called even if the socket stays quiet.
    [[nodiscard]] Clock::time_point deadline() const noexcept;

    /// @brief The socket.
    [[nodiscard]] int fd() const noexcept { return connection_.fd.get(); }
    /// @brief The client's address.
    [[nodiscard]] const std::string& peer() const noexcept { return connection_.peer_ip; }

  private:
    enum class State { reading, sending, lingering, closed };

    Interest read_head(Clock::time_point now);
    bool lost_slot() noexcept;
    void report(Phase phase) noexcept;
    Interest give_up_slot(Clock::time_point now);
    Interest head_ended(bool timed_out, Clock::time_point now);
    void start_reply(Response response, Clock::time_point now);
    Interest send_reply(Clock::time_point now);
    [[nodiscard]] std::uint64_t body_bytes_out() const noexcept;
    Interest finish_reply(bool sent, Clock::time_point now);
    Interest linger(Clock::time_point now);
    Interest close();

    Connection connection_;
    ConnectionLimiter::Slot slot_;
    const ServerContext& context_;
    Counters& counters_;
    State state_ = State::reading;
    Clock::time_point deadline_;
    Clock::time_point hard_deadline_ = Clock::time_point::max();  // set by stop()

    // Reading.
    std::string bytes_;
    RequestParser parser_;
    bool nothing_unread_ = false;  // the last read emptied the socket, and no wait since
    bool counted_as_served_ = false;
    bool status_page_ = false;  // answering /server-status: left out of its snapshot

    // Sending.
    Response response_;
    std::string wire_;           // status line, headers and an in-memory body
    std::size_t head_size_ = 0;  // the status line and headers, at the front of wire_
    std::size_t wire_sent_ = 0;
    std::uint64_t file_left_ = 0;
    off_t file_offset_ = 0;
    std::string logged_line_;
    std::chrono::milliseconds linger_for_{kLingerTimeout};

    // Lingering.
    std::size_t drained_ = 0;
};

}  // namespace lab
