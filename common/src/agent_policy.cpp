#include "lab/agent_policy.hpp"

#include <algorithm>

#include "lab/request.hpp"

namespace lab {

bool icontains(std::string_view text, std::string_view pattern) noexcept {
    if (pattern.size() > text.size()) return false;
    for (std::size_t i = 0; i + pattern.size() <= text.size(); ++i) {
        if (iequals(text.substr(i, pattern.size()), pattern)) return true;
    }
    return false;
}

std::optional<std::string> AgentPolicy::refusal(const std::string* user_agent) const {
    const std::string_view agent = user_agent != nullptr ? std::string_view(*user_agent) : "";
    for (const auto& pattern : deny) {
        if (user_agent != nullptr && icontains(agent, pattern)) {
            return "Your browser (User-Agent containing \"" + pattern + "\") is not served here.";
        }
    }
    if (allow.empty()) return std::nullopt;
    if (user_agent == nullptr)
        return "This server serves only some browsers, and your client sent no User-Agent.";
    const bool admitted = std::any_of(allow.begin(), allow.end(), [&](const std::string& pattern) {
        return icontains(agent, pattern);
    });
    if (admitted) return std::nullopt;
    return "This server serves only some browsers, and your User-Agent matches none of them.";
}

std::optional<std::string> AgentPolicy::refusal(const Request& request) const {
    bool any = false;
    for (const Header& field : request.headers) {
        if (field.name != "user-agent") continue;  // the parser stores names in lower case
        any = true;
        if (auto why = refusal(&field.value)) return why;
    }
    return any ? std::nullopt : refusal(nullptr);
}

}  // namespace lab
