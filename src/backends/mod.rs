//! Ready managers for common backends, each behind its cargo feature.
