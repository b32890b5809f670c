// Op schemas of the cola_fast library: one m.def per op. The kernels register their
// implementations per dispatch key in csrc/cpu/<op>.cpp (CPU) and csrc/cuda/<op>.cu (CUDA);
// autograd and fake (meta) kernels are registered from Python in cola_fast/ops/.
#include <Python.h>
#include <torch/library.h>

#include <string>

extern "C" {
// A real Python module so that `import cola_fast._C` loads the library (and with it the
// registrations below). No pybind11: the ops are reached through torch.ops.cola_fast.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "cola_fast compiled kernels (CPU, and CUDA when built)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace cola_fast {
std::string mining_cpu_isa();  // csrc/cpu/mine_snippets.cpp
std::string cpu_isa_str();     // csrc/cpu/cpu_isa.cpp
}  // namespace cola_fast

TORCH_LIBRARY(cola_fast, m) {
  // ---- mine_snippets (COLA_SPEC 2.1-2.2) ----------------------------------------------
  // actionness (B,T) float, keep (B,T) same dtype as actionness (0/1);
  // returns EA, EB (B,k_easy) and HA, HB (B,k_hard), int64.
  m.def("mine_snippets(Tensor actionness, Tensor keep, int k_easy, int k_hard, int m, int M)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  // Which build of the CPU kernel runs: "sse2", "avx2" or "avx512" (cpu_isa() where it has that build).
  m.def("mining_cpu_isa() -> str", &cola_fast::mining_cpu_isa);

  // ---- the CPU instruction set of our kernels (csrc/cpu/cpu_isa.h) ----------------------
  // "sse2" ("generic" off x86-64), "avx2" or "avx512": the host's, capped by
  // COLA_FAST_CPU_ISA=sse2|avx2|avx512 (read once per process; an unknown value raises).
  m.def("cpu_isa() -> str", &cola_fast::cpu_isa_str);

  // ---- snico_loss (COLA_SPEC 3) --------------------------------------------------------
  // owned by the SniCo kernels; see csrc/cpu/snico_loss.cpp and csrc/cuda/snico_loss.cu.
  // emb (B,T,D) float; ea, eb (B,k_easy), ha, hb (B,k_hard) int64. The forward returns the loss
  // (scalar, emb's dtype) and what the backward needs, in the accumulation dtype (float32;
  // float64 for float64 emb): means (B,4,D) of HA, EA, HB, EB; their norms (B,4); the norms of
  // the negatives (B,2,k_easy) (term 1: EB rows, term 2: EA rows); logits (B,2,1+k_easy); lse (B,2).
  m.def("snico_loss_fwd(Tensor emb, Tensor ea, Tensor eb, Tensor ha, Tensor hb, float tau)"
        " -> (Tensor loss, Tensor means, Tensor mean_norms, Tensor neg_norms, Tensor logits, Tensor lse)");
  // d(emb) (B,T,D) in emb's dtype, from the scalar upstream gradient and the saved tensors.
  m.def("snico_loss_bwd(Tensor grad, Tensor emb, Tensor ea, Tensor eb, Tensor ha, Tensor hb, Tensor means,"
        " Tensor mean_norms, Tensor neg_norms, Tensor logits, Tensor lse, float tau) -> Tensor");

  // ---- dropout (the model's Dropout(0.7) before the classifier), CPU -------------------
  // x any float shape, 0 <= p < 1, seed from torch's generator; returns x * mask / (1 - p)
  // and the mask (uint8, 1 = kept). See csrc/cpu/dropout.cpp.
  m.def("dropout_fwd(Tensor x, float p, int seed) -> (Tensor out, Tensor mask)");
  // d(x) = grad * mask / (1 - p)
  m.def("dropout_bwd(Tensor grad, Tensor mask, float p) -> Tensor");

  // ---- temporal_conv_embed (COLA_SPEC 2, embedding layer) ------------------------------
  // owned by the conv-embedding kernels; see csrc/cpu/temporal_conv_embed.cpp
  // x (B,T,Cin), weight (Cout,Cin,K) with K odd, bias (Cout,) or None; zero padding K//2
  // inside each video. Returns ReLU(conv1d + bias) as (B,T,Cout). gemm picks the CPU kernel's
  // GEMM library: 0 BLAS (MKL), 1 oneDNN (float32); the CUDA kernel ignores it.
  m.def("temporal_conv_embed(Tensor x, Tensor weight, Tensor? bias, int gemm=0) -> Tensor");
  // Fused backward from grad_out and the saved output (ReLU mask = out > 0). Returns
  // (dx (B,T,Cin), dweight (Cout,Cin,K), dbias (Cout,)); an output whose output_mask entry
  // is false comes back as an empty (0,) tensor and is not computed.
  m.def("temporal_conv_embed_backward(Tensor grad_out, Tensor out, Tensor x, Tensor weight,"
        " bool[3] output_mask, int gemm=0) -> (Tensor, Tensor, Tensor)");

  // ---- proposals (COLA_SPEC 5.5-5.7; evaluation, CPU only) ------------------------------
  // owned by the proposal kernels; see csrc/cpu/proposals.cpp and cola_fast/evaluation/proposals.py.
  // numpy's pairwise sum (np.add.reduce, bit for bit) of x[starts[i] : starts[i] + counts[i]];
  // x float32 or float64, starts/counts int64.
  m.def("pairwise_sum(Tensor x, Tensor starts, Tensor counts) -> Tensor");
  // Runs at every threshold of every (video, class) curve with their scores, in the reference's
  // pooling order: returns (seg, f, s, e, score). Curves float64; indices int64.
  m.def("proposal_runs(Tensor cas_bank, Tensor seg_off, Tensor seg_vid, Tensor act_bank, Tensor act_off,"
        " Tensor vid_len, Tensor cas_th, Tensor act_th, Tensor bonus, float outer_ratio, int min_run)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // the same from the raw curves (normalised and upsampled on the fly, as norm_upsample does)
  m.def("proposal_runs_raw(Tensor cas_x, Tensor cas_src_off, Tensor cas_stride, Tensor act_x, Tensor act_src_off,"
        " Tensor seg_vid, Tensor vid_T, Tensor vid_len, Tensor x_new, Tensor cas_th, Tensor act_th, Tensor bonus,"
        " float outer_ratio, int min_run) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Greedy NMS per group [bounds[g], bounds[g+1]); returns (kept, tie groups left to the caller).
  // order: empty (rank here, ties between different segments returned) or a given rank order.
  m.def("nms_groups(Tensor score, Tensor x1, Tensor x2, Tensor key, Tensor bounds, Tensor order, float thresh)"
        " -> (Tensor, Tensor)");
  // min-max normalisation + linear upsampling of many curves (x float32/float64) -> float64 bank.
  m.def("norm_upsample(Tensor x, Tensor src_off, Tensor stride, Tensor T, Tensor out_off, Tensor out_len,"
        " Tensor x_new, int out_size) -> Tensor");
}
