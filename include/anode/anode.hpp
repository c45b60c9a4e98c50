#pragma once
// anode: header-only neural-ODE blocks for LibTorch with exact, memory-efficient gradients.
//
//   #include <anode/anode.hpp>
//   anode::ODEBlock<MyRHSImpl> block(MyRHS(...), anode::ODEBlockOptions().steps(4));
//
// See README.md for the why (ANODE, Gholami et al. 2019) and the gradient modes.
//
// The memory meters are not included: a program that measures memory (or sets memory_budget on
// CPU tensors) includes <anode/memory.hpp> and calls anode::memory::install_cpu_meter() itself.

#include <anode/adaptive.hpp>
#include <anode/gradcheck.hpp>
#include <anode/integrate.hpp>
#include <anode/memory_plan.hpp>
#include <anode/method.hpp>
#include <anode/ode_block.hpp>
#include <anode/odeint.hpp>
#include <anode/options.hpp>
#include <anode/solve.hpp>
#include <anode/stats.hpp>
#include <anode/system.hpp>
#include <anode/tableau.hpp>
#include <anode/version.hpp>
