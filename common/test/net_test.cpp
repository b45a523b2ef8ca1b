// Unit tests of the socket helpers: which client addresses are loopback, which errors mean
// "out of resources", and what send_all() reports about a reply the client did not take.
#include "lab/net.hpp"

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <string>

namespace {

TEST(IsLoopbackAddress, WholeIpv4LoopbackRangeAndIpv6Loopback) {
    for (const char* ip : {"127.0.0.1", "127.0.0.2", "127.255.255.254", "127.1.2.3", "::1"}) {
        EXPECT_TRUE(lab::is_loopback_address(ip)) << ip;
    }
}

TEST(IsLoopbackAddress, EverythingElseIsRemote) {
    for (const char* ip : {"128.0.0.1", "10.0.0.1", "192.168.1.1", "0.0.0.0", "::", "::2",
                           "fe80::1", "::ffff:127.0.0.1", "126.255.255.255", "", "localhost",
                           "127.0.0.1 ", "127.0.0.1/8", "1.127.0.0"}) {
        EXPECT_FALSE(lab::is_loopback_address(ip)) << ip;
    }
}

TEST(IsLoopbackAddress, OverlongTextIsNotAnAddress) {
    EXPECT_FALSE(lab::is_loopback_address(std::string(200, '1')));
}

TEST(OutOfResources, OnlyDescriptorAndMemoryShortagesCount) {
    for (const int err : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) {
        EXPECT_TRUE(lab::out_of_resources(err)) << err;
    }
    for (const int err : {0, EAGAIN, EINTR, ECONNABORTED, EINVAL, EBADF}) {
        EXPECT_FALSE(lab::out_of_resources(err)) << err;
    }
}

// A connected pair of non-blocking sockets: the server's sending end and the client's end.
struct SocketPair {
    lab::Fd sender;
    lab::Fd client;
};

SocketPair make_socketpair() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
    return {lab::Fd(fds[0]), lab::Fd(fds[1])};
}

TEST(SendAll, ReportsEveryByteWhenThePeerTakesThem) {
    SocketPair pair = make_socketpair();
    const lab::SendResult result =
        lab::send_all(pair.sender.get(), "hello", std::chrono::milliseconds(100));
    EXPECT_EQ(result.status, lab::IoStatus::ok);
    EXPECT_EQ(result.sent, 5u);
}

TEST(SendAll, CountsWhatWentOutBeforeThePeerStalled) {
    SocketPair pair = make_socketpair();
    const std::string data(8 << 20, 'x');  // more than a socketpair buffers
    const lab::SendResult result =
        lab::send_all(pair.sender.get(), data, std::chrono::milliseconds(50));
    EXPECT_EQ(result.status, lab::IoStatus::timeout);
    EXPECT_GT(result.sent, 0u);
    EXPECT_LT(result.sent, data.size());
}

TEST(SendAll, NothingWentOutToAPeerThatLeft) {
    SocketPair pair = make_socketpair();
    pair.client.reset();
    const lab::SendResult result =
        lab::send_all(pair.sender.get(), "hello", std::chrono::milliseconds(100));
    EXPECT_EQ(result.status, lab::IoStatus::closed);
    EXPECT_EQ(result.sent, 0u);
}

}  // namespace
