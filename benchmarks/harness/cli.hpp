#pragma once
// Command-line flags for the benchmark programs: `--name value`, `--name=value` and bare
// `--switch`. Every program reads its flags through this, then calls `finish()`, which rejects
// any flag it did not read (a typo must not silently run the default grid). Torch-free.

#include <cstdint>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace anode {
namespace bench {

class Args {
 public:
  Args(int argc, const char* const* argv) {
    program_ = argc > 0 ? argv[0] : "bench";
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0 || a.size() == 2)
        throw std::invalid_argument("unexpected argument '" + a +
                                    "': flags look like --name value");
      a = a.substr(2);
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        values_[a.substr(0, eq)] = a.substr(eq + 1);
      } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        values_[a] = argv[++i];
      } else {
        values_[a] = "";  // a bare switch
      }
    }
  }

  /// Whether the switch `--name` was given (also true for `--name=1|true|yes`).
  bool flag(const std::string& name, const std::string& help = "") {
    document(name, "", help);
    auto it = values_.find(name);
    if (it == values_.end()) return false;
    used_.insert({name, true});
    const auto& v = it->second;
    if (v.empty() || v == "1" || v == "true" || v == "yes") return true;
    if (v == "0" || v == "false" || v == "no") return false;
    throw std::invalid_argument("--" + name + " is a switch; got the value '" + v + "'");
  }

  std::string str(const std::string& name, const std::string& fallback,
                  const std::string& help = "") {
    document(name, fallback, help);
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    used_.insert({name, true});
    return it->second;
  }

  int64_t integer(const std::string& name, int64_t fallback, const std::string& help = "") {
    const std::string v = str(name, std::to_string(fallback), help);
    return parse_int(name, v);
  }

  double real(const std::string& name, double fallback, const std::string& help = "") {
    std::ostringstream d;
    d << fallback;
    const std::string v = str(name, d.str(), help);
    try {
      std::size_t pos = 0;
      const double r = std::stod(v, &pos);
      if (pos == v.size()) return r;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument("--" + name + " expects a number, got '" + v + "'");
  }

  /// A comma-separated list of integers ("2,4,8").
  std::vector<int64_t> integers(const std::string& name, const std::vector<int64_t>& fallback,
                                const std::string& help = "") {
    std::string d;
    for (std::size_t i = 0; i < fallback.size(); ++i)
      d += (i ? "," : "") + std::to_string(fallback[i]);
    std::vector<int64_t> out;
    for (const auto& item : split(str(name, d, help))) out.push_back(parse_int(name, item));
    return out;
  }

  /// A comma-separated list of numbers ("0.5,1,2").
  std::vector<double> reals(const std::string& name, const std::vector<double>& fallback,
                            const std::string& help = "") {
    std::ostringstream d;
    for (std::size_t i = 0; i < fallback.size(); ++i) d << (i ? "," : "") << fallback[i];
    std::vector<double> out;
    for (const auto& item : split(str(name, d.str(), help))) {
      try {
        std::size_t pos = 0;
        out.push_back(std::stod(item, &pos));
        if (pos != item.size()) throw std::invalid_argument(item);
      } catch (const std::exception&) {
        throw std::invalid_argument("--" + name + " expects numbers, got '" + item + "'");
      }
    }
    return out;
  }

  /// A comma-separated list of words ("backprop,anode").
  std::vector<std::string> strings(const std::string& name,
                                   const std::vector<std::string>& fallback,
                                   const std::string& help = "") {
    std::string d;
    for (std::size_t i = 0; i < fallback.size(); ++i) d += (i ? "," : "") + fallback[i];
    return split(str(name, d, help));
  }

  /// The flags read so far with their defaults and help, one per line.
  std::string usage() const {
    std::ostringstream os;
    os << "usage: " << program_ << " [flags]\n";
    for (const auto& d : docs_)
      os << "  --" << d.name << (d.fallback.empty() ? "" : " (default " + d.fallback + ")")
         << (d.help.empty() ? "" : ": " + d.help) << '\n';
    return os.str();
  }

  /// Throws if a flag was given that no call above read (a typo, or a flag of another program).
  void finish() const {
    for (const auto& kv : values_)
      if (!used_.count(kv.first))
        throw std::invalid_argument("unknown flag --" + kv.first + "\n" + usage());
  }

  static std::vector<std::string> split(const std::string& s, char sep = ',') {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
      if (c == sep) {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else if (c != ' ') {
        cur += c;
      }
    }
    if (!cur.empty()) out.push_back(cur);
    return out;
  }

 private:
  struct Doc {
    std::string name, fallback, help;
  };
  void document(const std::string& name, const std::string& fallback, const std::string& help) {
    for (const auto& d : docs_)
      if (d.name == name) return;
    docs_.push_back({name, fallback, help});
  }
  static int64_t parse_int(const std::string& name, const std::string& v) {
    try {
      std::size_t pos = 0;
      const long long r = std::stoll(v, &pos);
      if (pos == v.size()) return r;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument("--" + name + " expects an integer, got '" + v + "'");
  }

  std::string program_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> used_;
  std::vector<Doc> docs_;
};

}  // namespace bench
}  // namespace anode
