//! Runs every fuzz target over the seed corpus (the example and broken manifests) and over
//! random bytes, on stable, so a target that panics fails `cargo test`.

use proptest::prelude::*;
use std::path::Path;

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["examples", "cnpg-operator/tests/data/broken"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("seed folder exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                out.push(std::fs::read(&path).expect("seed readable"));
            }
        }
    }
    assert!(
        out.len() >= 10,
        "expected the example and broken manifests as seeds"
    );
    out
}

#[test]
fn targets_accept_every_seed_and_its_truncations() {
    for seed in seeds() {
        for cut in (0..seed.len()).step_by(7) {
            cnpg_fuzz::manifest(&seed[..cut]);
        }
        cnpg_fuzz::manifest(&seed);
    }
    for s in [
        "0/3000148",
        "FFFFFFFF/FFFFFFFF",
        "1Gi",
        "1.5e3",
        "100m",
        "",
        "/",
    ] {
        cnpg_fuzz::quantity_lsn(s.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn manifest_target_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        cnpg_fuzz::manifest(&data);
    }

    #[test]
    fn manifest_target_on_mutated_seeds(i in 0usize..1000, pos in 0usize..4000, byte in any::<u8>()) {
        let seeds = seeds();
        let mut s = seeds[i % seeds.len()].clone();
        let at = pos % s.len().max(1);
        if !s.is_empty() { s[at] = byte; }
        cnpg_fuzz::manifest(&s);
    }

    #[test]
    fn quantity_lsn_target(text in "[0-9A-Fa-f/.eEkMGTPiumn+-]{0,24}") {
        cnpg_fuzz::quantity_lsn(text.as_bytes());
    }
}
