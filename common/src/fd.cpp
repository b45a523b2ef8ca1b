#include "lab/fd.hpp"

#include <unistd.h>

namespace lab {

void Fd::reset(int fd) noexcept {
    // close() is not retried on EINTR: on Linux the descriptor is already released then.
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

}  // namespace lab
