/// @file handler.hpp
/// @brief Request + site → response: the server's logic, free of sockets.
#pragma once

#include <ctime>

#include "lab/agent_policy.hpp"
#include "lab/request.hpp"
#include "lab/resolve.hpp"
#include "lab/response.hpp"

namespace lab {

/// @brief What a request is served from.
struct Site {
    DocumentRoot root;   ///< The document root, held open.
    AgentPolicy agents;  ///< Which User-Agents are served (all, by default).
};

/// @brief Builds the response to @p request from the files under @p site.
///
/// GET and HEAD are served; any other method gets 501; a User-Agent the site's policy
/// refuses gets 403. @p now decides whether an
/// If-Modified-Since date lies in the future (then it is ignored).
[[nodiscard]] Response handle_request(const Request& request, const Site& site, std::time_t now);

}  // namespace lab
