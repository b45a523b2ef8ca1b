// Unit tests of the User-Agent policy (--allow-agent / --deny-agent) and its use by the handler.
#include "lab/agent_policy.hpp"

#include <gtest/gtest.h>

#include <ctime>
#include <initializer_list>
#include <string>

#include "lab/handler.hpp"
#include "lab/request.hpp"
#include "test_support.hpp"

namespace {

using lab::AgentPolicy;

const std::string kCurl = "curl/7.88.1";
const std::string kChrome =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Safari/537.36";
const std::string kEdge =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91";
const std::string kOpera =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0";
const std::string kHeadless =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36";
const std::string kFirefox =
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

// The rule set the docs recommend for "Chrome only".
AgentPolicy chrome_only() {
    return AgentPolicy{{"Chrome/"}, {"Edg/", "OPR/", "HeadlessChrome"}};
}

TEST(AgentPolicy, NoRulesAdmitsEveryoneIncludingNoAgent) {
    const AgentPolicy policy;
    EXPECT_FALSE(policy.refusal(&kCurl));
    EXPECT_FALSE(policy.refusal(&kChrome));
    EXPECT_FALSE(policy.refusal(nullptr));
}

TEST(AgentPolicy, ChromeOnlyRuleSet) {
    const AgentPolicy policy = chrome_only();
    EXPECT_FALSE(policy.refusal(&kChrome));
    EXPECT_TRUE(policy.refusal(&kEdge));
    EXPECT_TRUE(policy.refusal(&kOpera));
    EXPECT_TRUE(policy.refusal(&kHeadless));
    EXPECT_TRUE(policy.refusal(&kFirefox));
    EXPECT_TRUE(policy.refusal(&kCurl));
}

TEST(AgentPolicy, MissingAgentIsRefusedOnlyWhenAllowRulesExist) {
    EXPECT_TRUE(chrome_only().refusal(nullptr));
    EXPECT_FALSE(AgentPolicy({}, {"curl"}).refusal(nullptr));
}

TEST(AgentPolicy, MatchingIgnoresCase) {
    const AgentPolicy policy{{"chrome/"}, {}};
    EXPECT_FALSE(policy.refusal(&kChrome));
    const std::string shouting = "MOZILLA CHROME/1.0";
    EXPECT_FALSE(policy.refusal(&shouting));
}

TEST(AgentPolicy, DenyWinsOverAllow) {
    const AgentPolicy policy{{"Chrome"}, {"Edg/"}};
    EXPECT_FALSE(policy.refusal(&kChrome));
    const auto why = policy.refusal(&kEdge);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("Edg/"), std::string::npos) << *why;
}

TEST(AgentPolicy, ReasonSaysWhy) {
    const auto why = chrome_only().refusal(&kCurl);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("matches none"), std::string::npos) << *why;
    const auto none = chrome_only().refusal(nullptr);
    ASSERT_TRUE(none);
    EXPECT_NE(none->find("no User-Agent"), std::string::npos) << *none;
}

TEST(AgentPolicy, IcontainsEdgeCases) {
    EXPECT_TRUE(lab::icontains("abc", ""));
    EXPECT_TRUE(lab::icontains("ABC", "bc"));
    EXPECT_FALSE(lab::icontains("ab", "abc"));
    EXPECT_FALSE(lab::icontains("", "a"));
}

// A request with @p agents as its User-Agent fields, in that order.
lab::Request with_agents(std::initializer_list<std::string> agents) {
    std::string raw = "GET / HTTP/1.0\r\n";
    for (const auto& agent : agents) raw += "User-Agent: " + agent + "\r\n";
    const auto parsed = lab::parse_request(raw + "Accept: */*\r\n\r\n");
    EXPECT_EQ(parsed.state, lab::ParseState::done);
    return parsed.request;
}

TEST(AgentPolicy, EveryUserAgentFieldCountsForDeny) {
    const AgentPolicy policy{{}, {"curl"}};
    EXPECT_TRUE(policy.refusal(with_agents({kFirefox, kCurl})));
    EXPECT_TRUE(policy.refusal(with_agents({kCurl, kFirefox})));
    EXPECT_FALSE(policy.refusal(with_agents({kFirefox, kChrome})));
}

TEST(AgentPolicy, EveryUserAgentFieldMustBeAllowed) {
    const AgentPolicy policy = chrome_only();
    EXPECT_TRUE(policy.refusal(with_agents({kChrome, kCurl})));
    EXPECT_TRUE(policy.refusal(with_agents({kCurl, kChrome})));
    EXPECT_TRUE(policy.refusal(with_agents({kChrome, kEdge})));  // a deny rule matches one
    EXPECT_FALSE(policy.refusal(with_agents({kChrome, kChrome})));
    EXPECT_FALSE(policy.refusal(with_agents({kChrome})));
    EXPECT_TRUE(policy.refusal(with_agents({})));  // none at all: as before, refused
    EXPECT_FALSE(AgentPolicy{}.refusal(with_agents({})));
}

TEST(AgentPolicy, HandlerAnswers403WithReasonBeforeTouchingFiles) {
    lab::test::TempDir dir;
    dir.write("index.html", "<h1>hi</h1>");
    lab::Site site{lab::DocumentRoot(dir.path()), chrome_only()};
    const auto edge =
        lab::parse_request("GET /index.html HTTP/1.0\r\nUser-Agent: " + kEdge + "\r\n\r\n");
    ASSERT_EQ(edge.state, lab::ParseState::done);
    const lab::Response refused = lab::handle_request(edge.request, site, std::time(nullptr));
    EXPECT_EQ(refused.status, 403);
    EXPECT_FALSE(refused.file.valid());
    EXPECT_NE(refused.body.find("Edg/"), std::string::npos) << refused.body;

    const auto chrome =
        lab::parse_request("GET /index.html HTTP/1.0\r\nUser-Agent: " + kChrome + "\r\n\r\n");
    ASSERT_EQ(chrome.state, lab::ParseState::done);
    const lab::Response served = lab::handle_request(chrome.request, site, std::time(nullptr));
    EXPECT_EQ(served.status, 200);
    EXPECT_TRUE(served.file.valid());
}

}  // namespace
