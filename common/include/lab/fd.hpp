/// @file fd.hpp
/// @brief Move-only owner of a file descriptor.
#pragma once

#include <utility>

/// @brief The lab kit: the shared HTTP core of the three stages, and stage 3's limits.
namespace lab {

/// @brief Owns one file descriptor and closes it exactly once, when destroyed or reset.
///
/// Every socket and file the servers open lives in an Fd, so no error path can leak one.
class Fd {
  public:
    /// @brief An empty owner (holds no descriptor).
    Fd() noexcept = default;
    /// @brief Takes ownership of @p fd (which may be -1 for "none").
    explicit Fd(int fd) noexcept : fd_(fd) {}
    /// @brief Not copyable: it owns what it holds.
    Fd(const Fd&) = delete;
    /// @brief Not copy-assignable.
    Fd& operator=(const Fd&) = delete;
    /// @brief Takes the descriptor from @p other, leaving it empty.
    Fd(Fd&& other) noexcept : fd_(other.release()) {}
    /// @brief Closes the current descriptor, then takes the one from @p other.
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    /// @brief Closes the descriptor, if one is held.
    ~Fd() { reset(); }

    /// @brief The raw descriptor, or -1; ownership stays here.
    [[nodiscard]] int get() const noexcept { return fd_; }
    /// @brief True when a descriptor is held.
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
    /// @brief Gives up ownership without closing; returns the descriptor.
    int release() noexcept { return std::exchange(fd_, -1); }
    /// @brief Closes the held descriptor (if any) and holds @p fd instead.
    void reset(int fd = -1) noexcept;

  private:
    int fd_ = -1;
};

}  // namespace lab
