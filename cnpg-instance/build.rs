//! Links the instance manager, `cnpg-instance`, as a position-dependent executable on
//! Linux with glibc. It stays resident beside every PostgreSQL, so its idle memory counts
//! (target: under 15 MB). A position-independent one has the dynamic loader write
//! relocated pointers into its read-only data at start: those pages become private
//! copies (about 0.6 MB here), and the rodata around them is faulted in with them. Without
//! it the manager's idle RSS drops by about 1.5 MB (measured by `--bench instance`). The
//! cost is that the executable's own image is not randomized (libraries, heap and stacks
//! still are) — as for Go programs, upstream's instance manager among them, which are
//! built this way by default. The short-lived `cnpg-cloud` keeps the default.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bin=cnpg-instance=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
