// Environment: where lowbit reads launcher variables. This folder is the only
// place in lowbit that reads the process environment; everything else gets
// typed values from here. Tests pass a MapEnvironment instead.
//
//   lowbit::launch::MapEnvironment env({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
//   absl::StatusOr<std::optional<int>> rank = lowbit::launch::GetInt(env, "RANK");
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace lowbit::launch {

class Environment {
 public:
  virtual ~Environment() = default;
  virtual std::optional<std::string> Get(const std::string& name) const = 0;
};

// The real process environment.
const Environment& ProcessEnvironment();

class MapEnvironment final : public Environment {
 public:
  explicit MapEnvironment(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  std::optional<std::string> Get(const std::string& name) const override;

 private:
  std::map<std::string, std::string> values_;
};

// Typed getters: nullopt when unset; an InvalidArgument error naming the
// variable and its value when it is set but does not parse.
absl::StatusOr<std::optional<int>> GetInt(const Environment& env, const std::string& name);
absl::StatusOr<std::optional<double>> GetDouble(const Environment& env, const std::string& name);
std::optional<std::string> GetString(const Environment& env, const std::string& name);

}  // namespace lowbit::launch
