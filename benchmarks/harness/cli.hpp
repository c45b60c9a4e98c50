#pragma once
// Command lines of the benchmark programs, on CLI11: `--name value`, `--name=value`, bare
// `--switch`, comma-separated lists, a generated `--help`, and an error for any flag a program does
// not declare (a typo must not silently run the default grid). The one addition is the grid
// switch: `--full` picks larger defaults, declared next to the quick ones (`grid_option`).
// Torch-free.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace anode {
namespace bench {

class Cli {
 public:
  Cli(const std::string& description, const std::string& program) : app(description, program) {
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.add_flag("--full", full, "the full grid (defaults marked 'full:')");
    // (A description as the second argument is ambiguous under C++20 in CLI11 2.1, which
    // LibTorch 2.x's C++20 brings: is_constructible<const char[N], long> holds there.)
    app.add_flag("--quick")->description("the quick grid (the default)");
  }

  /// `--name`: a value or a comma-separated list (a std::vector), its default what `value` holds.
  /// (`help` is a `const char*` so that `option(name, v, {1, 2})`, meant as a grid_option, does
  /// not compile.)
  template <class T>
  CLI::Option* option(const std::string& name, T& value, const char* help = "") {
    auto* opt = app.add_option(name, value, help)->default_str(text(value));
    if constexpr (is_vector<T>::value) opt->delimiter(',');
    // "2, 4" is 2 and 4; integers are decimal (CLI11 alone reads "010" as octal).
    opt->transform(CLI::Validator(
        [](std::string& s) {
          s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
          if (std::is_integral<element_t<T>>::value && !std::is_same<element_t<T>, bool>::value) {
            std::size_t used = 0;
            try {
              const long long n = std::stoll(s, &used);
              if (used == s.size()) s = std::to_string(n);
            } catch (const std::exception&) {  // not a number: CLI11 reports it
            }
          }
          return std::string();
        },
        ""));
    return opt;
  }

  /// An option of the grid: the same, with `full_value` its default under --full (an explicit
  /// `--name` wins either way).
  template <class T>
  CLI::Option* grid_option(const std::string& name, T& value,
                           const typename std::common_type<T>::type& full_value,
                           const std::string& help = "") {
    const std::string described = help + (help.empty() ? "" : "; ") + "full: " + text(full_value);
    auto* opt = option(name, value, described.c_str());
    full_defaults_.push_back([opt, &value, full_value] {
      if (opt->count() == 0) value = full_value;
    });
    return opt;
  }

  /// Parses the command line. False after `--help` printed the usage (the program exits 0);
  /// throws std::invalid_argument, naming the flag and the value, on any mistake.
  bool parse(int argc, const char* const* argv) {
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      std::cout << app.help();
      return false;
    } catch (const CLI::ParseError& e) {
      throw std::invalid_argument(std::string(e.what()) + " (--help lists the flags)");
    }
    if (full)
      for (const auto& apply : full_defaults_) apply();
    return true;
  }

  /// The usage text, as --help prints it.
  std::string usage() const { return app.help(); }

  CLI::App app;
  bool full = false;  ///< --full: the full grid

 private:
  template <class T>
  struct is_vector : std::false_type {};
  template <class T>
  struct is_vector<std::vector<T>> : std::true_type {};
  template <class T>
  struct element {
    using type = T;
  };
  template <class T>
  struct element<std::vector<T>> {
    using type = T;
  };
  template <class T>
  using element_t = typename element<T>::type;

  template <class T>
  static std::string text(const T& v) {
    std::ostringstream os;
    if constexpr (is_vector<T>::value) {
      for (std::size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
    } else {
      os << v;
    }
    return os.str();
  }

  std::vector<std::function<void()>> full_defaults_;
};

}  // namespace bench
}  // namespace anode
