// bf16 x bf16 -> f32 matrix products on CPU (one product, or one per expert group of sorted
// rows), exposed to XLA as FFI handlers. The product itself
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

// c[m, n] = op(a) @ op(b) for row-major operands with leading dimensions lda, ldb, ldc, through
// whichever library jaxcook_gemm_init was given. k > 0, m > 0, n > 0.
bool Product(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const uint16_t* a,
             int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc) {
  if (g_dnnl != nullptr) {
    return g_dnnl(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c,
                  ldc) == 0;
  }
  if (g_cblas == nullptr) return false;
  g_cblas(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans,
          static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a,
          static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f, c, static_cast<int>(ldc));
  return true;
}

void Zero(float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = 0.0f;
}

const uint16_t* Bits(const ffi::Buffer<ffi::BF16>& x) {
  return reinterpret_cast<const uint16_t*>(x.typed_data());
}

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
    Zero(out, m * n);
    return ffi::Error::Success();
  }
  if (!Product(trans_a, trans_b, m, n, k, Bits(a), da[1], Bits(b), db[1], out, n)) {
    return ffi::Error::Internal("jaxcook_gemm_bf16: the library's gemm failed");
  }
  return ffi::Error::Success();
}

// Grouped product over rows sorted by expert: the sizes[e] consecutive rows of group e times
// op(w[e]). x [R, k], w [E, k, n] (trans_w: [E, n, k]) -> y [R, n]; rows past the last group
// (sum(sizes) <= R) are zero.
ffi::Error GroupedGemm(ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> w,
                       ffi::Buffer<ffi::S32> sizes, ffi::ResultBuffer<ffi::F32> y,
                       int64_t trans_w) {
  auto dx = x.dimensions();
  auto dw = w.dimensions();
  if (dx.size() != 2 || dw.size() != 3 || sizes.dimensions().size() != 1 ||
      sizes.dimensions()[0] != dw[0]) {
    return ffi::Error::InvalidArgument("jaxcook_grouped_gemm_bf16: x [R, k], w [E, k, n], sizes [E]");
  }
  const int64_t rows = dx[0], k = dx[1], experts = dw[0];
  const int64_t n = trans_w ? dw[1] : dw[2];
  if ((trans_w ? dw[2] : dw[1]) != k) {
    return ffi::Error::InvalidArgument("jaxcook_grouped_gemm_bf16: contracting sizes differ");
  }
  const int32_t* size = sizes.typed_data();
  float* out = y->typed_data();
  int64_t row = 0;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t m = size[e];
    if (m < 0 || row + m > rows) {
      return ffi::Error::InvalidArgument("jaxcook_grouped_gemm_bf16: group sizes exceed the rows");
    }
    if (m == 0 || n == 0) continue;
    float* c = out + row * n;
    if (k == 0) {
      Zero(c, m * n);
    } else if (!Product(false, trans_w != 0, m, n, k, Bits(x) + row * k, k, Bits(w) + e * k * n,
                        trans_w ? k : n, c, n)) {
      return ffi::Error::Internal("jaxcook_grouped_gemm_bf16: the library's gemm failed");
    }
    row += m;
  }
  Zero(out + row * n, (rows - row) * n);
  return ffi::Error::Success();
}

// The weight gradient of GroupedGemm: dw[e] = x_e^T dy_e over group e's rows. x [R, k],
// dy [R, n], sizes [E] -> dw [E, k, n] (zero for an empty group).
ffi::Error GroupedGemmTN(ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> dy,
                         ffi::Buffer<ffi::S32> sizes, ffi::ResultBuffer<ffi::F32> dw) {
  auto dx = x.dimensions();
  auto dd = dy.dimensions();
  if (dx.size() != 2 || dd.size() != 2 || dx[0] != dd[0] || sizes.dimensions().size() != 1) {
    return ffi::Error::InvalidArgument("jaxcook_grouped_gemm_tn_bf16: x [R, k], dy [R, n], sizes [E]");
  }
  const int64_t rows = dx[0], k = dx[1], n = dd[1], experts = sizes.dimensions()[0];
  const int32_t* size = sizes.typed_data();
  float* out = dw->typed_data();
  int64_t row = 0;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t m = size[e];
    if (m < 0 || row + m > rows) {
      return ffi::Error::InvalidArgument("jaxcook_grouped_gemm_tn_bf16: group sizes exceed the rows");
    }
    float* c = out + e * k * n;
    if (m == 0) {
      Zero(c, k * n);
    } else if (k > 0 && n > 0 &&
               !Product(true, false, k, n, m, Bits(x) + row * k, k, Bits(dy) + row * n, n, c, n)) {
      return ffi::Error::Internal("jaxcook_grouped_gemm_tn_bf16: the library's gemm failed");
    }
    row += m;
  }
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcookGroupedGemmBf16, GroupedGemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("trans_w"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcookGroupedGemmTNBf16, GroupedGemmTN,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

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
