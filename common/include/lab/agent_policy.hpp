/// @file agent_policy.hpp
/// @brief Allow or deny requests by their User-Agent header (the course's question 2).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lab {

struct Request;

/// @brief Rules on the User-Agent header: case-insensitive substring patterns.
///
/// With no rules every request passes. A deny rule that matches always refuses. When allow
/// rules exist, a request passes only if one of them matches; a request without a
/// User-Agent then matches none. A request with several User-Agent fields is judged on each:
/// one that a deny rule matches, or that no allow rule matches, refuses the request, so
/// adding a field can never get a request past the rules. The header is whatever the client
/// chooses to send, so this is a courtesy filter, not access control.
struct AgentPolicy {
    std::vector<std::string> allow;  ///< Patterns that admit (`--allow-agent`).
    std::vector<std::string> deny;   ///< Patterns that refuse, checked first (`--deny-agent`).

    /// @brief nullopt when @p user_agent (nullptr if absent) may be served, else the reason.
    [[nodiscard]] std::optional<std::string> refusal(const std::string* user_agent) const;
    /// @brief nullopt when @p request may be served, else the reason. Every User-Agent field
    /// counts: the request is refused if any one of them would be refused on its own.
    [[nodiscard]] std::optional<std::string> refusal(const Request& request) const;
};

/// @brief True when @p pattern occurs in @p text, ignoring ASCII case.
[[nodiscard]] bool icontains(std::string_view text, std::string_view pattern) noexcept;

}  // namespace lab
