// Unit tests of the socket helpers that need no socket: which client addresses are loopback.
#include "lab/net.hpp"

#include <gtest/gtest.h>

#include <cerrno>

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

}  // namespace
