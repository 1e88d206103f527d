// bf16 x bf16 -> f32 matrix product on CPU, exposed to XLA as an FFI handler. The product itself
// is a library's: oneDNN's dnnl_gemm_bf16bf16f32 or oneMKL's cblas_gemm_bf16bf16f32, both of
// which run on AMX tiles or AVX512-BF16 where the processor has them. jaxcook/kernels/cpu_gemm.py
// builds this file, loads the library, passes its entry point to jaxcook_gemm_init and registers
// the handler; nothing here links against either library.
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// oneMKL, LP64 interface: MKL_INT is int, MKL_BF16 is uint16_t, CBLAS enums are ints.
using CblasGemm = void (*)(int layout, int transa, int transb, int m, int n, int k, float alpha,
                           const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                           float* c, int ldc);
// oneDNN: row-major, 'N' / 'T' flags, dnnl_dim_t is int64_t, returns dnnl_status_t (0: success).
using DnnlGemm = int (*)(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha,
                         const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                         float beta, float* c, int64_t ldc);

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int kMkl = 0, kOneDnn = 1;

CblasGemm g_cblas = nullptr;
DnnlGemm g_dnnl = nullptr;

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
  float* out = c->typed_data();
  if (k == 0) {
    for (int64_t i = 0; i < m * n; ++i) out[i] = 0.0f;
    return ffi::Error::Success();
  }
  auto pa = reinterpret_cast<const uint16_t*>(a.typed_data());
  auto pb = reinterpret_cast<const uint16_t*>(b.typed_data());
  if (g_dnnl != nullptr) {
    int status = g_dnnl(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, pa, da[1], pb,
                        db[1], 0.0f, out, n);
    if (status != 0) return ffi::Error::Internal("jaxcook_gemm_bf16: oneDNN gemm failed");
    return ffi::Error::Success();
  }
  if (g_cblas == nullptr) return ffi::Error::Internal("jaxcook_gemm_bf16: no library loaded");
  g_cblas(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
          static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, pa,
          static_cast<int>(da[1]), pb, static_cast<int>(db[1]), 0.0f, out, static_cast<int>(n));
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

// Which library's entry point the handler calls (kMkl: cblas_gemm_bf16bf16f32, kOneDnn:
// dnnl_gemm_bf16bf16f32). Returns 0, or -1 for an unknown kind.
extern "C" int jaxcook_gemm_init(int kind, void* entry) {
  if (kind == kMkl) {
    g_cblas = reinterpret_cast<CblasGemm>(entry);
  } else if (kind == kOneDnn) {
    g_dnnl = reinterpret_cast<DnnlGemm>(entry);
  } else {
    return -1;
  }
  return 0;
}
