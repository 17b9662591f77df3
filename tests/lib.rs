//! End-to-end tests of the suite live in `e2e/`; this library is empty.
