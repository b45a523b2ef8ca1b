#include "lab/response.hpp"

#include "lab/http_date.hpp"

namespace lab {

std::string_view reason_phrase(int status) noexcept {
    switch (status) {
        case 200:
            return "OK";
        case 301:
            return "Moved Permanently";
        case 304:
            return "Not Modified";
        case 400:
            return "Bad Request";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 414:
            return "URI Too Long";
        case 429:
            return "Too Many Requests";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 503:
            return "Service Unavailable";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Unknown";
    }
}

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out.push_back(c);
        }
    }
    return out;
}

Response error_response(int status, std::string_view detail) {
    Response response;
    response.status = status;
    const std::string title = std::to_string(status) + " " + std::string(reason_phrase(status));
    response.body = "<!DOCTYPE html>\n<html><head><title>" + title + "</title></head>\n<body><h1>" +
                    title + "</h1>\n<p>" + html_escape(detail) + "</p></body></html>\n";
    response.headers.push_back({"Content-Type", "text/html; charset=utf-8"});
    return response;
}

std::string serialize_head(const Response& response, std::time_t now) {
    if (response.simple) return {};
    std::string head;
    head.reserve(256);
    head += "HTTP/1.0 ";
    head += std::to_string(response.status);
    head += ' ';
    head += reason_phrase(response.status);
    head += "\r\nDate: ";
    head += format_http_date(now);
    head += "\r\nServer: ";
    head += kServerName;
    head += "\r\n";
    for (const auto& [name, value] : response.headers) {
        head += name;
        head += ": ";
        // A line break inside a value would let it forge headers: send it as a space.
        for (const char c : value) head.push_back(c == '\r' || c == '\n' || c == '\0' ? ' ' : c);
        head += "\r\n";
    }
    if (response.status != 304) {
        head += "Content-Length: ";
        head += std::to_string(response.content_length());
        head += "\r\n";
    }
    head += "Connection: close\r\n\r\n";
    return head;
}

}  // namespace lab
