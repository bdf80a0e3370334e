#include "lowbit/launch/environment.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lowbit::launch {
namespace {

class RealEnvironment final : public Environment {
 public:
  std::optional<std::string> Get(const std::string& name) const override {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  }
};

}  // namespace

const Environment& ProcessEnvironment() {
  static const RealEnvironment* env = new RealEnvironment();
  return *env;
}

std::optional<std::string> MapEnvironment::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::optional<int>> GetInt(const Environment& env, const std::string& name) {
  std::optional<std::string> text = env.Get(name);
  if (!text) return std::optional<int>();
  int value = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be an integer, got '", *text, "'"));
  }
  return std::optional<int>(value);
}

absl::StatusOr<std::optional<double>> GetDouble(const Environment& env, const std::string& name) {
  std::optional<std::string> text = env.Get(name);
  if (!text) return std::optional<double>();
  double value = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(*text), &value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a number, got '", *text, "'"));
  }
  return std::optional<double>(value);
}

std::optional<std::string> GetString(const Environment& env, const std::string& name) {
  std::optional<std::string> text = env.Get(name);
  if (text && text->empty()) return std::nullopt;
  return text;
}

}  // namespace lowbit::launch
