//! Class label sets.
//!
//! A label set is data: the model card of every exported bundle carries its own (index order = the
//! network's output order). The five ocular classes of the CDNet paper are only the default.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use crate::MAX_CLASSES;

/// The ocular B-scan classes of the CDNet paper, in the network's index order (Table I):
/// `(short code, full name)`.
pub const OCULAR_CLASSES: [(&str, &str); 5] = [
    ("Normal", "Normal"),
    ("IOT", "Intraocular tumour"),
    ("RD", "Retinal detachment"),
    ("PSS", "Posterior scleral staphyloma"),
    ("VH", "Vitreous haemorrhage"),
];

/// Why a label set was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No classes at all.
    #[error("a label set needs at least two classes, got {0}")]
    TooFew(usize),
    /// More classes than [`MAX_CLASSES`].
    #[error("a label set may have at most {MAX_CLASSES} classes, got {0}")]
    TooMany(usize),
    /// A class name is empty or only whitespace.
    #[error("class {0} has an empty name")]
    EmptyName(usize),
    /// A class name appears twice.
    #[error("class name {0:?} appears more than once")]
    Duplicate(String),
}

/// An ordered set of class names: index `i` is output `i` of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct LabelSet {
    names: Vec<String>,
}

impl LabelSet {
    /// Validates and builds a label set (2 ..= [`MAX_CLASSES`] distinct, non-empty names).
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Result<Self, LabelError> {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.len() < 2 {
            return Err(LabelError::TooFew(names.len()));
        }
        if names.len() > MAX_CLASSES {
            return Err(LabelError::TooMany(names.len()));
        }
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(LabelError::EmptyName(i));
            }
            if names[..i].contains(name) {
                return Err(LabelError::Duplicate(name.clone()));
            }
        }
        Ok(LabelSet { names })
    }

    /// The five ocular classes (Normal, IOT, RD, PSS, VH).
    pub fn ocular() -> Self {
        LabelSet { names: OCULAR_CLASSES.iter().map(|(code, _)| code.to_string()).collect() }
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: a label set has at least two classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Name of class `index`, if it exists.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }

    /// Index of the class called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// All names, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A human-readable name for display: the full ocular name for the ocular codes, else the name.
    pub fn display_name(&self, index: usize) -> Option<&str> {
        let code = self.name(index)?;
        Some(OCULAR_CLASSES.iter().find(|(c, _)| *c == code).map_or(code, |(_, full)| full))
    }

    /// Every class's [`display_name`](Self::display_name), in index order.
    pub fn display_names(&self) -> Vec<String> {
        (0..self.len()).filter_map(|i| self.display_name(i).map(String::from)).collect()
    }
}

impl TryFrom<Vec<String>> for LabelSet {
    type Error = LabelError;
    fn try_from(names: Vec<String>) -> Result<Self, LabelError> {
        LabelSet::new(names)
    }
}

impl From<LabelSet> for Vec<String> {
    fn from(set: LabelSet) -> Vec<String> {
        set.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocular_default_order_is_table_one() {
        let set = LabelSet::ocular();
        assert_eq!(set.names(), ["Normal", "IOT", "RD", "PSS", "VH"]);
        assert_eq!(set.index_of("PSS"), Some(3));
        assert_eq!(set.display_name(4), Some("Vitreous haemorrhage"));
    }

    #[test]
    fn custom_sets_are_data() {
        let set = LabelSet::new(["benign", "malignant", "normal"]).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.display_name(1), Some("malignant"));
        assert_eq!(set.display_names(), ["benign", "malignant", "normal"]);
    }

    #[test]
    fn invalid_sets_are_rejected() {
        assert_eq!(LabelSet::new(["a"]), Err(LabelError::TooFew(1)));
        assert_eq!(LabelSet::new(["a", " "]), Err(LabelError::EmptyName(1)));
        assert_eq!(LabelSet::new(["a", "b", "a"]), Err(LabelError::Duplicate("a".into())));
        let many: Vec<String> = (0..17).map(|i| alloc::format!("c{i}")).collect();
        assert_eq!(LabelSet::new(many), Err(LabelError::TooMany(17)));
    }

    #[test]
    fn serde_validates() {
        let ok: LabelSet = serde_json::from_str(r#"["x","y"]"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(serde_json::from_str::<LabelSet>(r#"["x","x"]"#).is_err());
    }
}
