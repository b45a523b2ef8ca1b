/// @file resolve.hpp
/// @brief Mapping a request target to a file inside the document root, safely.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>

#include "lab/fd.hpp"

namespace lab {

/// @brief Result of normalize_target(): a clean, decoded path or an error status.
struct NormalizedPath {
    int status = 200;             ///< 200 when usable, else 400.
    std::string path;             ///< Decoded path, starting with `/`, no `.`/`..`/empty segments.
    bool trailing_slash = false;  ///< The target named a directory (`/dir/`).
    std::string reason;           ///< Why it was rejected, when status is not 200.
};

/// @brief Decodes and checks a target's path without touching the file system.
///
/// Drops the query and fragment, percent-decodes exactly once (bad escapes and `%00` are
/// rejected), then walks the segments with a depth counter: `.` and empty segments are
/// skipped, `..` climbs one level, and any climb above the root is rejected (400), never
/// clamped.
[[nodiscard]] NormalizedPath normalize_target(std::string_view target);

/// @brief The document root, held open: every look-up starts from this one directory.
///
/// Files are found relative to the root's descriptor, never by a path string, so renaming
/// or replacing directories above the root cannot change what a request reaches.
class DocumentRoot {
  public:
    /// @brief No root; resolve_target() answers 500 with it.
    DocumentRoot() = default;
    /// @brief Opens the directory @p path; throws StartupError (exit 1) if it cannot.
    ///
    /// Also checks that the kernel has openat2() (Linux 5.6 or later), which every look-up
    /// needs, so that a server on an older kernel fails at startup and not per request.
    explicit DocumentRoot(const std::filesystem::path& path);

    /// @brief The path the root was opened from (for messages only).
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
    /// @brief The directory descriptor, or -1.
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  private:
    std::filesystem::path path_;
    Fd fd_;
};

/// @brief What the server should do with a target, decided by opening it.
struct Resolution {
    int status = 200;        ///< 200 (serve `file`), 301 (redirect), or an error status.
    Fd file;                 ///< The opened regular file, when 200.
    std::uint64_t size = 0;  ///< Size of `file` in bytes, from fstat() of that descriptor.
    std::time_t mtime = 0;   ///< Modification time of `file`, from the same fstat().
    std::string name;        ///< Decoded path that was served (`/dir/index.html`), for MIME.
    std::string location;    ///< Redirect target (always starts with a single `/`), when 301.
    std::string reason;      ///< Why it failed, when an error status.
};

/// @brief Opens @p target beneath @p root and decides what to answer.
///
/// The file is opened first and checked afterwards, from the descriptor: openat2() with
/// `RESOLVE_BENEATH` refuses every path (`..`, absolute or magic symlinks) that would leave
/// the root, and `O_NONBLOCK` keeps a FIFO or device from blocking the open. Then fstat()
/// on that descriptor decides: a regular file is served from it (never re-opened by name);
/// a directory with a trailing slash resolves to its `index.html` (403 if it has none), one
/// without gets a 301 to the slash form; anything else is 403. Relative symlinks that stay
/// inside the root work; absolute symlinks are refused even when they point inside. Whatever
/// lies outside the root gets 404, the same as a missing file, so nothing can be learnt about
/// it.
[[nodiscard]] Resolution resolve_target(const DocumentRoot& root, std::string_view target);

/// @brief Maps an errno from opening or inspecting a file to an HTTP status.
[[nodiscard]] int status_from_errno(int err) noexcept;

/// @brief True when canonical @p path equals canonical @p root or lies below it.
[[nodiscard]] bool is_inside(const std::filesystem::path& root, const std::filesystem::path& path);

/// @brief Percent-encodes the bytes of @p path that may not appear raw in a URL path.
[[nodiscard]] std::string encode_path(std::string_view path);

}  // namespace lab
