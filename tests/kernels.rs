//! OpenBLAS runs the kernels of the CPU's widest vector extension once the crate has made its
//! first BLAS call, and a core the user chose with `OPENBLAS_CORETYPE` is kept; likewise its idle
//! spin is shortened where the small-batch engine runs, unless the user set it.
//!
//! The tests that need a fixed environment run this binary again as a child process.

use affine_blas::blas::{self, KernelChoice, OneRowGemm};
use affine_blas::threads::{self, Spin, OPENBLAS_SPIN_LOG2};
use affine_blas::xsmm;
use std::process::Command;

/// The OpenBLAS cores whose kernels use AVX-512, AVX2 + FMA.
const AVX512_CORES: [&str; 3] = ["SkylakeX", "Cooperlake", "SapphireRapids"];
const AVX2_CORES: [&str; 5] = ["Haswell", "Zen", "Excavator", "Steamroller", "SkylakeX"];

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512cd")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `test` of this binary in a child with `OPENBLAS_CORETYPE` set to `coretype` (or unset)
/// and `AFFINE_KERNELS_CHILD` set, and asserts that it passed.
fn run_child(test: &str, coretype: Option<&str>) {
    run_child_with(test, coretype, None);
}

/// As [`run_child`], with `OPENBLAS_THREAD_TIMEOUT` set to `timeout` (or unset).
fn run_child_with(test: &str, coretype: Option<&str>, timeout: Option<&str>) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--test-threads", "1"])
        .env("AFFINE_KERNELS_CHILD", "1")
        .env_remove("AFFINE_BLAS_XSMM")
        .env_remove("AFFINE_BLAS_ONE_ROW_GEMM");
    for (var, value) in [
        ("OPENBLAS_CORETYPE", coretype),
        ("OPENBLAS_THREAD_TIMEOUT", timeout),
    ] {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    let out = cmd.output().expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child {test} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_child() -> bool {
    std::env::var_os("AFFINE_KERNELS_CHILD").is_some()
}

#[test]
fn widest_vectors_by_default() {
    run_child("child_default", None);
}

#[test]
fn child_default() {
    if !in_child() {
        return;
    }
    // before any BLAS call of the crate OpenBLAS runs whatever it chose itself; after one, a
    // core as wide as the CPU
    let choice = blas::ensure_best_kernels().clone();
    let core = blas::openblas_core();
    assert_eq!(core, choice.core());
    assert!(
        blas::openblas_config().contains(&core),
        "{} vs {core}",
        blas::openblas_config()
    );
    assert!(!matches!(choice, KernelChoice::UserSet { .. }));
    // the variable used for the switch is gone again
    assert!(std::env::var_os("OPENBLAS_CORETYPE").is_none());
    let dynamic = blas::openblas_config().contains("DYNAMIC_ARCH");
    if dynamic && cpu_has_avx512() {
        assert!(AVX512_CORES.contains(&core.as_str()), "{choice}");
    } else if dynamic && cpu_has_avx2() {
        assert!(
            AVX2_CORES.contains(&core.as_str()) || AVX512_CORES.contains(&core.as_str()),
            "{choice}"
        );
    }
    if let KernelChoice::Switched { from, to } = &choice {
        assert_ne!(from, to);
    }
    // a one-row GEMM counts as fast (small-matrix kernels) on the AVX-512 cores only
    assert_eq!(
        blas::one_row_gemm() == OneRowGemm::Small,
        AVX512_CORES.contains(&core.as_str()),
        "{core}"
    );
    // and the switched kernels compute: a product against a plain loop
    let a = ndarray::Array2::from_shape_fn((67, 45), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
    let b = ndarray::Array2::from_shape_fn((45, 38), |(i, j)| ((i * 5 + j) % 13) as f32 - 6.0);
    let w = b.clone();
    let bias = ndarray::Array1::<f32>::zeros(38);
    let mut y = ndarray::Array2::<f32>::zeros((67, 38));
    affine_blas::forward_into(a.view(), w.view(), bias.view(), y.view_mut()).unwrap();
    for i in 0..67 {
        for j in 0..38 {
            let want: f32 = (0..45).map(|k| a[[i, k]] * b[[k, j]]).sum();
            // small integers: exact in f32 whatever the order of the sums
            assert_eq!(y[[i, j]], want, "({i}, {j})");
        }
    }
}

#[test]
fn a_core_the_user_chose_is_kept() {
    run_child("child_user_set", Some("Haswell"));
}

#[test]
fn child_user_set() {
    if !in_child() {
        return;
    }
    let choice = blas::ensure_best_kernels().clone();
    assert!(matches!(choice, KernelChoice::UserSet { .. }), "{choice}");
    if blas::openblas_config().contains("DYNAMIC_ARCH") {
        assert_eq!(blas::openblas_core(), "Haswell");
        assert_eq!(blas::one_row_gemm(), OneRowGemm::Packed);
    }
}

/// Whether the loaded OpenBLAS exports what shortening its spin needs.
fn spin_symbols() -> bool {
    [c"openblas_read_env", c"blas_thread_shutdown_"]
        .iter()
        .all(|name| {
            // SAFETY: a NUL-terminated name; dlsym returns null where the symbol is absent.
            !unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }.is_null()
        })
}

#[test]
fn idle_spin_is_shortened_where_the_engine_runs() {
    run_child_with("child_spin_default", None, None);
}

#[test]
fn child_spin_default() {
    if !in_child() {
        return;
    }
    blas::ensure_best_kernels();
    let spin = threads::openblas_spin();
    if xsmm::enabled() && spin_symbols() {
        assert_eq!(spin, Spin::Shortened(OPENBLAS_SPIN_LOG2));
    } else {
        assert_eq!(spin, Spin::Default);
    }
    assert!(
        std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none(),
        "variable left behind"
    );
    // OpenBLAS's restarted thread pool computes: a product large enough for two threads,
    // small integers (exact in f32 in any order), repeatedly, against a plain loop
    let n = 256;
    let a = ndarray::Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
    let b = ndarray::Array2::from_shape_fn((n, n), |(i, j)| ((i * 5 + j) % 13) as f32 - 6.0);
    let bias = ndarray::Array1::<f32>::zeros(n);
    let mut want = ndarray::Array2::<f32>::zeros((n, n));
    for i in 0..n {
        for j in 0..n {
            want[[i, j]] = (0..n).map(|k| a[[i, k]] * b[[k, j]]).sum();
        }
    }
    let mut y = ndarray::Array2::<f32>::zeros((n, n));
    for _ in 0..20 {
        y.fill(f32::NAN);
        affine_blas::forward_into(a.view(), b.view(), bias.view(), y.view_mut()).unwrap();
        assert_eq!(y, want);
        // a pause longer than the shortened spin, so that the workers sleep and are woken
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_spin_the_user_set_is_kept() {
    run_child_with("child_spin_user_set", None, Some("20"));
}

#[test]
fn child_spin_user_set() {
    if !in_child() {
        return;
    }
    blas::ensure_best_kernels();
    assert_eq!(threads::openblas_spin(), Spin::UserSet(20));
    assert_eq!(
        std::env::var("OPENBLAS_THREAD_TIMEOUT").as_deref(),
        Ok("20")
    );
}
