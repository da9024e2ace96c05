//! Fuzz target bodies, shared by `cargo fuzz` (the binaries under `fuzz_targets/`, built
//! with the `libfuzzer` feature on nightly) and by `cargo test`, which runs them over the
//! example manifests and random input on stable so they never rot.
#![forbid(unsafe_code)]

use cnpg_core::lsn::Lsn;
use cnpg_core::quantity::Quantity;

/// Manifest checking must never panic, whatever the bytes.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reports) = cnpg_operator::manifests::check_text(text) {
        for r in reports {
            for e in r.errors {
                assert!(!e.path.is_empty(), "an error without a path: {e:?}");
            }
        }
    }
}

/// LSN and quantity parsing never panic, and what parses prints back to itself.
pub fn quantity_lsn(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lsn) = text.parse::<Lsn>() {
        assert_eq!(
            lsn.to_string().parse::<Lsn>(),
            Ok(lsn),
            "LSN {text:?} does not round-trip"
        );
    }
    if let Ok(q) = Quantity::parse(text) {
        let again = Quantity::parse(&q.bytes().to_string()).expect("a byte count is a quantity");
        assert_eq!(
            again, q,
            "quantity {text:?} does not round-trip through bytes"
        );
    }
}
