//! The allowed ranges of real-valued hyper-parameters, which `config` checks every numeric key against.

/// The allowed range of a real-valued hyper-parameter (NaN and infinities are never allowed).
#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// `> 0`.
    Positive,
    /// `≥ 0`.
    NonNegative,
    /// `(0, 1]`: a fraction of a maximum.
    Fraction,
    /// `[0, 0.5)`: a padding as a fraction of the side.
    Padding,
}

impl Range {
    pub fn contains(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Positive => v > 0.0,
                Range::NonNegative => v >= 0.0,
                Range::Fraction => v > 0.0 && v <= 1.0,
                Range::Padding => (0.0..0.5).contains(&v),
            }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Range::Positive => "a positive number",
            Range::NonNegative => "zero or positive",
            Range::Fraction => "in (0, 1]",
            Range::Padding => "in [0, 0.5)",
        }
    }
}
