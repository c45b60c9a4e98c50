#pragma once
// anode: header-only neural-ODE blocks for LibTorch with exact, memory-efficient gradients.
//
//   #include <anode/anode.hpp>
//   anode::ODEBlock<MyRHSImpl> block(MyRHS(...), anode::ODEBlockOptions().steps(4));
//
// See README.md for the why (ANODE, Gholami et al. 2019) and the gradient modes.

#include <anode/adaptive.hpp>
#include <anode/gradcheck.hpp>
#include <anode/integrate.hpp>
#include <anode/memory.hpp>
#include <anode/method.hpp>
#include <anode/ode_block.hpp>
#include <anode/odeint.hpp>
#include <anode/options.hpp>
#include <anode/solve.hpp>
#include <anode/stats.hpp>
#include <anode/system.hpp>
#include <anode/tableau.hpp>
#include <anode/version.hpp>
