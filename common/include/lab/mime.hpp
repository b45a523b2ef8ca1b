/// @file mime.hpp
/// @brief Content-Type by file extension.
#pragma once

#include <string_view>

namespace lab {

/// @brief Content-Type for a file called @p path, by its last extension (case-insensitive).
///
/// Text types carry `; charset=utf-8`; unknown extensions get `application/octet-stream`.
[[nodiscard]] std::string_view mime_type_for(std::string_view path) noexcept;

}  // namespace lab
