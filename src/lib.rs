//! Test kit placeholder (filled by the foundation work).
