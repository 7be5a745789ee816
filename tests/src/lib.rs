//! Cross-crate integration tests (in `tests/tests/`): the whole chain host → bundle → edge.
