// Unit tests of serve_connection() over a socketpair: the status page's audience, HEAD error
// replies, and the fixed 503 for clients the server has no resources for.
#include "lab/session.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "lab/log.hpp"
#include "test_support.hpp"

namespace {

using lab::test::TempDir;

// A connected pair: the server's end (non-blocking, as accept() gives it) and the client's.
struct Pair {
    lab::Fd server;
    lab::Fd client;
};

Pair make_pair() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    Pair pair{lab::Fd(fds[0]), lab::Fd(fds[1])};
    const int flags = ::fcntl(pair.server.get(), F_GETFL);
    ::fcntl(pair.server.get(), F_SETFL, flags | O_NONBLOCK);
    return pair;
}

// Sends @p request as a client at @p peer_ip would, serves it, and returns all the reply.
std::string round_trip(const lab::ServerContext& context, std::string_view request,
                       const std::string& peer_ip = "127.0.0.1") {
    Pair pair = make_pair();
    EXPECT_EQ(::write(pair.client.get(), request.data(), request.size()),
              static_cast<ssize_t>(request.size()));
    ::shutdown(pair.client.get(), SHUT_WR);  // the client has said all it will say
    lab::serve_connection(lab::Connection{std::move(pair.server), peer_ip}, context);
    std::string reply;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(pair.client.get(), buf, sizeof buf)) > 0) reply.append(buf, n);
    return reply;
}

std::string status_line(const std::string& reply) {
    return reply.substr(0, reply.find("\r\n"));
}

std::string body(const std::string& reply) {
    const auto end = reply.find("\r\n\r\n");
    return end == std::string::npos ? std::string() : reply.substr(end + 4);
}

class Session : public testing::Test {
  protected:
    void SetUp() override {
        lab::set_access_log(false);
        dir_.write("index.html", "<h1>home</h1>");
        context_.site.root = lab::DocumentRoot(dir_.path());
        context_.status_json = [] { return std::string("{\"per_client\": {}}\n"); };
    }

    TempDir dir_{"lab-session"};
    lab::ServerContext context_;
};

TEST_F(Session, StatusPageAnswersLoopbackClients) {
    const std::string reply = round_trip(context_, "GET /server-status HTTP/1.0\r\n\r\n");
    EXPECT_EQ(status_line(reply), "HTTP/1.0 200 OK");
    EXPECT_EQ(body(reply), "{\"per_client\": {}}\n");
    EXPECT_EQ(status_line(round_trip(context_, "GET /server-status HTTP/1.0\r\n\r\n", "::1")),
              "HTTP/1.0 200 OK");
}

TEST_F(Session, StatusPageIsRefusedToOtherAddresses) {
    for (const char* peer : {"10.0.0.7", "192.168.1.2", "2001:db8::1"}) {
        const std::string reply = round_trip(context_, "GET /server-status HTTP/1.0\r\n\r\n", peer);
        EXPECT_EQ(status_line(reply), "HTTP/1.0 403 Forbidden") << peer;
        EXPECT_EQ(reply.find("per_client"), std::string::npos) << peer;
    }
}

TEST_F(Session, StatusRemoteShowsThePageToAnyAddress) {
    context_.status_remote = true;
    const std::string reply =
        round_trip(context_, "GET /server-status HTTP/1.0\r\n\r\n", "10.0.0.7");
    EXPECT_EQ(status_line(reply), "HTTP/1.0 200 OK");
}

TEST_F(Session, StatusPageFollowsTheAgentPolicy) {
    context_.site.agents.allow = {"Firefox/"};
    const std::string curl =
        round_trip(context_, "GET /server-status HTTP/1.0\r\nUser-Agent: curl/7.88.1\r\n\r\n");
    EXPECT_EQ(status_line(curl), "HTTP/1.0 403 Forbidden");
    EXPECT_EQ(curl.find("per_client"), std::string::npos);
    const std::string firefox = round_trip(
        context_, "GET /server-status HTTP/1.0\r\nUser-Agent: Mozilla/5.0 Firefox/120.0\r\n\r\n");
    EXPECT_EQ(status_line(firefox), "HTTP/1.0 200 OK");
    // HTTP/0.9 carries no User-Agent, so an allow list refuses it too (the body alone).
    const std::string simple = round_trip(context_, "GET /server-status\r\n");
    EXPECT_EQ(simple.find("per_client"), std::string::npos) << simple;
}

TEST_F(Session, HeadErrorRepliesHaveNoBody) {
    for (const char* request : {"HEAD /index.html HTTP/1.0\r\nNoColon\r\n\r\n",
                                "HEAD /index.html HTTP/1.0\r\n Folded: x\r\n\r\n"}) {
        const std::string reply = round_trip(context_, request);
        EXPECT_EQ(status_line(reply), "HTTP/1.0 400 Bad Request") << request;
        EXPECT_EQ(body(reply), "") << request;
    }
    const std::string get = round_trip(context_, "GET /index.html HTTP/1.0\r\nNoColon\r\n\r\n");
    EXPECT_EQ(status_line(get), "HTTP/1.0 400 Bad Request");
    EXPECT_FALSE(body(get).empty());
}

TEST_F(Session, HeadWithTooManyHeadersIs431WithoutBody) {
    std::string request = "HEAD /index.html HTTP/1.0\r\n";
    for (int i = 0; i <= 100; ++i) request += "X-H" + std::to_string(i) + ": v\r\n";
    request += "\r\n";
    const std::string reply = round_trip(context_, request);
    EXPECT_EQ(status_line(reply), "HTTP/1.0 431 Request Header Fields Too Large");
    EXPECT_EQ(body(reply), "");
}

TEST(SendUnavailable, SendsACompleteFixed503) {
    Pair pair = make_pair();
    lab::set_access_log(false);
    lab::send_unavailable(lab::Connection{std::move(pair.server), "127.0.0.1"});
    std::string reply;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(pair.client.get(), buf, sizeof buf)) > 0) reply.append(buf, n);
    EXPECT_EQ(status_line(reply), "HTTP/1.0 503 Service Unavailable");
    EXPECT_NE(reply.find("\r\nRetry-After: 1\r\n"), std::string::npos);
    const auto length_at = reply.find("Content-Length: ");
    ASSERT_NE(length_at, std::string::npos);
    EXPECT_EQ(std::to_string(body(reply).size()),
              reply.substr(length_at + 16, reply.find("\r\n", length_at) - length_at - 16));
}

}  // namespace
