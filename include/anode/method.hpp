#pragma once
// The solver methods and gradient strategies: their names and parsing, and what each method is
// (its tableau, order, stages, whether it chooses its steps), as one table indexed by the enum.

#include <anode/tableau.hpp>

#include <c10/util/Exception.h>

#include <array>
#include <cctype>
#include <cstddef>
#include <ostream>
#include <string>

namespace anode {

/// Explicit Runge-Kutta methods. Each is a Butcher tableau (see tableau.hpp), so adding a method
/// adds a table, not a loop. Euler, RK2 and RK4 take fixed steps; Bosh3, Dopri5 and Tsit5 carry an
/// embedded error estimate and choose their steps (rtol, atol).
enum class Method {
  Euler,   ///< forward Euler, order 1 (a ResNet block is one Euler step)
  RK2,     ///< explicit midpoint, order 2 (as in the ANODE paper's code)
  RK4,     ///< classical Runge-Kutta, order 4
  Bosh3,   ///< Bogacki-Shampine 3(2), adaptive
  Dopri5,  ///< Dormand-Prince 5(4), adaptive (torchdiffeq's default)
  Tsit5,   ///< Tsitouras 5(4), adaptive
};

/// How the solve is differentiated.
enum class Gradient {
  /// Plain autograd through every stage of every step: exact, memory O(L * N_t).
  Backprop,
  /// ANODE (Gholami et al. 2019): keep only the block input, re-run the block with grad in
  /// backward. The exact gradient of the discrete solve; memory O(L) + O(N_t).
  Anode,
  /// Reverse-time continuous adjoint (Chen et al. 2018): optimize-then-discretize. Flat memory,
  /// but not the gradient of the discrete solve and unstable for non-smooth right-hand sides.
  /// Kept as the baseline the paper argues against.
  Adjoint,
};

/// What a method is, as data: one row of `kMethods` per `Method`. Adding a method adds an enum
/// value, its tableau (tableau.hpp) and a row; nothing switches over `Method`.
struct MethodTraits {
  Method method;
  const char* name;                    ///< as printed (to_string)
  const char* key;                     ///< as parsed, lower case (method_from_string)
  const char* alias;                   ///< another accepted spelling, or nullptr
  const ButcherTableau& (*tableau)();  ///< the Butcher tableau (built on first use)
  int order;                           ///< classical order of the solution
  int embedded_order;                  ///< order of the embedded error estimate; 0: fixed steps
  int stages;                          ///< right-hand-side evaluations per step
  bool fsal;                           ///< the last stage is the next step's first

  /// Whether the method carries an error estimate and chooses its own steps (rtol, atol).
  constexpr bool adaptive() const { return embedded_order > 0; }
};

/// Every method, indexed by the enum's value. The numbers restate the tableaux (tableau.hpp) so
/// they can be read without building one; tests/library/test_tableau.cpp checks they agree.
inline constexpr std::array<MethodTraits, 6> kMethods{{
    {Method::Euler, "Euler", "euler", nullptr, &euler_tableau, 1, 0, 1, false},
    {Method::RK2, "RK2", "rk2", "midpoint", &midpoint_tableau, 2, 0, 2, false},
    {Method::RK4, "RK4", "rk4", nullptr, &rk4_tableau, 4, 0, 4, false},
    {Method::Bosh3, "Bosh3", "bosh3", nullptr, &bosh3_tableau, 3, 2, 4, true},
    {Method::Dopri5, "Dopri5", "dopri5", nullptr, &dopri5_tableau, 5, 4, 7, true},
    {Method::Tsit5, "Tsit5", "tsit5", nullptr, &tsit5_tableau, 5, 4, 7, true},
}};

namespace detail {
constexpr bool methods_in_enum_order() {
  for (std::size_t i = 0; i < kMethods.size(); ++i) {
    if (static_cast<std::size_t>(kMethods[i].method) != i) return false;
  }
  return true;
}
static_assert(methods_in_enum_order(), "anode: kMethods must list the methods in enum order");
}  // namespace detail

/// The row of `m`, or nullptr for a value outside the enum (a cast integer).
constexpr const MethodTraits* find_method(Method m) {
  const auto i = static_cast<std::size_t>(m);
  return i < kMethods.size() ? &kMethods[i] : nullptr;
}

/// The row of `m`; throws for a value outside the enum.
inline const MethodTraits& method_traits(Method m) {
  const MethodTraits* t = find_method(m);
  TORCH_CHECK(t != nullptr, "anode: invalid Method value ", static_cast<int>(m));
  return *t;
}

/// The tableau of a `Method`.
inline const ButcherTableau& tableau(Method m) {
  return method_traits(m).tableau();
}

inline const char* to_string(Method m) {
  const MethodTraits* t = find_method(m);
  return t != nullptr ? t->name : "?";
}

inline const char* to_string(Gradient g) {
  switch (g) {
    case Gradient::Backprop:
      return "Backprop";
    case Gradient::Anode:
      return "Anode";
    case Gradient::Adjoint:
      return "Adjoint";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& os, Method m) {
  return os << to_string(m);
}
inline std::ostream& operator<<(std::ostream& os, Gradient g) {
  return os << to_string(g);
}

/// Parses a method's key or alias ("euler" | "rk2" (or "midpoint") | "rk4" | "bosh3" | "dopri5" |
/// "tsit5"), case-insensitive; throws naming the value otherwise.
inline Method method_from_string(const std::string& name) {
  std::string s = name;
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string expected;
  for (std::size_t i = 0; i < kMethods.size(); ++i) {
    const MethodTraits& t = kMethods[i];
    if (s == t.key || (t.alias != nullptr && s == t.alias)) return t.method;
    expected += (i == 0 ? "" : i + 1 == kMethods.size() ? " or " : ", ");
    expected += t.key;
  }
  TORCH_CHECK(false, "anode: unknown method '", name, "'; expected ", expected);
}

/// Parses "backprop" | "anode" | "adjoint" (case-insensitive); throws naming the value otherwise.
inline Gradient gradient_from_string(const std::string& name) {
  std::string s = name;
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "backprop") return Gradient::Backprop;
  if (s == "anode") return Gradient::Anode;
  if (s == "adjoint") return Gradient::Adjoint;
  TORCH_CHECK(false, "anode: unknown gradient '", name, "'; expected backprop, anode or adjoint");
}

}  // namespace anode
