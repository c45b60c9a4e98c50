#pragma once
// CLI11 checks shared by the example programs (anode-spiral, anode-cifar). CLI11 reports a failed
// check as "--name: <message>"; the messages here name the offending value, so every error names
// both. IntegerAtLeast also rewrites the value it accepts in plain decimal, since CLI11 alone would
// read "010" as octal.

#include <c10/util/Exception.h>
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace cli_checks {

/// Reads `v` as a decimal integer >= `min` into `out`; false when it is not one.
inline bool parse_integer(const std::string& v, int64_t min, int64_t& out) {
  std::size_t used = 0;
  try {
    out = std::stoll(v, &used);
  } catch (const std::exception&) {
    return false;
  }
  return !v.empty() && used == v.size() && out >= min;
}

/// A decimal integer >= `min`: "needs an integer >= 1, got 'ten'". Add it with `transform`, which
/// keeps the rewritten value (`check` would check a copy).
inline CLI::Validator IntegerAtLeast(int64_t min) {
  return CLI::Validator(
      [min](std::string& v) -> std::string {
        int64_t n = 0;
        if (!parse_integer(v, min, n))
          return "needs an integer >= " + std::to_string(min) + ", got '" + v + "'";
        v = std::to_string(n);
        return {};
      },
      "");
}

/// A finite number > `min` (or >= `min` when `inclusive`): "needs a number > 0, got '-1'".
inline CLI::Validator NumberAbove(double min, bool inclusive = false) {
  std::ostringstream bound;
  bound << (inclusive ? ">= " : "> ") << min;
  return CLI::Validator(
      [min, inclusive, bound = bound.str()](std::string& v) -> std::string {
        std::size_t used = 0;
        double x = 0;
        try {
          x = std::stod(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        const bool ok =
            !v.empty() && used == v.size() && std::isfinite(x) && (inclusive ? x >= min : x > min);
        return ok ? std::string() : "needs a number " + bound + ", got '" + v + "'";
      },
      "");
}

/// A value `parse` accepts (anode::method_from_string, ...); its c10::Error message is the error.
template <class Parse>
CLI::Validator ParsedBy(Parse parse) {
  return CLI::Validator(
      [parse](std::string& v) -> std::string {
        try {
          parse(v);
        } catch (const c10::Error& e) {
          return e.what_without_backtrace();
        }
        return {};
      },
      "");
}

/// An option whose value `parse` turns into `target` (an enum from its name, say), checked by
/// ParsedBy(parse); the help shows `shown_default`.
template <class T, class Parse>
CLI::Option* add_parsed(CLI::App& app, const std::string& name, T& target, Parse parse,
                        const std::string& help, const std::string& shown_default) {
  return app
      .add_option_function<std::string>(
          name, [&target, parse](const std::string& v) { target = parse(v); }, help)
      ->check(ParsedBy(parse))
      ->default_str(shown_default);
}

/// A value that is not empty: "needs a directory, got ''".
inline CLI::Validator NonEmpty(const std::string& what) {
  return CLI::Validator(
      [what](std::string& v) { return v.empty() ? "needs " + what + ", got ''" : std::string(); },
      "");
}

/// A switch that takes no value: "--resume=yes" is "takes no value, got 'yes'" (CLI11 alone would
/// read it as true).
inline CLI::Validator NoValue() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        return v.empty() || v == "true" ? std::string() : "takes no value, got '" + v + "'";
      },
      "");
}

/// "option " + CLI11's message when it starts with the option's name ("--epochs: needs ...").
inline std::string message(const CLI::ParseError& e) {
  const std::string what = e.what();
  return what.rfind("--", 0) == 0 ? "option " + what : what;
}

}  // namespace cli_checks
