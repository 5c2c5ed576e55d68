//! OpenBLAS runs the kernels of the CPU's widest vector extension once the crate has made its
//! first BLAS call, and a core the user chose with `OPENBLAS_CORETYPE` is kept.
//!
//! The tests that need a fixed environment run this binary again as a child process.

use affine_blas::blas::{self, KernelChoice};
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
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--test-threads", "1"])
        .env("AFFINE_KERNELS_CHILD", "1");
    match coretype {
        Some(c) => cmd.env("OPENBLAS_CORETYPE", c),
        None => cmd.env_remove("OPENBLAS_CORETYPE"),
    };
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
    }
}
