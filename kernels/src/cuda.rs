//! CUDA C: the templates ([`crate::templates`]) finished as CUDA kernels, one self-contained
//! source per dispatch (no CUDA headers: a small prelude defines what the kernels use, so the
//! same text compiles under NVRTC and under `clang -x cuda --cuda-device-only -nocudainc
//! -nocudalib`, which is how machines without CUDA check it).
//!
//! Arrays are kernel parameters (device pointers, in [`Dispatch::bindings`] order), read and
//! written through `ld_*` / `st_*` macros; f16 / bf16 storage converts to f32 at the load and
//! back at the store. Math is inline PTX or plain arithmetic (no libdevice), so `rg_exp` is the
//! CPU backend's Cody–Waite exponential (relative error below 5e-7) on every device.
//!
//! GEMMs and pivot attention (when its heads fit, see `templates::pivot_tensor_cores`) run on
//! tensor cores ([`CudaOptions::tensor_cores`], f32 accumulation): `mma.sync.m16n8k16` with
//! f16 / bf16 storage, `mma.sync.m16n8k8` on tf32 with f32 storage when [`CudaOptions::tf32`]
//! allows it; otherwise f32 storage runs them as split tf32 (`rg_mma_tf32x3`, three tf32
//! products per tile), so f32 results stay within 1e-5. The GEMM's operands come through two
//! shared-memory stages, A by `cp.async`. Column-separable GEMM input and epilogue programs run
//! inside the GEMM (`templates::fuses_prologue` / `fuses_epilogue`), as does an input program
//! with one norm, given its rows' statistics (`templates::normalizes_on_load`), and a GEMM whose product
//! only feeds slice maps stores the slices ([`absorb_slice_maps`]). The host emulation runs `mma.sync` too (each thread
//! computing its accumulators from its warp's published fragments) and `cp.async` as a plain
//! copy, so the fragment layouts are checked without a GPU; the tensor-core paths have not yet
//! run on one.

use crate::cpu::GraphIndex;
use crate::gpu::{Binding, Dispatch, Elem};
use crate::source::{scratch_sizes, GenCtx, Lang, Shader};
use crate::templates::Finish;
use rgnn_ir::level2::*;
use std::fmt::Write;

/// What the generated code may assume about the device.
#[derive(Clone, Copy, Debug)]
pub struct CudaOptions {
    /// Storage type of activations (arithmetic is f32).
    pub storage: DType,
    /// With f16 / bf16 storage (or f32 with `tf32`), GEMMs and pivot attention on tensor cores
    /// (`mma.sync`, sm_80+); with f32 storage otherwise, both as split tf32. Off: the SIMT
    /// kernels (any architecture).
    pub tensor_cores: bool,
    /// With f32 storage, let GEMMs and pivot attention round their operands to tf32 (10-bit
    /// mantissa) for the tensor cores, as PyTorch's `allow_tf32`. Off by default: f32 results
    /// stay within 1e-5.
    pub tf32: bool,
    /// Blocks per SM that tensor-core pivot attention (256 threads) asks ptxas to fit, by
    /// `__launch_bounds__(256, n)`: 2 holds it to 128 registers. 1 leaves its registers to ptxas
    /// (bf16: about 168 on sm_90, so one block per SM). Which is faster is measured on the GPU.
    pub pivot_blocks_per_sm: u32,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions { storage: DType::F32, tensor_cores: true, tf32: false, pivot_blocks_per_sm: 1 }
    }
}

/// The kernels of a kernel program for one graph.
#[derive(Clone, Debug)]
pub struct CudaProgram {
    /// In execution order; each source defines `extern "C" __global__ void rgnn_kernel(...)`.
    pub dispatches: Vec<Dispatch>,
    /// Elements (f32) of the two scratch buffers (GEMM input rows, GEMM products).
    pub scratch_elems: [usize; 2],
}

/// Make `kp`'s memory plan agree with the GEMMs that store slice maps' rows
/// ([`crate::templates::absorbed_slice_maps`]): each absorbed map's output lives from its GEMM
/// on, and the GEMM's own product, no longer written, for that kernel only. Call before
/// planning memory for the CUDA kernels.
pub fn absorb_slice_maps(kp: &mut KernelProgram, param_shapes: &[Vec<usize>]) {
    for (gemm, maps) in crate::templates::absorbed_slice_maps(kp, param_shapes, Lang::Cuda) {
        for j in maps {
            let out = kp.kernels[j].output();
            let life = &mut kp.buffers[out.0].lifetime;
            life.0 = life.0.min(gemm);
        }
        let product = kp.kernels[gemm].output();
        kp.buffers[product.0].lifetime = (gemm, gemm);
    }
}

/// The entry point of every generated source.
pub const ENTRY: &str = "rgnn_kernel";

/// Generate every dispatch of `kp` for the graph `g` (see [`crate::wgsl::generate`]).
pub fn generate(kp: &KernelProgram, param_shapes: &[Vec<usize>], g: &GraphIndex, opts: &CudaOptions) -> Result<CudaProgram, String> {
    let scratch_elems = scratch_sizes(kp, param_shapes, g, Lang::Cuda);
    let tensor_cores = opts.tensor_cores && (matches!(opts.storage, DType::F16 | DType::BF16) || opts.tf32);
    let split_tf32 = opts.tensor_cores && opts.storage == DType::F32 && !opts.tf32;
    let ctx = GenCtx {
        lang: Lang::Cuda,
        kp,
        param_shapes,
        g,
        storage: opts.storage,
        scratch_elems,
        tensor_cores,
        split_tf32,
        pivot_blocks_per_sm: opts.pivot_blocks_per_sm,
    };
    let dispatches = crate::templates::generate(&ctx, &CudaFinish)?;
    Ok(CudaProgram { dispatches, scratch_elems })
}

/// Everything a kernel uses beyond the language itself.
pub const PRELUDE: &str = r#"// rgnn generated CUDA C: self-contained (no CUDA headers).
#if defined(RGNN_HOST_EMULATION)
// Host emulation (tests without a GPU): plain C++, one host thread per CUDA thread.
#define __global__
#define __device__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
extern thread_local unsigned rg_host_tid[2], rg_host_ctaid[3], rg_host_ntid;
void rg_host_sync();
#define __syncthreads() rg_host_sync()
#elif !defined(__CUDACC_RTC__)
// clang without the CUDA headers: the attribute spellings the headers would define.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __attribute__((always_inline)) inline
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#endif
#define RG_FN static __device__ __forceinline__
#if defined(RGNN_HOST_EMULATION)
RG_FN unsigned rg_sreg_tid_x() { return rg_host_tid[0]; }
RG_FN unsigned rg_sreg_tid_y() { return rg_host_tid[1]; }
RG_FN unsigned rg_sreg_ntid_x() { return rg_host_ntid; }
RG_FN unsigned rg_sreg_ctaid_x() { return rg_host_ctaid[0]; }
RG_FN unsigned rg_sreg_ctaid_y() { return rg_host_ctaid[1]; }
RG_FN unsigned rg_sreg_ctaid_z() { return rg_host_ctaid[2]; }
RG_FN float rg_max(float a, float b) { return a > b ? a : (b == b ? b : a); }
RG_FN float rg_fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
RG_FN float rg_sqrt(float x) { return __builtin_sqrtf(x); }
RG_FN float rg_from_bits(unsigned u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
RG_FN unsigned rg_to_bits(float f) { unsigned u; __builtin_memcpy(&u, &f, 4); return u; }
RG_FN float rg_round(float x) { return __builtin_rintf(x); }
// IEEE half <-> float in plain C (host compilers differ in their _Float16 support).
RG_FN float rg_h2f(unsigned short h) {
    unsigned sign = ((unsigned)h & 0x8000u) << 16, e = ((unsigned)h >> 10) & 0x1fu, m = (unsigned)h & 0x3ffu;
    if (e == 0) { float v = (float)m * 5.9604644775390625e-8f; return sign ? -v : v; }
    if (e == 31) return rg_from_bits(sign | 0x7f800000u | (m << 13));
    return rg_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}
RG_FN unsigned short rg_f2h(float f) {
    unsigned u = rg_to_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);
    if (a < 0x38800000u) return (unsigned short)(sign | (unsigned)__builtin_rintf(rg_from_bits(a) * 16777216.0f));
    return (unsigned short)(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
}
#else
RG_FN unsigned rg_sreg_tid_x() { unsigned r; asm("mov.u32 %0, %%tid.x;" : "=r"(r)); return r; }
RG_FN unsigned rg_sreg_tid_y() { unsigned r; asm("mov.u32 %0, %%tid.y;" : "=r"(r)); return r; }
RG_FN unsigned rg_sreg_ntid_x() { unsigned r; asm("mov.u32 %0, %%ntid.x;" : "=r"(r)); return r; }
RG_FN unsigned rg_sreg_ctaid_x() { unsigned r; asm("mov.u32 %0, %%ctaid.x;" : "=r"(r)); return r; }
RG_FN unsigned rg_sreg_ctaid_y() { unsigned r; asm("mov.u32 %0, %%ctaid.y;" : "=r"(r)); return r; }
RG_FN unsigned rg_sreg_ctaid_z() { unsigned r; asm("mov.u32 %0, %%ctaid.z;" : "=r"(r)); return r; }
RG_FN float rg_max(float a, float b) { float r; asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
RG_FN float rg_fma(float a, float b, float c) { float r; asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a), "f"(b), "f"(c)); return r; }
RG_FN float rg_sqrt(float x) { float r; asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
RG_FN float rg_from_bits(unsigned u) { float f; asm("mov.b32 %0, %1;" : "=f"(f) : "r"(u)); return f; }
RG_FN unsigned rg_to_bits(float f) { unsigned u; asm("mov.b32 %0, %1;" : "=r"(u) : "f"(f)); return u; }
RG_FN float rg_round(float x) { float r; asm("cvt.rni.f32.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
RG_FN float rg_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
RG_FN unsigned short rg_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
// Tensor cores: D = A·B + D for one 16×8 tile, K = 16, f32 accumulators (PTX ISA fragment layouts:
// lane = 4g + t holds A (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..); B (k 2t..2t+1, n g),
// (k 2t+8.., n g); C (g, 2t..2t+1), (g+8, 2t..2t+1)).
RG_FN void rg_mma_bf16(float* d, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
RG_FN void rg_mma_f16(float* d, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// TF32, K = 8: lane = 4g + t holds A (g, t), (g+8, t), (g, t+4), (g+8, t+4); B (k t, n g), (k t+4, n g);
// C as above. Operands are f32 bit patterns rounded by cvt.rna.tf32.f32.
RG_FN void rg_mma_tf32(float* d, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
RG_FN unsigned rg_f2tf32(float f) { unsigned r; asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f)); return r; }
// cp.async (sm_80): copy 16 or 4 bytes from global to shared memory without holding registers;
// with src_bytes = 0 the destination is zero-filled instead. Completed by rg_cp_async_wait_all.
RG_FN unsigned rg_shared_addr(const void* p) {
    unsigned a; asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p)); return a;
}
RG_FN void rg_cp_async16(void* s, const void* g, unsigned src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(rg_shared_addr(s)), "l"(g), "r"(src_bytes) : "memory");
}
RG_FN void rg_cp_async4(void* s, const void* g, unsigned src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(rg_shared_addr(s)), "l"(g), "r"(src_bytes) : "memory");
}
RG_FN void rg_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
RG_FN void rg_cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
// Warp shuffle, butterfly: the value of lane (this lane ^ m); all 32 lanes take part.
RG_FN unsigned rg_shfl_xor_u(unsigned v, unsigned m) {
    unsigned r; asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(v), "r"(m)); return r;
}
RG_FN float rg_shfl_xor(float v, unsigned m) {
    float r; asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(m)); return r;
}
RG_FN unsigned rg_shfl_idx_u(unsigned v, unsigned src) {
    unsigned r; asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(v), "r"(src)); return r;
}
// The warp's lanes meet (and see each other's shared-memory writes).
RG_FN void rg_syncwarp() { asm volatile("bar.warp.sync 0xffffffff;" ::: "memory"); }
#endif
RG_FN unsigned rg_minu(unsigned a, unsigned b) { return a < b ? a : b; }
// Two 16-bit values in one register, `lo` in the low half (the lower k of an mma fragment pair).
RG_FN unsigned rg_pack2(unsigned short lo, unsigned short hi) { return (unsigned)lo | ((unsigned)hi << 16); }
RG_FN float rg_sel(float f, float t, bool c) { return c ? t : f; }
RG_FN unsigned rg_selu(unsigned f, unsigned t, bool c) { return c ? t : f; }
// e^x: x = n ln2 + r (ln2 in two parts, Cody and Waite), e^r by its degree-6 Taylor polynomial,
// 2^n through the exponent bits; relative error below 5e-7; clamped to [-87, 88].
RG_FN float rg_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = rg_round(x * 1.44269504f);
    float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f + r * (1.0f / 24.0f + r * (1.0f / 120.0f + r * (1.0f / 720.0f))))));
    return p * rg_from_bits((unsigned)((int)n + 127) << 23);
}
RG_FN float rg_tanh(float x) {
    x = x < -15.0f ? -15.0f : (x > 15.0f ? 15.0f : x);
    float t = rg_exp(2.0f * x);
    return (t - 1.0f) / (t + 1.0f);
}
RG_FN float rg_sigmoid(float x) {
    x = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
    return 1.0f / (1.0f + rg_exp(-x));
}
// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
RG_FN float rg_erf(float x) {
    float ax = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t * rg_exp(-ax * ax);
    return x >= 0.0f ? y : -y;
}
RG_FN float rg_b2f(unsigned short b) { return rg_from_bits(((unsigned)b) << 16); }
// f32 to bf16, rounding to nearest even.
RG_FN unsigned short rg_f2b(float f) { unsigned u = rg_to_bits(f); return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); }
#if defined(RGNN_HOST_EMULATION)
// mma.sync on the host: each thread publishes its fragments, the block meets at a barrier (the
// GEMM and pivot-attention templates reach every mma with all their threads, in loops of the
// same trip count, so that stands for the warp's convergence), and each thread computes its own
// accumulators from its warp's fragments, decoded with the layouts written above for the device
// versions; a second barrier frees the exchange. A tf32 operand counts only its top 19 bits, as
// on the device, so an operand passed unrounded shows here too.
static unsigned rg_mma_a[1024][4], rg_mma_b[1024][2];
RG_FN float rg_mma_elem(unsigned reg, unsigned k, int kind) {
    if (kind == 2) return rg_from_bits(reg & 0xffffe000u);
    unsigned short h = (unsigned short)((k & 1u) ? reg >> 16 : reg & 0xffffu);
    return kind == 0 ? rg_b2f(h) : rg_h2f(h);
}
// kind 0: bf16 and 1: f16 (K = 16, two values per register); 2: tf32 (K = 8).
RG_FN void rg_mma_emulated(float* d, const unsigned* a, const unsigned* b, int kind) {
    const unsigned me = rg_host_tid[1] * rg_host_ntid + rg_host_tid[0], warp = me & ~31u, lane = me & 31u;
    for (int i = 0; i < 4; i++) rg_mma_a[me][i] = a[i];
    rg_mma_b[me][0] = b[0];
    rg_mma_b[me][1] = b[1];
    rg_host_sync();
    const unsigned g = lane >> 2, t = lane & 3u, kdim = kind == 2 ? 8u : 16u;
    for (unsigned e = 0; e < 4; e++) {
        const unsigned row = g + (e >> 1) * 8u, col = 2u * t + (e & 1u);
        float sum = 0.0f;
        for (unsigned k = 0; k < kdim; k++) {
            unsigned al, ar, bl, br;
            if (kind == 2) {
                al = 4u * (row & 7u) + (k & 3u); ar = (row >> 3) + 2u * (k >> 2);
                bl = 4u * col + (k & 3u); br = k >> 2;
            } else {
                al = 4u * (row & 7u) + ((k & 7u) >> 1); ar = (row >> 3) + 2u * (k >> 3);
                bl = 4u * col + ((k & 7u) >> 1); br = k >> 3;
            }
            sum += rg_mma_elem(rg_mma_a[warp + al][ar], k, kind) * rg_mma_elem(rg_mma_b[warp + bl][br], k, kind);
        }
        d[e] += sum;
    }
    rg_host_sync();
}
// cp.async on the host: a plain copy (or zero fill), complete at once.
RG_FN void rg_cp_async16(void* s, const void* g, unsigned src_bytes) {
    if (src_bytes) __builtin_memcpy(s, g, 16); else __builtin_memset(s, 0, 16);
}
RG_FN void rg_cp_async4(void* s, const void* g, unsigned src_bytes) {
    if (src_bytes) __builtin_memcpy(s, g, 4); else __builtin_memset(s, 0, 4);
}
RG_FN void rg_cp_async_commit() {}
RG_FN void rg_cp_async_wait_all() {}
// Warp shuffles on the host: publish, meet the warp, read the partner's value, meet again.
void rg_host_warp_sync();
static unsigned rg_shfl_slot[1024];
RG_FN unsigned rg_shfl_xor_u(unsigned v, unsigned m) {
    const unsigned me = rg_host_tid[1] * rg_host_ntid + rg_host_tid[0];
    rg_shfl_slot[me] = v;
    rg_host_warp_sync();
    const unsigned r = rg_shfl_slot[me ^ m];
    rg_host_warp_sync();
    return r;
}
RG_FN float rg_shfl_xor(float v, unsigned m) { return rg_from_bits(rg_shfl_xor_u(rg_to_bits(v), m)); }
RG_FN unsigned rg_shfl_idx_u(unsigned v, unsigned src) {
    const unsigned me = rg_host_tid[1] * rg_host_ntid + rg_host_tid[0];
    rg_shfl_slot[me] = v;
    rg_host_warp_sync();
    const unsigned r = rg_shfl_slot[(me & ~31u) | src];
    rg_host_warp_sync();
    return r;
}
RG_FN void rg_syncwarp() { rg_host_warp_sync(); }
RG_FN void rg_mma_bf16(float* d, const unsigned* a, const unsigned* b) { rg_mma_emulated(d, a, b, 0); }
RG_FN void rg_mma_f16(float* d, const unsigned* a, const unsigned* b) { rg_mma_emulated(d, a, b, 1); }
RG_FN void rg_mma_tf32(float* d, const unsigned* a, const unsigned* b) { rg_mma_emulated(d, a, b, 2); }
// cvt.rna.tf32.f32: 10 mantissa bits, rounding to nearest with ties away from zero.
RG_FN unsigned rg_f2tf32(float f) {
    const unsigned u = rg_to_bits(f);
    return (u & 0x7f800000u) == 0x7f800000u ? u : (u + 0x1000u) & 0xffffe000u;
}
#endif
// Split tf32 ("3xTF32"): operands given as whole f32 bits, each split into a tf32 value and the
// tf32 of its remainder; D += Al·Bh + Ah·Bl + Ah·Bh (the small terms first). What is lost (Al·Bl
// and the rounding of the remainders) is of order 2^-22 of the product, so the result keeps f32
// accuracy at three tf32 products. Infinite or NaN operands keep no remainder (it would be NaN).
// The three products go into a fresh accumulator added to D by ordinary (round-to-nearest) f32
// adds: tensor cores have been measured to truncate their additions (round toward zero), which
// over a long running sum would bias it by up to an ulp per step; here they round 8-term partials.
RG_FN void rg_tf32_split(unsigned x, unsigned* hi, unsigned* lo) {
    *hi = rg_f2tf32(rg_from_bits(x));
    const float r = rg_from_bits(x) - rg_from_bits(*hi);
    *lo = rg_f2tf32(rg_sel(0.0f, r, r - r == 0.0f));
}
RG_FN void rg_mma_tf32x3(float* d, const unsigned* a, const unsigned* b) {
    unsigned ah[4], al[4], bh[2], bl[2];
    for (int i = 0; i < 4; i++) rg_tf32_split(a[i], &ah[i], &al[i]);
    for (int i = 0; i < 2; i++) rg_tf32_split(b[i], &bh[i], &bl[i]);
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    rg_mma_tf32(t, al, bh);
    rg_mma_tf32(t, ah, bl);
    rg_mma_tf32(t, ah, bh);
    for (int i = 0; i < 4; i++) d[i] += t[i];
}
"#;

/// The host side of the CUDA host emulation (tests without a GPU), appended to a kernel's
/// source compiled as plain C++ with `RGNN_HOST_EMULATION`:
/// `extern "C" int rgnn_host_launch(gx, gy, gz, bx, by, void** params)` runs the grid block by
/// block, each block's threads as host threads meeting at `__syncthreads` and warp shuffles.
/// `params` is what `cuLaunchKernel` takes: `params[i]` points at parameter `i`'s value (a
/// 64-bit device address); the parameter types come from the kernel's own signature.
/// `RG_HOST_CONCURRENT 0` (set where the kernel has no barrier) runs a block's threads one
/// after another instead, much faster; left undefined, threads always run concurrently.
pub const HOST_LAUNCHER: &str = r#"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <utility>
#ifndef RG_HOST_CONCURRENT
#define RG_HOST_CONCURRENT 1
#endif
thread_local unsigned rg_host_tid[2], rg_host_ctaid[3], rg_host_ntid;
static pthread_barrier_t rg_host_barrier, rg_host_warp_barrier[32];
void rg_host_sync() { pthread_barrier_wait(&rg_host_barrier); }
void rg_host_warp_sync() { pthread_barrier_wait(&rg_host_warp_barrier[(rg_host_tid[1] * rg_host_ntid + rg_host_tid[0]) >> 5]); }
template <typename... P, size_t... I>
static void rg_host_apply(void (*kernel)(P...), void** params, std::index_sequence<I...>) {
    kernel(((P)(uintptr_t)*(const uint64_t*)params[I])...);
}
template <typename... P>
static void rg_host_apply(void (*kernel)(P...), void** params) { rg_host_apply(kernel, params, std::index_sequence_for<P...>{}); }
template <typename... P>
static constexpr unsigned rg_host_param_count(void (*)(P...)) { return sizeof...(P); }
// One grid: a block's `n` threads are host threads that run every block in turn, meeting at
// a barrier after each (a block's `__shared__` arrays are the translation unit's statics).
struct RgHostGrid { unsigned size[3], bx, n; void** params; };
static pthread_barrier_t rg_host_block_barrier;
static void rg_host_run(unsigned i, unsigned x, unsigned y, unsigned z, const RgHostGrid* g) {
    rg_host_tid[0] = i % g->bx; rg_host_tid[1] = i / g->bx;
    rg_host_ctaid[0] = x; rg_host_ctaid[1] = y; rg_host_ctaid[2] = z;
    rg_host_ntid = g->bx;
    rg_host_apply(rgnn_kernel, g->params);
}
struct RgHostWorker { unsigned i; const RgHostGrid* grid; };
static void* rg_host_worker(void* p) {
    const RgHostWorker* w = (const RgHostWorker*)p;
    const RgHostGrid* g = w->grid;
    for (unsigned z = 0; z < g->size[2]; z++) for (unsigned y = 0; y < g->size[1]; y++) for (unsigned x = 0; x < g->size[0]; x++) {
        rg_host_run(w->i, x, y, z, g);
        pthread_barrier_wait(&rg_host_block_barrier);
    }
    return 0;
}
extern "C" int rgnn_host_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, void** params) {
    const unsigned n = bx * by;
    if (n == 0 || n > 1024) return 1;
    const RgHostGrid grid = {{gx, gy, gz}, bx, n, params};
    if (!RG_HOST_CONCURRENT) {
        for (unsigned z = 0; z < gz; z++) for (unsigned y = 0; y < gy; y++) for (unsigned x = 0; x < gx; x++)
            for (unsigned i = 0; i < n; i++) rg_host_run(i, x, y, z, &grid);
        return 0;
    }
    pthread_barrier_init(&rg_host_barrier, 0, n);
    pthread_barrier_init(&rg_host_block_barrier, 0, n);
    for (unsigned w = 0; w * 32 < n; w++) pthread_barrier_init(&rg_host_warp_barrier[w], 0, n - w * 32 < 32 ? n - w * 32 : 32);
    RgHostWorker* workers = new RgHostWorker[n];
    pthread_t* handles = new pthread_t[n];
    unsigned started = 0;
    for (; started < n; started++) {
        workers[started] = RgHostWorker{started, &grid};
        if (pthread_create(&handles[started], 0, rg_host_worker, &workers[started]) != 0) break;
    }
    // A thread that could not start would leave the others waiting at barriers forever.
    if (started < n) { fprintf(stderr, "rgnn host emulation: could not start %u threads\n", n); abort(); }
    for (unsigned i = 0; i < n; i++) pthread_join(handles[i], 0);
    pthread_barrier_destroy(&rg_host_barrier);
    pthread_barrier_destroy(&rg_host_block_barrier);
    for (unsigned w = 0; w * 32 < n; w++) pthread_barrier_destroy(&rg_host_warp_barrier[w]);
    delete[] workers;
    delete[] handles;
    return 0;
}
"#;

/// A dispatch's kernel as a host C++ translation unit (for testing the generated code on
/// machines without a GPU): the kernel compiled as plain C++ with `RGNN_HOST_EMULATION`, then
/// [`HOST_LAUNCHER`]. Threads run concurrently only where the kernel itself meets at barriers
/// or shuffles.
pub fn host_emulation_source(d: &Dispatch) -> String {
    let kernel = d.source.split_once("void __launch_bounds__").map_or(d.source.as_str(), |(_, k)| k);
    let barrier = ["__syncthreads", "rg_shfl_", "rg_mma_", "rg_syncwarp"].iter().any(|s| kernel.contains(s));
    format!("#define RGNN_HOST_EMULATION 1\n#define RG_HOST_CONCURRENT {}\n{}\n{HOST_LAUNCHER}", barrier as u8, d.source)
}

struct CudaFinish;

impl Finish for CudaFinish {
    /// Grid dimensions y and z allow 65535 blocks; x is folded into them the same way.
    fn max_workgroups_per_dim(&self) -> u32 {
        65535
    }

    fn finish(&self, sh: Shader, label: String, workgroups: [u32; 3]) -> Dispatch {
        let mut head = String::from(PRELUDE);
        let mut params = vec![];
        let mut bindings = vec![];
        for &(a, writable) in &sh.arrays {
            let elem = sh.elem(a);
            let len = sh.len(a);
            let name = Shader::name(a);
            let ty = match elem {
                Elem::F32 => "float",
                Elem::F16 | Elem::BF16 => "unsigned short",
                Elem::U32 => "unsigned",
            };
            let constness = if writable { "" } else { "const " };
            params.push(format!("{constness}{ty}* {name}"));
            bindings.push(Binding { array: a, elem, chunk: 0, chunk_elems: len.max(1), len, writable });
            let (load, store) = match elem {
                Elem::F16 => ("rg_h2f", "rg_f2h"),
                Elem::BF16 => ("rg_b2f", "rg_f2b"),
                _ => ("", ""),
            };
            let _ = writeln!(head, "#define ld_{name}(i) {load}({name}[(i)])");
            if writable {
                let _ = writeln!(head, "#define st_{name}(i, v) ({name}[(i)] = {store}(v))");
            }
        }
        let (wx, wy) = sh.workgroup;
        let source = format!(
            "{head}{globals}
extern \"C\" __global__ void __launch_bounds__({threads}{min_blocks}) {ENTRY}({params}) {{
    const unsigned lid_x = rg_sreg_tid_x(), lid_y = rg_sreg_tid_y();
    const unsigned wg_x = rg_sreg_ctaid_x(), wg_y = rg_sreg_ctaid_y(), wg_z = rg_sreg_ctaid_z();
    const unsigned gid_x = wg_x * rg_sreg_ntid_x() + lid_x, gid_y = wg_y;
    const unsigned li = lid_y * {wx}u + lid_x;
    (void)gid_x; (void)gid_y; (void)wg_z; (void)li;
{body}}}
",
            globals = sh.globals,
            threads = wx * wy,
            min_blocks = sh.min_blocks_per_sm.map_or(String::new(), |n| format!(", {n}")),
            params = params.join(", "),
            body = sh.body
        );
        Dispatch::new(label, source, ENTRY, bindings, workgroups, [wx as u32, wy as u32], sh.tables)
    }
}
