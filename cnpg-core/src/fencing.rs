//! Fencing: the `cnpg.io/fencedInstances` annotation, a JSON list of instance names or
//! `["*"]` for all. A fenced instance's PostgreSQL is stopped and kept stopped; a fenced
//! primary is *not* failed over (the user asked for it to be down).

use serde_json::Value;
use std::collections::BTreeSet;

/// Which instances are fenced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fencing {
    /// None.
    #[default]
    None,
    /// These instances.
    Instances(BTreeSet<String>),
    /// Every instance (`"*"`).
    All,
}

/// The annotation is not a JSON list of strings. Upstream then treats nothing as fenced;
/// we do the same but say so, so the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cnpg.io/fencedInstances {0:?} is not a JSON list of instance names such as [\"pg-1\"]; nothing is fenced"
)]
pub struct FencingParseError(pub String);

impl Fencing {
    /// Reads the annotation value (absent means none).
    pub fn parse(annotation: Option<&str>) -> Result<Fencing, FencingParseError> {
        let Some(text) = annotation.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Fencing::None);
        };
        let err = || FencingParseError(text.to_owned());
        let Value::Array(items) = serde_json::from_str::<Value>(text).map_err(|_| err())? else {
            return Err(err());
        };
        let mut names = BTreeSet::new();
        for item in items {
            match item {
                Value::String(s) if s == "*" => return Ok(Fencing::All),
                Value::String(s) => {
                    names.insert(s);
                }
                _ => return Err(err()),
            }
        }
        Ok(if names.is_empty() {
            Fencing::None
        } else {
            Fencing::Instances(names)
        })
    }

    /// Whether `instance` is fenced.
    pub fn is_fenced(&self, instance: &str) -> bool {
        match self {
            Fencing::None => false,
            Fencing::All => true,
            Fencing::Instances(s) => s.contains(instance),
        }
    }

    /// Fence one more instance (`"*"` fences all).
    pub fn fence(&mut self, instance: &str) {
        if instance == "*" {
            *self = Fencing::All;
            return;
        }
        match self {
            Fencing::All => {}
            Fencing::None => *self = Fencing::Instances(BTreeSet::from([instance.to_owned()])),
            Fencing::Instances(s) => {
                s.insert(instance.to_owned());
            }
        }
    }

    /// Lift the fence of one instance (`"*"` lifts all). Lifting one instance while all are
    /// fenced is refused: the caller must name instances or lift `"*"`.
    pub fn unfence(&mut self, instance: &str) -> Result<(), String> {
        match (instance, &mut *self) {
            ("*", _) => *self = Fencing::None,
            (_, Fencing::All) => {
                return Err(format!(
                    "every instance is fenced (\"*\"); lift \"*\" first, then fence the others by name, to unfence {instance}"
                ));
            }
            (_, Fencing::None) => {}
            (_, Fencing::Instances(s)) => {
                s.remove(instance);
                if s.is_empty() {
                    *self = Fencing::None;
                }
            }
        }
        Ok(())
    }

    /// The annotation value to write (`None`: remove the annotation).
    pub fn to_annotation(&self) -> Option<String> {
        match self {
            Fencing::None => None,
            Fencing::All => Some("[\"*\"]".to_owned()),
            Fencing::Instances(s) => Some(
                serde_json::to_string(&s.iter().collect::<Vec<_>>())
                    .expect("a list of strings serializes"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(Fencing::parse(None), Ok(Fencing::None));
        assert_eq!(Fencing::parse(Some("[]")), Ok(Fencing::None));
        assert_eq!(Fencing::parse(Some("[\"*\"]")), Ok(Fencing::All));
        let f = Fencing::parse(Some("[\"pg-1\",\"pg-3\"]")).expect("valid");
        assert!(f.is_fenced("pg-1") && f.is_fenced("pg-3") && !f.is_fenced("pg-2"));
        assert!(Fencing::parse(Some("pg-1")).is_err());
        assert!(Fencing::parse(Some("[1]")).is_err());
    }

    #[test]
    fn fence_and_unfence_round_trip_through_the_annotation() {
        let mut f = Fencing::None;
        f.fence("pg-2");
        f.fence("pg-1");
        assert_eq!(f.to_annotation().as_deref(), Some("[\"pg-1\",\"pg-2\"]"));
        assert_eq!(Fencing::parse(f.to_annotation().as_deref()), Ok(f.clone()));
        f.unfence("pg-1").expect("ok");
        f.unfence("pg-2").expect("ok");
        assert_eq!(f.to_annotation(), None);
        f.fence("*");
        assert!(f.unfence("pg-1").is_err());
        f.unfence("*").expect("ok");
        assert_eq!(f, Fencing::None);
    }
}
