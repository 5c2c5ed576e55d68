//! Finds the system OpenBLAS before anything is compiled against it, so that a machine without it
//! gets one clear message naming the package to install instead of a linker error.

use std::env;
use std::path::Path;

/// Folders where distributions and Homebrew put `libopenblas`.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/openblas-pthread",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/opt/homebrew/opt/openblas/lib",
    "/usr/local/opt/openblas/lib",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rustc-check-cfg=cfg(affine_xsmm)");
    emit_git_revision();
    build_peak_kernel();
    link_xsmm();

    // `from-source` leaves finding and building OpenBLAS to openblas-src.
    if env::var_os("CARGO_FEATURE_SYSTEM").is_none() || env::var_os("DOCS_RS").is_some() {
        return;
    }
    // openblas-src already emits the link flags pkg-config gives; this only checks they exist.
    if pkg_config::Config::new()
        .cargo_metadata(false)
        .probe("openblas")
        .is_ok()
    {
        return;
    }
    for dir in LIB_DIRS {
        let dir = Path::new(dir);
        if ["libopenblas.so", "libopenblas.dylib", "libopenblas.a"]
            .iter()
            .any(|f| dir.join(f).exists())
        {
            println!("cargo:rustc-link-search=native={}", dir.display());
            return;
        }
    }
    eprintln!(
        "\n\naffine-blas: the system OpenBLAS was not found (pkg-config has no `openblas`, and no \
         libopenblas is in {LIB_DIRS:?}).\n\
         Install it, then build again:\n  \
         Debian/Ubuntu: sudo apt-get install -y libopenblas-dev pkg-config\n  \
         Fedora:        sudo dnf install -y openblas-devel pkgconf-pkg-config\n  \
         macOS:         brew install openblas pkg-config\n\
         or run `bash scripts/setup.sh`, which installs it where it may.\n\
         To build OpenBLAS from source instead (needs network): \
         cargo build --no-default-features --features from-source\n"
    );
    std::process::exit(1);
}

/// Folders where distributions put libxsmm's static library.
const XSMM_DIRS: &[&str] = &["/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib"];

/// Links libxsmm for the small-batch engine (feature `xsmm`, x86-64 only) and sets
/// `cfg(affine_xsmm)` where it is found; otherwise warns and leaves every product to OpenBLAS.
fn link_xsmm() {
    println!("cargo:rerun-if-env-changed=AFFINE_BLAS_NO_XSMM");
    if env::var_os("CARGO_FEATURE_XSMM").is_none()
        || env::var_os("AFFINE_BLAS_NO_XSMM").is_some()
        || env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64")
    {
        return;
    }
    let Some(dir) = XSMM_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.join("libxsmm.a").exists())
    else {
        println!(
            "cargo:warning=libxsmm not found (Debian: apt-get install libxsmm-dev, or run \
             scripts/setup.sh, then cargo clean -p affine-blas): the small-batch engine is off \
             and OpenBLAS runs every product"
        );
        return;
    };
    println!("cargo:rerun-if-changed={}", dir.join("libxsmm.a").display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=xsmm");
    // libxsmm's own BLAS fallback (never taken by this crate) refers to sgemm_/dgemm_, which the
    // linked OpenBLAS provides; the rest is its pkg-config's list
    for lib in ["openblas", "pthread", "rt", "dl", "m"] {
        println!("cargo:rustc-link-lib={lib}");
    }
    println!("cargo:rustc-cfg=affine_xsmm");
}

/// Compiles the FMA peak kernel that `affine_blas::peak` calls (the `report` feature only).
#[cfg(feature = "report")]
fn build_peak_kernel() {
    println!("cargo:rerun-if-changed=csrc/fma_peak.c");
    cc::Build::new()
        .file("csrc/fma_peak.c")
        .opt_level(2)
        .flag_if_supported("-ffp-contract=fast")
        .warnings(true)
        .compile("affine_fma_peak");
}

#[cfg(not(feature = "report"))]
fn build_peak_kernel() {}

/// Records the crate's git revision (if built from a checkout) for benchmark reports.
fn emit_git_revision() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    // a build from uncommitted sources says so, rather than passing for the last commit
    let dirty = std::process::Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "src",
            "Cargo.toml",
        ])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let rev = if dirty { format!("{rev}+dirty") } else { rev };
    println!("cargo:rustc-env=AFFINE_BLAS_GIT_REV={rev}");
    // HEAD moves on checkout; logs/HEAD grows on every commit; src changes make the tree dirty.
    println!("cargo:rerun-if-changed=src");
    for f in [".git/HEAD", ".git/logs/HEAD"] {
        if Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}
