// Op schemas of the cola_fast library: one m.def per op. The kernels register their
// implementations per dispatch key in csrc/cpu/<op>.cpp (CPU) and csrc/cuda/<op>.cu (CUDA);
// autograd and fake (meta) kernels are registered from Python in cola_fast/ops/.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// A real Python module so that `import cola_fast._C` loads the library (and with it the
// registrations below). No pybind11: the ops are reached through torch.ops.cola_fast.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "cola_fast compiled kernels (CPU, and CUDA when built)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(cola_fast, m) {
  // ---- mine_snippets (COLA_SPEC 2.1-2.2) ----------------------------------------------
  // actionness (B,T) float, keep (B,T) same dtype as actionness (0/1);
  // returns EA, EB (B,k_easy) and HA, HB (B,k_hard), int64.
  m.def("mine_snippets(Tensor actionness, Tensor keep, int k_easy, int k_hard, int m, int M)"
        " -> (Tensor, Tensor, Tensor, Tensor)");

  // ---- snico_loss (COLA_SPEC 3) --------------------------------------------------------
  // owned by the SniCo kernels; see csrc/cpu/snico_loss.cpp

  // ---- temporal_conv_embed (COLA_SPEC 2, embedding layer) ------------------------------
  // owned by the conv-embedding kernels; see csrc/cpu/temporal_conv_embed.cpp
  // x (B,T,Cin), weight (Cout,Cin,K) with K odd, bias (Cout,) or None; zero padding K//2
  // inside each video. Returns ReLU(conv1d + bias) as (B,T,Cout).
  m.def("temporal_conv_embed(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Fused backward from grad_out and the saved output (ReLU mask = out > 0). Returns
  // (dx (B,T,Cin), dweight (Cout,Cin,K), dbias (Cout,)); an output whose output_mask entry
  // is false comes back as an empty (0,) tensor and is not computed.
  m.def("temporal_conv_embed_backward(Tensor grad_out, Tensor out, Tensor x, Tensor weight,"
        " bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}
