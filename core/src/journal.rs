//! The journal codec (coming).
