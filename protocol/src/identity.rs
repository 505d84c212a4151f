//! See docs/protocol.md.
