//! One 16-float vector and the few operations the CPU micro-kernels need, for each instruction
//! set they are compiled for. Written with explicit intrinsics rather than left to the
//! auto-vectoriser: on register-blocked loops it may vectorise the wrong loop (with gathers),
//! which costs an order of magnitude.
//!
//! Every method is `#[inline(always)]`, so it is compiled inside the `#[target_feature]`
//! function that calls it; callers must only use an implementation their CPU supports.

/// Floats per vector.
pub(super) const L: usize = 16;

pub(super) trait Simd: Copy {
    type V: Copy;
    fn zero() -> Self::V;
    /// SAFETY: `p .. p + L` is readable.
    unsafe fn load(p: *const f32) -> Self::V;
    /// SAFETY: `p .. p + L` is writable.
    unsafe fn store(p: *mut f32, v: Self::V);
    fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `acc + s · x`.
    fn madd(s: f32, x: Self::V, acc: Self::V) -> Self::V;
}

/// Plain arrays: any CPU (the compiler vectorises what it can).
#[derive(Clone, Copy)]
pub(super) struct Portable;

impl Simd for Portable {
    type V = [f32; L];
    #[inline(always)]
    fn zero() -> Self::V {
        [0.0; L]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::ptr::read_unaligned(p as *const [f32; L])
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::ptr::write_unaligned(p as *mut [f32; L], v)
    }
    #[inline(always)]
    fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] + b[l])
    }
    #[inline(always)]
    fn madd(s: f32, x: Self::V, acc: Self::V) -> Self::V {
        std::array::from_fn(|l| acc[l] + s * x[l])
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Simd, L};
    use std::arch::x86_64::*;

    /// AVX-512F: one zmm register per vector.
    #[derive(Clone, Copy)]
    pub(in crate::cpu) struct Avx512;

    // SAFETY (every block below): callers run only where AVX-512F was detected.
    impl Simd for Avx512 {
        type V = __m512;
        #[inline(always)]
        fn zero() -> Self::V {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        fn add(a: Self::V, b: Self::V) -> Self::V {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn madd(s: f32, x: Self::V, acc: Self::V) -> Self::V {
            unsafe { _mm512_fmadd_ps(_mm512_set1_ps(s), x, acc) }
        }
    }

    /// AVX2 + FMA: two ymm registers per vector.
    #[derive(Clone, Copy)]
    pub(in crate::cpu) struct Avx2;

    // SAFETY (every block below): callers run only where AVX2 and FMA were detected.
    impl Simd for Avx2 {
        type V = [__m256; 2];
        #[inline(always)]
        fn zero() -> Self::V {
            unsafe { [_mm256_setzero_ps(); 2] }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(L / 2))]
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            _mm256_storeu_ps(p, v[0]);
            _mm256_storeu_ps(p.add(L / 2), v[1]);
        }
        #[inline(always)]
        fn add(a: Self::V, b: Self::V) -> Self::V {
            unsafe { [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])] }
        }
        #[inline(always)]
        fn madd(s: f32, x: Self::V, acc: Self::V) -> Self::V {
            unsafe {
                let s = _mm256_set1_ps(s);
                [_mm256_fmadd_ps(s, x[0], acc[0]), _mm256_fmadd_ps(s, x[1], acc[1])]
            }
        }
    }
}
