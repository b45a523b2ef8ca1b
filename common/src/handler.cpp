#include "lab/handler.hpp"

#include "lab/http_date.hpp"
#include "lab/mime.hpp"
#include "lab/resolve.hpp"

namespace lab {

namespace {

// True when the client's cached copy (If-Modified-Since) is still current.
bool not_modified(const Request& request, std::time_t mtime, std::time_t now) {
    const std::string* since = request.header("if-modified-since");
    if (since == nullptr) return false;
    const auto date = parse_http_date(*since);
    // A date in the future is a broken client clock: ignore it, as RFC 9110 says.
    if (!date || *date > now) return false;
    return mtime <= *date;
}

// Describes the opened file in a 200 (or a 304 when the client's copy is current).
Response serve_file(const Request& request, Resolution& where, std::time_t now) {
    Response response;
    response.headers.push_back({"Content-Type", std::string(mime_type_for(where.name))});
    response.headers.push_back({"Last-Modified", format_http_date(where.mtime)});
    if (not_modified(request, where.mtime, now)) {
        response.status = 304;
        response.send_body = false;
        return response;
    }
    response.file = std::move(where.file);
    response.file_size = where.size;
    return response;
}

// Routes a request to its response, before HEAD and HTTP/0.9 adjustments.
Response route(const Request& request, const Site& site, std::time_t now) {
    if (request.method != "GET" && request.method != "HEAD") {
        return error_response(501, "This server implements only GET and HEAD.");
    }
    if (auto why = site.agents.refusal(request)) return error_response(403, *why);
    Resolution where = resolve_target(site.root, request.target);
    if (where.status == 301) {
        Response response = error_response(301, "The document is at " + where.location);
        response.headers.push_back({"Location", where.location});
        return response;
    }
    if (where.status != 200) return error_response(where.status, where.reason);
    return serve_file(request, where, now);
}

}  // namespace

Response handle_request(const Request& request, const Site& site, std::time_t now) {
    Response response = route(request, site, now);
    if (request.method == "HEAD") response.send_body = false;
    response.simple = request.simple();
    return response;
}

}  // namespace lab
