// The instruction set our CPU kernels use in this process: the host's (detected once with
// __builtin_cpu_supports), capped by COLA_FAST_CPU_ISA=sse2|avx2|avx512 (read once; the level
// used is min(cap, host)). Kernels with ISA-specific builds (mine_snippets today) pick their
// build from cpu_isa(); the op cola_fast::cpu_isa() reports it.
#pragma once

#include <string>

// The ISA-specific builds are compiled with "#pragma GCC target", which only GCC on x86-64
// handles as we need (every function of the included body gets the target); elsewhere there
// is one portable build and the level is always the baseline.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define COLA_FAST_X86_BUILDS 1
#else
#define COLA_FAST_X86_BUILDS 0
#endif

namespace cola_fast {

// Ordered levels: a kernel built for level L runs on any host whose level is >= L.
enum class CpuIsa : int {
  kBase = 0,    // "sse2": any x86-64 ("generic" on other architectures)
  kAvx2 = 1,    // "avx2": AVX2, FMA, BMI1/2, POPCNT, LZCNT (x86-64-v3)
  kAvx512 = 2,  // "avx512": AVX-512 F, BW, VL, DQ
};

// What the host supports (no cap).
CpuIsa host_cpu_isa();
// min(COLA_FAST_CPU_ISA, host); an unknown value of the variable raises an error naming it
// and the allowed values (on every call: the value is read once, the error is not cached away).
CpuIsa cpu_isa();
// "sse2" ("generic" off x86-64), "avx2", "avx512"
std::string cpu_isa_name(CpuIsa isa);
// cpu_isa_name(cpu_isa()): the op cola_fast::cpu_isa() -> str
std::string cpu_isa_str();

}  // namespace cola_fast
