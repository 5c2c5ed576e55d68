//! The small-batch engine: libxsmm's JIT-generated GEMM kernels run on the operands where they
//! lie, each of rayon's threads owning a contiguous share of the output.
//!
//! At a small batch OpenBLAS spends most of a layer's GEMM packing `w` (read once per call) and
//! splitting one call across its threads; libxsmm's register-blocked kernels read `w` in place.
//! On a narrow layer (fewer than [`MIN_WEIGHT`] weights) OpenBLAS's blocking, made for large
//! matrices, reaches 35–45 % of peak at any batch; libxsmm's kernels, with all of `w` in each
//! core's cache, 70–80 %. Where this engine applies ([`plan`]) it measured 0.4–0.9× OpenBLAS's
//! time (README, "The small-batch engine"); everywhere else OpenBLAS runs.
//!
//! libxsmm is column-major, and a row-major `(r, c)` matrix is a column-major `(c, r)` one, so
//! the layer's products become (`B` = batch):
//!
//! | product | row-major | libxsmm kernel (column-major) | split across threads |
//! |---|---|---|---|
//! | forward | `y = x·w` | `yᵀ (out×B) = wᵀ (out×in) · xᵀ (in×B)` | `out`, by column blocks of `y`; a narrow `out` or a large batch: `B`, by row blocks |
//! | weight gradient | `dw (+)= xᵀ·g` | `dwᵀ (out×in) = gᵀ (out×B) · x (B×in)`, `TRANS_B` | `in`, by row blocks of `dw`; at a large batch `B`, each thread's rows summed apart, then added |
//! | input gradient | `dx = g·wᵀ` | `dx (B×in) = g (B×out) · wᵀ (out×in)` | `in`, by column blocks of `dx`; as the forward product where `w` is transposed (narrow layers, large batches) |
//!
//! libxsmm 1.17 has no transposed-A kernels, so the input gradient transposes either the two
//! `(B, ·)` matrices `g` and `dx` through a scratch buffer or, for a narrow layer whose `w` has
//! no more elements than they do, `w` (then it is the forward product of `g` and `wᵀ`). `w` is
//! cut into tiles of [`TILE_BYTES`] × [`TILE_K`] (32 rows × 256 for the input gradient) so that
//! a tile stays in L2 (unblocked, a 4 KB row stride makes the kernel's loads collide in L2 sets).
//!
//! Without libxsmm at build time (the `xsmm` feature off, or `libxsmm-dev` not installed) or on a
//! CPU without AVX2, [`available`] is false and every product goes to OpenBLAS.

use crate::element::Element;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

/// The smallest batch the engine takes: batch 1 goes to BLAS GEMV/GER instead.
pub const MIN_BATCH: usize = 2;
/// Layers with at least this many weights (`in · out`) take the engine from [`MIN_BATCH`] up to
/// [`max_batch`]: their `w` streams from L2 or memory, which OpenBLAS packs once per call.
pub const MIN_WEIGHT: usize = 1 << 16;
/// Narrow layers, with [`NARROW_MIN_WEIGHT`] up to [`MIN_WEIGHT`] weights (a `w` that stays in
/// each core's cache), take the engine from this batch up (and [`NARROW_MIN_WORK`]), at any
/// batch: OpenBLAS reaches only 35–45 % of peak on them at 64 × 64 and less on smaller ones
/// (its blocking is made for large matrices), libxsmm's kernels 70–80 % at batch ≥ 256
/// (`affine-bench --shape`, README "The small-batch engine"). Below batch 32 a step measured
/// slower than OpenBLAS's (16 × 64 × 64: 1.16× its floor against 1.09×).
pub const NARROW_MIN_BATCH: usize = 32;
/// In `f64`, a layer whose `w` has at most this many bytes (768 KB: it stays in each core's L2)
/// takes the engine at batches of at least twice its larger side beyond [`max_batch`] too,
/// every product split by rows of the batch (`dw` summed per thread, then added in a fixed
/// order). Step against OpenBLAS (`affine-bench --shape`, layer/floor in one run, a run where
/// the floor ran at full speed): 512, 1024 and 2048 × 256 × 256 0.90, 0.84, 0.80 (forward
/// 0.62–0.67). In `f32` the same measured 0.89–1.06 on AMD Zen 5 (0.998 and 1.059 at full
/// speed) and is not taken there, but 0.90–0.93 on Zen 4 (see [`large_batch_regime`]).
pub const LARGE_BATCH_MAX_BYTES: usize = 3 << 18;
/// The fewest weights of a narrow layer that the engine takes (16 × 16): at batch 2048 the step
/// measured 0.07–0.5× OpenBLAS's from 16 × 16 to 32 × 32 (f32 2048 × 32 × 32 29–38 µs against
/// 117–535, 2048 × 16 × 16 15 against 33); below (2048 × 2 × 64, 2048 × 64 × 3) it was no faster.
pub const NARROW_MIN_WEIGHT: usize = 1 << 8;
/// The least work (multiply-adds, `batch · weights`) of a narrow layer's product that the engine
/// takes: 32 × 32 × 32 (2¹⁵) measured slower than OpenBLAS (step 1.50 µs against 1.44 f32, 2.40
/// against 2.17 f64), 64 × 32 × 32 (2¹⁶) no slower (2.35 against 2.48, 4.04 against 4.75).
pub const NARROW_MIN_WORK: usize = 1 << 16;
/// A narrow layer's product of less work than this (multiply-adds × bytes per element; f32
/// 128 × 64 × 64) runs on the calling thread: below it, waking a second thread measured slower
/// than not (AMD Zen 5, f32 step: 64 × 64 × 64 6.6–7.0 µs serial, 6.7–14 µs split; Zen 4:
/// 32 × 64 × 64 8.1–8.2 against 8.7–8.8). From it the split measured faster on Zen 4 (f32
/// 128 × 64 × 64 28.6–28.7 µs serial, 23.0–23.3 split in 6 of 7 processes; f32 32 × 128 × 128
/// 31.9 against 22.3; f64 64 × 64 × 64 29.4–29.8 against 22.4–22.7 in 5 of 7) and no slower on
/// Zen 5 (f32 128 × 64 × 64 12.5 µs against 10–17).
pub const NARROW_PARALLEL_WORK: usize = 1 << 21;

/// The products of a layer, which the engine takes up to different batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// `y = x·w (+ b)`.
    Forward,
    /// `dx = g·wᵀ` and `dw = xᵀ·g`.
    Backward,
}

/// The largest batch at which the engine takes `product` in precision `T`: where it measured
/// faster than OpenBLAS (`affine-bench --shape`, layer against its OpenBLAS floor, in = out = 256
/// and 1024). That depends on whose vectors are wider ([`vectors`]).
///
/// - **Both AVX-512** (AMD Zen 5): the engine's forward pass measured 0.65–0.9× OpenBLAS's time
///   up to batch 256 (f32) and 384 (f64), its backward pass 0.85–0.9× up to batch 64 (f32) and
///   0.9–0.99× up to 256 (f64), and no faster above. The f32 backward runs on the engine to
///   batch 128 all the same, at 1.0–1.05× OpenBLAS's time: with both passes on one thread pool
///   the step measured 0.80–0.98× its floor at batch 96–128 (256 × 256 to 4096 × 1024 weights),
///   against 0.95–1.10× with the engine's forward followed by OpenBLAS's backward (the two pools
///   meeting in each step). At 256 the mixed step held (0.97–0.99×; both on the engine
///   1.05–1.10×). Where AVX-512 runs on 256-bit units ([`avx512_on_256_bit_units`], AMD Zen 4)
///   the f32 backward goes on to batch 256: there it measured 0.76–0.95× its floor at 192 and
///   256 × 1024 × 1024, 256 × 512 × 512 and 256 × 2048 × 512 against OpenBLAS's 1.00–1.05×
///   (three runs each; one tie, 1.02 against 1.01), and 1.03× against 1.01× at 512.
/// - **The engine's wider** (AVX-512 against OpenBLAS's AVX2 kernels: a user's
///   `OPENBLAS_CORETYPE=Haswell` on Zen 5): the whole step measured 0.5–0.65× OpenBLAS's up to
///   batch 512.
/// - **Both AVX2** (AMD Zen 1, OpenBLAS's `Zen` kernels, libxsmm's `hsw`), by the size of `w`:
///   - more than [`SAME_VECTORS_MID_W_BYTES`] (f64 512 × 512, f32 and f64 1024 × 1024): the
///     forward pass measured 0.67× OpenBLAS's time at batch 8 (f32; f64 1.04) but 1.2× at batch
///     16–32 (1.5–1.9× at 128–256), the backward pass 0.42–0.91× up to batch 64 and 1.1–1.3× at
///     128: so the forward to 8, the backward to 64 (step against the cutoff of 512 it had
///     before, layer/floor in alternating runs: f32 and f64 16–64 × 1024 × 1024 0.58–0.95
///     against 0.65–1.17, 128 0.98–1.01 against 1.07–1.29, 512 1.00–1.06 against 1.76–2.56);
///   - up to that (f32 512 × 512, f64 256 × 256): the forward 0.46–0.94× up to batch 256, the
///     backward 0.48–0.97× up to 128 (f64 256 × 256 at 256: 1.14; f32 512 × 512 at 512 1.16–1.27,
///     its step 1.10–1.19× the floor): the forward to 256, the backward to 128;
///   - up to [`SAME_VECTORS_SMALL_W_BYTES`] (f32 256 × 256, with room in Zen 1's 512 KB L2): the
///     step 0.82–0.88× its floor at f32 512 × 256 × 256 (both passes on the engine), against
///     1.01–1.02 on OpenBLAS; at 1024 0.88–0.90, at 2048 0.87–0.98 (OpenBLAS 1.00–1.01), at
///     4096 0.97–0.98: both passes to 2048, the grid's largest batch.
///
/// `w` is the weight's shape, `(in, out)`.
pub fn max_batch<T: Element>(product: Product, (rows, cols): (usize, usize)) -> usize {
    let bytes = rows
        .saturating_mul(cols)
        .saturating_mul(std::mem::size_of::<T>());
    match (vectors(), product, T::NAME) {
        (Vectors::EngineWider, _, _) => 512,
        (Vectors::BothAvx512, Product::Forward, "f32") => 256,
        (Vectors::BothAvx512, Product::Forward, _) => 384,
        (Vectors::BothAvx512, Product::Backward, "f32") if avx512_on_256_bit_units() => 256,
        (Vectors::BothAvx512, Product::Backward, "f32") => 128,
        (Vectors::BothAvx512, Product::Backward, _) => 256,
        (Vectors::Same, _, _) if bytes <= SAME_VECTORS_SMALL_W_BYTES => 2048,
        (Vectors::Same, Product::Forward, _) if bytes <= SAME_VECTORS_MID_W_BYTES => 256,
        (Vectors::Same, Product::Backward, _) if bytes <= SAME_VECTORS_MID_W_BYTES => 128,
        (Vectors::Same, Product::Forward, _) => 8,
        (Vectors::Same, Product::Backward, _) => 64,
    }
}

/// Where both run the [`Vectors::Same`] vectors, the largest `w` (bytes) that the engine takes
/// to batch 2048 in [`max_batch`] (384 KB: f32 256 × 256 with the bias row folded in, not f64).
pub const SAME_VECTORS_SMALL_W_BYTES: usize = 3 << 17;
/// Where both run the [`Vectors::Same`] vectors, the largest `w` (bytes) that the engine takes
/// to batch 256 (forward) and 128 (backward) in [`max_batch`] (1.25 MiB: f32 512 × 512 with the
/// bias row folded in, not f64 512 × 512).
pub const SAME_VECTORS_MID_W_BYTES: usize = 5 << 18;

/// How the engine's vectors compare with those of the kernels OpenBLAS runs, which sets the
/// engine's batch cutoffs ([`max_batch`], [`large_batch_regime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vectors {
    /// libxsmm generates wider vectors than OpenBLAS's kernels use.
    EngineWider,
    /// Both run AVX-512 (where the engine's cutoffs were first measured).
    BothAvx512,
    /// Both run the same vectors below AVX-512 (AVX2), or OpenBLAS's are wider.
    Same,
}

/// Whose vectors are wider, libxsmm's or those of the kernels OpenBLAS runs; the environment
/// variable `AFFINE_BLAS_XSMM_VECTORS` (`engine-wider`, `avx512` or `same`, read at first use)
/// sets the answer instead, for comparisons and for tests of the engine's paths at every batch.
pub fn vectors() -> Vectors {
    // asked on every layer call; neither side's kernels change once chosen
    static VECTORS: OnceLock<Vectors> = OnceLock::new();
    *VECTORS.get_or_init(|| {
        match std::env::var("AFFINE_BLAS_XSMM_VECTORS").as_deref() {
            Ok("engine-wider") => return Vectors::EngineWider,
            Ok("avx512") => return Vectors::BothAvx512,
            Ok("same") => return Vectors::Same,
            _ => {}
        }
        let blas = crate::kernels::isa_rank(crate::blas::ensure_best_kernels().core());
        let engine = if engine_avx512() { 3 } else { 2 };
        if engine > blas {
            Vectors::EngineWider
        } else if engine == 3 {
            Vectors::BothAvx512
        } else {
            Vectors::Same
        }
    })
}

/// Whether the large-batch regime ([`LARGE_BATCH_MAX_BYTES`]) applies in precision `T`: in
/// `f64` unless both run the [`Vectors::Same`] vectors (both on AVX2, AMD Zen 1 with 512 KB of
/// L2, f64 512 and 2048 × 256 × 256 measured 1.02× and 1.33× OpenBLAS's step); in `f32` only
/// where AVX-512 runs on 256-bit units ([`avx512_on_256_bit_units`], AMD Zen 4). There, with
/// OpenBLAS's `Cooperlake` kernels, the f32 step measured 0.87–0.93× its floor at 512–2048 ×
/// 256 × 256 and 1024–2048 × 384 × 384, and 0.69–0.77× wherever that process's OpenBLAS ran in
/// its slow mode (README, "The small-batch engine"); on Zen 5, with full-width AVX-512 units,
/// 0.89–1.06×. The environment variable
/// `AFFINE_BLAS_XSMM_F32_LARGE_BATCH` (`1` or `0`, read at first use) sets the `f32` answer
/// instead, for comparisons and for tests of the path on any CPU.
pub fn large_batch_regime<T: Element>() -> bool {
    if T::NAME == "f64" {
        return vectors() != Vectors::Same;
    }
    // asked on every layer call
    static F32: OnceLock<bool> = OnceLock::new();
    *F32.get_or_init(
        || match std::env::var("AFFINE_BLAS_XSMM_F32_LARGE_BATCH").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => vectors() != Vectors::Same && avx512_on_256_bit_units(),
        },
    )
}

/// Whether the CPU runs AVX-512 instructions on 256-bit units, two passes per 512-bit
/// instruction: AMD's Zen 4 (family 25 with AVX-512; Zen 3, also family 25, has no AVX-512).
/// Zen 5 (family 26) has full-width units; Intel's AVX-512 cores are not counted here
/// (unmeasured).
pub fn avx512_on_256_bit_units() -> bool {
    // asked on every layer call, and CPUID traps to the hypervisor in a VM
    static HALVES: OnceLock<bool> = OnceLock::new();
    *HALVES.get_or_init(cpu_runs_avx512_in_halves)
}

fn cpu_runs_avx512_in_halves() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let vendor = __cpuid(0);
        let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        let eax = __cpuid(1).eax;
        // the base family field saturates at 15; AMD adds the extended family to it
        let family = ((eax >> 8) & 0xf) + ((eax >> 20) & 0xff);
        amd && family == 25 && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of a `w` tile along the split dimension, in bytes (128 `f32`, 64 `f64`).
pub const TILE_BYTES: usize = 512;
/// Rows of a `w` tile along the reduction dimension.
pub const TILE_K: usize = 128;
/// The input gradient's tiles: columns of `dx` per kernel (rows of `w` read at once) and the
/// reduction block. Fewer rows of `w` at once measured faster where `w` streams from memory
/// (`affine-bench`, backward, layer/OpenBLAS, 128 × 128 → 32 × 256: f64 8 × 4096 × 4096 0.739 →
/// 0.543, f32 0.649 → 0.508, f32 8 × 1024 × 1024 0.623 → 0.544, f64 32 × 1024 × 1024 0.783 →
/// 0.700) and the same elsewhere.
const DX_TILE_N: usize = 32;
const DX_TILE_K: usize = 256;

/// A JIT kernel `c ← a·b (+ c)` on column-major operands, as libxsmm returns it. Variadic in C
/// (prefetching kernels take three more pointers); ours are dispatched without prefetch.
#[doc(hidden)]
pub type RawKernel = unsafe extern "C" fn(a: *const c_void, b: *const c_void, c: *mut c_void, ...);

/// What a kernel computes: column-major `C (m×n) ← A (m×k) · op(B) (k×n) (+ C)`, with
/// `op(B) = Bᵀ` (stored `n×k`) when `trans_b`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub m: c_int,
    pub n: c_int,
    pub k: c_int,
    pub lda: c_int,
    pub ldb: c_int,
    pub ldc: c_int,
    /// β = 1 (add into `C`) instead of β = 0.
    pub accumulate: bool,
    pub trans_b: bool,
}

#[cfg(affine_xsmm)]
mod ffi {
    use std::os::raw::{c_char, c_int};

    /// `LIBXSMM_X86_AVX2`: the oldest target whose JIT kernels beat OpenBLAS here.
    pub const X86_AVX2: c_int = 1006;
    /// `LIBXSMM_X86_AVX512`: the first of libxsmm's AVX-512 targets (1007 and above).
    pub const X86_AVX512: c_int = 1007;
    pub const FLAG_TRANS_B: c_int = 2;
    pub const PREFETCH_NONE: c_int = 0;

    extern "C" {
        pub fn libxsmm_init();
        pub fn libxsmm_get_target_archid() -> c_int;
        pub fn libxsmm_get_target_arch() -> *const c_char;
        #[allow(clippy::too_many_arguments)]
        pub fn libxsmm_smmdispatch(
            m: c_int,
            n: c_int,
            k: c_int,
            lda: *const c_int,
            ldb: *const c_int,
            ldc: *const c_int,
            alpha: *const f32,
            beta: *const f32,
            flags: *const c_int,
            prefetch: *const c_int,
        ) -> Option<super::RawKernel>;
        #[allow(clippy::too_many_arguments)]
        pub fn libxsmm_dmmdispatch(
            m: c_int,
            n: c_int,
            k: c_int,
            lda: *const c_int,
            ldb: *const c_int,
            ldc: *const c_int,
            alpha: *const f64,
            beta: *const f64,
            flags: *const c_int,
            prefetch: *const c_int,
        ) -> Option<super::RawKernel>;
        pub fn libxsmm_otrans(
            out: *mut std::ffi::c_void,
            inp: *const std::ffi::c_void,
            typesize: std::os::raw::c_uint,
            m: c_int,
            n: c_int,
            ldi: c_int,
            ldo: c_int,
        );
    }
}

/// Defines `dispatch_f32`/`dispatch_f64`: libxsmm's kernel for a [`Desc`] in that precision.
macro_rules! dispatch {
    ($name:ident, $t:ty, $ffi:ident, $what:literal) => {
        #[doc = concat!("libxsmm's kernel for `d` in ", $what, "; `None` where it cannot make one.")]
        #[doc(hidden)]
        pub fn $name(d: &Desc) -> Option<RawKernel> {
            #[cfg(affine_xsmm)]
            {
                let (alpha, beta): ($t, $t) = (1.0, if d.accumulate { 1.0 } else { 0.0 });
                let flags = if d.trans_b { ffi::FLAG_TRANS_B } else { 0 };
                // SAFETY: FFI call; every pointer is to a local that outlives it, and libxsmm
                // only reads them. It returns a kernel or null (None), and is thread-safe.
                unsafe {
                    ffi::$ffi(
                        d.m,
                        d.n,
                        d.k,
                        &d.lda,
                        &d.ldb,
                        &d.ldc,
                        &alpha,
                        &beta,
                        &flags,
                        &ffi::PREFETCH_NONE,
                    )
                }
            }
            #[cfg(not(affine_xsmm))]
            {
                let _ = d;
                None
            }
        }
    };
}

dispatch!(dispatch_f32, f32, libxsmm_smmdispatch, "single precision");
dispatch!(dispatch_f64, f64, libxsmm_dmmdispatch, "double precision");

/// Whether libxsmm was linked into this build (it may still be unusable on this CPU: see
/// [`available`]).
pub const LINKED: bool = cfg!(affine_xsmm);

const UNKNOWN: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
const MISSING: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
/// Whether libxsmm's target has AVX-512, recorded by the probe.
static AVX512: AtomicBool = AtomicBool::new(false);

/// Whether libxsmm generates AVX-512 code on this CPU (false where it is not [`available`]).
fn engine_avx512() -> bool {
    available() && AVX512.load(Ordering::Relaxed)
}

/// Whether libxsmm was linked and makes JIT kernels on this CPU (AVX2 or wider).
pub fn available() -> bool {
    state() != MISSING
}

/// Whether the engine runs where it applies: [`available`], and not switched off by
/// [`set_enabled`] or by the environment variable `AFFINE_BLAS_XSMM=0` at first use.
pub fn enabled() -> bool {
    state() == ON
}

/// Switches the engine on or off (process-wide; for comparisons). Returns whether it is now on,
/// which is false whatever `on` says where it is not [`available`].
pub fn set_enabled(on: bool) -> bool {
    if !available() {
        return false;
    }
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
    on
}

/// The instruction set libxsmm generates code for, e.g. `"cpx"` (AVX-512), or `"none"`.
pub fn target() -> String {
    #[cfg(affine_xsmm)]
    if available() {
        // SAFETY: FFI call after libxsmm_init; it returns a static NUL-terminated name or null.
        let name = unsafe { ffi::libxsmm_get_target_arch() };
        if !name.is_null() {
            // SAFETY: non-null, and libxsmm's arch names are static C strings.
            let name = unsafe { std::ffi::CStr::from_ptr(name) };
            return name.to_string_lossy().into_owned();
        }
    }
    "none".to_string()
}

fn state() -> u8 {
    match STATE.load(Ordering::Relaxed) {
        UNKNOWN => {
            let s = if !probe() {
                MISSING
            } else if std::env::var("AFFINE_BLAS_XSMM").is_ok_and(|v| v == "0" || v == "off") {
                OFF
            } else {
                ON
            };
            // a racing first call probes too and stores the same answer
            let _ = STATE.compare_exchange(UNKNOWN, s, Ordering::Relaxed, Ordering::Relaxed);
            STATE.load(Ordering::Relaxed)
        }
        s => s,
    }
}

#[cfg(affine_xsmm)]
fn probe() -> bool {
    // SAFETY: FFI calls without arguments; libxsmm_init may be called more than once and from
    // any thread.
    let arch = unsafe {
        ffi::libxsmm_init();
        ffi::libxsmm_get_target_archid()
    };
    AVX512.store(arch >= ffi::X86_AVX512, Ordering::Relaxed);
    arch >= ffi::X86_AVX2
}

#[cfg(not(affine_xsmm))]
fn probe() -> bool {
    false
}

/// Whether the engine takes `product` at this batch, for a weight of shape `w` (`(in, out)`, or
/// `(in + 1, out)` with the bias folded in), in precision `T` (see [`plan`]).
pub fn applies<T: Element>(product: Product, batch: usize, w: (usize, usize)) -> bool {
    plan::<T>(product, batch, w).is_some()
}

/// How the engine runs `product` at this batch for a weight of shape `w` in precision `T`: `None` where it does not take it (OpenBLAS does), else the number of threads it splits
/// it across (1: on the calling thread; more: rayon's pool, which a caller enters first, see
/// [`crate::threads`]). The engine takes batches [`MIN_BATCH`]`..=`[`max_batch`] from
/// [`MIN_WEIGHT`] weights (and where [`large_batch_regime`] applies every batch of at least
/// twice the larger side of a `w` of at most [`LARGE_BATCH_MAX_BYTES`]), batches from [`NARROW_MIN_BATCH`] and
/// [`NARROW_MIN_WORK`] multiply-adds between [`NARROW_MIN_WEIGHT`] and [`MIN_WEIGHT`], and
/// nothing while not [`enabled`].
pub fn plan<T: Element>(
    product: Product,
    batch: usize,
    (rows, cols): (usize, usize),
) -> Option<usize> {
    let weights = rows.saturating_mul(cols);
    let takes = if weights >= MIN_WEIGHT {
        let bytes = weights.saturating_mul(std::mem::size_of::<T>());
        let large = large_batch_regime::<T>()
            && bytes <= LARGE_BATCH_MAX_BYTES
            && large_batch(batch, rows, cols);
        (MIN_BATCH..=max_batch::<T>(product, (rows, cols))).contains(&batch) || large
    } else {
        weights >= NARROW_MIN_WEIGHT
            && batch >= NARROW_MIN_BATCH
            && batch.saturating_mul(weights) >= NARROW_MIN_WORK
    };
    let work = batch
        .saturating_mul(weights)
        .saturating_mul(std::mem::size_of::<T>());
    let serial = weights < MIN_WEIGHT && work < NARROW_PARALLEL_WORK;
    (takes && enabled()).then(|| {
        if serial {
            1
        } else {
            rayon::current_num_threads()
        }
    })
}

/// Whether the engine splits `product` across rayon's threads ([`plan`] > 1): where the caller
/// enters rayon's pool first.
pub fn parallel<T: Element>(product: Product, batch: usize, w: (usize, usize)) -> bool {
    plan::<T>(product, batch, w).is_some_and(|threads| threads > 1)
}

/// A row-major operand: its address, rows, columns and row stride (elements).
#[derive(Clone, Copy)]
struct Mat {
    addr: usize,
    rows: usize,
    cols: usize,
    ld: usize,
}

impl Mat {
    /// `a` as libxsmm can read it in place: unit column stride, positive row stride of at least
    /// its columns; `None` otherwise.
    fn of<T>(a: &ArrayView2<'_, T>) -> Option<Mat> {
        Self::from_parts(a.as_ptr().expose_provenance(), a.dim(), a.strides())
    }

    fn of_mut<T>(a: &mut ArrayViewMut2<'_, T>) -> Option<Mat> {
        let (dim, strides) = (a.dim(), [a.strides()[0], a.strides()[1]]);
        Self::from_parts(a.as_mut_ptr().expose_provenance(), dim, &strides)
    }

    fn from_parts(addr: usize, (rows, cols): (usize, usize), strides: &[isize]) -> Option<Mat> {
        // a length-1 axis's stride is never stepped along (ndarray may give it 0)
        let unit_cols = cols <= 1 || strides[1] == 1;
        let ld = if rows <= 1 {
            cols.max(1)
        } else {
            usize::try_from(strides[0]).ok()?
        };
        (unit_cols && ld >= cols && fits(ld) && fits(rows) && fits(cols)).then_some(Mat {
            addr,
            rows,
            cols,
            ld,
        })
    }

    /// Address of element `(r, c)`, for `T` elements.
    fn at<T>(&self, r: usize, c: usize) -> usize {
        self.addr + (r * self.ld + c) * std::mem::size_of::<T>()
    }
}

fn fits(n: usize) -> bool {
    c_int::try_from(n).is_ok()
}

fn int(n: usize) -> c_int {
    // every dimension and stride was checked by Mat::from_parts or is a tile of one
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// The kernels of one product, dispatched before anything is written (so that a kernel libxsmm
/// cannot make leaves the product to OpenBLAS untouched): sixteen variants, bits 0, 1 and 3 for
/// the edge tile of each of three dimensions, bit 2 for β = 1. Variants that are one kernel (a
/// dimension without an edge tile) cost one lookup.
struct Kernels([RawKernel; 16]);

impl Kernels {
    fn new<T: Element>(desc: impl Fn(usize) -> Desc) -> Option<Self> {
        let mut ks = [T::xsmm_dispatch(&desc(0))?; 16];
        for i in 1..16 {
            let d = desc(i);
            ks[i] = match (0..i).find(|&j| desc(j) == d) {
                Some(j) => ks[j],
                None => T::xsmm_dispatch(&d)?,
            };
        }
        Some(Kernels(ks))
    }

    fn get(&self, [edge0, edge1, edge3]: [bool; 3], accumulate: bool) -> RawKernel {
        let i = usize::from(edge0)
            | usize::from(edge1) << 1
            | usize::from(accumulate) << 2
            | usize::from(edge3) << 3;
        self.0[i]
    }
}

/// A dimension of `len` cut into tiles of `tile`: the tile, and the last tile's length.
#[derive(Clone, Copy)]
struct Tiling {
    len: usize,
    tile: usize,
    edge: usize,
}

impl Tiling {
    /// Tiles of about `tile`, at most 1.5 × `tile` (so that no edge tile is a sliver: the folded
    /// bias makes a dimension `2^k + 1`, whose last row would otherwise be a pass of its own).
    fn new(len: usize, tile: usize) -> Self {
        let tile = tile.max(1);
        let count = ((len + tile / 2) / tile).max(1);
        let tile = len.div_ceil(count).max(1);
        let edge = match len % tile {
            0 => tile,
            r => r,
        };
        Tiling { len, tile, edge }
    }

    /// `tile` for bit clear, `edge` for bit set.
    fn pick(&self, edge: bool) -> usize {
        if edge {
            self.edge
        } else {
            self.tile
        }
    }

    /// The tiles `(start, length, is_edge)` of `[lo, hi)`, which starts on a tile boundary.
    fn tiles(&self, lo: usize, hi: usize) -> impl Iterator<Item = (usize, usize, bool)> + '_ {
        (lo..hi).step_by(self.tile).map(move |s| {
            let n = self.tile.min(hi - s);
            (s, n, n != self.tile)
        })
    }

    /// As many parts as `threads`, at most one per tile.
    fn parts(&self, threads: usize) -> usize {
        threads.min(self.len.div_ceil(self.tile)).max(1)
    }

    /// Where part `p` of `parts` starts: parts hold whole tiles, as evenly as they go.
    fn part_start(&self, p: usize, parts: usize) -> usize {
        let tiles = self.len.div_ceil(self.tile);
        (p * tiles / parts * self.tile).min(self.len)
    }
}

/// Runs `f(start, end, v)` for parts `lo..hi` of a dimension, part `p` covering
/// `[start(p), start(p + 1))`, in parallel: `v` is split (`split(v, length of the first half)`)
/// and the halves handed to `rayon::join`, which allocates nothing when called inside rayon's pool.
fn par_parts<V, S, F>(
    v: V,
    (lo, hi): (usize, usize),
    start: &(impl Fn(usize) -> usize + Sync),
    split: &S,
    f: &F,
) where
    V: Send,
    S: Fn(V, usize) -> (V, V) + Sync,
    F: Fn(usize, usize, V) + Sync,
{
    let (s0, s1) = (start(lo), start(hi));
    if hi - lo <= 1 {
        if s1 > s0 {
            f(s0, s1, v);
        }
        return;
    }
    let mid = lo + (hi - lo) / 2;
    let (a, b) = split(v, start(mid) - s0);
    rayon::join(
        || par_parts(a, (lo, mid), start, split, f),
        || par_parts(b, (mid, hi), start, split, f),
    );
}

/// A batch at least twice the layer's larger side (less one, for the folded bias's row, so that
/// a layer's forward and backward products agree): the products split by rows of the batch.
fn large_batch(b: usize, k: usize, n: usize) -> bool {
    b >= 2 * k.max(n).saturating_sub(1)
}

fn ptr(addr: usize) -> *const c_void {
    std::ptr::with_exposed_provenance(addr)
}

/// Runs a kernel on the operands at these addresses.
fn run(kernel: RawKernel, a: usize, b: usize, c: *mut c_void) {
    // SAFETY: FFI call. The kernel was made for this tile's m, n, k and leading dimensions, and
    // every address is an element of an operand checked by `Mat` (unit column stride, row
    // stride ≥ columns) whose tile at that corner lies inside it. `c` points into the output
    // block this thread owns exclusively (split from a `&mut` view); `a` and `b` are only read.
    unsafe { kernel(ptr(a), ptr(b), c) };
}

/// `y ← x·w`, or `y ← y + x·w` when `accumulate`, for `x: (B, K)`, `w: (K, N)`, `y: (B, N)`.
/// Returns false, having written nothing, where the engine cannot take these operands (a layout
/// libxsmm cannot read in place, an empty dimension, no kernel).
///
/// The threads split `y` by column blocks where `N` has a tile for each, else (a narrow layer,
/// whose `w` every thread can hold in its cache) by row blocks: each reads all of `w` and its
/// share of `x`.
pub(crate) fn gemm_nn<T: Element>(
    x: &ArrayView2<'_, T>,
    w: &ArrayView2<'_, T>,
    y: &mut ArrayViewMut2<'_, T>,
    accumulate: bool,
    threads: usize,
) -> bool {
    let (Some(xm), Some(wm), Some(ym)) = (Mat::of(x), Mat::of(w), Mat::of_mut(y)) else {
        return false;
    };
    let (b, k, n) = (xm.rows, xm.cols, wm.cols);
    if b == 0 || k == 0 || n == 0 || wm.rows != k || ym.rows != b || ym.cols != n {
        return false;
    }
    // column-major: yᵀ (n×b) = wᵀ (n×k) · xᵀ (k×b); m = out, k is blocked
    let tm = Tiling::new(n, TILE_BYTES / std::mem::size_of::<T>());
    let tk = Tiling::new(k, TILE_K);
    let by_rows = (tm.parts(threads) < threads || large_batch(b, k, n)) && b >= threads;
    let tb = Tiling::new(b, if by_rows { b.div_ceil(threads) } else { b });
    let Some(ks) = Kernels::new::<T>(|i| Desc {
        m: int(tm.pick(i & 1 != 0)),
        n: int(tb.pick(i & 8 != 0)),
        k: int(tk.pick(i & 2 != 0)),
        lda: int(wm.ld),
        ldb: int(xm.ld),
        ldc: int(ym.ld),
        accumulate: i & 4 != 0,
        trans_b: false,
    }) else {
        return false;
    };
    // the block of y with corner (r0, c0): rows r0..r1, columns c0..c1
    let body = |(r0, r1): (usize, usize), (c0, c1): (usize, usize), c: *mut T| {
        let b_edge = r1 - r0 != tb.tile;
        for (m0, _, m_edge) in tm.tiles(c0, c1) {
            for (k0, _, k_edge) in tk.tiles(0, k) {
                let kernel = ks.get([m_edge, k_edge, b_edge], accumulate || k0 > 0);
                let c = c.wrapping_add(m0 - c0).cast();
                run(kernel, wm.at::<T>(k0, m0), xm.at::<T>(r0, k0), c);
            }
        }
    };
    let (split, axis) = if by_rows {
        (tb, Axis(0))
    } else {
        (tm, Axis(1))
    };
    let parts = split.parts(threads);
    par_parts(
        y.view_mut(),
        (0, parts),
        &|p| split.part_start(p, parts),
        &|v: ArrayViewMut2<'_, T>, at| v.split_at(axis, at),
        &|s0, s1, mut block: ArrayViewMut2<'_, T>| {
            let (rows, cols) = if by_rows {
                ((s0, s1), (0, n))
            } else {
                ((0, b), (s0, s1))
            };
            body(rows, cols, block.as_mut_ptr());
        },
    );
    true
}

/// `dw ← xᵀ·g`, or `dw ← dw + xᵀ·g` when `accumulate`, for `x: (B, K)`, `g: (B, N)`,
/// `dw: (K, N)`. Returns false, having written nothing, as [`gemm_nn`].
pub(crate) fn gemm_tn<T: Element>(
    x: &ArrayView2<'_, T>,
    g: &ArrayView2<'_, T>,
    dw: &mut ArrayViewMut2<'_, T>,
    accumulate: bool,
    threads: usize,
) -> bool {
    let (Some(xm), Some(gm), Some(dm)) = (Mat::of(x), Mat::of(g), Mat::of_mut(dw)) else {
        return false;
    };
    let (b, k, n) = (xm.rows, xm.cols, gm.cols);
    if b == 0 || k == 0 || n == 0 || gm.rows != b || dm.rows != k || dm.cols != n {
        return false;
    }
    if threads > 1 && large_batch(b, k, n) {
        return gemm_tn_by_batch(xm, gm, dw, dm, accumulate, threads);
    }
    // column-major: dwᵀ (n×k) = gᵀ (n×b) · op(x) with x stored (k×b), op = ᵀ; the rows of dw
    // (libxsmm's n) are split so that each thread writes a contiguous block
    let tm = Tiling::new(n, TILE_BYTES / std::mem::size_of::<T>());
    // a narrow layer still gives every thread a block of rows
    let tn = Tiling::new(k, TILE_K.min(k.div_ceil(threads)));
    let Some(ks) = Kernels::new::<T>(|i| Desc {
        m: int(tm.pick(i & 1 != 0)),
        n: int(tn.pick(i & 2 != 0)),
        k: int(b),
        lda: int(gm.ld),
        ldb: int(xm.ld),
        ldc: int(dm.ld),
        accumulate: i & 4 != 0,
        trans_b: true,
    }) else {
        return false;
    };
    let parts = tn.parts(threads);
    par_parts(
        dw.view_mut(),
        (0, parts),
        &|p| tn.part_start(p, parts),
        &|v: ArrayViewMut2<'_, T>, at| v.split_at(Axis(0), at),
        &|r0, r1, mut block: ArrayViewMut2<'_, T>| {
            let c = block.as_mut_ptr();
            for (n0, _, n_edge) in tn.tiles(r0, r1) {
                for (m0, _, m_edge) in tm.tiles(0, n) {
                    let kernel = ks.get([m_edge, n_edge, false], accumulate);
                    let c = c.wrapping_add((n0 - r0) * dm.ld + m0).cast();
                    run(kernel, gm.at::<T>(0, m0), xm.at::<T>(0, n0), c);
                }
            }
        },
    );
    true
}

/// `dx ← g·wᵀ` for `g: (B, N)`, `w: (K, N)`, `dx: (B, K)`. Returns false, having written
/// nothing, as [`gemm_nn`]. Uses the calling thread's scratch buffer of `B·(N + K)` elements
/// (allocated once, reused).
pub(crate) fn gemm_nt<T: Element>(
    g: &ArrayView2<'_, T>,
    w: &ArrayView2<'_, T>,
    dx: &mut ArrayViewMut2<'_, T>,
    threads: usize,
) -> bool {
    let (Some(gm), Some(wm), Some(dm)) = (Mat::of(g), Mat::of(w), Mat::of_mut(dx)) else {
        return false;
    };
    let (b, n, k) = (gm.rows, gm.cols, wm.rows);
    if b == 0 || k == 0 || n == 0 || wm.cols != n || dm.rows != b || dm.cols != k {
        return false;
    }
    if (k * n < MIN_WEIGHT && k * n <= b * (k + n)) || large_batch(b, k, n) {
        return gemm_nt_by_rows(g, w, wm, dx, threads);
    }
    // column-major: dx (b×k) = g (b×n) · wᵀ... with g and dx as their transposes gt (n, b) and
    // dxt (k, b) row-major, i.e. (b×n) and (b×k) column-major: dxt = gt · w-as-(n×k)
    let tn = Tiling::new(k, DX_TILE_N);
    let tk = Tiling::new(n, DX_TILE_K);
    let Some(ks) = Kernels::new::<T>(|i| Desc {
        m: int(b),
        n: int(tn.pick(i & 1 != 0)),
        k: int(tk.pick(i & 2 != 0)),
        lda: int(b),
        ldb: int(wm.ld),
        ldc: int(b),
        accumulate: i & 4 != 0,
        trans_b: false,
    }) else {
        return false;
    };
    T::with_buffer(b * (n + k), |buf| {
        let (gt, dxt) = buf.split_at_mut(b * n);
        let (Ok(mut gt), Ok(dxt)) = (
            ArrayViewMut2::from_shape((n, b), gt),
            ArrayViewMut2::from_shape((k, b), dxt),
        ) else {
            return false;
        };
        // gt ← gᵀ, by row blocks of gt
        let tg = Tiling::new(n, TILE_K);
        let parts = tg.parts(threads);
        par_parts(
            gt.view_mut(),
            (0, parts),
            &|p| tg.part_start(p, parts),
            &|v: ArrayViewMut2<'_, T>, at| v.split_at(Axis(0), at),
            &|r0, r1, mut block: ArrayViewMut2<'_, T>| {
                block.assign(&g.slice(ndarray::s![.., r0..r1]).t());
            },
        );
        let gt = gt.view();
        let Some(gtm) = Mat::of(&gt) else {
            return false;
        };
        // dxt ← gt·w by row blocks of dxt (columns of dx), then each block into dx
        let parts = tn.parts(threads);
        par_parts(
            (dx.view_mut(), dxt),
            (0, parts),
            &|p| tn.part_start(p, parts),
            &|(d, t): (ArrayViewMut2<'_, T>, ArrayViewMut2<'_, T>), at| {
                let (d0, d1) = d.split_at(Axis(1), at);
                let (t0, t1) = t.split_at(Axis(0), at);
                ((d0, t0), (d1, t1))
            },
            &|r0, r1, (mut d, mut t): (ArrayViewMut2<'_, T>, ArrayViewMut2<'_, T>)| {
                let c = t.as_mut_ptr();
                for (n0, _, n_edge) in tn.tiles(r0, r1) {
                    for (k0, _, k_edge) in tk.tiles(0, n) {
                        let kernel = ks.get([n_edge, k_edge, false], k0 > 0);
                        let c = c.wrapping_add((n0 - r0) * b).cast();
                        run(kernel, gtm.at::<T>(k0, 0), wm.at::<T>(n0, k0), c);
                    }
                }
                d.assign(&t.t());
            },
        );
        true
    })
}

/// `dx ← g·wᵀ` as `g·wt` by [`gemm_nn`] (threads split `dx` by row blocks where it is narrow),
/// `wt = wᵀ: (N, K)` transposed into the calling thread's scratch buffer: for a narrow layer
/// (under [`MIN_WEIGHT`] weights) whose `w` has no more elements than `g` and `dx` together
/// (32 × 64 × 64 f32 backward: 2.7 µs, against 4.3 µs transposing `g` and `dx`; at 32 × 128 ×
/// 128, where `w` has twice theirs, 13.1 against 12.5). Not for larger `w`: f64 128 × 256 × 256
/// backward measured 1.21× OpenBLAS's time this way, 0.93× transposing `g` and `dx`.
fn gemm_nt_by_rows<T: Element>(
    g: &ArrayView2<'_, T>,
    w: &ArrayView2<'_, T>,
    wm: Mat,
    dx: &mut ArrayViewMut2<'_, T>,
    threads: usize,
) -> bool {
    let (k, n) = (wm.rows, wm.cols);
    T::with_buffer(n * k, |wt| {
        let Ok(mut wt) = ArrayViewMut2::from_shape((n, k), wt) else {
            return false;
        };
        transpose(w, wm, &mut wt);
        gemm_nn(g, &wt.view(), dx, false, threads)
    })
}

/// `out ← wᵀ: (N, K)` (standard layout) for `w: (K, N)` at `wm`.
fn transpose<T: Element>(w: &ArrayView2<'_, T>, wm: Mat, out: &mut ArrayViewMut2<'_, T>) {
    #[cfg(affine_xsmm)]
    {
        // libxsmm reads `w` through `wm`, its address and layout
        let _ = w;
        // SAFETY: FFI call. `wm` is a checked operand (`K` rows of `N`, row stride ≥ `N`), which
        // libxsmm reads as a column-major `N × K` matrix; `out` is a standard-layout `(N, K)`
        // array, i.e. the `K × N` column-major result with leading dimension `K`, written only.
        unsafe {
            ffi::libxsmm_otrans(
                out.as_mut_ptr().cast(),
                ptr(wm.addr),
                std::mem::size_of::<T>() as std::os::raw::c_uint,
                int(wm.cols),
                int(wm.rows),
                int(wm.ld),
                int(wm.rows),
            );
        }
    }
    #[cfg(not(affine_xsmm))]
    {
        let _ = wm;
        out.assign(&w.t());
    }
}

/// Rows of the batch per kernel call of [`gemm_tn_by_batch`]: `TRANS_B` kernels slow down over
/// longer reductions (f64 64 × 128 tile: 113 GFLOP/s on one thread at 256 rows, 94 at 1024).
const BATCH_TILE: usize = 256;

/// `dw ← xᵀ·g` (`+ dw` when `accumulate`) with the batch split across threads: part 0 sums its
/// rows into `dw`, every other part into a scratch matrix, added into `dw` pairwise in a fixed
/// order (so the result does not depend on timing).
fn gemm_tn_by_batch<T: Element>(
    xm: Mat,
    gm: Mat,
    dw: &mut ArrayViewMut2<'_, T>,
    dm: Mat,
    accumulate: bool,
    threads: usize,
) -> bool {
    let (b, k, n) = (xm.rows, xm.cols, gm.cols);
    let ld = dm.ld;
    let tm = Tiling::new(n, TILE_BYTES / std::mem::size_of::<T>());
    let tn = Tiling::new(k, TILE_K);
    // the batch in tiles of about BATCH_TILE rows, every thread a run of whole tiles
    let tb = Tiling::new(b, BATCH_TILE);
    let parts = tb.parts(threads);
    let Some(ks) = Kernels::new::<T>(|i| Desc {
        m: int(tm.pick(i & 1 != 0)),
        n: int(tn.pick(i & 2 != 0)),
        k: int(tb.pick(i & 8 != 0)),
        lda: int(gm.ld),
        ldb: int(xm.ld),
        ldc: int(ld),
        accumulate: i & 4 != 0,
        trans_b: true,
    }) else {
        return false;
    };
    let size = (k - 1) * ld + n;
    let leaf = |p: usize, c: *mut T, acc: bool| {
        let (r0, r1) = (tb.part_start(p, parts), tb.part_start(p + 1, parts));
        for (s0, _, b_edge) in tb.tiles(r0, r1) {
            for (n0, _, n_edge) in tn.tiles(0, k) {
                for (m0, _, m_edge) in tm.tiles(0, n) {
                    let kernel = ks.get([m_edge, n_edge, b_edge], acc || s0 > r0);
                    let c = c.wrapping_add(n0 * ld + m0).cast();
                    run(kernel, gm.at::<T>(s0, m0), xm.at::<T>(s0, n0), c);
                }
            }
        }
    };
    T::with_buffer((parts - 1) * size, |scratch| {
        tn_tree(
            &leaf,
            (0, parts),
            dw.view_mut(),
            accumulate,
            scratch,
            (k, n, ld, size),
        );
    });
    true
}

/// Parts `lo..hi` of [`gemm_tn_by_batch`]: the first half into `out`, the second into the head
/// of `scratch` (then added into `out`), the rest of `scratch` for the halves' own splits.
fn tn_tree<T: Element, L: Fn(usize, *mut T, bool) + Sync>(
    leaf: &L,
    (lo, hi): (usize, usize),
    mut out: ArrayViewMut2<'_, T>,
    acc: bool,
    scratch: &mut [T],
    dims @ (k, n, ld, size): (usize, usize, usize, usize),
) {
    if hi - lo <= 1 {
        leaf(lo, out.as_mut_ptr(), acc);
        return;
    }
    let mid = lo + (hi - lo) / 2;
    let (mine, rest) = scratch.split_at_mut(size);
    let (left, right) = rest.split_at_mut((mid - lo - 1) * size);
    let Ok(mut mine) = ArrayViewMut2::from_shape((k, n).strides((ld, 1)), mine) else {
        return;
    };
    rayon::join(
        || tn_tree(leaf, (lo, mid), out.view_mut(), acc, left, dims),
        || tn_tree(leaf, (mid, hi), mine.view_mut(), false, right, dims),
    );
    out.zip_mut_with(&mine, |a, &b| *a = *a + b);
}
