// Host ISA detection and the COLA_FAST_CPU_ISA cap (see cpu_isa.h).
#include "cpu_isa.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

namespace cola_fast {

CpuIsa host_cpu_isa() {
#if COLA_FAST_X86_BUILDS
  static const CpuIsa host = [] {
    __builtin_cpu_init();  // also checks that the OS saves the AVX / AVX-512 registers
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                      __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("lzcnt");
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return avx2 && avx512 ? CpuIsa::kAvx512 : avx2 ? CpuIsa::kAvx2 : CpuIsa::kBase;
  }();
  return host;
#else
  return CpuIsa::kBase;
#endif
}

namespace {

// The cap asked for by COLA_FAST_CPU_ISA, read as cola_fast.ops.cpu_isa_cap() reads it (blanks
// around it ignored, any case); unset or empty: no cap.
CpuIsa cap_from_env() {
  const char* env = std::getenv("COLA_FAST_CPU_ISA");
  std::string v = env ? env : "";
  const auto blank = [](unsigned char c) { return std::isspace(c) != 0; };
  v.erase(v.begin(), std::find_if_not(v.begin(), v.end(), blank));
  v.erase(std::find_if_not(v.rbegin(), v.rend(), blank).base(), v.end());
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (v.empty() || v == "avx512") return CpuIsa::kAvx512;
  if (v == "avx2") return CpuIsa::kAvx2;
  TORCH_CHECK(v == "sse2", "COLA_FAST_CPU_ISA='", v, "' is not one of the allowed values sse2, avx2, avx512 ",
              "(a cap on the instruction set of cola_fast's CPU kernels; unset it for the host's own)");
  return CpuIsa::kBase;
}

}  // namespace

CpuIsa cpu_isa() {
  static const CpuIsa isa = std::min(cap_from_env(), host_cpu_isa());  // a throw leaves it unset
  return isa;
}

std::string cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    default:
#if defined(__x86_64__) || defined(__i386__)
      return "sse2";
#else
      return "generic";
#endif
  }
}

std::string cpu_isa_str() { return cpu_isa_name(cpu_isa()); }

}  // namespace cola_fast
