// Unit tests of stage 4's connection state machine, driven over a socketpair with a fake
// clock: each step is one advance() call, and the test plays the client.
#include "connection.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "lab/log.hpp"
#include "refusal.hpp"
#include "test_support.hpp"

namespace {

using lab::Interest;
using std::chrono::milliseconds;
using std::chrono::seconds;

const lab::Clock::time_point kT0{std::chrono::hours(1)};

class EventConnectionTest : public testing::Test {
  protected:
    void SetUp() override {
        lab::set_access_log(false);
        dir_.write("a.txt", "hello");
        dir_.write("big.bin", std::string(std::size_t{4} << 20, 'b'));
        context_.site.root = lab::DocumentRoot(dir_.path());
        context_.timeout = seconds(10);
        int fds[2] = {-1, -1};
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        server_ = lab::Fd(fds[0]);
        client_ = lab::Fd(fds[1]);
        ::fcntl(server_.get(), F_SETFL, ::fcntl(server_.get(), F_GETFL) | O_NONBLOCK);
        ::fcntl(client_.get(), F_SETFL, ::fcntl(client_.get(), F_GETFL) | O_NONBLOCK);
    }

    // An admitted connection over the server end, with a slot of limiter_.
    std::unique_ptr<lab::EventConnection> admitted() {
        auto admission = limiter_.try_acquire("127.0.0.1");
        EXPECT_EQ(admission.verdict, lab::ConnectionLimiter::Verdict::admitted);
        return std::make_unique<lab::EventConnection>(
            lab::Connection{std::move(server_), "127.0.0.1"}, std::move(admission.slot), context_,
            counters_, kT0);
    }

    void send(std::string_view bytes) {
        ASSERT_EQ(::write(client_.get(), bytes.data(), bytes.size()),
                  static_cast<ssize_t>(bytes.size()));
    }

    // Everything the client can read now; `closed` tells whether the server closed.
    std::string receive(bool* closed = nullptr) {
        std::string out;
        char buf[65536];
        while (true) {
            const ssize_t n = ::read(client_.get(), buf, sizeof buf);
            if (n > 0) {
                out.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (closed != nullptr) *closed = n == 0;
            return out;
        }
    }

    lab::test::TempDir dir_{"lab-event"};
    lab::ServerContext context_;
    lab::ConnectionLimiter limiter_{12, 60, true};
    lab::Counters counters_;
    lab::Fd server_;
    lab::Fd client_;
};

TEST_F(EventConnectionTest, WholeRequestIsAnsweredAndClosed) {
    send("GET /a.txt HTTP/1.0\r\n\r\n");
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::close);
    connection.reset();
    bool closed = false;
    const std::string reply = receive(&closed);
    EXPECT_EQ(reply.substr(0, reply.find("\r\n")), "HTTP/1.0 200 OK");
    EXPECT_EQ(reply.substr(reply.size() - 5), "hello");
    EXPECT_TRUE(closed);
    EXPECT_EQ(counters_.served.load(), 1U);
    EXPECT_EQ(limiter_.snapshot().total, 0U);
}

TEST_F(EventConnectionTest, ASuccessDrainsWhatItsFirstReadLeftBeforeClosing) {
    // More than one read's worth: the head, then bytes the server never asked for, which
    // would turn a TCP close() into a reset under the reply if they stayed unread.
    send("GET /a.txt HTTP/1.0\r\n\r\n" + std::string(6000, 'x'));
    const lab::Fd peek(::dup(server_.get()));  // keeps the socket open to look at it after
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::close);
    connection.reset();
    int unread = -1;
    ASSERT_EQ(::ioctl(peek.get(), FIONREAD, &unread), 0);
    EXPECT_EQ(unread, 0);
    const std::string reply = receive();
    EXPECT_EQ(reply.substr(0, reply.find("\r\n")), "HTTP/1.0 200 OK");
    EXPECT_EQ(counters_.served.load(), 1U);
}

TEST_F(EventConnectionTest, ASuccessThatWaitedDrainsWhatCameMeanwhile) {
    send("GET /big.bin HTTP/1.0\r\n\r\n");
    const lab::Fd peek(::dup(server_.get()));
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::write);  // the socket buffer is full
    send("more");  // sent while the reply waits, after the server's last read
    std::size_t got = 0;
    Interest next = Interest::write;
    for (int round = 0; round < 1000 && next == Interest::write; ++round) {
        got += receive().size();
        next = connection->advance(kT0 + milliseconds(1));
    }
    EXPECT_EQ(next, Interest::close);
    connection.reset();
    int unread = -1;
    ASSERT_EQ(::ioctl(peek.get(), FIONREAD, &unread), 0);
    EXPECT_EQ(unread, 0);
    got += receive().size();
    EXPECT_GT(got, std::size_t{4} << 20);
}

TEST_F(EventConnectionTest, HeadArrivingInPiecesWaitsForTheRest) {
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::read);
    EXPECT_EQ(connection->deadline(), kT0 + seconds(10));
    send("GET /a.txt HT");
    EXPECT_EQ(connection->advance(kT0 + seconds(1)), Interest::read);
    // The read deadline is absolute: trickling does not move it.
    EXPECT_EQ(connection->deadline(), kT0 + seconds(10));
    send("TP/1.0\r\n\r\n");
    EXPECT_EQ(connection->advance(kT0 + seconds(2)), Interest::close);
    EXPECT_NE(receive().find("hello"), std::string::npos);
}

TEST_F(EventConnectionTest, SilentClientIsClosedSilentlyAtTheDeadline) {
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::read);
    EXPECT_EQ(connection->advance(kT0 + seconds(10)), Interest::close);
    connection.reset();
    bool closed = false;
    EXPECT_EQ(receive(&closed), "");
    EXPECT_TRUE(closed);
    EXPECT_EQ(counters_.timed_out.load(), 1U);
}

TEST_F(EventConnectionTest, PartialHeadGets408ThenLingers) {
    send("HEAD /a.txt HTTP/1.0\r\nX: 1\r\n");
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::read);
    // At the deadline: a 408 without a body (the method was HEAD), then a lingering close.
    EXPECT_EQ(connection->advance(kT0 + seconds(10)), Interest::read);
    bool closed = false;
    const std::string reply = receive(&closed);
    EXPECT_EQ(reply.substr(0, reply.find("\r\n")), "HTTP/1.0 408 Request Timeout");
    EXPECT_EQ(reply.substr(reply.find("\r\n\r\n") + 4), "");
    EXPECT_TRUE(closed);  // the server shut its sending side: the reply is complete
    EXPECT_EQ(connection->deadline(), kT0 + seconds(10) + lab::kLingerTimeout);
    ::shutdown(client_.get(), SHUT_WR);  // the client closes too: lingering ends
    EXPECT_EQ(connection->advance(kT0 + seconds(11)), Interest::close);
}

TEST_F(EventConnectionTest, ProgressMovesTheIdleDeadlineAndAStalledReaderIsCut) {
    send("GET /big.bin HTTP/1.0\r\n\r\n");
    auto connection = admitted();
    auto now = kT0;
    EXPECT_EQ(connection->advance(now), Interest::write);  // the socket buffer is full
    std::size_t got = receive().size();
    now += seconds(5);
    EXPECT_EQ(connection->advance(now), Interest::write);
    // Progress moves the idle deadline.
    EXPECT_EQ(connection->deadline(), now + seconds(10));
    got += receive().size();
    EXPECT_GT(got, 0U);
    // Now the client stops reading: at the idle deadline the reply is abandoned.
    EXPECT_EQ(connection->advance(now + seconds(1)), Interest::write);
    EXPECT_EQ(connection->advance(now + seconds(1)), Interest::write);
    static_cast<void>(connection->advance(now + seconds(1)));
    const auto stalled_at = connection->deadline();
    EXPECT_EQ(connection->advance(stalled_at), Interest::close);
    EXPECT_EQ(counters_.served.load(), 0U);
}

TEST_F(EventConnectionTest, ReclaimWakesTheConnectionWhichAnswers408) {
    lab::ConnectionLimiter full(12, 1, true);
    auto admission = full.try_acquire("127.0.0.9");
    auto connection =
        std::make_unique<lab::EventConnection>(lab::Connection{std::move(server_), "127.0.0.9"},
                                               std::move(admission.slot), context_, counters_, kT0);
    EXPECT_EQ(connection->advance(kT0), Interest::read);
    auto newcomer = full.try_acquire("127.0.0.10");  // takes the idle connection's slot
    ASSERT_EQ(newcomer.verdict, lab::ConnectionLimiter::Verdict::admitted);
    EXPECT_EQ(connection->advance(kT0 + milliseconds(1)), Interest::close);
    const std::string reply = receive();
    EXPECT_EQ(reply.substr(0, reply.find("\r\n")), "HTTP/1.0 408 Request Timeout");
    connection.reset();
    EXPECT_EQ(full.snapshot().total, 1U);  // only the newcomer
}

TEST_F(EventConnectionTest, RefusalIsSentAtOnceAndLingersWithoutASlot) {
    lab::EventConnection refused(lab::Connection{std::move(server_), "127.0.0.1"},
                                 lab::refusal_response(503), context_, counters_, kT0);
    EXPECT_EQ(refused.advance(kT0), Interest::read);  // sent; now reading what the client says
    const std::string reply = receive();
    EXPECT_EQ(reply.substr(0, reply.find("\r\n")), "HTTP/1.0 503 Service Unavailable");
    EXPECT_NE(reply.find("\r\nRetry-After: "), std::string::npos);
    EXPECT_EQ(refused.deadline(), kT0 + lab::kRefusalLinger);
    send("GET / HTTP/1.0\r\n\r\n");  // the request it sent meanwhile is read and dropped
    EXPECT_EQ(refused.advance(kT0 + milliseconds(10)), Interest::read);
    EXPECT_EQ(refused.advance(kT0 + lab::kRefusalLinger), Interest::close);
    EXPECT_EQ(limiter_.snapshot().total, 0U);
}

TEST_F(EventConnectionTest, StopEndsAWaitingConnectionAndGivesAReplyAGrace) {
    auto waiting = admitted();
    EXPECT_EQ(waiting->advance(kT0), Interest::read);
    EXPECT_EQ(waiting->stop(kT0), Interest::close);

    int fds[2] = {-1, -1};
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    server_ = lab::Fd(fds[0]);
    client_ = lab::Fd(fds[1]);
    ::fcntl(server_.get(), F_SETFL, ::fcntl(server_.get(), F_GETFL) | O_NONBLOCK);
    send("GET /big.bin HTTP/1.0\r\n\r\n");
    auto sending = admitted();
    EXPECT_EQ(sending->advance(kT0), Interest::write);
    EXPECT_EQ(sending->stop(kT0), Interest::write);
    EXPECT_EQ(sending->deadline(), kT0 + lab::kShutdownGrace);
    EXPECT_EQ(sending->advance(kT0 + lab::kShutdownGrace), Interest::close);
}

TEST_F(EventConnectionTest, BadHeaderIs400AndHeadGetsNoBody) {
    send("HEAD /a.txt HTTP/1.0\r\nNoColon\r\n\r\n");
    auto connection = admitted();
    EXPECT_EQ(connection->advance(kT0), Interest::read);  // replied, lingering
    bool closed = false;
    const std::string reply = receive(&closed);
    EXPECT_EQ(reply.substr(0, reply.find("\r\n")), "HTTP/1.0 400 Bad Request");
    EXPECT_EQ(reply.substr(reply.find("\r\n\r\n") + 4), "");
    EXPECT_TRUE(closed);
}

}  // namespace
