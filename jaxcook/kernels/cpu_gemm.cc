// bf16 x bf16 -> f32 matrix product on CPU through oneMKL's cblas_gemm_bf16bf16f32, which runs
// on AMX tiles (or AVX512-BF16) where the processor has them. Exposed to XLA as an FFI handler;
// jaxcook/kernels/cpu_gemm.py builds this file, registers the handler and wraps it.
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

extern "C" {
// oneMKL, LP64 interface: MKL_INT is int, MKL_BF16 is uint16_t, CBLAS enums are ints.
void cblas_gemm_bf16bf16f32(int layout, int transa, int transb, int m, int n, int k, float alpha,
                            const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                            float* c, int ldc);
int MKL_Set_Threading_Layer(int code);  // the C entry (the lowercase one is Fortran)
}

namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// c[m, n] = op(a) @ op(b), row-major; op transposes when the flag is set, so a transposed
// operand is read in place rather than copied.
ffi::Error Gemm(ffi::Buffer<ffi::BF16> a, ffi::Buffer<ffi::BF16> b, ffi::ResultBuffer<ffi::F32> c,
                int64_t trans_a, int64_t trans_b) {
  auto da = a.dimensions();
  auto db = b.dimensions();
  if (da.size() != 2 || db.size() != 2) {
    return ffi::Error::InvalidArgument("jaxcook_gemm_bf16: operands must be 2-D");
  }
  const int64_t m = trans_a ? da[1] : da[0];
  const int64_t k = trans_a ? da[0] : da[1];
  const int64_t kb = trans_b ? db[1] : db[0];
  const int64_t n = trans_b ? db[0] : db[1];
  if (k != kb) return ffi::Error::InvalidArgument("jaxcook_gemm_bf16: contracting sizes differ");
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    float* out = c->typed_data();
    for (int64_t i = 0; i < m * n; ++i) out[i] = 0.0f;
    return ffi::Error::Success();
  }
  cblas_gemm_bf16bf16f32(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
                         static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f,
                         a.typed_data(), static_cast<int>(da[1]), b.typed_data(),
                         static_cast<int>(db[1]), 0.0f, c->typed_data(), static_cast<int>(n));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcookGemmBf16, Gemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("trans_a")
                                  .Attr<int64_t>("trans_b"));

// MKL's threading layer: GNU OpenMP (the one PyTorch also loads), so the two never fight.
extern "C" int jaxcook_gemm_init(int layer) { return MKL_Set_Threading_Layer(layer); }
