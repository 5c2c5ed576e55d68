//! Which CPU kernels OpenBLAS runs: the best the CPU supports, even where OpenBLAS does not know
//! the CPU.
//!
//! A `DYNAMIC_ARCH` OpenBLAS (Debian's, for one) picks its kernels once, when it is loaded, from
//! the CPU's family and model numbers. A CPU newer than the library falls back to a generic
//! core: Debian 12's OpenBLAS 0.3.21 runs an Emerald Rapids Xeon (family 6, model 207; AVX-512)
//! with its `Prescott` SSE3 kernels, and measured 4.3× slower there than with its `SkylakeX`
//! AVX-512 kernels (f32 128 × 1024 × 1024 forward: 38.7 against 167–176 GFLOP/s, `affine-bench
//! --shape 128x1024x1024`). Later OpenBLAS releases choose by CPU features instead; this module
//! does the same for the library at hand.
//!
//! [`ensure_best_kernels`] runs once, before the crate's first BLAS call. When the user has not
//! chosen a core (`OPENBLAS_CORETYPE` unset), the library is `DYNAMIC_ARCH`, and its core uses a
//! narrower vector extension than the CPU offers (AVX-512 > AVX2 + FMA > AVX > SSE), it asks
//! OpenBLAS to choose again with `OPENBLAS_CORETYPE` set to the matching core (`SkylakeX`,
//! `Haswell`, `Sandybridge`): OpenBLAS's own `gotoblas_dynamic_quit` / `gotoblas_dynamic_init`,
//! found at run time with `dlsym` (a library without them is left alone). The variable is removed
//! again afterwards.
//!
//! Caveat: the switch sets an environment variable and swaps OpenBLAS's kernel table, so it must
//! not race with another thread's BLAS call or C `getenv`. It happens at the crate's first BLAS
//! call; a program that also calls BLAS outside this crate from several threads should call
//! [`ensure_best_kernels`] at the start of `main`. Setting `OPENBLAS_CORETYPE` yourself turns it
//! off.

use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::OnceLock;

/// What [`ensure_best_kernels`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// OpenBLAS's own choice was kept: it already matches the CPU, or the library cannot choose
    /// again (not `DYNAMIC_ARCH`), or the CPU is not x86-64.
    Kept {
        /// The core OpenBLAS runs.
        core: String,
    },
    /// `OPENBLAS_CORETYPE` was set by the user and is respected.
    UserSet {
        /// The core OpenBLAS runs.
        core: String,
    },
    /// OpenBLAS's core was replaced by one using the CPU's widest vector extension.
    Switched {
        /// The core OpenBLAS picked itself.
        from: String,
        /// The core it runs now.
        to: String,
    },
}

impl KernelChoice {
    /// The core OpenBLAS runs now.
    pub fn core(&self) -> &str {
        match self {
            KernelChoice::Kept { core } | KernelChoice::UserSet { core } => core,
            KernelChoice::Switched { to, .. } => to,
        }
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelChoice::Kept { core } => write!(f, "{core}"),
            KernelChoice::UserSet { core } => match cpu_core() {
                Some(best) if isa_rank(core) < isa_rank(best) => write!(
                    f,
                    "{core} (OPENBLAS_CORETYPE; this CPU could run {best}: unset it for wider vectors)"
                ),
                _ => write!(f, "{core} (OPENBLAS_CORETYPE)"),
            },
            KernelChoice::Switched { from, to } => {
                write!(
                    f,
                    "{to} (OpenBLAS chose {from}; switched to the CPU's widest vectors)"
                )
            }
        }
    }
}

/// Makes OpenBLAS run the kernels of the CPU's widest vector extension (see the module docs),
/// once per process; later calls return the first call's result. Every BLAS entry point of the
/// crate calls it first.
pub fn ensure_best_kernels() -> &'static KernelChoice {
    static CHOICE: OnceLock<KernelChoice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let choice = choose();
        crate::threads::openblas_spin();
        choice
    })
}

fn choose() -> KernelChoice {
    let current = corename();
    if std::env::var_os(CORETYPE_VAR).is_some() {
        return KernelChoice::UserSet { core: current };
    }
    let Some(target) = cpu_core() else {
        return KernelChoice::Kept { core: current };
    };
    if isa_rank(&current) >= isa_rank(target) || !config().contains("DYNAMIC_ARCH") {
        return KernelChoice::Kept { core: current };
    }
    let Some((quit, init)) = dynamic_init_fns() else {
        return KernelChoice::Kept { core: current };
    };
    std::env::set_var(CORETYPE_VAR, target);
    // SAFETY: both are OpenBLAS's own functions without arguments (found by name in the loaded
    // library); quit clears the kernel-table pointer and init picks the table again from
    // OPENBLAS_CORETYPE, exactly as at load time. No BLAS call of this crate runs meanwhile
    // (this runs inside a OnceLock that every entry point waits on).
    unsafe {
        quit();
        init();
    }
    std::env::remove_var(CORETYPE_VAR);
    KernelChoice::Switched {
        from: current,
        to: corename(),
    }
}

const CORETYPE_VAR: &str = "OPENBLAS_CORETYPE";

/// The OpenBLAS core for the CPU's widest vector extension, or `None` off x86-64 or without AVX.
fn cpu_core() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512cd");
        if avx512 {
            return Some("SkylakeX");
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some("Haswell");
        }
        if std::is_x86_feature_detected!("avx") {
            return Some("Sandybridge");
        }
    }
    None
}

/// The widest vector extension an OpenBLAS x86 core's kernels use: 3 AVX-512, 2 AVX2 + FMA,
/// 1 AVX, 0 SSE or unknown.
pub(crate) fn isa_rank(core: &str) -> u8 {
    // compares without allocating
    const RANKS: &[(&str, u8)] = &[
        ("skylakex", 3),
        ("cooperlake", 3),
        ("sapphirerapids", 3),
        ("haswell", 2),
        ("zen", 2),
        ("excavator", 2),
        ("steamroller", 2),
        ("sandybridge", 1),
        ("bulldozer", 1),
        ("piledriver", 1),
    ];
    RANKS
        .iter()
        .find(|(name, _)| core.eq_ignore_ascii_case(name))
        .map_or(0, |&(_, rank)| rank)
}

type InitFn = unsafe extern "C" fn();

/// `gotoblas_dynamic_quit` and `gotoblas_dynamic_init`, which only a `DYNAMIC_ARCH` OpenBLAS has.
fn dynamic_init_fns() -> Option<(InitFn, InitFn)> {
    let find = |name: &CStr| -> Option<InitFn> {
        let p = find_symbol(name)?;
        // SAFETY: both symbols are `void f(void)` in OpenBLAS's dynamic.c.
        Some(unsafe { std::mem::transmute::<*mut libc::c_void, InitFn>(p) })
    };
    Some((
        find(c"gotoblas_dynamic_quit")?,
        find(c"gotoblas_dynamic_init")?,
    ))
}

/// The address of a symbol of the loaded libraries (OpenBLAS's), where one exports it.
pub(crate) fn find_symbol(name: &CStr) -> Option<*mut libc::c_void> {
    // SAFETY: name is NUL-terminated; RTLD_DEFAULT searches the loaded objects and returns null
    // when the symbol is absent (checked).
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

mod ffi {
    use std::os::raw::c_char;
    extern "C" {
        pub fn openblas_get_config() -> *const c_char;
        pub fn openblas_get_corename() -> *const c_char;
    }
}

fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::from("unknown");
    }
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string (checked non-null).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// OpenBLAS's build configuration string.
pub(crate) fn config() -> String {
    // SAFETY: FFI call without arguments; returns a static string or null (handled by c_str).
    c_str(unsafe { ffi::openblas_get_config() })
}

/// The core whose kernels OpenBLAS runs now.
fn corename() -> String {
    // SAFETY: as in config.
    c_str(unsafe { ffi::openblas_get_corename() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks() {
        assert_eq!(isa_rank("Prescott"), 0);
        assert_eq!(isa_rank("SkylakeX"), 3);
        assert_eq!(isa_rank("COOPERLAKE"), 3);
        assert_eq!(isa_rank("Haswell"), 2);
        assert_eq!(isa_rank("Zen"), 2);
        assert_eq!(isa_rank("Sandybridge"), 1);
        assert_eq!(isa_rank("unknown"), 0);
        for core in ["SkylakeX", "Haswell", "Sandybridge"] {
            // every core this module may ask for ranks as what it is asked for
            assert!(isa_rank(core) > 0);
        }
    }
}
