//! Privileged tests.
