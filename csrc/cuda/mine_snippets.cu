// placeholder so that the CUDA build path is exercised; the mining kernel replaces it
#include <torch/library.h>
#include <c10/cuda/CUDAStream.h>
__global__ void cola_fast_noop_kernel(int* x) { if (x) x[0] = 0; }
