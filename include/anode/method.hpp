#pragma once
// The names of the solver methods and gradient strategies, and their parsing.

#include <c10/util/Exception.h>

#include <cctype>
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

inline const char* to_string(Method m) {
  switch (m) {
    case Method::Euler:
      return "Euler";
    case Method::RK2:
      return "RK2";
    case Method::RK4:
      return "RK4";
    case Method::Bosh3:
      return "Bosh3";
    case Method::Dopri5:
      return "Dopri5";
    case Method::Tsit5:
      return "Tsit5";
  }
  return "?";
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

/// Parses "euler" | "rk2" | "rk4" | "bosh3" | "dopri5" | "tsit5" (case-insensitive); throws naming
/// the value otherwise.
inline Method method_from_string(const std::string& name) {
  std::string s = name;
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "euler") return Method::Euler;
  if (s == "rk2" || s == "midpoint") return Method::RK2;
  if (s == "rk4") return Method::RK4;
  if (s == "bosh3") return Method::Bosh3;
  if (s == "dopri5") return Method::Dopri5;
  if (s == "tsit5") return Method::Tsit5;
  TORCH_CHECK(false, "anode: unknown method '", name,
              "'; expected euler, rk2, rk4, bosh3, dopri5 or tsit5");
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
