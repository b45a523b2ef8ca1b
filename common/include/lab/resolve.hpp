/// @file resolve.hpp
/// @brief Mapping a request target to a file inside the document root, safely.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

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

/// @brief What the server should do with a target, decided against the file system.
struct Resolution {
    int status = 200;            ///< 200 (serve `file`), 301 (redirect), or an error status.
    std::filesystem::path file;  ///< Canonical path of the regular file to serve, when 200.
    std::string location;        ///< Redirect target (always starts with a single `/`), when 301.
    std::string reason;          ///< Why it failed, when an error status.
};

/// @brief Resolves @p target against @p root, which must already be canonical.
///
/// A directory with a trailing slash resolves to its `index.html` (403 if it has none); one
/// without gets a 301 to the slash form. Only regular files are served, and the canonical
/// result must lie inside the root, so a symlink cannot lead out of it (403).
[[nodiscard]] Resolution resolve_target(const std::filesystem::path& root, std::string_view target);

/// @brief Maps an errno from opening or inspecting a file to an HTTP status.
[[nodiscard]] int status_from_errno(int err) noexcept;

/// @brief True when canonical @p path equals canonical @p root or lies below it.
[[nodiscard]] bool is_inside(const std::filesystem::path& root, const std::filesystem::path& path);

/// @brief Percent-encodes the bytes of @p path that may not appear raw in a URL path.
[[nodiscard]] std::string encode_path(std::string_view path);

}  // namespace lab
